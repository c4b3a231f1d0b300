// An outsider's review of the behavioural prose of docs/lock.md ("Guarantees, in plain words", fencing tokens,
// "Keeping a manual lock alive", multi-resource release, Redlock mode, "waitMs vs retry", "Waiters in one process
// cooperate"): one case per claim that no existing spec proved. Each case quotes its claim. Real Redis only.
import 'reflect-metadata';
import { jest } from '@jest/globals';
import { Logger } from '@nestjs/common';
import type { Cluster, Redis } from 'ioredis';
import { type Lock, LockLostError, LockNotAcquiredError, RedisUnavailableError } from '../../lib/index.js';
import { errorOf } from '../support/errors.js';
import {
  LOCK_MODES,
  lockClients,
  lockKey,
  lockService,
  privateQuorumLocks,
  privateServerLocks,
  quorumNodeClients,
  unique,
} from '../support/lock-modes.js';
import { trackForCleanup } from '../support/private-servers.js';
import { startQuorumServers } from '../support/quorum.js';
import { type RedisServerHandle, startRedisServer } from '../support/redis-server.js';
import { closeToolkitApps } from '../support/toolkit-app.js';
import { sleep, waitFor } from '../support/wait.js';

afterEach(closeToolkitApps);

/** Redis's absolute expiry of `key` (unix ms on the server's clock, which is this host's). */
const expiryOf = async (client: unknown, key: string): Promise<number> =>
  Number(await (client as Redis | Cluster).call('PEXPIRETIME', key));

describe.each(LOCK_MODES)('docs/lock.md guarantees on %s', (mode) => {
  // "`expiresAt` is conservative: measured from *before* the request was sent (minus the drift allowance on a quorum)."
  it('expiresAt is never after Redis lets the lock go, and on a quorum is short of it by the drift allowance', async () => {
    const { locks, connection } = await lockService(mode);
    const resource = unique('conservative');
    const ttl = 100_000; // drift allowance on a quorum: round(100_000 × 0.01) + 2 = 1_002 ms
    const drift = mode === 'quorum' ? 1_002 : 0;
    const before = Date.now();
    const lock = await locks.acquire(resource, { ttl });
    const after = Date.now();
    expect(lock.expiresAt).toBeGreaterThanOrEqual(before + ttl - drift);
    expect(lock.expiresAt).toBeLessThanOrEqual(after + ttl - drift);
    const clients = lockClients(mode, connection, locks);
    for (const client of clients) {
      if ((await client.get(lockKey(resource))) !== lock.token) continue; // a quorum node that answered late
      expect(lock.expiresAt).toBeLessThanOrEqual((await expiryOf(client, lockKey(resource))) - drift);
    }
    const extendedFrom = Date.now();
    await lock.extend(50_000);
    const extendDrift = mode === 'quorum' ? 502 : 0;
    expect(lock.expiresAt).toBeGreaterThanOrEqual(extendedFrom + 50_000 - extendDrift);
    for (const client of clients) {
      if ((await client.get(lockKey(resource))) !== lock.token) continue;
      expect(lock.expiresAt).toBeLessThanOrEqual((await expiryOf(client, lockKey(resource))) - extendDrift);
    }
    await lock.release();
  });

  // "The lock is released in `finally`; a release that finds the lock already gone also throws `LockLostError` for the
  // same reason" (using): here no extension ran yet, so the signal never aborted; only the release can tell.
  it('using: the lock gone before any extension, the function returns normally: LockLostError, reported lost', async () => {
    const { locks, connection } = await lockService(mode);
    const resource = unique('gone-at-release');
    const lost: string[] = [];
    locks.events.on('lost', (e) => lost.push(e.resource));
    let abortedAtReturn: boolean | undefined;
    const run = locks.using(resource, { ttl: 30_000 }, async (signal) => {
      await Promise.all(lockClients(mode, connection, locks).map((c) => c.del(lockKey(resource))));
      abortedAtReturn = signal.aborted;
      return 'done';
    });
    expect(await errorOf(() => run)).toBeInstanceOf(LockLostError);
    expect(abortedAtReturn).toBe(false);
    expect(lost).toEqual([resource]);
  });

  // "`fencingTokens[r]` comes from the same counter `acquire(r)` uses" (several resources at once)
  it('a multi-lock draws its fencing tokens from the counter acquire(r) draws from, and the next acquire goes on', async () => {
    const { locks, connection } = await lockService(mode);
    const [a, b] = [unique('a'), unique('b')];
    const ahead = 5_000_000_000_000_000; // far above every clock floor, below 2^53
    for (const client of lockClients(mode, connection, locks)) await client.set(`${lockKey(a)}:fence`, String(ahead));
    const multi = await locks.acquireAll([a, b], { ttl: 5_000 });
    expect(multi.fencingTokens[a]).toBe(ahead + 1);
    expect(multi.fencingTokens[b]).toBeLessThan(ahead);
    await multi.release();
    const single = await locks.acquire(a, { ttl: 5_000 });
    expect(single.fencingToken).toBe(ahead + 2);
    await single.release();
  });

  // "`release` releases what is still ours and throws `LockLostError` if any had expired" (MultiLock)
  it('a multi-lock one of whose resources expired: release throws LockLostError and frees the others', async () => {
    const { locks, connection } = await lockService(mode);
    const [a, b, c] = [unique('a'), unique('b'), unique('c')];
    const multi = await locks.acquireAll([a, b, c], { ttl: 30_000 });
    const clients = lockClients(mode, connection, locks);
    await Promise.all(clients.map((cl) => cl.del(lockKey(b))));
    expect(await errorOf(() => multi.release())).toBeInstanceOf(LockLostError);
    const held = async () => {
      let n = 0;
      for (const cl of clients) n += (await cl.exists(lockKey(a))) + (await cl.exists(lockKey(c)));
      return n;
    };
    expect(await waitFor(async () => (await held()) === 0, 2_000)).toBe(true);
    const again = await locks.tryAcquireAll([a, c]);
    expect(again).not.toBeNull();
    await again!.release();
  });
});

describe.each(['single', 'cluster'] as const)('fencing counter keys on %s', (mode) => {
  // "`INCR` of a counter key that shares the lock key's hash tag (`rtk:lock:{resource}` and `rtk:lock:{resource}:fence`,
  // so it works on a Cluster) ... The counter has no expiry"
  it('the counter is <lock key>:fence, in the lock key slot, with no expiry', async () => {
    const { locks, connection } = await lockService(mode);
    const resource = unique('counter');
    const lock = await locks.acquire(resource, { ttl: 5_000 });
    const key = lockKey(resource);
    expect(key).toMatch(/^rtk:lock:\{[^{}]+\}$/); // the resource escaped inside the hash tag
    const client = connection.client;
    expect(await client.get(`${key}:fence`)).toBe(String(lock.fencingToken));
    expect(await client.pttl(`${key}:fence`)).toBe(-1);
    const slot = (k: string) => (client as Redis).call('CLUSTER', 'KEYSLOT', k);
    if (mode === 'cluster') expect(await slot(`${key}:fence`)).toBe(await slot(key));
    await lock.release();
    expect(await client.pttl(`${key}:fence`)).toBe(-1);
  });
});

describe('waitMs vs retry (one server)', () => {
  // "With `waitMs` the wait is bounded by time ... and `retry.count` is ignored ... `waitMs: 0` is one attempt."
  it('waitMs 0 is one attempt; with waitMs, retry.count 0 still retries until the deadline', async () => {
    const holder = await lockService('single');
    const other = await lockService('single', { wakeOnRelease: false });
    const resource = unique('wait-bounds');
    const lock = await holder.locks.acquire(resource, { ttl: 30_000 });
    const attempts: number[] = [];
    other.locks.events.on('busy', (e) => attempts.push(e.attempts));
    expect(await errorOf(() => other.locks.acquire(resource, { waitMs: 0 }))).toBeInstanceOf(LockNotAcquiredError);
    const retry = { count: 0, delay: 20, jitter: 0 };
    expect(await errorOf(() => other.locks.acquire(resource, { waitMs: 400, retry }))).toBeInstanceOf(
      LockNotAcquiredError,
    );
    expect(attempts[0]).toBe(1);
    expect(attempts[1]).toBeGreaterThan(1);
    await lock.release();
  });
});

describe.each(['single', 'cluster'] as const)('callers of one process waiting for a lock on %s', (mode) => {
  // "On release, the lock is **handed over** to the oldest local waiter in one script call ... so the lock is never
  // free in between and local waiters are served in FIFO order." Their retry pauses (with jitter) end many times while
  // the holder keeps the lock: a caller whose pause ended must keep its place, not queue again behind later callers.
  it('are handed the lock in the order they started waiting, with growing fencing tokens', async () => {
    const { locks } = await lockService(mode);
    const resource = unique('fifo');
    const holder = await locks.acquire(resource, { ttl: 30_000 });
    const order: number[] = [];
    const tokens: number[] = [holder.fencingToken];
    const retry = { delay: 20, jitter: 60 };
    const callers: Promise<void>[] = [];
    for (let i = 0; i < 5; i++) {
      callers.push(
        locks.acquire(resource, { ttl: 30_000, waitMs: 60_000, retry }).then(async (lock: Lock) => {
          order.push(i);
          tokens.push(lock.fencingToken);
          await lock.release();
        }),
      );
      expect(await waitFor(() => locks.activity().waiting === i + 1, 5_000)).toBe(true);
    }
    await sleep(1_500); // about 30 retry pauses of each caller
    await holder.release();
    await Promise.all(callers);
    expect(order).toEqual([0, 1, 2, 3, 4]);
    expect(tokens).toEqual([...tokens].sort((x, y) => x - y));
    expect(new Set(tokens).size).toBe(6);
  });
});

describe('Redlock mode on the shared quorum', () => {
  // "otherwise it is released where it may be ours — the nodes that granted it (waited for ...), ... and a node that had
  // not answered yet once it grants — never on a node that refused". Two refusals decide the attempt, so node 2's grant
  // may come after the verdict: then it is undone once it arrives, not waited for (as the doc says).
  it("an attempt granted by a minority is undone there; the refusing nodes keep the other owner's lock", async () => {
    const { locks } = await lockService('quorum');
    const resource = unique('partial');
    const nodes = quorumNodeClients(locks);
    await nodes[0].set(lockKey(resource), 'foreign', 'PX', 30_000);
    await nodes[1].set(lockKey(resource), 'foreign', 'PX', 30_000);
    expect(await locks.tryAcquire(resource)).toBeNull();
    expect(await waitFor(async () => (await nodes[2].exists(lockKey(resource))) === 0, 2_000)).toBe(true);
    expect(await nodes[0].get(lockKey(resource))).toBe('foreign');
    expect(await nodes[1].get(lockKey(resource))).toBe('foreign');
    await Promise.all(nodes.map((n) => n.del(lockKey(resource))));
  });

  // "`extend` must be confirmed by a majority within the validity too" (and a lost one is released where still held)
  it('extend succeeds with a majority still holding it; with a minority: LockLostError, freed on that node', async () => {
    const { locks } = await lockService('quorum');
    const resource = unique('extend-majority');
    const nodes = quorumNodeClients(locks);
    const lock = await locks.acquire(resource, { ttl: 30_000 });
    await nodes[0].del(lockKey(resource));
    await lock.extend(40_000);
    expect(await nodes[1].pttl(lockKey(resource))).toBeGreaterThan(30_000);
    await nodes[1].del(lockKey(resource));
    expect(await errorOf(() => lock.extend(40_000))).toBeInstanceOf(LockLostError);
    expect(lock.isHeld).toBe(false);
    expect(await waitFor(async () => (await nodes[2].exists(lockKey(resource))) === 0, 2_000)).toBe(true);
  });
});

describe('Redlock mode with a majority of the nodes down', () => {
  let servers: RedisServerHandle[];
  beforeEach(async () => {
    servers = (await startQuorumServers(3)).map((s) => trackForCleanup(s));
  });

  // "`extend` and `release` distinguish the two failures: `LockLostError` when the lock is provably not ours,
  // `RedisUnavailableError` when Redis could not confirm" / "Too few answers either way: `RedisUnavailableError`."
  it('extend and release are RedisUnavailableError, not LockLostError, and the lock is not reported lost', async () => {
    const locks = await privateQuorumLocks(servers);
    const lost: string[] = [];
    locks.events.on('lost', (e) => lost.push(e.resource));
    const lock = await locks.acquire(unique('majority-down'), { ttl: 30_000 });
    await servers[1].kill();
    await servers[2].kill();
    expect(await errorOf(() => lock.extend(30_000))).toBeInstanceOf(RedisUnavailableError);
    expect(await errorOf(() => lock.release())).toBeInstanceOf(RedisUnavailableError);
    expect(lost).toEqual([]);
  });
});

describe('auto-extension (one private server)', () => {
  let server: RedisServerHandle;
  beforeEach(async () => {
    server = trackForCleanup(await startRedisServer());
  });

  // "if Redis does not answer, it retries until the lock would expire and aborts then" / "on `RedisUnavailableError`
  // retried sooner until the lock would expire": an outage shorter than the lease loses nothing.
  it('Redis paused across an extension, resumed before the lease ends: the lock is kept, not reported lost', async () => {
    const warnings: string[] = [];
    const spy = jest.spyOn(Logger.prototype, 'warn').mockImplementation((m: unknown) => void warnings.push(String(m)));
    try {
      const { locks, client } = await privateServerLocks(server);
      const resource = unique('outage');
      const lost: unknown[] = [];
      const lock = await locks.acquire(resource, { ttl: 6_000 }); // first extension due after 2 s
      const signal = lock.startAutoExtend({ onLost: (err) => lost.push(err) });
      await sleep(500);
      server.pause();
      try {
        await sleep(2_500); // the extension due at 2 s finds Redis paused
      } finally {
        server.resume();
      }
      await sleep(4_500); // past the ttl the lock was acquired with
      expect(warnings.some((w) => w.includes(`extending the lock on "${resource}" failed, retrying`))).toBe(true);
      expect(lost).toEqual([]);
      expect(signal.aborted).toBe(false);
      expect(lock.isHeld).toBe(true);
      expect(await client.get(lockKey(resource))).toBe(lock.token);
      await lock.release();
    } finally {
      spy.mockRestore();
    }
  }, 30_000);

  // "`onLost` is called once then (default: a warning in the log)"
  it('without onLost, a lock lost while kept alive is one warning naming it', async () => {
    const warnings: string[] = [];
    const spy = jest.spyOn(Logger.prototype, 'warn').mockImplementation((m: unknown) => void warnings.push(String(m)));
    try {
      const { locks, client } = await privateServerLocks(server);
      const resource = unique('default-warning');
      const lock = await locks.acquire(resource, { ttl: 300 });
      const signal = lock.startAutoExtend();
      await client.del(lockKey(resource));
      const named = () => warnings.filter((w) => w.startsWith(`the lock on "${resource}" was lost`));
      expect(await waitFor(() => named().length > 0, 3_000)).toBe(true);
      await sleep(500);
      expect(named()).toHaveLength(1);
      expect(signal.reason).toBeInstanceOf(LockLostError);
    } finally {
      spy.mockRestore();
    }
  });
});
