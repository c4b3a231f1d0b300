// docs/lock.md's "Failure policy", "Guarantees" and Redlock prose held to the code, where no other spec did: each case
// quotes the sentence it checks. Real Redis only: private servers, paused (SIGSTOP) where the claim is about a
// request Redis runs after its caller gave up on it.
import 'reflect-metadata';
import { jest } from '@jest/globals';
import { Logger } from '@nestjs/common';
import type { Redis } from 'ioredis';
import { InvalidOptionsError, LockLostError, RedisUnavailableError } from '../../lib/index.js';
import { errorOf } from '../support/errors.js';
import { lockKey, privateQuorumLocks, privateServerLocks, quorumNodeClients, unique } from '../support/lock-modes.js';
import { trackForCleanup } from '../support/private-servers.js';
import { startQuorumServers } from '../support/quorum.js';
import { type RedisServerHandle, startRedisServer } from '../support/redis-server.js';
import { closeToolkitApps, createToolkitApp } from '../support/toolkit-app.js';
import { sleep, waitFor } from '../support/wait.js';

afterEach(closeToolkitApps);

const reason = (r: PromiseSettledResult<unknown>): unknown => (r.status === 'rejected' ? r.reason : undefined);

/** `run` while `server` is paused (SIGSTOP), resumed afterwards whatever happens; `pausedMs`: how long at least. */
async function whilePaused<T>(server: RedisServerHandle, run: () => Promise<T>, pausedMs = 0): Promise<T> {
  const started = Date.now();
  server.pause();
  try {
    const result = await run();
    const left = pausedMs - (Date.now() - started);
    if (left > 0) await sleep(left);
    return result;
  } finally {
    server.resume();
  }
}

/** True once `key` exists on none of `clients` (a client still reconnecting counts as not yet). */
const goneEverywhere = (clients: Redis[], key: string, ms: number): Promise<boolean> =>
  waitFor(async () => {
    const counts = await Promise.all(clients.map((c) => c.exists(key).catch(() => 1)));
    return counts.every((n) => n === 0);
  }, ms);

describe('acquisitions whose request timed out on a paused server (one server)', () => {
  let server: RedisServerHandle;
  beforeEach(async () => {
    server = trackForCleanup(await startRedisServer());
  });

  // "If an acquire request timed out, its SET may still have run: a release of that attempt's token follows, and when
  // Redis cannot be reached right then (a timeout resets the connection) it is sent again as soon as the connection is
  // ready" — for a semaphore's permits as for locks ("Permits are `Lock`s").
  it('semaphore permits: given back after the resume, not held for their ttl', async () => {
    const { locks } = await privateServerLocks(server);
    const sem = locks.semaphore(unique('paused-permits'), { limit: 5, ttl: 30_000 });
    const results = await whilePaused(server, () => Promise.allSettled([sem.tryAcquire(), sem.tryAcquire()]));
    expect(results.map((r) => reason(r) instanceof RedisUnavailableError)).toEqual([true, true]);
    const free = () =>
      sem.holders().then(
        (n) => n === 0,
        () => false,
      );
    expect(await waitFor(free, 3_000)).toBe(true);
  });

  // the same sentence, for acquireAll ("like the single ones, for several resources")
  it('a multi-resource lock: its resources are free after the resume, not held for their ttl', async () => {
    const { locks, client } = await privateServerLocks(server);
    const [a, b] = [unique('paused-a'), unique('paused-b')];
    const [result] = await whilePaused(server, () => Promise.allSettled([locks.acquireAll([a, b], { ttl: 30_000 })]));
    expect(reason(result)).toBeInstanceOf(RedisUnavailableError);
    expect(await goneEverywhere([client], lockKey(a), 3_000)).toBe(true);
    expect(await goneEverywhere([client], lockKey(b), 3_000)).toBe(true);
  });

  // "... it is sent again as soon as the connection is ready, until the lock would have expired anyway": a paused
  // server runs the SET when it resumes, with the whole ttl from then, so a pause longer than the ttl must not end
  // the clean-up. The lock's ttl is 4 s; the server stays paused 4.5 s; the lock must go well before resume + 4 s.
  it('a lock whose server stayed paused longer than its ttl is released after the resume', async () => {
    const { locks, client } = await privateServerLocks(server);
    const resource = unique('paused-past-ttl');
    const [result] = await whilePaused(
      server,
      () => Promise.allSettled([locks.tryAcquire(resource, { ttl: 4_000 })]),
      4_500,
    );
    expect(reason(result)).toBeInstanceOf(RedisUnavailableError);
    expect(await goneEverywhere([client], lockKey(resource), 2_000)).toBe(true);
  });
});

describe('Redlock: an acquisition that timed out on paused nodes', () => {
  let servers: RedisServerHandle[];
  beforeEach(async () => {
    servers = (await startQuorumServers(3)).map((s) => trackForCleanup(s));
  });

  // "otherwise it is released where it may be ours — ... the nodes that failed (the SET may have run)": two of three
  // nodes paused, the acquisition fails; when they resume they run the SET, and the lock must not stay on that
  // majority (held by nobody) for its ttl.
  it('is released on the nodes that ran it after the resume: the resource is free, not held by nobody', async () => {
    const locks = await privateQuorumLocks(servers);
    const resource = unique('quorum-paused');
    servers[1].pause();
    servers[2].pause();
    let result: PromiseSettledResult<unknown>;
    try {
      [result] = await Promise.allSettled([locks.acquire(resource, { ttl: 30_000, retry: { count: 0 } })]);
    } finally {
      servers[1].resume();
      servers[2].resume();
    }
    expect(reason(result)).toBeInstanceOf(RedisUnavailableError);
    expect(await goneEverywhere(quorumNodeClients(locks) as Redis[], lockKey(resource), 3_000)).toBe(true);
    const next = await locks.tryAcquire(resource);
    expect(next).not.toBeNull();
    await next?.release();
  });

  // "`LockService.stats()` counts failures." — on a quorum too: a lock call that failed on its nodes was counted nowhere
  it('stats() counts the failed node calls', async () => {
    const locks = await privateQuorumLocks(servers);
    await servers[1].kill();
    await servers[2].kill();
    expect(await errorOf(() => locks.acquire(unique('stats'), { retry: { count: 0 } }))).toBeInstanceOf(
      RedisUnavailableError,
    );
    expect(locks.stats().unavailable).toBe(2);
  });
});

describe('using: the function ran past the lease and Redis cannot confirm the release', () => {
  // "If the function ignores the signal and returns normally anyway, `using` throws `LockLostError` — the section did
  // not run exclusively and the caller should know." A function that blocks the event loop past the ttl returns
  // before the watchdog can abort the signal; when Redis then cannot answer the release, nothing proves the lock was
  // still ours: the lease had run out.
  it('rejects with LockLostError, not the result and a warning', async () => {
    const server = trackForCleanup(await startRedisServer());
    const { locks } = await privateServerLocks(server);
    const warnings: string[] = [];
    const spy = jest.spyOn(Logger.prototype, 'warn').mockImplementation((m: unknown) => void warnings.push(String(m)));
    try {
      const resource = unique('overran');
      const run = locks.using(resource, { ttl: 500 }, () => {
        server.pause();
        const until = performance.now() + 800; // past the 500 ms lease, the event loop blocked
        while (performance.now() < until);
        return 'done';
      });
      const err = await errorOf(() => run).finally(() => server.resume());
      expect(err).toBeInstanceOf(LockLostError);
      expect((err as LockLostError).cause).toBeInstanceOf(RedisUnavailableError);
    } finally {
      spy.mockRestore();
    }
  });
});

describe('lock.extensionThreshold', () => {
  // "`lock.extensionThreshold` for the module, or per call ... It must be below the ttl": a module threshold not below
  // `lock.ttl` was taken at start and ignored by every lock of the default ttl (the default two thirds applied
  // instead), without a word; a `@WithLock` without a ttl of its own already stopped the start for it.
  it('not below lock.ttl is an InvalidOptionsError at start, naming both options', async () => {
    const start = createToolkitApp({ target: 'single', lock: { ttl: 2_000, extensionThreshold: 2_000 } });
    const err = await errorOf(() => start);
    expect(err).toBeInstanceOf(InvalidOptionsError);
    expect((err as Error).message).toContain('lock.extensionThreshold must be below lock.ttl (2000)');
    // without lock.ttl: against its default, 10 s
    const byDefault = await errorOf(() => createToolkitApp({ target: 'single', lock: { extensionThreshold: 10_000 } }));
    expect((byDefault as Error).message).toContain('lock.extensionThreshold must be below lock.ttl (10000)');
  });
});
