/**
 * An outsider's review of the behavioural prose of docs/connections.md and README.md (module and connections): one
 * case per claim no other spec proved, each quoting it. Real servers only (private ones: these tests pause, kill,
 * start late, or move cluster slots).
 */
import 'reflect-metadata';
import { type Cluster, Redis } from 'ioredis';
import {
  CacheService,
  LockService,
  PubSubService,
  RateLimitService,
  REDIS_CLIENT,
  RedisToolkitHealth,
  RedisUnavailableError,
  SessionService,
} from '../../lib/index.js';
import { generateSessionId, RedisConnections } from '../../lib/advanced.js';
import type { RedisClient } from '../../lib/common/lua-script.js';
import { countUnhandledRejections } from '../support/unhandled.js';
import { trackForCleanup } from '../support/private-servers.js';
import { startRedisCluster, type RedisClusterHandle } from '../support/redis-cluster.js';
import { getFreePort, startRedisServer, type RedisServerHandle } from '../support/redis-server.js';
import { closeToolkitApps, createToolkitApp } from '../support/toolkit-app.js';
import { recordingLogger } from '../support/recording-logger.js';
import { within } from '../support/timing.js';
import { settleWithin, sleep, waitFor } from '../support/wait.js';

afterEach(closeToolkitApps);

const outcome = (p: Promise<unknown>): Promise<unknown> =>
  p.then(
    (v) => ({ value: v }),
    (e: unknown) => e,
  );

/** Subscribed connections on the server of `admin` now (CLIENT LIST TYPE pubsub). */
async function subscribersOn(admin: Redis): Promise<number> {
  const list = String(await admin.call('client', 'list', 'type', 'pubsub'));
  return list.split('\n').filter((line) => line.trim() !== '').length;
}

describe('README, connection behaviour: "a command that was in flight when the connection dropped is not resent"', () => {
  it('a rate-limit charge sent before the drop runs once: answered by the failure policy, counted once after', async () => {
    const server = trackForCleanup(await startRedisServer());
    const { get } = await createToolkitApp({
      target: { url: server.url },
      commandTimeout: 5_000,
      maxReconnectDelay: 200,
    });
    const limits = get(RateLimitService);
    const policy = { limit: 10, ttl: 60_000 };
    expect((await limits.consume('in-flight', policy)).remaining).toBe(9);
    const client = get<Redis>(REDIS_CLIENT);
    server.pause();
    try {
      const charge = limits.consume('in-flight', policy);
      await sleep(100); // the tick's batch is written: the request waits in the stopped server's socket
      client.stream.destroy(); // the connection drops with the charge unanswered
      const answered = await settleWithin(charge, within(1_000), 'hung' as const);
      // the failure policy answered at once (fail open), not after a resend
      expect(answered).not.toBe('hung');
      expect((answered as { degraded?: string }).degraded).toBe('fail-open');
    } finally {
      server.resume();
    }
    expect(await waitFor(() => client.status === 'ready', 5_000)).toBe(true);
    await sleep(200);
    // the server read the charge before the closed socket: it ran once (remaining 8), never twice (7) by a resend
    expect((await limits.peek('in-flight', policy)).remaining).toBe(8);
    expect(limits.stats().failedOpen).toBe(1);
  });
});

describe('README: "MOVED/ASK redirects are still followed" (a cluster whose slots move under the app)', () => {
  let cluster: RedisClusterHandle;
  const admins = new Map<number, Redis>();
  beforeAll(async () => {
    cluster = trackForCleanup(await startRedisCluster());
    for (const m of cluster.masters) admins.set(m.port, trackForCleanup(new Redis(m.port, '127.0.0.1')));
  }, 60_000);

  const idOf = async (port: number) => String(await admins.get(port)?.call('cluster', 'myid'));

  /** The toolkit's keys matching `pattern`, and the master (port) holding them; all of one slot. */
  async function keysOf(pattern: string): Promise<{ port: number; keys: string[]; slot: number }> {
    for (const [port, admin] of admins) {
      const [, keys] = await admin.scan('0', 'MATCH', pattern, 'COUNT', 1000);
      if (keys.length === 0) continue;
      const slots = new Set(
        await Promise.all(keys.map(async (k) => Number(await admin.call('cluster', 'keyslot', k)))),
      );
      expect(slots.size).toBe(1);
      return { port, keys, slot: [...slots][0] };
    }
    throw new Error(`no key matches ${pattern}`);
  }

  /** Starts moving `slot` from `from` to another master, its keys already moved: `from` answers ASK for them. */
  async function migrate(slot: number, from: number, keys: string[]): Promise<number> {
    const to = [...admins.keys()].find((p) => p !== from) as number;
    const source = admins.get(from) as Redis;
    const target = admins.get(to) as Redis;
    await target.call('cluster', 'setslot', String(slot), 'importing', await idOf(from));
    await source.call('cluster', 'setslot', String(slot), 'migrating', await idOf(to));
    await source.call('migrate', '127.0.0.1', String(to), '', '0', '5000', 'keys', ...keys);
    return to;
  }

  /** Ends the move: every master says `to` owns `slot` (the app's slot table is now stale: MOVED). */
  async function finish(slot: number, to: number): Promise<void> {
    const id = await idOf(to);
    for (const admin of admins.values()) await admin.call('cluster', 'setslot', String(slot), 'node', id);
  }

  it('ASK while the slot migrates, MOVED once it moved: values and counters follow; a two-key script waits (TRYAGAIN)', async () => {
    const { warnings, errors, logger } = recordingLogger();
    const { get } = await createToolkitApp({
      target: { cluster: cluster.startupNodes },
      commandTimeout: 2_000,
      keyPrefix: 'rtk-move:',
      logger,
    });
    const cache = get(CacheService);
    const limits = get(RateLimitService);
    const policy = { limit: 10, ttl: 60_000 };
    await cache.set('slot-move-value', 'v1');
    expect((await limits.consume('slot-move-counter', policy)).remaining).toBe(9);
    const value = await keysOf('rtk-move:cache:*slot-move-value*');
    const counter = await keysOf('rtk-move:rl:*');
    expect(counter.slot).not.toBe(value.slot);

    const valueTo = await migrate(value.slot, value.port, value.keys);
    const counterTo = await migrate(counter.slot, counter.port, counter.keys);
    // ASK: the old owner no longer has the key; the call is redirected to the importing master
    expect(await cache.get('slot-move-value')).toBe('v1');
    // A decision's script names its counter and its block key (absent): a migrating slot answers a call on several
    // keys, some missing, with TRYAGAIN until the move ends, so it fails by the failure policy (docs/connections.md)
    const during = await limits.consume('slot-move-counter', policy);
    expect(during.degraded).toBe('fail-open');
    expect(warnings.join('\n')).toMatch(/rate limiting decision failed: Command timed out/);

    await finish(value.slot, valueTo);
    await finish(counter.slot, counterTo);
    // MOVED: the app's slot table still names the old owner
    await cache.set('slot-move-value', 'v2');
    expect(await cache.get('slot-move-value')).toBe('v2');
    const moved = await limits.consume('slot-move-counter', policy);
    expect(moved.degraded).toBeUndefined();
    expect(moved.remaining).toBe(8); // the moved counter, charged once before (the failed-open call never ran)
    expect((await keysOf('rtk-move:cache:*slot-move-value*')).port).toBe(valueTo);
    expect((await keysOf('rtk-move:rl:*')).port).toBe(counterTo);
    expect(limits.stats().failedOpen).toBe(1);
    expect(cache.stats().errors).toBe(0);
    expect(errors).toEqual([]);
  });

  it('a call that times out while its slot migrates (TRYAGAIN) drops no connection: no other call fails with it', async () => {
    const { get } = await createToolkitApp({
      target: { cluster: cluster.startupNodes },
      commandTimeout: 400,
      keyPrefix: 'rtk-again:',
    });
    const limits = get(RateLimitService);
    const policy = { limit: 10, ttl: 60_000 };
    expect((await limits.consume('again-counter', policy)).remaining).toBe(9);
    const counter = await keysOf('rtk-again:rl:*');
    await migrate(counter.slot, counter.port, counter.keys);
    // each master's own connection (the cluster client's node connections): how often each closed
    const closes = new Map<string, number>();
    for (const node of get<Cluster>(REDIS_CLIENT).nodes('master')) {
      const key = `${node.options.host}:${node.options.port}`;
      closes.set(key, 0);
      node.on('close', () => closes.set(key, (closes.get(key) ?? 0) + 1));
    }
    const timedOut = await limits.consume('again-counter', policy);
    expect(timedOut.degraded).toBe('fail-open'); // its commandTimeout ran out while the cluster asked again
    await sleep(500);
    // before: the masters that had answered it (ASK, TRYAGAIN) had their connection dropped (every call in flight on
    // them failed) and reopened
    expect([...closes.values()]).toEqual([0, 0, 0]);
    expect(
      await get(CacheService)
        .set('after-again', 1)
        .then(() => 'ok'),
    ).toBe('ok');
  });
});

describe('docs/connections.md, which Redis each part uses: subscriber connections', () => {
  let main: RedisServerHandle;
  let other: RedisServerHandle;
  let mainAdmin: Redis;
  let otherAdmin: Redis;
  beforeAll(async () => {
    main = trackForCleanup(await startRedisServer());
    other = trackForCleanup(await startRedisServer());
    mainAdmin = trackForCleanup(new Redis(main.port, '127.0.0.1'));
    otherAdmin = trackForCleanup(new Redis(other.port, '127.0.0.1'));
  });
  afterEach(async () => {
    await closeToolkitApps();
    expect(
      await waitFor(async () => (await subscribersOn(mainAdmin)) + (await subscribersOn(otherAdmin)) === 0, 5_000),
    ).toBe(true);
  });

  it('"when cache and pub/sub run on the same connection they share one subscriber connection per app instance"', async () => {
    const { get } = await createToolkitApp({
      target: { url: main.url },
      connections: { volatile: { url: other.url } },
      cache: { l1: { max: 100, ttl: 60_000, invalidation: 'bus' } },
    });
    await get(PubSubService).subscribe('news', () => undefined);
    await get(CacheService).set('shared-sub', 1);
    expect(await get(CacheService).get('shared-sub')).toBe(1);
    await sleep(300);
    expect(await subscribersOn(mainAdmin)).toBe(1);
    expect(await subscribersOn(otherAdmin)).toBe(0);
  });

  it('"otherwise the cache\'s connection gets a subscriber of its own" (L1 invalidations on the cache\'s server)', async () => {
    const { get } = await createToolkitApp({
      target: { url: main.url },
      connections: { volatile: { url: other.url } },
      cache: { connection: 'volatile', l1: { max: 100, ttl: 60_000, invalidation: 'bus' } },
    });
    await get(PubSubService).subscribe('news', () => undefined);
    await get(CacheService).set('own-sub', 1);
    expect(await get(CacheService).get('own-sub')).toBe(1);
    expect(await waitFor(async () => (await subscribersOn(otherAdmin)) === 1, 3_000)).toBe(true);
    expect(await subscribersOn(mainAdmin)).toBe(1);
    expect(await subscribersOn(otherAdmin)).toBe(1);
  });

  it('"the locks\' waiting: a subscriber connection of the lock\'s connection, opened the first time a caller waits, quit on shutdown"', async () => {
    const app = await createToolkitApp({
      target: { url: main.url },
      connections: { locks: { url: other.url } },
      lock: { connection: 'locks' },
    });
    const locks = app.get(LockService);
    const held = await locks.acquire('waited-on', { ttl: 10_000 });
    await sleep(300);
    expect(await subscribersOn(otherAdmin)).toBe(0); // no wait yet: no subscriber
    const waiter = locks.acquire('waited-on', { ttl: 10_000, waitMs: 5_000 });
    expect(await waitFor(async () => (await subscribersOn(otherAdmin)) === 1, 3_000)).toBe(true);
    await held.release();
    const granted = await waiter;
    expect(granted.isHeld).toBe(true);
    await granted.release();
    expect(await subscribersOn(otherAdmin)).toBe(1);
    expect(await subscribersOn(mainAdmin)).toBe(0); // never on the default connection
    await app.close();
    expect(await waitFor(async () => (await subscribersOn(otherAdmin)) === 0, 3_000)).toBe(true);
  });
});

describe('docs/connections.md, start: "every configured connection is opened at start ... or in the background with lazyConnect"', () => {
  it('a named connection whose server is down at start connects by itself once the server is up, with no call made', async () => {
    const up = trackForCleanup(await startRedisServer());
    const port = await getFreePort();
    const { get } = await createToolkitApp({
      target: { url: up.url },
      connections: { sessions: { url: `redis://127.0.0.1:${port}` } },
      session: { connection: 'sessions' },
      lazyConnect: true,
      maxReconnectDelay: 200,
    });
    const sessions = get(RedisConnections).get('sessions');
    expect(sessions.status).not.toBe('ready');
    trackForCleanup(await startRedisServer({ port }));
    // nothing is asked of it: the background connect finds the server
    expect(await waitFor(() => sessions.status === 'ready', 5_000)).toBe(true);
    const health = await get(RedisToolkitHealth).check();
    expect(health.status).toBe('up');
    expect(health.connections?.sessions.status).toBe('up');
  });
});

describe('docs/connections.md, start: "with lazyConnect these are logged as errors once connected, and health is ... degraded for a replica"', () => {
  it('a replica given with lazyConnect: health is degraded, naming the replica and its master', async () => {
    const master = trackForCleanup(await startRedisServer());
    const replica = trackForCleanup(
      await startRedisServer({ args: ['--replicaof', '127.0.0.1', String(master.port)] }),
    );
    const { get } = await createToolkitApp({ target: { url: replica.url }, lazyConnect: true });
    const health = get(RedisToolkitHealth);
    expect(await waitFor(async () => (await health.check()).status === 'degraded', 5_000)).toBe(true);
    const result = await health.check();
    expect(result.role).toBe('slave');
    expect(result.reason).toContain(`replica of 127.0.0.1:${master.port}`);
  });
});

describe('docs/connections.md, health: "error / reason say which one pulls the status down"', () => {
  it('a named connection whose server is gone: the error names the connection, its address and the cause', async () => {
    const kept = trackForCleanup(await startRedisServer());
    const doomed = trackForCleanup(await startRedisServer());
    const { get } = await createToolkitApp({
      target: { url: kept.url },
      connections: { volatile: { url: doomed.url } },
      cache: { connection: 'volatile' },
      commandTimeout: 300,
    });
    await doomed.kill();
    const health = get(RedisToolkitHealth);
    // once a reconnect was refused (the first comes within ~120 ms), the error says so
    expect(await waitFor(async () => /last error/.test((await health.check()).error ?? ''), 3_000)).toBe(true);
    const down = await health.check();
    expect(down.status).toBe('down');
    expect(down.connections?.default.status).toBe('up');
    const where = `redis://127.0.0.1:${doomed.port}`;
    // the page's example was `connection "volatile": Connection is closed.`, which names neither where nor why
    expect(down.error).toBe(
      `connection "volatile": not connected to Redis at ${where} (connection "volatile") (reconnecting); ` +
        `last error: connect ECONNREFUSED 127.0.0.1:${doomed.port}`,
    );
  });
});

describe('README: calls in flight when app.close() runs on a server that stopped answering', () => {
  it('each settles by its failure policy within the bound, and none leaves an unhandled rejection', async () => {
    const server = trackForCleanup(await startRedisServer());
    const app = await createToolkitApp({ target: { url: server.url }, commandTimeout: 800 });
    const cache = app.get(CacheService);
    await cache.set('k', 1);
    const unhandled = countUnhandledRejections();
    server.pause();
    try {
      const calls = {
        cacheGet: outcome(cache.get('k')),
        consume: outcome(app.get(RateLimitService).consume('closing', { limit: 5, ttl: 60_000 })),
        session: outcome(app.get(SessionService).exists(generateSessionId())),
        lock: outcome(app.get(LockService).acquire('closing', { ttl: 5_000 })),
        publish: outcome(app.get(PubSubService).publish('closing', 'x')),
        raw: outcome(app.get<RedisClient>(REDIS_CLIENT).get('k')),
      };
      await sleep(50); // written: the server holds them unanswered
      const started = Date.now();
      await app.close();
      const settled = await settleWithin(Promise.all(Object.values(calls)), within(1_000), 'hung' as const);
      expect(settled).not.toBe('hung');
      expect(Date.now() - started).toBeLessThan(within(1_500));
      const [cacheGet, consume, session, lock, publish, raw] = settled as unknown[];
      expect(cacheGet).toEqual({ value: undefined }); // a miss (fail open)
      expect((consume as { value: { degraded?: string } }).value.degraded).toBe('fail-open');
      expect(session).toBeInstanceOf(RedisUnavailableError);
      expect(lock).toBeInstanceOf(RedisUnavailableError);
      expect(publish).toBeInstanceOf(RedisUnavailableError);
      expect(raw).toBeInstanceOf(Error);
      await sleep(200);
      expect(unhandled.reasons).toEqual([]);
    } finally {
      unhandled.stop();
      server.resume();
    }
  });
});
