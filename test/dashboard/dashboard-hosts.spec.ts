/**
 * DNS rebinding: a page on an attacker's domain whose name is made to resolve to 127.0.0.1 reads, from a victim's
 * browser, whatever that machine serves on the port, with the attacker's name in the Host header. Without a guard
 * (`unsafeNoAuth: true`, the "only on my laptop / internal port" setup) the dashboard answers only a loopback Host or
 * one listed in `allowedHosts`; with a guard, only when `allowedHosts` is given.
 */
import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import { request } from 'node:http';
import { type AddressInfo, connect } from 'node:net';
import type { LoggerService } from '@nestjs/common';
import { InvalidOptionsError } from '../../lib/index.js';
import { RedisToolkitDashboardModule, type RedisToolkitDashboardOptions } from '../../lib/dashboard/index.js';
import { OperatorGuard } from '../support/dashboard-guards.js';
import { recordingLogger } from '../support/recording-logger.js';
import { closeToolkitApps, createToolkitApp, PLATFORMS, type Platform } from '../support/toolkit-app.js';

interface Answer {
  status: number;
  type: string;
  body: string;
}

/**
 * One request to 127.0.0.1:`port` whose Host header is `host`, whatever the address it was sent to (what a browser
 * does after a rebinding). An event stream that answers is read to its first chunk and closed.
 */
function ask(
  port: number,
  path: string,
  host: string,
  { method = 'GET', headers = {} }: { method?: string; headers?: Record<string, string> } = {},
): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, method, headers: { ...headers, host }, agent: false });
    req.on('response', (res) => {
      let body = '';
      const type = String(res.headers['content-type'] ?? '');
      const done = () => {
        resolve({ status: res.statusCode ?? 0, type, body });
        req.destroy();
      };
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        body += chunk;
        if (type.startsWith('text/event-stream')) done();
      });
      res.on('end', done);
    });
    req.on('error', reject);
    req.end();
  });
}

/** An HTTP/1.0 request with no Host header at all (HTTP/1.1 requires one; Node answers 400 without it). */
function askWithoutHost(port: number, path: string): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port });
    let raw = '';
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      raw += chunk;
    });
    socket.on('end', () => {
      const [head, ...rest] = raw.split('\r\n\r\n');
      const type = /^content-type: *(.*)$/im.exec(head)?.[1] ?? '';
      resolve({ status: Number(/^HTTP\/1\.[01] (\d{3})/.exec(head)?.[1] ?? 0), type, body: rest.join('\r\n\r\n') });
    });
    socket.on('error', reject);
    socket.write(`GET ${path} HTTP/1.0\r\n\r\n`);
  });
}

async function dashboardApp(platform: Platform, options: RedisToolkitDashboardOptions, logger?: LoggerService) {
  const app = await createToolkitApp({
    logger,
    keyPrefix: `rtk-dash-hosts-${randomBytes(4).toString('hex')}:`,
    imports: [RedisToolkitDashboardModule.register({ intervalMs: 60_000, ...options })],
    http: true,
    platform,
  });
  return (app.app.getHttpServer().address() as AddressInfo).port;
}

/** What of the dashboard an answer may carry: the page, its script, a snapshot, a stream. */
const DASHBOARD_CONTENT = /<html|EventSource|"instances"|"intervalMs"|event: snapshot/i;

/** Every route, by method: the page (also at `<path>/` where the platform serves it there), script, snapshot, stream. */
const ROUTES: [method: string, path: string][] = [
  ['GET', '/_toolkit'],
  ['GET', '/_toolkit/dashboard.js'],
  ['GET', '/_toolkit/snapshot'],
  ['GET', '/_toolkit/events'],
  ['HEAD', '/_toolkit'],
  ['HEAD', '/_toolkit/dashboard.js'],
  ['HEAD', '/_toolkit/snapshot'],
  ['HEAD', '/_toolkit/events'],
];

describe.each(PLATFORMS)('unsafeNoAuth on %s', (platform) => {
  let port: number;
  beforeAll(async () => {
    port = await dashboardApp(platform, { unsafeNoAuth: true });
  });
  afterAll(() => closeToolkitApps());

  it.each(ROUTES)('%s %s with a foreign Host is a 403 with nothing of the dashboard', async (method, path) => {
    const res = await ask(port, path, `rebind.attacker.example:${port}`, { method });
    expect([res.status, DASHBOARD_CONTENT.test(res.body), res.type.startsWith('text/event-stream')]).toEqual([
      403,
      false,
      false,
    ]);
  });

  it.each(ROUTES)('%s %s with a loopback Host is served', async (method, path) => {
    const res = await ask(port, path, `localhost:${port}`, { method });
    expect(res.status).toBe(200);
  });

  it('answers loopback names and addresses (port ignored, IPv6 in brackets), refuses every other name', async () => {
    const allowed = [
      `127.0.0.1:${port}`,
      '127.0.0.1',
      '127.45.6.7:80',
      'localhost',
      `LocalHost:${port}`,
      'localhost.',
      `app.localhost:${port}`,
      'a.b.localhost',
      `[::1]:${port}`,
      '[::1]',
      '[0:0:0:0:0:0:0:1]',
    ];
    const refused = [
      `rebind.attacker.example:${port}`,
      'rebind.attacker.example',
      `localhost.attacker.example:${port}`,
      'attacker-localhost',
      'localhostx',
      `127.0.0.1.attacker.example:${port}`,
      '127.0.0.256',
      '128.0.0.1',
      '0.0.0.0',
      '2130706433',
      `10.0.0.5:${port}`,
      '[::2]',
      `[::ffff:a00:5]:${port}`,
      '::1',
      `localhost:${port}x`,
      'localhost:-1',
      'local host',
    ];
    const statuses = async (hosts: string[]) => {
      const seen: [string, number][] = [];
      for (const host of hosts) seen.push([host, (await ask(port, '/_toolkit/snapshot', host)).status]);
      return seen;
    };
    expect(await statuses(allowed)).toEqual(allowed.map((h) => [h, 200]));
    expect(await statuses(refused)).toEqual(refused.map((h) => [h, 403]));
  });

  it('a request without a Host header (HTTP/1.0: no browser sends one) is served', async () => {
    const snapshot = await askWithoutHost(port, '/_toolkit/snapshot');
    expect([snapshot.status, DASHBOARD_CONTENT.test(snapshot.body)]).toEqual([200, true]);
    expect((await askWithoutHost(port, '/_toolkit')).status).toBe(200);
  });

  it('X-Forwarded-Host does not let a foreign Host in, nor turn a loopback one away', async () => {
    const forwarded = { 'x-forwarded-host': 'localhost', forwarded: 'host=localhost' };
    expect((await ask(port, '/_toolkit', 'rebind.attacker.example', { headers: forwarded })).status).toBe(403);
    const foreign = { 'x-forwarded-host': 'rebind.attacker.example' };
    expect((await ask(port, '/_toolkit', '127.0.0.1', { headers: foreign })).status).toBe(200);
  });
});

describe.each(PLATFORMS)('allowedHosts on %s', (platform) => {
  afterEach(() => closeToolkitApps());

  it('unsafeNoAuth: a listed name (or a name under a listed `.domain`) is served as well as loopback', async () => {
    const port = await dashboardApp(platform, {
      unsafeNoAuth: true,
      allowedHosts: ['Dash.Internal', '.corp.example', '10.0.0.5', '[fd00::5]', 'bücher.example'],
    });
    const hosts = {
      [`dash.internal:${port}`]: 200,
      'DASH.INTERNAL.': 200,
      'corp.example': 200,
      [`ops.corp.example:${port}`]: 200,
      'a.b.corp.example': 200,
      '10.0.0.5': 200,
      '[fd00::5]:8080': 200,
      'xn--bcher-kva.example': 200,
      [`localhost:${port}`]: 200,
      '[::1]': 200,
      internal: 403,
      'dash.internal.attacker.example': 403,
      'xcorp.example': 403,
      'corp.example.attacker.example': 403,
      '10.0.0.6': 403,
      '[fd00::6]': 403,
    };
    const seen: Record<string, number> = {};
    for (const host of Object.keys(hosts)) seen[host] = (await ask(port, '/_toolkit/snapshot', host)).status;
    expect(seen).toEqual(hosts);
    for (const [method, path] of ROUTES) {
      const res = await ask(port, path, 'rebind.attacker.example', { method });
      expect([method, path, res.status]).toEqual([method, path, 403]);
    }
  });

  it('with a guard the Host is not checked (the guard decides), unless allowedHosts is given', async () => {
    const operator = { 'x-operator': 'yes' };
    const open = await dashboardApp(platform, { guard: OperatorGuard });
    expect((await ask(open, '/_toolkit', 'dash.example.com', { headers: operator })).status).toBe(200);
    expect((await ask(open, '/_toolkit', 'dash.example.com')).status).toBe(403);
    const listed = await dashboardApp(platform, { guard: OperatorGuard, allowedHosts: ['dash.example.com'] });
    const seen = [];
    for (const [method, path] of ROUTES) {
      const foreign = await ask(listed, path, 'rebind.attacker.example', { method, headers: operator });
      const own = await ask(listed, path, 'dash.example.com', { method, headers: operator });
      const anonymous = await ask(listed, path, 'dash.example.com', { method });
      seen.push([method, path, foreign.status, own.status, anonymous.status]);
    }
    expect(seen).toEqual(ROUTES.map(([method, path]) => [method, path, 403, 200, 403]));
  });
});

describe.each(PLATFORMS)('a refused Host on %s', (platform) => {
  afterEach(() => closeToolkitApps());

  it('is answered with a plain 403 that does not echo it, and logged once per 10 s naming it and the remedy', async () => {
    const { warnings, logger } = recordingLogger();
    const port = await dashboardApp(platform, { unsafeNoAuth: true }, logger);
    const host = 'x.attacker.example<script>';
    const answers = [];
    for (let i = 0; i < 3; i++) answers.push(await ask(port, '/_toolkit', host));
    expect(answers.map((a) => [a.status, a.type.startsWith('application/json'), JSON.parse(a.body)])).toEqual(
      answers.map(() => [403, true, { statusCode: 403, error: 'Forbidden', message: 'Host not allowed' }]),
    );
    const refused = warnings.filter((w) => w.includes('refused a dashboard request'));
    expect(refused).toEqual([
      'refused a dashboard request for Host "x.attacker.example<script>": only loopback names and allowedHosts are ' +
        'served (add the name the dashboard is reached by to allowedHosts)',
    ]);
  });
});

describe('allowedHosts option', () => {
  afterEach(() => closeToolkitApps());

  it('a wrong type, a misspelling or an entry that is not a host name is an InvalidOptionsError at startup', async () => {
    const start = (options: object) =>
      dashboardApp('express', { unsafeNoAuth: true, ...options }).catch((e: unknown) => e);
    const notArray = await start({ allowedHosts: 'dash.internal' });
    expect(notArray).toBeInstanceOf(InvalidOptionsError);
    expect((notArray as Error).message).toContain('allowedHosts must be an array of host names, got "dash.internal"');
    const typo = await start({ allowedHost: ['dash.internal'] });
    expect((typo as Error).message).toContain('allowedHost is not a known option (did you mean allowedHosts?)');
    const entries = await start({
      allowedHosts: ['ok.example', 'dash.internal:3000', 'http://dash.internal', '*.corp.example', '', 42, 'a b', '.'],
    });
    expect(entries).toBeInstanceOf(InvalidOptionsError);
    const message = (entries as Error).message;
    expect(message).not.toContain('allowedHosts[0]');
    for (const [i, shown] of [
      [1, '"dash.internal:3000"'],
      [2, '"http://dash.internal"'],
      [3, '"*.corp.example"'],
      [4, '""'],
      [5, '42'],
      [6, '"a b"'],
      [7, '"."'],
    ] as const) {
      expect([i, message.includes(`allowedHosts[${i}] must be a host name`), message.includes(shown)]).toEqual([
        i,
        true,
        true,
      ]);
    }
    expect(message).toContain('(no port');
    expect(message).toContain('.corp.example');
  });
});
