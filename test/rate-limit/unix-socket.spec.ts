/**
 * An app behind a proxy that reaches it over a unix socket (nginx's `proxy_pass http://unix:/run/app.sock`): its
 * requests' sockets have no remote address, so the default tracker cannot tell clients apart by it.
 */
import 'reflect-metadata';
import { randomUUID } from 'node:crypto';
import { request as httpRequest } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PingController } from '../support/rate-limit-http.js';
import { recordingLogger } from '../support/recording-logger.js';
import { closeToolkitApps, createToolkitApp, PLATFORMS } from '../support/toolkit-app.js';

afterEach(() => closeToolkitApps());

/** GET /ping over the unix socket, as the proxy would send it for `client`. */
function ping(socketPath: string, client: string): Promise<number> {
  return new Promise((done, fail) => {
    const req = httpRequest({ socketPath, path: '/ping', headers: { 'x-forwarded-for': client } }, (res) => {
      res.resume();
      res.on('end', () => done(res.statusCode ?? 0));
    });
    req.on('error', fail);
    req.end();
  });
}

describe.each(PLATFORMS)('an app listening on a unix socket behind a proxy (%s)', (platform) => {
  async function appOn(trustProxy: number | boolean) {
    const recorded = recordingLogger();
    const app = await createToolkitApp({
      platform,
      keyPrefix: `rtk-${randomUUID().slice(0, 8)}:`,
      controllers: [PingController],
      logger: recorded.logger,
      rateLimit: { trustProxy },
    });
    const socketPath = join(tmpdir(), `rtk-${randomUUID().slice(0, 8)}.sock`);
    await app.app.listen(socketPath);
    return { socketPath, warnings: recorded.warnings };
  }

  it('without trustProxy: every client is one tracker, and a warning says so once, naming trustProxy', async () => {
    const { socketPath, warnings } = await appOn(false);
    const statuses = [];
    for (const client of ['203.0.113.1', '203.0.113.2', '203.0.113.3']) statuses.push(await ping(socketPath, client));
    // one counter for all: the second client is refused by the first's charge
    expect(statuses).toEqual([200, 429, 429]);
    const said = warnings.filter((w) => w.includes('no client address'));
    // before: no warning at all (X-Forwarded-For's own warning aside)
    expect(said).toHaveLength(1);
    expect(said[0]).toMatch(/unix socket/);
    expect(said[0]).toMatch(/rateLimit\.trustProxy/);
  });

  it('with trustProxy: 1 the proxy-added X-Forwarded-For entry is the client, and nothing is warned', async () => {
    const { socketPath, warnings } = await appOn(1);
    const statuses = [];
    for (const client of ['203.0.113.1', '203.0.113.2', '203.0.113.1']) statuses.push(await ping(socketPath, client));
    expect(statuses).toEqual([200, 200, 429]);
    expect(warnings.filter((w) => w.includes('no client address'))).toEqual([]);
  });

  it('with trustProxy: true (local proxies) a unix socket peer is a local proxy: X-Forwarded-For is read', async () => {
    const { socketPath, warnings } = await appOn(true);
    const statuses = [];
    for (const client of ['203.0.113.1', '203.0.113.2', '203.0.113.1']) statuses.push(await ping(socketPath, client));
    // before: the socket had no address, so it was not a trusted proxy: one 'unknown' counter for all
    expect(statuses).toEqual([200, 200, 429]);
    expect(warnings.filter((w) => w.includes('no client address'))).toEqual([]);
  });
});
