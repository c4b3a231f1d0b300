/**
 * An app booted on clients the user gave (`connection: { client }`, a `{ client }` in `connections`) leaves each of them
 * at app.close() as it found it, after every feature used it once (many listeners are added lazily: the first wait on
 * a lock, the first subscription, a failed call): no listener on any event, no tracking, name or subscription left
 * on the connection, no ref'd timer of ours, and the client still ready and answering (the toolkit does not quit it).
 * connection-listeners.spec.ts boots and closes 12 apps on one client with the default features; this file uses them.
 */
import 'reflect-metadata';
import { randomUUID } from 'node:crypto';
import { type AddressInfo, createServer } from 'node:net';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { Cluster, Redis } from 'ioredis';
import {
  CacheService,
  LockService,
  PubSubService,
  RateLimitService,
  RedisToolkitHealth,
  RedisUnavailableError,
  SessionService,
} from '../../lib/index.js';
import { KeyBuilder } from '../../lib/common/keys.js';
import { DashboardService, RedisToolkitDashboardModule } from '../../lib/dashboard/index.js';
import { connectClient, createGatewayApp } from '../support/pubsub-gateway.js';
import { trackForCleanup, usePrivateRedis } from '../support/private-servers.js';
import { startQuorumServers } from '../support/quorum.js';
import { sharedServers } from '../support/shared-servers.js';
import { closeToolkitApps, createToolkitApp, type ToolkitApp, type ToolkitAppOptions } from '../support/toolkit-app.js';
import { bootToolkitApp } from '../support/toolkit-boot.js';
import { settleWithin, waitFor } from '../support/wait.js';

afterEach(closeToolkitApps);

const userClient = (port = sharedServers().single.port): Redis =>
  trackForCleanup(new Redis(port, '127.0.0.1', { commandTimeout: 2_000 }));

/** What an app may change on a connection of the user's: its listeners, and its state on the server. */
async function nodeStateOf(client: Redis): Promise<Record<string, unknown>> {
  const listeners: Record<string, number> = {};
  for (const event of client.eventNames()) listeners[String(event)] = client.listenerCount(event);
  const info = String(await client.call('CLIENT', 'INFO'));
  const field = (name: string) => new RegExp(`(?:^| )${name}=(\\S*)`).exec(info)?.[1];
  const tracking = (await client.call('CLIENT', 'TRACKINGINFO')) as unknown[];
  return {
    listeners,
    status: client.status,
    name: field('name'),
    flags: field('flags'),
    subscriptions: [field('sub'), field('psub'), field('ssub')],
    tracking: tracking[1],
  };
}

/** The same for a user's client: one server's connection, or a cluster client's own listeners and each node's. */
async function stateOf(client: Redis | Cluster): Promise<Record<string, unknown>> {
  if (!(client instanceof Cluster)) return nodeStateOf(client);
  const listeners: Record<string, number> = {};
  for (const event of client.eventNames()) listeners[String(event)] = client.listenerCount(event);
  const nodes: Record<string, unknown> = {};
  for (const node of client.nodes('all')) nodes[`${node.options.host}:${node.options.port}`] = await nodeStateOf(node);
  return { listeners, status: client.status, nodes };
}

/** The process's active resources that keep it alive (ref'd timers, sockets, servers), counted per kind. */
function activeResources(): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const kind of process.getActiveResourcesInfo()) counts[kind] = (counts[kind] ?? 0) + 1;
  return counts;
}

/** Whether every kind of `now` is at most as many as in `before`. */
const noMoreThan = (now: Record<string, number>, before: Record<string, number>): boolean =>
  Object.entries(now).every(([kind, n]) => n <= (before[kind] ?? 0));

type Timer = NodeJS.Timeout & { _destroyed?: boolean };

/**
 * Notes every timer made (setTimeout, setInterval) until `stop()`, ref'd or not: one still pending after the app closed
 * keeps what it calls alive (the closed app's objects), and a ref'd one the process too. `pending()`: where each
 * ref'd one still pending was made; `pending(false)`: each unref'd one.
 */
function trackTimers(): { stop(): void; pending(refd?: boolean): string[]; readonly made: number } {
  const made = new Map<Timer, string>();
  const g = globalThis as unknown as Record<'setTimeout' | 'setInterval', (...args: unknown[]) => Timer>;
  const originals = { setTimeout: g.setTimeout, setInterval: g.setInterval };
  for (const name of ['setTimeout', 'setInterval'] as const) {
    const original = originals[name];
    g[name] = Object.assign((...args: unknown[]) => {
      const timer = original(...args);
      const stack = new Error().stack?.split('\n').slice(2, 7).join(' <-') ?? '';
      made.set(timer, `${name}(${String(args[1] ?? 0)} ms) ${stack}`);
      return timer;
    }, original);
  }
  return {
    stop: () => Object.assign(g, originals),
    pending: (refd = true) =>
      [...made].filter(([t]) => t._destroyed !== true && t.hasRef() === refd).map(([, where]) => where),
    get made() {
      return made.size;
    },
  };
}

/**
 * Boots, runs `use`, closes, and expects every client of `clients` as it was before the boot, no timer made while the
 * app was open still pending and no more active resources than before (given a moment: ioredis's connections of the
 * app close after the app does).
 */
async function expectLeftAsFound(
  clients: (Redis | Cluster)[],
  boot: () => Promise<ToolkitApp>,
  use: (app: ToolkitApp) => Promise<void>,
  /** Unref'd timers that may still be pending (they bound work still in flight), by where they were made. */
  unrefAllowed?: RegExp,
): Promise<void> {
  for (const client of clients) await client.ping();
  const before = await Promise.all(clients.map(stateOf));
  const resources = activeResources();
  const timers = trackTimers();
  let app: ToolkitApp;
  let booted: Record<string, unknown>[] = [];
  try {
    app = await boot();
    booted = await Promise.all(clients.map(stateOf));
    await use(app);
    await app.close();
  } finally {
    timers.stop();
  }
  const unref = () => timers.pending(false).filter((where) => !unrefAllowed?.test(where));
  await waitFor(
    () => noMoreThan(activeResources(), resources) && timers.pending().length === 0 && unref().length === 0,
    3_000,
  );
  const after = await Promise.all(clients.map(stateOf));
  expect(after).toEqual(before);
  expect(timers.pending()).toEqual([]);
  expect(unref()).toEqual([]);
  // on failure, what is left: each kind's count now, against `resources`
  expect(noMoreThan(activeResources(), resources) || { now: activeResources(), before: resources }).toBe(true);
  // the toolkit's timers were seen (ioredis's command timers among them): the check above is not trivially empty
  expect(timers.made).toBeGreaterThan(0);
  // the app did use the clients (a listener at least): the comparison above is not trivially equal
  expect(booted).not.toEqual(before);
  for (const client of clients) expect(await client.ping()).toBe('PONG');
}

async function useLocks(locks: LockService, id: string): Promise<void> {
  const lock = await locks.acquire(`leaks:${id}`, { ttl: 10_000 });
  // a wait on a busy lock: joins its waiting services, the release grants it the lock (wakeOnRelease)
  const waiting = locks.acquire(`leaks:${id}`, { ttl: 10_000, retry: { count: 100, delay: 100, jitter: 0 } });
  expect(await locks.tryAcquire(`leaks:${id}`, { ttl: 10_000 })).toBeNull();
  await lock.release();
  await (await waiting).release();
  await locks.using(`leaks:using:${id}`, {}, async () => undefined);
  const semaphore = locks.semaphore(`leaks:sem:${id}`, { limit: 1 });
  const permit = await semaphore.acquire({ ttl: 10_000 });
  const queued = semaphore.acquire({ ttl: 10_000, retry: { count: 100, delay: 50, jitter: 0 } });
  await permit.release();
  await (await queued).release();
  const multi = await locks.acquireAll([`leaks:a:${id}`, `leaks:b:${id}`], { ttl: 10_000 });
  await multi.release();
}

/** A write and `reads` reads of one entry (a second read is an L1 hit where L1 is on). */
async function useCache(cache: CacheService, id: string, reads = 1): Promise<void> {
  await cache.set(`leaks:${id}`, 'v', { ttl: 60_000 });
  for (let i = 0; i < reads; i++) expect(await cache.get(`leaks:${id}`)).toBe('v');
}

/** A session created, read and destroyed. */
async function useSessions(sessions: SessionService): Promise<void> {
  const session = await sessions.create('u1', { n: 1 });
  expect(await sessions.get(session.id)).toMatchObject({ userId: 'u1' });
  await sessions.destroy(session.id);
}

/** A subscription, and a pattern subscription unless `patterns` is false (sharded pub/sub has none). */
async function usePubSub(pubsub: PubSubService, id: string, patterns = true): Promise<void> {
  const got: unknown[] = [];
  const offs = [await pubsub.subscribe(`leaks:${id}`, (m) => void got.push(m))];
  if (patterns) offs.push(await pubsub.subscribe(`leaks:${id}:*`, (m) => void got.push(m)));
  await pubsub.publish(`leaks:${id}`, 1);
  if (patterns) await pubsub.publish(`leaks:${id}:x`, 2);
  const expected = patterns ? [1, 2] : [1];
  await waitFor(() => got.length === expected.length, 5_000);
  expect(got.sort()).toEqual(expected);
  for (const off of offs) await off();
}

describe("an app on the user's clients leaves them as it found them at app.close()", () => {
  it('locks (waits, semaphore, multi), rate limits (block cache, insurance), pub/sub, health, dashboard, L1 tracking on a named connection', async () => {
    const main = userClient();
    const other = userClient();
    const id = randomUUID();
    await expectLeftAsFound(
      [main, other],
      () =>
        bootToolkitApp({
          target: { client: main },
          connections: { other: { client: other } },
          keyPrefix: `rtk-leaks-${id}:`,
          http: true,
          cache: { connection: 'other', l1: { max: 100, ttl: 60_000, invalidation: 'tracking' } },
          rateLimit: { blockCache: true, insurance: true },
          imports: [RedisToolkitDashboardModule.register({ unsafeNoAuth: true, intervalMs: 60_000 })],
        }),
      async ({ get }) => {
        await useLocks(get(LockService), id);
        const rateLimit = get(RateLimitService);
        for (let i = 0; i < 3; i++)
          await rateLimit.consume(`leaks:${id}`, { limit: 1, ttl: 60_000, blockDuration: 60_000 });
        await useCache(get(CacheService), id, 2);
        await usePubSub(get(PubSubService), id);
        expect((await get(RedisToolkitHealth).check()).status).toBe('up');
      },
    );
  });

  it.each([
    ['lazyConnect', false],
    ['the same client under connection and connections (locks, L1 tracking on it by name)', true],
  ] as const)('%s', async (_, named) => {
    const main = userClient();
    const id = randomUUID();
    const byName = named ? { connection: 'same' } : {};
    await expectLeftAsFound(
      [main],
      () =>
        bootToolkitApp({
          target: { client: main },
          ...(named ? { connections: { same: { client: main } } } : { lazyConnect: true }),
          keyPrefix: `rtk-leaks-${id}:`,
          cache: { ...byName, l1: { max: 100, ttl: 60_000, invalidation: 'tracking' } },
          lock: byName,
          rateLimit: byName,
        }),
      async ({ get }) => {
        await useLocks(get(LockService), id);
        await get(RateLimitService).consume(`leaks:${id}`, { limit: 1, ttl: 60_000 });
        await useCache(get(CacheService), id, 2);
        await usePubSub(get(PubSubService), id);
      },
    );
  });

  it('the L1 cache on the bus, and pub/sub, on the main client', async () => {
    const main = userClient();
    const id = randomUUID();
    await expectLeftAsFound(
      [main],
      () =>
        bootToolkitApp({
          target: { client: main },
          keyPrefix: `rtk-leaks-${id}:`,
          cache: { l1: { max: 100, ttl: 60_000, invalidation: 'bus' } },
        }),
      async ({ get }) => {
        const cache = get(CacheService);
        await useCache(cache, id);
        await cache.del(`leaks:${id}`);
        await usePubSub(get(PubSubService), id);
      },
    );
  });

  it('the L1 cache with tracking on the main client, twice at once (the second tracks on its own connection)', async () => {
    const main = userClient();
    const id = randomUUID();
    let second: ToolkitApp | undefined;
    await expectLeftAsFound(
      [main],
      async () => {
        const options = {
          target: { client: main },
          keyPrefix: `rtk-leaks-${id}:`,
          cache: { l1: { max: 100, ttl: 60_000 } },
        };
        const first = await bootToolkitApp(options);
        second = await bootToolkitApp(options);
        return first;
      },
      async ({ get }) => {
        await get(CacheService).set(`leaks:${id}`, 'v', { ttl: 60_000 });
        expect(await second?.get(CacheService).get(`leaks:${id}`)).toBe('v');
        await second?.close();
      },
    );
  });

  it('the notifications gateway, with durable streams', async () => {
    const main = userClient();
    const id = randomUUID();
    await expectLeftAsFound(
      [main],
      () =>
        createGatewayApp({
          target: { client: main },
          keyPrefix: `rtk-leaks-${id}:`,
          pubsub: { durable: true, gateway: { authorize: () => true } },
        }),
      async (app) => {
        const { url } = app as ToolkitApp & { url: string };
        const client = await connectClient(url, { token: 'u:1' });
        expect(await client.subscribe(`leaks:${id}`)).toMatchObject({ ok: true });
        expect(await client.subscribe('user:1', '0-0')).toMatchObject({ ok: true });
        const pubsub = app.get(PubSubService);
        await pubsub.publish(`leaks:${id}`, 'hi');
        await pubsub.notifyUser('1', 'to you');
        await waitFor(() => client.got.length === 2, 5_000);
        expect(client.got).toHaveLength(2);
        client.socket.disconnect();
      },
    );
  });

  it("locks on a quorum (its nodes are the toolkit's), the main client the user's", async () => {
    const nodes = await startQuorumServers(3);
    const main = userClient();
    const id = randomUUID();
    await expectLeftAsFound(
      [main],
      () =>
        bootToolkitApp({
          target: { client: main },
          keyPrefix: `rtk-leaks-${id}:`,
          lock: { quorum: { nodes: nodes.map((n) => ({ url: n.url })) }, wakeOnRelease: true },
        }),
      async ({ get }) => useLocks(get(LockService), id),
    );
  });

  it('sessions', async () => {
    const main = userClient();
    const id = randomUUID();
    await expectLeftAsFound(
      [main],
      () =>
        bootToolkitApp({
          target: { client: main },
          keyPrefix: `rtk-leaks-${id}:`,
          session: { ttl: 60_000, cookie: { secret: 's3cret' } },
        }),
      async ({ get }) => {
        await useSessions(get(SessionService));
      },
    );
  });
});

describe("an app on the user's cluster client leaves it, and each node's connection, as it found them", () => {
  it.each(['classic', 'sharded'] as const)(
    'locks (waits, semaphore, multi), rate limits, pub/sub (%s), L1 tracking, sessions',
    async (mode) => {
      const main = trackForCleanup(new Cluster(sharedServers().cluster, { redisOptions: { commandTimeout: 2_000 } }));
      await main.ping();
      const id = randomUUID();
      await expectLeftAsFound(
        [main],
        () =>
          bootToolkitApp({
            target: { client: main },
            keyPrefix: `rtk-leaks-${id}:`,
            cache: { l1: { max: 100, ttl: 60_000, invalidation: 'tracking' } },
            rateLimit: { blockCache: true, insurance: true },
            pubsub: { cluster: mode },
            lock: { wakeOnRelease: true },
            session: { ttl: 60_000, cookie: { secret: 's3cret' } },
          }),
        async ({ get }) => {
          await useLocks(get(LockService), id);
          await get(RateLimitService).consume(`leaks:${id}`, { limit: 1, ttl: 60_000 });
          await useCache(get(CacheService), id, 2);
          await usePubSub(get(PubSubService), id, mode === 'classic');
          await useSessions(get(SessionService));
        },
      );
    },
  );
});

describe("an app closed with work in flight on the user's client leaves it as it found it", () => {
  // Before 2026-12-05 the cache load's hard timeout (loadTimeout, 10 s) stayed ref'd: the closed app held the process.
  it.each(['one server', 'a quorum'] as const)(
    '%s: a held auto-extended lock and permit, callers waiting for them (in this process and by wake-up), a live subscription, a cache load',
    async (where) => {
      const main = userClient();
      const id = randomUUID();
      const keyPrefix = `rtk-leaks-${id}:`;
      const quorum = sharedServers().quorum;
      const lock =
        where === 'a quorum' ? { quorum: { nodes: quorum.map((n) => ({ url: n.url })) }, wakeOnRelease: true } : {};
      // where the waiting services of a lock are seen: the lock's server (on a quorum, its first node)
      const lockServer = where === 'a quorum' ? trackForCleanup(new Redis(quorum[0].port, quorum[0].host)) : main;
      // another instance (its own connection) holds a lock this app waits for by wake-up
      const other = await bootToolkitApp({ target: 'single', keyPrefix, lock });
      const busy = await other.get(LockService).acquire(`inflight:other:${id}`, { ttl: 60_000 });
      const settled: Promise<unknown>[] = [];
      await expectLeftAsFound(
        [main],
        () => bootToolkitApp({ target: { client: main }, keyPrefix, lock, cache: { l1: { max: 100, ttl: 60_000 } } }),
        async ({ get }) => {
          const locks = get(LockService);
          const held = await locks.acquire(`inflight:${id}`, { ttl: 60_000 });
          held.startAutoExtend();
          const retry = { count: 1_000, delay: 100, jitter: 0 };
          const semaphore = locks.semaphore(`inflight:sem:${id}`, { limit: 1 });
          (await semaphore.acquire({ ttl: 60_000 })).startAutoExtend();
          settled.push(
            locks.acquire(`inflight:${id}`, { ttl: 60_000, retry }),
            locks.acquire(`inflight:other:${id}`, { ttl: 60_000, retry }),
            semaphore.acquire({ ttl: 60_000, retry }),
            locks.using(
              `inflight:using:${id}`,
              { ttl: 60_000 },
              (signal) => new Promise((r) => signal.addEventListener('abort', r)),
            ),
            get(CacheService).getOrSet(`inflight:${id}`, () => new Promise(() => undefined), { ttl: 60_000 }),
          );
          for (const p of settled) p.catch(() => undefined);
          await get(PubSubService).subscribe(`inflight:${id}`, () => undefined);
          await get(PubSubService).subscribe(`inflight:${id}:*`, () => undefined);
          // every waiter has asked Redis once, and waits
          expect(
            await waitFor(
              async () =>
                (await lockServer.zcard(
                  `${new KeyBuilder(keyPrefix).tagged('lock', `inflight:other:${id}`)}:waiters`,
                )) > 0,
              5_000,
            ),
          ).toBe(true);
        },
        // the hard timeout of the cache load (its loader never settles) still bounds its caller, unref'd
        /boundedLoad/,
      );
      await busy.release();
    },
  );
});

describe("an app closed while a cache miss waits for another instance's load", () => {
  it("stops waiting: no command on the user's client after close, no timer", async () => {
    const main = userClient();
    const id = randomUUID();
    const keyPrefix = `rtk-leaks-${id}:`;
    // another instance (its own connection) holds the key's load lock: its loader never settles
    const other = await bootToolkitApp({ target: 'single', keyPrefix });
    let loading = (): void => undefined;
    const loaderCalled = new Promise<void>((resolve) => {
      loading = resolve;
    });
    void other
      .get(CacheService)
      .getOrSet(`wait:${id}`, () => (loading(), new Promise(() => undefined)), { ttl: 60_000 })
      .catch(() => undefined);
    // Its loader runs once it holds the lock, after its hard-timeout timer is set (boundedLoad). Not awaited, the
    // timer (cache.loadTimeout, 10 s, ref'd: that app stays open) was at times made after expectLeftAsFound began
    // tracking timers and read as one this app left: under load 8 of 25 runs failed so, each time with that loader
    // not yet called when the tracking began.
    await loaderCalled;
    // the commands the toolkit sends on the user's client once the app is closed
    let closed = false;
    const sentAfterClose: string[] = [];
    const send = main.sendCommand.bind(main);
    main.sendCommand = ((command: { name: string }, ...rest: unknown[]) => {
      // (CLIENT and PING: this test's own checks)
      if (closed && !['client', 'ping'].includes(command.name.toLowerCase())) sentAfterClose.push(command.name);
      return (send as (...args: unknown[]) => unknown)(command, ...rest);
    }) as typeof main.sendCommand;
    let waiting: Promise<unknown> | undefined;
    await expectLeftAsFound(
      [main],
      () => bootToolkitApp({ target: { client: main }, keyPrefix, cache: { lockWait: 60_000, lockTtl: 60_000 } }),
      async (app) => {
        waiting = app
          .get(CacheService)
          .getOrSet(`wait:${id}`, () => 'mine', { ttl: 60_000 })
          .catch((err: unknown) => err);
        // it waits: the other instance holds the load lock
        expect(await settleWithin(waiting, 300, 'waiting')).toBe('waiting');
        const close = app.close.bind(app);
        app.close = async () => {
          await close();
          closed = true;
        };
      },
    );
    // a poll of the entry every 50 ms at most while it waits: over a second, none
    await waitFor(() => sentAfterClose.length > 0, 1_000);
    expect(sentAfterClose).toEqual([]);
  });
});

describe('an app closed while a stale read waits for its refresh (softTimeout)', () => {
  it("leaves no ref'd timer: the soft timeout still bounds the caller's wait, unref'd like the hard timeout", async () => {
    const main = userClient();
    const id = randomUUID();
    let answer: Promise<unknown> | undefined;
    await expectLeftAsFound(
      [main],
      () => bootToolkitApp({ target: { client: main }, keyPrefix: `rtk-leaks-${id}:` }),
      async (app) => {
        const cache = app.get(CacheService);
        await cache.set(`stale:${id}`, 'old', { ttl: 1, staleTtl: 60_000 });
        await new Promise((r) => setTimeout(r, 20));
        let refreshing = false;
        // a refresh whose loader never settles; the caller waits for it up to 5 s (past the 3 s the check allows)
        answer = cache
          .getOrSet(`stale:${id}`, () => ((refreshing = true), new Promise(() => undefined)), {
            ttl: 60_000,
            softTimeout: 5_000,
          })
          .catch((err: unknown) => err);
        expect(await waitFor(() => refreshing, 2_000)).toBe(true);
        expect(await settleWithin(answer, 100, 'waiting')).toBe('waiting');
      },
      // the refresh's hard timeout and the caller's soft timeout, unref'd at close: they still bound the wait
      /boundedLoad|within/,
    );
    // the caller is not left hanging: it gets the stale value when its soft timeout ends
    expect(await answer).toBe('old');
  });
});

describe("a call made through a closed app on the user's client", () => {
  it('fails as on a closed connection (docs/connections.md, shutdown) and sends nothing to the client', async () => {
    const main = userClient();
    const id = randomUUID();
    const app = await bootToolkitApp({
      target: { client: main },
      keyPrefix: `rtk-leaks-${id}:`,
      session: { ttl: 60_000, cookie: { secret: 's3cret' } },
    });
    const cache = app.get(CacheService);
    await cache.set(`after:${id}`, 'v', { ttl: 60_000 });
    await app.close();
    const sent: string[] = [];
    const send = main.sendCommand.bind(main);
    main.sendCommand = ((command: { name: string }, ...rest: unknown[]) => {
      sent.push(command.name);
      return (send as (...args: unknown[]) => unknown)(command, ...rest);
    }) as typeof main.sendCommand;
    const settled = (p: Promise<unknown>) => p.catch((err: unknown) => err);
    const [got, decision, published, session] = await Promise.all([
      settled(cache.get(`after:${id}`)),
      settled(app.get(RateLimitService).consume(`after:${id}`, { limit: 5, ttl: 60_000 })),
      settled(app.get(PubSubService).publish(`after:${id}`, 1)),
      settled(app.get(SessionService).get('x'.repeat(43))),
    ]);
    main.sendCommand = send;
    // the cache and rate limits fail open, the others throw, naming the shutdown
    expect(got).toBeUndefined();
    expect(decision).toMatchObject({ allowed: true, degraded: 'fail-open' });
    for (const err of [published, session]) {
      expect(err).toBeInstanceOf(RedisUnavailableError);
      expect((err as Error).message).toMatch(/closed: the application is shutting down/);
    }
    expect(sent).toEqual([]);
    expect(await main.get(`rtk-leaks-${id}:cache:after:${id}`).then(() => main.ping())).toBe('PONG');
  });
});

describe('the notifications gateway closed with a socket still connected', () => {
  it('leaves no timer or socket of it (engine.io pings) and the client as it found it', async () => {
    const main = userClient();
    const id = randomUUID();
    let socket: { disconnect(): void } | undefined;
    await expectLeftAsFound(
      [main],
      () =>
        createGatewayApp({
          target: { client: main },
          keyPrefix: `rtk-leaks-${id}:`,
          pubsub: { durable: true, gateway: { authorize: () => true } },
        }),
      async (app) => {
        const { url } = app as ToolkitApp & { url: string };
        const client = await connectClient(url, { token: 'u:1' });
        socket = client.socket;
        expect(await client.subscribe(`leaks:${id}`)).toMatchObject({ ok: true });
        expect(await client.subscribe('user:1', '0-0')).toMatchObject({ ok: true });
        await app.get(PubSubService).notifyUser('1', 'to you');
        await waitFor(() => client.got.length === 1, 5_000);
      },
    );
    socket?.disconnect();
  });
});

describe("the L1 cache where the user's ACL refuses CLIENT TRACKING (invalidation: 'auto' takes the bus)", () => {
  const redis = usePrivateRedis();

  it('leaves no listener of its refused tracking on the client', async () => {
    const admin = trackForCleanup(new Redis(redis.server.port, '127.0.0.1'));
    await admin.call('ACL', 'SETUSER', 'app', 'on', '>pw', '~*', '&*', '+@all', '-client|tracking');
    const main = trackForCleanup(
      new Redis({ port: redis.server.port, host: '127.0.0.1', username: 'app', password: 'pw', commandTimeout: 2_000 }),
    );
    const id = randomUUID();
    await expectLeftAsFound(
      [main],
      () =>
        bootToolkitApp({
          target: { client: main },
          keyPrefix: `rtk-leaks-${id}:`,
          cache: { l1: { max: 100, ttl: 60_000 } },
        }),
      async ({ get }) => {
        await useCache(get(CacheService), id);
      },
    );
  });
});

/** The engine's collector, for a test that asks whether something is still reachable. */
function collector(): () => void {
  setFlagsFromString('--expose-gc');
  return runInNewContext('gc') as () => void;
}

describe("the user's client keeps nothing of a closed app alive", () => {
  /**
   * Boots an app on `main` with the dashboard, uses locks (a wait among them), pub/sub, the L1 cache (tracking), rate
   * limits and sessions, closes it, and answers which of its services are still reachable once collected (by constructor name).
   */
  async function aliveAfterClose(main: Redis): Promise<string[]> {
    const gc = collector();
    const refs: WeakRef<object>[] = [];
    // in a function of its own, so no variable of the caller keeps the app
    await (async () => {
      const id = randomUUID();
      const app = await bootToolkitApp({
        target: { client: main },
        keyPrefix: `rtk-leaks-${id}:`,
        cache: { l1: { max: 100, ttl: 60_000, invalidation: 'tracking' } },
        rateLimit: { blockCache: true, insurance: true },
        session: { ttl: 60_000, cookie: { secret: 's3cret' } },
        http: true,
        imports: [RedisToolkitDashboardModule.register({ unsafeNoAuth: true, intervalMs: 60_000 })],
      });
      await useLocks(app.get(LockService), id);
      await usePubSub(app.get(PubSubService), id);
      await useCache(app.get(CacheService), id);
      await app.get(RateLimitService).consume(`leaks:${id}`, { limit: 1, ttl: 60_000 });
      await useSessions(app.get(SessionService));
      const services = [
        LockService,
        CacheService,
        RateLimitService,
        RedisToolkitHealth,
        DashboardService,
        PubSubService,
        SessionService,
      ];
      for (const service of services) refs.push(new WeakRef(app.get<object>(service)));
      await app.close();
    })();
    const alive = async () => {
      // a few turns: the promises of the closed app settle, the timers of its close fire
      for (let i = 0; i < 3; i++) {
        await new Promise((r) => setTimeout(r, 50));
        gc();
      }
      return refs.map((r) => r.deref()?.constructor.name).filter((name) => name !== undefined);
    };
    await waitFor(async () => (await alive()).length === 0, 3_000);
    return alive();
  }

  it('locks (waits), the L1 cache (tracking), rate limits, health and the dashboard can be collected', async () => {
    const main = userClient();
    const alive = await aliveAfterClose(main);
    expect(alive.filter((name) => name !== 'PubSubService' && name !== 'SessionService')).toEqual([]);
    expect(await main.ping()).toBe('PONG');
  });

  // SessionService's constructor registers its revoker for the client (registerSessionRevoker, a WeakMap keyed by the
  // client: `(ids) => this.revoke(ids)`); before its shutdown took it back, the user's client kept the closed app's
  // SessionService, and through it its PubSubService and RedisConnection (a RedisSessionStore on that client then
  // revoked through the closed app).
  it('pub/sub and sessions can be collected (the session revoker registered for the client)', async () => {
    const main = userClient();
    expect(await aliveAfterClose(main)).toEqual([]);
  });
});

describe("a lock call that failed on the user's client (its release waits for the connection's next 'ready')", () => {
  const redis = usePrivateRedis();

  it("leaves no 'ready' listener at app.close() when the connection never came back", async () => {
    // a command of the user's client not answered in 300 ms fails (ioredis's commandTimeout)
    const main = trackForCleanup(new Redis(redis.server.port, '127.0.0.1', { commandTimeout: 300 }));
    const pauser = trackForCleanup(new Redis(redis.server.port, '127.0.0.1'));
    const id = randomUUID();
    await expectLeftAsFound(
      [main],
      () => bootToolkitApp({ target: { client: main }, keyPrefix: `rtk-leaks-${id}:`, lock: { retry: { count: 0 } } }),
      async ({ get }) => {
        const locks = get(LockService);
        // Redis runs no script (they write): the acquisition fails, and so does the release of what it may have
        // taken; the client stays `ready` (the toolkit never reconnects a client the user gave): no 'ready' comes
        await pauser.call('CLIENT', 'PAUSE', '10000', 'WRITE');
        try {
          const ready = main.listenerCount('ready');
          await expect(locks.tryAcquire(`leaks:${id}`, { ttl: 60_000 })).rejects.toThrow(/timed out/);
          // the release waits for the next 'ready' (the listener under test: so this test exercises it)
          expect(await waitFor(() => main.listenerCount('ready') > ready, 5_000)).toBe(true);
        } finally {
          await pauser.call('CLIENT', 'UNPAUSE');
        }
        expect(await main.ping()).toBe('PONG');
      },
    );
  });
});

/**
 * After an app closed while Redis was away: no timer made meanwhile is pending (the user's client's own reconnect
 * timers among them: each fires, and the next is not noted, within 2 s) and the listeners are as before, then again
 * once Redis is back (`restart`) and the client ready and answering.
 */
async function expectLeftAcrossRestart(
  main: Redis,
  timers: ReturnType<typeof trackTimers>,
  before: Record<string, number>,
  restart: () => Promise<unknown>,
): Promise<void> {
  await waitFor(() => timers.pending().length + timers.pending(false).length === 0, 5_000);
  expect([...timers.pending(), ...timers.pending(false)]).toEqual([]);
  expect(listenersOf(main)).toEqual(before);
  await restart();
  expect(await waitFor(() => main.status === 'ready', 10_000)).toBe(true);
  expect(await main.ping()).toBe('PONG');
  expect(listenersOf(main)).toEqual(before);
}

/** A local port nothing listens on (connections to it are refused). */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** The client's listener count per event. */
function listenersOf(client: Redis | Cluster): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const event of client.eventNames()) counts[String(event)] = client.listenerCount(event);
  return counts;
}

describe("an app closed while the user's client cannot reach Redis leaves no listener on it", () => {
  const redis = usePrivateRedis();

  afterEach(async () => {
    if (!redis.server.isRunning()) await redis.server.restart();
  });

  /** Every feature that touches the main client, in use, and then each asked once more while Redis is away. */
  const ALL: Partial<ToolkitAppOptions> = {
    cache: { l1: { max: 100, ttl: 60_000 } },
    rateLimit: { blockCache: true, insurance: true },
  };

  async function useWhileAway(app: ToolkitApp, id: string): Promise<void> {
    const locks = app.get(LockService);
    const pubsub = app.get(PubSubService);
    const cache = app.get(CacheService);
    const rateLimit = app.get(RateLimitService);
    const settled = (p: Promise<unknown>) => p.catch((err: unknown) => err);
    await Promise.all(
      [
        locks.tryAcquire(`away:${id}`, { ttl: 60_000 }),
        locks.acquire(`away:w:${id}`, { ttl: 60_000, retry: { count: 2, delay: 50, jitter: 0 } }),
        locks.semaphore(`away:s:${id}`, { limit: 1 }).tryAcquire({ ttl: 60_000 }),
        pubsub.subscribe(`away:${id}`, () => undefined),
        pubsub.publish(`away:${id}`, 1),
        cache.get(`away:${id}`),
        cache.set(`away:${id}`, 'v', { ttl: 60_000 }),
        rateLimit.consume(`away:${id}`, { limit: 5, ttl: 60_000 }),
        app.get(RedisToolkitHealth).check(),
      ].map(settled),
    );
  }

  it('Redis went away while the app was open (in use), and is back after app.close()', async () => {
    const main = trackForCleanup(new Redis(redis.server.port, '127.0.0.1', { commandTimeout: 300 }));
    await main.ping();
    const before = listenersOf(main);
    const id = randomUUID();
    const timers = trackTimers();
    try {
      const app = await bootToolkitApp({ target: { client: main }, keyPrefix: `rtk-away-${id}:`, ...ALL });
      await useLocks(app.get(LockService), id);
      await usePubSub(app.get(PubSubService), id);
      await redis.server.stop();
      await waitFor(() => main.status !== 'ready', 5_000);
      await useWhileAway(app, id);
      await app.close();
    } finally {
      timers.stop();
    }
    await expectLeftAcrossRestart(main, timers, before, () => redis.server.restart());
  });

  it('Redis restarted while the app was open (L1 tracking, subscriptions and lock waits come back), then closed', async () => {
    const main = trackForCleanup(new Redis(redis.server.port, '127.0.0.1', { commandTimeout: 1_000 }));
    const id = randomUUID();
    await expectLeftAsFound(
      [main],
      () =>
        bootToolkitApp({
          target: { client: main },
          keyPrefix: `rtk-away-${id}:`,
          cache: { l1: { max: 100, ttl: 60_000, invalidation: 'tracking' } },
        }),
      async (app) => {
        await useLocks(app.get(LockService), id);
        const off = await app.get(PubSubService).subscribe(`away:${id}`, () => undefined);
        await redis.server.stop();
        await redis.server.restart();
        expect(await waitFor(() => main.status === 'ready', 10_000)).toBe(true);
        // tracking is on again on the user's connection (the L1 turned it on after the reconnect)
        const trackingOn = async () => ((await main.call('CLIENT', 'TRACKINGINFO')) as unknown[])[1];
        expect(await waitFor(async () => String(await trackingOn()).includes('on'), 5_000)).toBe(true);
        await useLocks(app.get(LockService), `${id}:again`);
        await usePubSub(app.get(PubSubService), id);
        await off();
      },
    );
  });

  it('lazyConnect: Redis was away from the start until after app.close()', async () => {
    await redis.server.stop();
    const main = trackForCleanup(new Redis(redis.server.port, '127.0.0.1', { commandTimeout: 300 }));
    main.on('error', () => undefined); // the user's own: refused connections, until the restart
    const before = listenersOf(main);
    const id = randomUUID();
    const timers = trackTimers();
    try {
      const app = await bootToolkitApp({
        target: { client: main },
        keyPrefix: `rtk-away-${id}:`,
        lazyConnect: true,
        ...ALL,
      });
      await useWhileAway(app, id);
      await app.close();
    } finally {
      timers.stop();
    }
    await expectLeftAcrossRestart(main, timers, before, () => redis.server.restart());
  });
});

describe("a boot that fails on the user's client leaves it as it found it", () => {
  const redis = usePrivateRedis();

  afterEach(async () => {
    redis.server.resume();
    await trackForCleanup(new Redis(redis.server.port, '127.0.0.1')).config('SET', 'maxmemory', '0');
  });

  it('the server check does not answer in time (a paused server)', async () => {
    const main = trackForCleanup(new Redis(redis.server.port, '127.0.0.1', { commandTimeout: 300 }));
    await main.ping();
    const before = listenersOf(main);
    redis.server.pause();
    // one boot (bootToolkitApp would try three times)
    const failed = await createToolkitApp({ target: { client: main }, connectTimeout: 500, commandTimeout: 300 }).catch(
      (err: unknown) => err,
    );
    expect(String(failed)).toMatch(/timed out/);
    expect(listenersOf(main)).toEqual(before);
    redis.server.resume();
    expect(await main.ping()).toBe('PONG');
    expect(listenersOf(main)).toEqual(before);
  });

  // The start waits for a client that is connecting (its 'ready', 'error' and 'close') within connectTimeout +
  // commandTimeout. The server here accepts the connection and answers nothing, and the client's own commandTimeout
  // (10 s) is far past the toolkit's give-up (800 ms): no event of the client ends the wait before the check.
  it("the client's first connection is not answered in time (a paused server): no listener of the wait left", async () => {
    redis.server.pause();
    const main = trackForCleanup(new Redis(redis.server.port, '127.0.0.1', { commandTimeout: 10_000 }));
    main.on('error', () => undefined); // the user's own
    expect(await waitFor(() => main.status === 'connect', 5_000)).toBe(true);
    const before = listenersOf(main);
    const failed = await createToolkitApp({ target: { client: main }, connectTimeout: 500, commandTimeout: 300 }).catch(
      (err: unknown) => err,
    );
    expect(failed).toBeInstanceOf(RedisUnavailableError);
    expect(String(failed)).toMatch(/no answer within 800 ms/);
    expect(main.status).toBe('connect'); // still waiting: the client emitted nothing that ended the start's wait
    // before: ready, error and close one more each, until the client's next 'ready', 'error' or 'close'
    expect(listenersOf(main)).toEqual(before);
    redis.server.resume();
    expect(await main.ping()).toBe('PONG');
  });

  it('the same on a { cluster } client whose startup nodes refuse or do not answer', async () => {
    const resources = activeResources();
    redis.server.pause();
    // The first startup node refuses: the start's ACL probe after the failure (clusterReadyDenied, on the first node)
    // ends at once; the cluster goes on to the paused one, where its CLUSTER SLOTS waits 10 s.
    const refusing = await closedPort();
    const cluster = trackForCleanup(
      new Cluster(
        [
          { host: '127.0.0.1', port: refusing },
          { host: '127.0.0.1', port: redis.server.port },
        ],
        { redisOptions: { commandTimeout: 10_000 }, slotsRefreshTimeout: 10_000, clusterRetryStrategy: () => null },
      ),
    );
    cluster.on('error', () => undefined); // the user's own
    // ioredis's own listeners of its connect() are added once the startup nodes are resolved: before the snapshot
    expect(await waitFor(() => cluster.listenerCount('refresh') === 1, 5_000)).toBe(true);
    expect(cluster.status).toBe('connecting');
    const before = listenersOf(cluster);
    const timers = trackTimers();
    let failed: unknown;
    try {
      failed = await createToolkitApp({ target: { client: cluster }, connectTimeout: 500, commandTimeout: 300 }).catch(
        (err: unknown) => err,
      );
    } finally {
      timers.stop();
    }
    expect(failed).toBeInstanceOf(RedisUnavailableError);
    expect(String(failed)).toMatch(/no answer within 800 ms/);
    expect(cluster.status).toBe('connecting'); // still waiting for the paused node's CLUSTER SLOTS
    // before: ready, error and close one more each
    expect(listenersOf(cluster)).toEqual(before);
    // no timer of the toolkit's code pending (ioredis's own, of the cluster's refused node, may be): before, the ACL
    // probe's connection, refused, was disconnected all the same, and ioredis armed a 2 s timer only a later close
    // clears (it held the process 2 s after the failed start)
    const ours = [...timers.pending(), ...timers.pending(false)].filter((where) => /lib\/[\w/.-]+\.ts/.test(where));
    expect(ours).toEqual([]);
    // resumed, the node answers CLUSTER SLOTS with an error (no cluster mode) and the cluster ends (no retry): no timer
    // of its 10 s refresh outlives the test, nor (given its 2 s) the one ioredis armed disconnecting the refused node
    redis.server.resume();
    expect(await waitFor(() => cluster.status === 'end', 5_000)).toBe(true);
    expect(await waitFor(() => noMoreThan(activeResources(), resources), 5_000)).toBe(true);
  });

  it('the lock refuses an evicting server (onUnsafeEviction: refuse), the L1 cache and sessions started', async () => {
    const main = userClient(redis.server.port);
    await main.config('SET', 'maxmemory', '100mb');
    await main.config('SET', 'maxmemory-policy', 'allkeys-lru');
    await main.ping();
    const before = listenersOf(main);
    const timers = trackTimers();
    let failed: unknown;
    try {
      failed = await createToolkitApp({
        target: { client: main },
        lock: { onUnsafeEviction: 'refuse' },
        cache: { l1: { max: 100, ttl: 60_000 } },
        session: { ttl: 60_000, cookie: { secret: 's3cret' } },
      }).catch((err: unknown) => err);
    } finally {
      timers.stop();
    }
    expect(String(failed)).toMatch(/allkeys-lru/);
    await waitFor(() => timers.pending().length + timers.pending(false).length === 0, 3_000);
    expect(listenersOf(main)).toEqual(before);
    expect([...timers.pending(), ...timers.pending(false)]).toEqual([]);
    expect(await main.ping()).toBe('PONG');
  });
});
