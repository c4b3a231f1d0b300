import 'reflect-metadata';
import { Redis } from 'ioredis';
import { RedisConnection } from '../../lib/advanced.js';
import { CacheService, RedisToolkitHealth } from '../../lib/index.js';
import { useDisposableCluster } from '../support/disposable-cluster.js';
import { trackForCleanup } from '../support/private-servers.js';
import { startRedisServer } from '../support/redis-server.js';
import { closeToolkitApps, createToolkitApp } from '../support/toolkit-app.js';
import { sleep, waitFor } from '../support/wait.js';
import { recordingLogger } from '../support/recording-logger.js';

afterEach(closeToolkitApps);

const timing = { connectTimeout: 500, commandTimeout: 300, maxReconnectDelay: 200 } as const;
/** ioredis's wording for a command on a connection that is not up: says nothing the operator can act on. */
const IOREDIS_TEXT = /enableOfflineQueue|Stream isn't writeable|Connection is closed/;

describe('RedisToolkitHealth with the server killed under a running app', () => {
  it('single server: error names the address and the cause, never the offline-queue text', async () => {
    const server = trackForCleanup(await startRedisServer());
    const { get } = await createToolkitApp({ target: { url: server.url }, ...timing });
    const health = get(RedisToolkitHealth);
    expect((await health.check()).status).toBe('up');
    await server.kill();
    await sleep(300);
    const result = await health.check();
    expect(result.status).toBe('down');
    // before: "Stream isn't writeable and enableOfflineQueue options is false"
    expect(result.error).not.toMatch(IOREDIS_TEXT);
    expect(result.error).toContain(`not connected to Redis at redis://127.0.0.1:${server.port}`);
    expect(result.error).toMatch(/ECONNREFUSED/);
    await server.restart();
    expect(await waitFor(async () => (await health.check()).status === 'up', 10_000)).toBe(true);
    expect((await health.check()).error).toBeUndefined();
  });

  it('a password in the url never shows in the error', async () => {
    const server = trackForCleanup(await startRedisServer({ password: 's3cr3t-pw' }));
    const { get } = await createToolkitApp({ target: { url: server.url }, ...timing });
    await server.kill();
    await sleep(300);
    const result = await get(RedisToolkitHealth).check();
    expect(result.error).toContain(`127.0.0.1:${server.port}`);
    expect(result.error).not.toContain('s3cr3t-pw');
  });

  it('the L1 tracking warning says the server is unreachable, not the offline-queue text', async () => {
    const server = trackForCleanup(await startRedisServer());
    const { warnings, logger } = recordingLogger();
    const { get } = await createToolkitApp({
      target: { url: server.url },
      ...timing,
      cache: { l1: { max: 100, ttl: 60_000, invalidation: 'tracking' } },
      logger,
    });
    await get(CacheService).set('k', 1);
    // The main connection down while the tracking connection comes back: re-enabling tracking (CLIENT TRACKING on
    // the main connection) fails, which ioredis words "Connection is closed." (before: logged as such). Killing the
    // server instead logged only the connections' own errors, or not even those within the throttle interval.
    get(RedisConnection).client.disconnect();
    const admin = trackForCleanup(new Redis(server.port, '127.0.0.1'));
    expect(Number(await admin.call('CLIENT', 'KILL', 'USER', 'default', 'SKIPME', 'yes'))).toBeGreaterThan(0);
    const failed = () => warnings.filter((w) => w.includes('tracking could not be re-enabled'));
    expect(await waitFor(() => failed().length > 0, 5_000)).toBe(true);
    expect(failed()[0]).toContain(`not connected to Redis at redis://127.0.0.1:${server.port}`);
    expect(failed().filter((w) => IOREDIS_TEXT.test(w))).toEqual([]);
  });

  describe('cluster', () => {
    const cluster = useDisposableCluster();

    it('every node killed: error names the cluster and a cause, never the offline-queue text', async () => {
      const { get } = await createToolkitApp({ target: { cluster: cluster().startupNodes }, ...timing });
      const health = get(RedisToolkitHealth);
      expect((await health.check()).status).toBe('up');
      const nodes = cluster().nodes;
      try {
        await Promise.all(nodes.map((n) => n.kill()));
        await sleep(500);
        const result = await health.check();
        expect(result.status).toBe('down');
        expect(result.error).not.toMatch(IOREDIS_TEXT);
        expect(result.error).toContain(`cluster(127.0.0.1:${nodes[0].port}`);
      } finally {
        await Promise.all(nodes.map((n) => n.restart()));
      }
    }, 30_000);
  });
});
