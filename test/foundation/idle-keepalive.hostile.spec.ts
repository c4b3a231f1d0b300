/**
 * redis.conf `timeout 1` on connections the toolkit uses but does not create one by one: a Redis Cluster's own node
 * connections (ioredis keeps one `Redis` per master, dropped for good when the server closes it) and a client the
 * user passed as `connection: { client }`. The single-server case of the toolkit's own connections is in
 * operator-settings.hostile.spec.ts. After the first idle close (which the toolkit cannot foresee: CONFIG is not in its
 * ACL line) each of them gets a PING when idle, so Redis closes none of them again and no call fails for it.
 */
import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import { Cluster, Redis } from 'ioredis';
import { CacheService, PubSubService, RateLimitService, SessionService } from '../../lib/index.js';
import { RedisConnection } from '../../lib/advanced.js';
import { useDisposableCluster } from '../support/disposable-cluster.js';
import { type IdleCall, idleRounds, roundServices } from '../support/idle-timeout.js';
import { trackForCleanup, usePrivateRedis } from '../support/private-servers.js';
import { recordingLogger } from '../support/recording-logger.js';
import { closeToolkitApps, createToolkitApp, type ToolkitApp } from '../support/toolkit-app.js';
import { sleep, waitFor } from '../support/wait.js';

afterEach(closeToolkitApps);

const rand = () => randomBytes(4).toString('hex');
const policy = { limit: 1_000, ttl: 60_000 };

/**
 * Three idle rounds (idleRounds) of a call of each feature (keys on every master of a cluster). Returns the failed
 * calls, by name; every value is checked.
 */
async function featureRounds(app: ToolkitApp, sessionId: string, heard: unknown[]): Promise<string[]> {
  const { cache, limits, sessions, locks, pubsub, health } = roundServices(app);
  const failures = await idleRounds((round) => [
    ...['a', 'b', 'c', 'd', 'e', 'f'].map((k): IdleCall => [`cache get ${k}`, cache.get(k), `v-${k}`]),
    ...['a', 'b', 'c', 'd', 'e', 'f'].map(
      (k): IdleCall => [
        `rate limit ${k}`,
        limits.consume(k, policy).then((d) => d.allowed && d.degraded === undefined),
        true,
      ],
    ),
    ['session get', sessions.get(sessionId).then((s) => s?.data), { plan: 'pro' }],
    ['lock', locks.acquire(`res-${round}`, { ttl: 5_000 }).then((l) => l.release()), undefined],
    ['publish', pubsub.publish('news', round).then((n) => n >= 1), true],
    ['health', health.check().then((h) => h.status), 'up'],
  ]);
  const allHeard = await waitFor(() => heard.length === 3, 3_000);
  expect({ allHeard, heard, failures }).toEqual({ allHeard: true, heard: [0, 1, 2], failures });
  return failures;
}

/** The data every round reads: cache entries on every master, a session, a subscription. */
async function seed(app: ToolkitApp): Promise<{ sessionId: string; heard: unknown[] }> {
  const cache = app.get(CacheService);
  for (const k of ['a', 'b', 'c', 'd', 'e', 'f']) await cache.set(k, `v-${k}`);
  const session = await app.get(SessionService).create('alice', { plan: 'pro' });
  const heard: unknown[] = [];
  await app.get(PubSubService).subscribe('news', (m) => void heard.push(m));
  return { sessionId: session.id, heard };
}

describe('redis.conf `timeout 1` on a `{ client }` the user passed', () => {
  const redis = usePrivateRedis({ args: ['--timeout', '1'] });

  it('after its first idle close the client stays open: no call fails, one warning names the setting, and app.close() leaves no listener on it', async () => {
    const { warnings, errors, logger } = recordingLogger();
    const client = trackForCleanup(new Redis(redis.server.url, { commandTimeout: 1_000 }));
    await client.ping();
    const listenersBefore = client.eventNames().map((e) => [String(e), client.listenerCount(e)]);
    const app = await createToolkitApp({ target: { client }, keyPrefix: `uc${rand()}:`, logger });
    const { sessionId, heard } = await seed(app);
    let closes = 0;
    const countClose = () => closes++;
    client.on('close', countClose);
    // The first idle close: the toolkit cannot know the setting before it.
    expect(await waitFor(() => closes === 1, 4_000)).toBe(true);
    expect(await waitFor(() => client.status === 'ready', 2_000)).toBe(true);
    const failures = await featureRounds(app, sessionId, heard);
    expect(failures).toEqual([]);
    // no close after the first: each would fail the calls made until the reconnect
    expect(closes).toBe(1);
    expect(app.get(RateLimitService).stats().failedOpen).toBe(0);
    const said = warnings.filter((w) => /idle/.test(w));
    expect(said).toHaveLength(1);
    expect(said[0]).toMatch(/closed a connection idle for [\d.]+ s.*`timeout`.*PING/);
    expect(errors).toEqual([]);
    client.off('close', countClose);
    await app.close();
    // the client is the user's: open, and as the toolkit found it (no listener, no PING any more)
    expect(client.status).toBe('ready');
    expect(client.eventNames().map((e) => [String(e), client.listenerCount(e)])).toEqual(listenersBefore);
    // nor on its socket: as many listeners as on a client no app ever used
    const reference = trackForCleanup(new Redis(redis.server.url));
    await reference.ping();
    for (const event of ['data', 'end', 'close'])
      expect([event, client.stream.listenerCount(event)]).toEqual([event, reference.stream.listenerCount(event)]);
    let pinged = 0;
    const ping = client.ping.bind(client);
    client.ping = ((...args: Parameters<Redis['ping']>) => {
      pinged++;
      return ping(...args);
    }) as Redis['ping'];
    await sleep(1_500);
    expect(pinged).toBe(0);
  }, 40_000);
});

describe('redis.conf `timeout 1` on every master of a Redis Cluster', () => {
  const cluster = useDisposableCluster();

  it("after the first idle closes the cluster's node connections stay open: no call fails, no node connection is dropped again, one warning", async () => {
    for (const m of cluster().masters) {
      const admin = trackForCleanup(new Redis(m.port, m.host));
      await admin.config('SET', 'timeout', '1');
    }
    const { warnings, errors, logger } = recordingLogger();
    const app = await createToolkitApp({
      target: { cluster: cluster().startupNodes },
      keyPrefix: `cl${rand()}:`,
      logger,
    });
    const main = app.get(RedisConnection).client as Cluster;
    const { sessionId, heard } = await seed(app);
    // each master's connection dropped, by its address: the first idle close of each is expected (the toolkit cannot
    // know the setting before it), a second of any is the bug. Counted by address, not as a total read 1 s after the
    // first drop: Redis closes an idle client at its next clientsCron check, 1 to 2 s after it went idle, and a loaded
    // master's first close may come after that second
    const drops = new Map<string, number>();
    main.on('-node', (node: Redis) => {
      const at = `${node.options.host}:${node.options.port}`;
      drops.set(at, (drops.get(at) ?? 0) + 1);
    });
    expect(await waitFor(() => drops.size >= 1, 4_000)).toBe(true);
    const failures = await featureRounds(app, sessionId, heard);
    expect(failures).toEqual([]);
    expect([...drops.values()].filter((n) => n > 1)).toEqual([]);
    expect(drops.size).toBeLessThanOrEqual(cluster().masters.length);
    expect(app.get(RateLimitService).stats().failedOpen).toBe(0);
    expect(warnings.filter((w) => /closed a connection idle for [\d.]+ s.*`timeout`.*PING/.test(w))).toHaveLength(1);
    expect(errors).toEqual([]);
  }, 60_000);
});
