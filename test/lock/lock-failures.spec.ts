import 'reflect-metadata';
import { randomUUID } from 'node:crypto';
import { Test } from '@nestjs/testing';
import { Cluster, Redis } from 'ioredis';
import {
  CacheService,
  LockLostError,
  LockService,
  RedisReplyError,
  RedisToolkitModule,
  RedisUnavailableError,
} from '../../lib/index.js';
import { RedisConnection, UnsafeEvictionPolicyError } from '../../lib/advanced.js';
import { jest } from '@jest/globals';
import { Logger } from '@nestjs/common';
import { KeyBuilder } from '../../lib/common/keys.js';
import { checkEvictionPolicy } from '../../lib/lock/lock.eviction-check.js';
import { dropPoolConnection, useDisposableCluster } from '../support/disposable-cluster.js';
import { FaultProxy } from '../support/fault-proxy.js';
import { rawCommand } from '../support/resp.js';
import { sharedServers } from '../support/shared-servers.js';
import { othersConnected } from '../support/clients.js';
import { trackForCleanup } from '../support/private-servers.js';
import { startQuorumServers } from '../support/quorum.js';
import { startRedisServer, type RedisServerHandle } from '../support/redis-server.js';
import { closeToolkitApps, createToolkitApp } from '../support/toolkit-app.js';
import { bootToolkitApp } from '../support/toolkit-boot.js';
import { sleep, waitFor } from '../support/wait.js';
import { quorumNodeClients } from '../support/lock-modes.js';
import { within } from '../support/timing.js';

afterEach(closeToolkitApps);

const unique = (name: string): string => `${name}:${randomUUID()}`;
/** The lock's key under the default prefix; its fence counter is this plus `:fence`. */
const lockKeyOf = (resource: string): string => new KeyBuilder('rtk:').tagged('lock', resource);
const COMMAND_TIMEOUT = 300;

async function singleLocks(server: RedisServerHandle): Promise<LockService> {
  const app = await bootToolkitApp({
    target: { url: server.url },
    commandTimeout: COMMAND_TIMEOUT,
    maxReconnectDelay: 100,
  });
  return app.get(LockService);
}

async function quorumLocks(servers: RedisServerHandle[], commandTimeout = COMMAND_TIMEOUT): Promise<LockService> {
  const app = await bootToolkitApp({
    target: 'single', // the main connection; locks use only the quorum nodes
    commandTimeout,
    maxReconnectDelay: 100,
    lock: { retry: { count: 3, delay: 20, jitter: 20 }, quorum: { nodes: servers.map((s) => ({ url: s.url })) } },
  });
  return app.get(LockService);
}

async function timed<T>(promise: Promise<T>): Promise<{ ms: number; result: PromiseSettledResult<T> }> {
  const started = Date.now();
  const [result] = await Promise.allSettled([promise]);
  return { ms: Date.now() - started, result };
}

const reason = (r: PromiseSettledResult<unknown>): unknown => (r.status === 'rejected' ? r.reason : undefined);

describe('one server: fail closed', () => {
  it('Redis down: acquire/tryAcquire/using throw RedisUnavailableError and never run the section; after a restart locks work', async () => {
    const server = trackForCleanup(await startRedisServer());
    const locks = await singleLocks(server);
    const resource = unique('down');
    await (await locks.acquire(resource)).release();
    await server.kill();
    let ran = false;
    for (const call of [
      (): Promise<unknown> => locks.acquire(resource),
      () => locks.tryAcquire(resource),
      () =>
        locks.using(resource, {}, () => {
          ran = true;
        }),
    ]) {
      const { ms, result } = await timed(call());
      expect(reason(result)).toBeInstanceOf(RedisUnavailableError);
      expect(ms).toBeLessThan(within(COMMAND_TIMEOUT));
    }
    expect(ran).toBe(false);
    await server.restart();
    const lock = await locks.acquire(resource, { waitMs: 3_000 }).catch(async () => {
      await sleep(500); // reconnect backoff
      return locks.acquire(resource);
    });
    expect(lock.fencingToken).toBeGreaterThanOrEqual(1);
    await lock.release();
  });

  it('paused (SIGSTOP) server: acquire fails within about commandTimeout instead of hanging', async () => {
    const server = trackForCleanup(await startRedisServer());
    const locks = await singleLocks(server);
    const resource = unique('paused');
    server.pause();
    try {
      const { ms, result } = await timed(locks.acquire(resource, { ttl: 10_000 }));
      expect(reason(result)).toBeInstanceOf(RedisUnavailableError);
      expect(ms).toBeLessThan(within(COMMAND_TIMEOUT));
    } finally {
      server.resume();
    }
  });

  it('paused server: every acquisition of a batched call fails with RedisUnavailableError; none is left held after resume', async () => {
    const server = trackForCleanup(await startRedisServer());
    const locks = await singleLocks(server);
    const resources = Array.from({ length: 6 }, () => unique('paused-batch'));
    server.pause();
    try {
      const started = Date.now();
      const results = await Promise.allSettled(resources.map((r) => locks.tryAcquire(r, { ttl: 10_000 })));
      expect(Date.now() - started).toBeLessThan(within(COMMAND_TIMEOUT));
      expect(results.map((r) => reason(r) instanceof RedisUnavailableError)).toEqual(resources.map(() => true));
    } finally {
      server.resume();
    }
    // the acquisitions may have run once Redis woke up; each caller sent a release for its token, so every resource is
    // free again well before the 10 s ttl
    const free = async () =>
      (await Promise.all(resources.map((r) => locks.tryAcquire(r, { ttl: 1_000 })))).every((l) => l !== null);
    let ok = false;
    for (let i = 0; i < 20 && !ok; i++) {
      ok = await free().catch(() => false);
      if (!ok) await sleep(100);
    }
    expect(ok).toBe(true);
  });

  /**
   * `waiter` waits for `resource`, which `holder` holds for 20 s: one attempt, then one more after 1 s, which carries
   * the wait's token. Once the wait is registered, a release's grant to it whose message never arrives (see the
   * lost-grant test in lock-wake.spec): the lock set to the wait's token, its entry popped.
   */
  async function grantedSilently(
    holder: LockService,
    waiter: LockService,
    client: Redis,
    resource: string,
  ): Promise<{ waiting: Promise<unknown>; key: string }> {
    const key = lockKeyOf(resource);
    await holder.acquire(resource, { ttl: 20_000 });
    const waiting = waiter.acquire(resource, { retry: { count: 1, delay: 1_000, jitter: 0 }, ttl: 20_000 });
    const id = (waiter as unknown as { wakeups: { id: string } }).wakeups.id;
    const entry = async () => (await client.zrange(`${key}:waiters`, '0', '-1')).find((m) => m.startsWith(`${id} `));
    expect(await waitFor(async () => (await entry()) !== undefined, 5_000)).toBe(true);
    const registered = (await entry()) ?? '';
    await client.set(key, registered.split(' ')[1], 'PX', 20_000);
    await client.zrem(`${key}:waiters`, registered);
    return { waiting, key };
  }

  // The paused server runs the timed-out attempt on resume: it takes the grant over and the attempt's own clean-up
  // releases it. (An attempt that never reaches Redis releases the grant by the wait's token instead: the next test.)
  it("a waiter's attempt that times out after its wait was granted leaves no lock held for its ttl", async () => {
    const server = trackForCleanup(await startRedisServer());
    const holder = await singleLocks(server);
    const waiter = await singleLocks(server);
    const client = new Redis(server.port, { lazyConnect: true });
    await client.connect();
    try {
      const { waiting, key } = await grantedSilently(holder, waiter, client, unique('grant-transport'));
      server.pause(); // the second attempt times out: it might have taken the grant over, or not
      try {
        expect(reason((await timed(waiting)).result)).toBeInstanceOf(RedisUnavailableError);
      } finally {
        server.resume();
      }
      // released once the connection is back, not held for the rest of its 20 s
      expect(await waitFor(async () => (await client.exists(key)) === 0, 5_000)).toBe(true);
    } finally {
      client.disconnect();
    }
  });

  it("a waiter's attempt that never reaches Redis after its wait was granted leaves no lock held for its ttl", async () => {
    const server = trackForCleanup(await startRedisServer());
    const proxy = await FaultProxy.start({ port: server.port });
    const holder = await singleLocks(server);
    const app = await bootToolkitApp({
      target: { url: proxy.url },
      commandTimeout: COMMAND_TIMEOUT,
      maxReconnectDelay: 100,
    });
    const waiter = app.get(LockService);
    const client = new Redis(server.port, { lazyConnect: true });
    await client.connect();
    try {
      const { waiting, key } = await grantedSilently(holder, waiter, client, unique('grant-unsent'));
      // the link goes silent: the second attempt, which would take the grant over, never reaches Redis
      proxy.blackhole();
      expect(reason((await timed(waiting)).result)).toBeInstanceOf(RedisUnavailableError);
      expect(await client.exists(key)).toBe(1);
      proxy.restore();
      // released by the wait's token once the connection is back, not held for the rest of its 20 s
      expect(await waitFor(async () => (await client.exists(key)) === 0, 5_000)).toBe(true);
    } finally {
      client.disconnect();
      await proxy.close();
    }
  });

  it("a hand-over to a local waiter with a foreign value under the fence counter: RedisReplyError, the lock stays the holder's", async () => {
    const server = trackForCleanup(await startRedisServer());
    const locks = await singleLocks(server);
    const client = new Redis(server.port, { lazyConnect: true });
    await client.connect();
    try {
      const resource = unique('hand-over-foreign');
      const key = lockKeyOf(resource);
      const held = await locks.acquire(resource, { ttl: 5_000 });
      const next = locks.acquire(resource, { ttl: 5_000, retry: { count: 100, delay: 100, jitter: 0 } });
      expect(await waitFor(() => locks.activity().waiting === 1, 2_000)).toBe(true);
      await client.set(`${key}:fence`, 'not a number');
      await expect(held.release()).rejects.toBeInstanceOf(RedisReplyError);
      // not handed to a token nobody holds: still the holder's, who can release it once the counter is mended
      expect(await client.get(key)).toBe(held.token);
      await client.del(`${key}:fence`);
      await held.release();
      const second = await next;
      expect(second.fencingToken).toBeGreaterThan(held.fencingToken);
      await second.release();
    } finally {
      client.disconnect();
    }
  });

  it('Redis dies while using runs: the signal aborts and using throws LockLostError', async () => {
    const server = trackForCleanup(await startRedisServer());
    const locks = await singleLocks(server);
    let aborted = false;
    const run = locks.using(unique('dies'), { ttl: 600 }, async (signal) => {
      await server.kill();
      await new Promise<void>((resolve) => signal.addEventListener('abort', () => resolve(), { once: true }));
      aborted = true;
      return 'late';
    });
    const { ms, result } = await timed(run);
    expect(reason(result)).toBeInstanceOf(LockLostError);
    expect(aborted).toBe(true);
    // Aborted no later than the lock's expiry (plus scheduling slack), not after commandTimeout retries pile up.
    expect(ms).toBeLessThan(within(600 + COMMAND_TIMEOUT));
  });
});

describe('quorum of 3 independent servers', () => {
  let servers: RedisServerHandle[];
  beforeEach(async () => {
    servers = (await startQuorumServers(3)).map((s) => trackForCleanup(s));
  });

  it('one server killed: acquire, extend, release and using still work, tokens keep increasing', async () => {
    const locks = await quorumLocks(servers);
    const resource = unique('minority-down');
    const before = await locks.acquire(resource);
    await before.release();
    await servers[2].kill();
    const lock = await locks.acquire(resource);
    expect(lock.fencingToken).toBeGreaterThan(before.fencingToken);
    expect(await locks.tryAcquire(resource)).toBeNull();
    await lock.extend(5_000);
    await lock.release();
    // Held for 2.5 ttls: only the automatic extension keeps it (a ttl of 1 s leaves room for a busy event loop).
    const result = await locks.using(resource, { ttl: 1_000 }, async (signal, l) => {
      await sleep(2_500);
      expect(signal.aborted).toBe(false);
      return l.fencingToken;
    });
    expect(result).toBeGreaterThan(lock.fencingToken);
  });

  it('a minority node that stops answering is named in a warning, though the other two decide', async () => {
    const warnings: string[] = [];
    const spy = jest.spyOn(Logger.prototype, 'warn').mockImplementation((m: unknown) => void warnings.push(String(m)));
    try {
      const locks = await quorumLocks(servers);
      servers[2].pause();
      try {
        const lock = await locks.acquire(unique('minority-paused'));
        await lock.release();
        // The paused node's calls time out (commandTimeout) after the other two decided: nothing else would say so.
        const named = () => warnings.filter((w) => w.startsWith('lock quorum node '));
        expect(await waitFor(() => named().length > 0, 5_000)).toBe(true);
        expect(named()).toEqual([
          `lock quorum node redis://127.0.0.1:${servers[2].port} failed a call (Command timed out); the other nodes ` +
            'decide while a majority answers',
        ]);
      } finally {
        servers[2].resume();
      }
    } finally {
      spy.mockRestore();
    }
  });

  it('two servers killed: acquisition fails cleanly with RedisUnavailableError and the section does not run', async () => {
    const locks = await quorumLocks(servers);
    await servers[1].kill();
    await servers[2].kill();
    let ran = false;
    const { ms, result } = await timed(
      locks.using(unique('majority-down'), {}, () => {
        ran = true;
      }),
    );
    expect(reason(result)).toBeInstanceOf(RedisUnavailableError);
    expect(ran).toBe(false);
    expect(ms).toBeLessThan(within(COMMAND_TIMEOUT));
  });

  it('a paused (SIGSTOP) server does not hang acquisition past the ttl; two paused fail within the ttl', async () => {
    // A large commandTimeout: waiting for the paused node would take it, so "no waiting" has a wide margin here.
    const commandTimeout = 5_000;
    const locks = await quorumLocks(servers, commandTimeout);
    const resource = unique('paused');
    servers[0].pause();
    try {
      const ttl = 20_000;
      const { ms, result } = await timed(locks.acquire(resource, { ttl }));
      expect(result.status).toBe('fulfilled');
      expect(ms).toBeLessThan(commandTimeout / 2); // the two live servers answer at once; no waiting for the paused one
      const lock = (result as PromiseFulfilledResult<Awaited<ReturnType<LockService['acquire']>>>).value;
      await lock.extend(ttl);
      await lock.release();

      servers[1].pause();
      const shortTtl = 1_000; // below commandTimeout: the lock's validity is the bound
      const second = await timed(locks.acquire(unique('paused2'), { ttl: shortTtl, retry: { count: 0 } }));
      expect(reason(second.result)).toBeInstanceOf(RedisUnavailableError);
      expect(second.ms).toBeLessThan(within(shortTtl)); // 3 s: still well below the 5 s commandTimeout
    } finally {
      servers[0].resume();
      servers[1].resume();
    }
  });

  it('fencing tokens stay strictly increasing when the majorities change and counters diverge', async () => {
    const locks = await quorumLocks(servers);
    const resource = unique('diverge');
    const tokens: number[] = [];
    const take = async (): Promise<void> => {
      const lock = await locks.acquire(resource);
      tokens.push(lock.fencingToken);
      await lock.release();
    };
    await servers[2].kill(); // nodes 0 and 1 advance
    for (let i = 0; i < 5; i++) await take();
    await servers[2].restart(); // back empty: its counter starts over
    await servers[0].kill(); // the next majority is {1, 2}: node 2 lags far behind
    await sleep(300); // node 2 reconnects
    for (let i = 0; i < 3; i++) await take();
    await servers[0].restart();
    await servers[1].kill(); // majority {0, 2}: node 2 was raised, node 0 is behind it
    await sleep(300);
    for (let i = 0; i < 3; i++) await take();
    expect(tokens).toHaveLength(11);
    for (let i = 1; i < tokens.length; i++) expect(tokens[i]).toBeGreaterThan(tokens[i - 1]);
  });

  it('a node counter ahead of the client clock: the granting majority is raised to its token before it counts', async () => {
    // Every node is sent the client's clock as the floor, so the granting nodes usually draw one token. Here node 0's
    // counter is an hour ahead (as after a client with a fast clock): its token wins, and node 1 must be raised to
    // it, or the next majority {1, 2} would draw a smaller token.
    const locks = await quorumLocks(servers);
    const nodeReady = (i: number): boolean => quorumNodeClients(locks)[i].status === 'ready';
    const resource = unique('ahead');
    const fenceKey = `${lockKeyOf(resource)}:fence`;
    const ahead = Date.now() * 1000 + 3_600_000_000;
    expect(await rawCommand(servers[0].port, ['SET', fenceKey, String(ahead)])).toBe('OK');
    await servers[2].kill(); // the majority is {0, 1}
    const first = await locks.acquire(resource);
    expect(first.fencingToken).toBe(ahead + 1);
    await first.release();
    await servers[2].restart(); // back empty
    await servers[0].kill(); // the next majority is {1, 2}
    expect(await waitFor(() => nodeReady(2), 10_000)).toBe(true);
    const second = await locks.acquire(resource);
    expect(second.fencingToken).toBeGreaterThan(first.fencingToken);
    await second.release();
  });

  it('bootstrap: starts with one node down, fails fast with RedisUnavailableError when a majority is down', async () => {
    await servers[0].kill();
    const locks = await quorumLocks(servers);
    const lock = await locks.acquire(unique('boot'));
    await lock.release();
    await servers[1].kill();
    // Booted by hand so the half-started app can be closed (its main connection would otherwise stay open).
    const moduleRef = await Test.createTestingModule({
      imports: [
        RedisToolkitModule.forRoot({
          connection: { url: sharedServers().single.url },
          commandTimeout: COMMAND_TIMEOUT,
          lock: { quorum: { nodes: servers.map((s) => ({ url: s.url })) } },
        }),
      ],
    }).compile();
    const app = moduleRef.createNestApplication({ logger: false });
    try {
      await expect(app.init()).rejects.toBeInstanceOf(RedisUnavailableError);
    } finally {
      await app.close();
    }
  });
});

/**
 * Issue 17 item 7: the fence counter can be lost without the server going down (evicted under allkeys-*, a restart
 * without persistence). Tokens are floored by the Redis clock in µs, so they still never go backwards.
 */
describe('fencing tokens when the fence counter is lost', () => {
  const draw = async (locks: LockService, resource: string, n: number): Promise<number[]> => {
    const tokens: number[] = [];
    for (let i = 0; i < n; i++) {
      const l = await locks.acquire(resource, { ttl: 60_000, waitMs: 20_000 });
      tokens.push(l.fencingToken);
      await l.release();
    }
    return tokens;
  };
  const strictlyIncreasing = (tokens: number[]): boolean => tokens.every((t, i) => i === 0 || t > tokens[i - 1]);

  it.each(['single', 'cluster'] as const)(
    'counter deleted (as eviction does) on %s: the next token is larger',
    async (target) => {
      const app = await createToolkitApp({ target });
      const locks = app.get(LockService);
      const client = app.get(RedisConnection).client;
      const resource = unique('lost-counter');
      const before = await draw(locks, resource, 3);
      const fenceKey = `${lockKeyOf(resource)}:fence`;
      expect(await client.del(fenceKey)).toBe(1); // the counter existed, and is gone now
      const after = await draw(locks, resource, 3);
      expect(strictlyIncreasing([...before, ...after])).toBe(true);
    },
  );

  // Past 2^53 a token is no longer exact in a double (Lua's and JS's): two acquisitions drew the same token, and next to
  // 2^63 INCR's reply came back negative (the lock set, the caller told "busy", the lock held by nobody). A counter
  // there is never ours (tokens are µs, ~1.8e15): the acquisition fails with a typed error and holds nothing.
  it.each(['single', 'cluster'] as const)(
    'a counter at 2^53 or past it on %s: RedisReplyError, the lock not held, and tokens again once it is mended',
    async (target) => {
      const app = await createToolkitApp({ target });
      const locks = app.get(LockService);
      const client = app.get(RedisConnection).client;
      const resource = unique('counter-2-53');
      const key = lockKeyOf(resource);
      for (const value of ['9007199254740991', '9223372036854775806']) {
        await client.set(`${key}:fence`, value);
        await expect(locks.tryAcquire(resource, { ttl: 60_000 })).rejects.toBeInstanceOf(RedisReplyError);
        expect(await client.exists(key)).toBe(0);
      }
      await client.del(`${key}:fence`);
      const lock = await locks.acquire(resource, { ttl: 60_000 });
      expect(Number.isSafeInteger(lock.fencingToken)).toBe(true);
      await lock.release();
    },
  );

  it('evicting server (maxmemory 8 MB, allkeys-lru): the counter is evicted, tokens still strictly increase', async () => {
    const server = trackForCleanup(
      await startRedisServer({ args: ['--maxmemory', '8mb', '--maxmemory-policy', 'allkeys-lru'] }),
    );
    const app = await createToolkitApp({ target: { url: server.url }, commandTimeout: 5_000 });
    const locks = app.get(LockService);
    const client = app.get(RedisConnection).client;
    const resource = unique('evicted');
    const before = await draw(locks, resource, 3);
    const fenceKey = `${lockKeyOf(resource)}:fence`;
    // 40 MB of cache entries nobody reads: the untouched counter is evicted (checked, so the scenario is real)
    const cache = app.get(CacheService);
    const value = 'x'.repeat(64 * 1024);
    for (let i = 0; i < 640 && (await client.exists(fenceKey)) === 1; i += 16) {
      await Promise.all(Array.from({ length: 16 }, (_, j) => cache.set(`fill:${i + j}`, value, { ttl: 600_000 })));
    }
    expect(await client.exists(fenceKey)).toBe(0);
    const after = await draw(locks, resource, 3);
    expect(strictlyIncreasing([...before, ...after])).toBe(true);
  }, 120_000);

  it('restart without persistence (SIGKILL, every key gone): tokens still strictly increase', async () => {
    const server = trackForCleanup(await startRedisServer());
    const app = await createToolkitApp({ target: { url: server.url }, commandTimeout: 5_000 });
    const locks = app.get(LockService);
    const resource = unique('restarted');
    const before = await draw(locks, resource, 3);
    await server.kill();
    await server.restart();
    expect(await rawCommand(server.port, ['DBSIZE'], { timeoutMs: 10_000 })).toBe(0); // every key is gone
    const connection = app.get(RedisConnection);
    expect(await waitFor(() => connection.status === 'ready', 20_000)).toBe(true);
    const after = await draw(locks, resource, 3);
    expect(strictlyIncreasing([...before, ...after])).toBe(true);
  }, 60_000);
});

describe('lock servers that may evict keys (issue 17 item 7)', () => {
  it("warns at start under allkeys-lru with a memory limit, refuses with onUnsafeEviction: 'refuse'", async () => {
    const server = trackForCleanup(
      await startRedisServer({ args: ['--maxmemory', '8mb', '--maxmemory-policy', 'allkeys-lru'] }),
    );
    const warnings: string[] = [];
    const spy = jest.spyOn(Logger.prototype, 'warn').mockImplementation((message: unknown) => {
      warnings.push(String(message));
    });
    try {
      await createToolkitApp({ target: { url: server.url } });
      expect(warnings.filter((w) => /maxmemory-policy allkeys-lru/.test(w) && /noeviction/.test(w))).toHaveLength(1);
    } finally {
      spy.mockRestore();
    }
    // the refused app closes its connections (left open, they kept the test process alive after the run): the
    // server's client count comes back to what it was before that boot
    const clients = (): Promise<number> => othersConnected(server.port);
    const before = await clients();
    await expect(
      createToolkitApp({ target: { url: server.url }, lock: { onUnsafeEviction: 'refuse' } }),
    ).rejects.toBeInstanceOf(UnsafeEvictionPolicyError);
    expect(await waitFor(async () => (await clients()) === before, within(2_000))).toBe(true);
    // noeviction (the shared server's default): no warning, and 'refuse' starts
    const quiet: string[] = [];
    const spy2 = jest.spyOn(Logger.prototype, 'warn').mockImplementation((m: unknown) => void quiet.push(String(m)));
    try {
      await createToolkitApp({ target: 'single', lock: { onUnsafeEviction: 'refuse' } });
      expect(quiet.filter((w) => /maxmemory-policy/.test(w))).toEqual([]);
    } finally {
      spy2.mockRestore();
    }
  });

  describe('on a cluster', () => {
    const cluster = useDisposableCluster();

    it('checks every master of the slot table, also one whose connection ioredis dropped from its pool', async () => {
      const victim = cluster().masters[1];
      const admin = trackForCleanup(new Redis(victim.port, '127.0.0.1'));
      await admin.config('SET', 'maxmemory', '64mb');
      await admin.config('SET', 'maxmemory-policy', 'allkeys-lru');
      const client = new Cluster(cluster().startupNodes, { lazyConnect: true });
      try {
        await client.connect();
        await dropPoolConnection(client, victim.port);
        expect(client.nodes('master').map((n) => Number(n.options.port))).not.toContain(victim.port);
        const warnings: string[] = [];
        const targets = [{ client, description: 'the Redis cluster master' }];
        const err = await checkEvictionPolicy(targets, 'refuse', (m) => warnings.push(m)).then(
          () => undefined,
          (e: unknown) => e,
        );
        expect(err).toBeInstanceOf(UnsafeEvictionPolicyError);
        expect((err as Error).message).toContain(`127.0.0.1:${victim.port} (maxmemory-policy allkeys-lru)`);
        expect(warnings).toEqual([]);
      } finally {
        client.disconnect();
        await admin.config('SET', 'maxmemory', '0');
      }
    });
  });

  it("a refused start closes every connection of the toolkit, not only the lock's (counted by CLIENT LIST)", async () => {
    const evicting = trackForCleanup(
      await startRedisServer({ args: ['--maxmemory', '8mb', '--maxmemory-policy', 'allkeys-lru'] }),
    );
    const other = trackForCleanup(await startRedisServer());
    const clients = (server: RedisServerHandle): Promise<number> => othersConnected(server.port);
    const before = { other: await clients(other), evicting: await clients(evicting) };
    await expect(
      createToolkitApp({
        target: { url: other.url },
        connections: { locks: { url: evicting.url } },
        lock: { connection: 'locks', onUnsafeEviction: 'refuse' },
      }),
    ).rejects.toBeInstanceOf(UnsafeEvictionPolicyError);
    const settled = async (): Promise<boolean> =>
      (await clients(other)) === before.other && (await clients(evicting)) === before.evicting;
    expect(await waitFor(settled, within(2_000))).toBe(true);
    expect({ other: await clients(other), evicting: await clients(evicting) }).toEqual(before);
  });
});
