import 'reflect-metadata';
import type { Redis } from 'ioredis';
import { InvalidOptionsError, type Lock, LockNotAcquiredError, type LockService } from '../../lib/index.js';
import type { RedisClient } from '../../lib/common/lua-script.js';
import { lockKeysOf } from '../../lib/lock/lock.backend.js';
import type { LockGrants } from '../../lib/lock/lock.grants.js';
import { recordCommandCalls } from '../support/command-recorder.js';
import { lockClients, lockKey, lockService, unique, waitingAndListening, wakeupsOf } from '../support/lock-modes.js';
import { closeToolkitApps } from '../support/toolkit-app.js';
import { sleep, waitFor } from '../support/wait.js';

afterEach(closeToolkitApps);

// How a service's waits for a lock end: what they leave in Redis, and what its other calls of the lock do to them.

const MODES = ['single', 'cluster'] as const;
/** Waiting services on a cluster too (there a release wakes the waiter; on one server it grants it the lock). */
const WAKE = { wakeOnRelease: true };

/** `n` callers of `locks` that tryAcquire `resource` over and over (releasing what they get) until stopped. */
function pollers(locks: LockService, resource: string, n: number): { stop: () => Promise<void> } {
  let stopped = false;
  const loops = Array.from({ length: n }, async () => {
    while (!stopped) {
      const lock = await locks.tryAcquire(resource, { ttl: 10_000 });
      if (lock) await lock.release();
    }
  });
  return {
    stop: async () => {
      stopped = true;
      await Promise.all(loops);
    },
  };
}

/** The lock key is free (no holder) within `ms`. */
const freeWithin = (server: RedisClient, resource: string, ms: number): Promise<boolean> =>
  waitFor(async () => (await server.exists(lockKey(resource))) === 0, ms);

describe.each(MODES)("a service's tryAcquire calls and its waiting acquire on %s", (mode) => {
  // The grant of a release was kept for whatever attempt of the service was in flight, a tryAcquire's included,
  // which never takes a grant: the waiter failed and the lock stayed with its wait's token for its whole ttl.
  it('a waiter gets the lock from the release while other callers of its service keep trying it', async () => {
    const holder = await lockService(mode, WAKE);
    const other = await lockService(mode, WAKE);
    const [server] = lockClients(mode, holder.connection, holder.locks);
    const resource = unique('tries-and-waits');
    const first = await holder.locks.acquire(resource, { ttl: 10_000 });
    const waiter = other.locks
      .acquire(resource, { ttl: 10_000, waitMs: 2_000, retry: { delay: 10, jitter: 0 } })
      .catch((err: unknown) => err);
    await sleep(5);
    const tries = pollers(other.locks, resource, 4);
    await sleep(40);
    await first.release();
    const got = await waiter;
    await tries.stop();
    expect(got).not.toBeInstanceOf(Error);
    const lock = got as Lock;
    expect(lock.fencingToken).toBeGreaterThan(first.fencingToken);
    expect(await server.get(lockKey(resource))).toBe(lock.token);
    await lock.release();
    expect(await freeWithin(server, resource, 1_000)).toBe(true);
  }, 30_000);

  it('a waiter that gives up while other callers of its service keep trying it leaves the lock free for them', async () => {
    const holder = await lockService(mode, WAKE);
    const other = await lockService(mode, WAKE);
    const [server] = lockClients(mode, holder.connection, holder.locks);
    const resource = unique('tries-gave-up');
    const first = await holder.locks.acquire(resource, { ttl: 10_000 });
    const waiter = other.locks.acquire(resource, { ttl: 10_000, waitMs: 80, retry: { delay: 10, jitter: 0 } });
    await sleep(5);
    const tries = pollers(other.locks, resource, 4);
    await expect(waiter).rejects.toBeInstanceOf(LockNotAcquiredError);
    await first.release();
    await sleep(50); // the pollers take the lock and release it again, or find it free
    await tries.stop();
    // nobody of either service holds it now: it is free at once, not held for a 10 s ttl
    expect(other.locks.activity()).toEqual({ held: 0, waiting: 0 });
    expect(await freeWithin(server, resource, 1_000)).toBe(true);
  }, 30_000);

  // The acquire waited without asking Redis while any attempt of its service was in flight, and its error counted
  // every round as an attempt.
  it("the acquire's error counts the attempts that reached Redis, also while tryAcquire calls of its service run", async () => {
    const holder = await lockService(mode, WAKE);
    const other = await lockService(mode, WAKE);
    const resource = unique('honest-count');
    const first = await holder.locks.acquire(resource, { ttl: 10_000 });
    const tries = pollers(other.locks, resource, 4);
    const busy: number[] = [];
    other.locks.events.on('busy', (e) => e.attempts > 1 && busy.push(e.attempts));
    // the acquire's attempts are the ones with ttl 7777 (the pollers' have 10000)
    const { value: err, calls } = await recordCommandCalls(other.connection.client, () =>
      other.locks.acquire(resource, { ttl: 7_777, waitMs: 150, retry: { delay: 10, jitter: 0 } }).catch((e) => e),
    );
    await tries.stop();
    expect(err).toBeInstanceOf(LockNotAcquiredError);
    const sent = acquireAttempts(calls, '7777');
    expect(sent).toBeGreaterThanOrEqual(2);
    expect((err as Error).message).toMatch(new RegExp(`\\(${sent} attempts in \\d+ ms\\)$`));
    expect(busy).toEqual([sent]);
    await first.release();
  }, 30_000);

  it('while a caller of this process holds the lock, the error says no attempt reached Redis', async () => {
    const { locks, connection } = await lockService(mode, WAKE);
    const resource = unique('held-here');
    const held = await locks.acquire(resource, { ttl: 10_000 });
    const busy: number[] = [];
    locks.events.on('busy', (e) => busy.push(e.attempts));
    const { value: err, calls } = await recordCommandCalls(connection.client, () =>
      locks.acquire(resource, { retry: { count: 3, delay: 10, jitter: 0 } }).catch((e) => e),
    );
    expect(calls.filter((c) => c.name.startsWith('eval'))).toEqual([]);
    expect(err).toBeInstanceOf(LockNotAcquiredError);
    expect((err as Error).message).toMatch(
      /\(4 attempts in \d+ ms, of which 0 reached Redis: this process held it or was asking for it\)$/,
    );
    expect(busy).toEqual([4]);
    await held.release();
  }, 30_000);
});

/**
 * How many single-lock acquisitions with `ttl` the script calls in `calls` made (acquire-many.lua: 3 keys and 5
 * arguments per lock; a wait given up, whose grant field ends in ' -', is not an attempt).
 */
function acquireAttempts(calls: { name: string; args: string[] }[], ttl: string): number {
  let n = 0;
  for (const { name, args } of calls) {
    if (!name.startsWith('eval')) continue;
    const keys = Number(args[1]);
    const argv = args.slice(2 + keys);
    if (keys % 3 !== 0 || argv.length !== (keys / 3) * 5) continue;
    for (let i = 0; i < argv.length; i += 5) if (argv[i + 1] === ttl && !argv[i + 3].endsWith(' -')) n++;
  }
  return n;
}

describe.each(MODES)('an option that fails after the lock was taken, on %s', (mode) => {
  it('acquire and tryAcquire with a bad autoExtend throw InvalidOptionsError and leave the lock free', async () => {
    const { locks, connection } = await lockService(mode);
    const [server] = lockClients(mode, connection, locks);
    const resource = unique('bad-auto-extend');
    await expect(
      locks.acquire(resource, { ttl: 10_000, autoExtend: { extensionThreshold: 20_000 } }),
    ).rejects.toBeInstanceOf(InvalidOptionsError);
    expect(await server.exists(lockKey(resource))).toBe(0);
    expect(locks.activity()).toEqual({ held: 0, waiting: 0 });
    // a valid call of the same service gets it at once
    const lock = await locks.acquire(resource, { waitMs: 2_000 });
    expect(lock.expiresAt - Date.now()).toBeGreaterThan(5_000);
    await lock.release();
    const other = unique('bad-on-lost');
    await expect(
      locks.tryAcquire(other, { autoExtend: { onLost: 'log' as unknown as () => void } }),
    ).rejects.toBeInstanceOf(InvalidOptionsError);
    expect(await server.exists(lockKey(other))).toBe(0);
    expect(await locks.tryAcquire(other)).not.toBeNull();
  }, 30_000);
});

describe.each(MODES)('what a wait leaves among the waiting services on %s', (mode) => {
  it('an acquire with no attempt after its first (waitMs 0, retry.count 0) joins no waiting services', async () => {
    const holder = await lockService(mode, WAKE);
    const other = await lockService(mode, WAKE);
    const [server] = lockClients(mode, holder.connection, holder.locks);
    const resource = unique('one-shot');
    const first = await holder.locks.acquire(resource, { ttl: 20_000 });
    for (let i = 0; i < 20; i++) {
      await expect(other.locks.acquire(resource, { waitMs: 0 })).rejects.toBeInstanceOf(LockNotAcquiredError);
      await expect(other.locks.acquire(resource, { retry: { count: 0 } })).rejects.toBeInstanceOf(LockNotAcquiredError);
    }
    expect(await server.zcard(`${lockKey(resource)}:waiters`)).toBe(0);
    await first.release();
  }, 30_000);
});

describe('waits given up on one server (a release grants the lock to a waiting service)', () => {
  // Each given-up wait stayed among the waiting services: a release granted it the lock, its service released it,
  // and so on down the list before a real waiter got it (2,000 stale waits: 2.7 s).
  it('leave the waiting services: the next real waiter is granted the lock by the release itself', async () => {
    const holder = await lockService('single', WAKE);
    const quitter = await lockService('single', WAKE);
    const next = await lockService('single', WAKE);
    const [server] = lockClients('single', holder.connection, holder.locks) as Redis[];
    const resource = unique('given-up');
    const key = lockKey(resource);
    const first = await holder.locks.acquire(resource, { ttl: 20_000 });
    // each joins the waiting services with a first attempt, then gives up after its last one or at its deadline
    for (let i = 0; i < 10; i++) {
      await expect(
        quitter.locks.acquire(resource, { retry: { count: 1, delay: 5, jitter: 0 } }),
      ).rejects.toBeInstanceOf(LockNotAcquiredError);
      await expect(
        quitter.locks.acquire(resource, { waitMs: 30, retry: { delay: 10, jitter: 0 } }),
      ).rejects.toBeInstanceOf(LockNotAcquiredError);
    }
    expect(await waitFor(async () => (await server.zcard(`${key}:waiters`)) === 0, 2_000)).toBe(true);
    const waiting = next.locks.acquire(resource, { retry: { count: 1, delay: 600_000, jitter: 0 }, ttl: 20_000 });
    expect(await waitFor(async () => (await server.zcard(`${key}:waiters`)) === 1, 5_000)).toBe(true);
    // its first wait starts its subscriber: a release before that passes it over (it timed out a CI run so)
    expect(await waitingAndListening([server], resource, next.locks)).toBe(true);
    await first.release();
    const second = await waiting;
    expect(await server.get(key)).toBe(second.token);
    // the release granted it to the real waiter: not one grant to the service that gave up
    expect(wakeupsOf(quitter.locks).received).toBe(0);
    expect(wakeupsOf(next.locks).received).toBe(1);
    await second.release();
    expect(await server.exists(key)).toBe(0);
  }, 30_000);

  // A release may grant the lock to a wait just before its service gives the wait up, and the message may be lost
  // (or still on its way): the call that takes the wait out of the waiting services finds the lock granted to it, and
  // the service releases it, which passes it on.
  it('a wait given up after a release granted it the lock (message not received) passes the lock on', async () => {
    const holder = await lockService('single', WAKE);
    const quitter = await lockService('single', WAKE);
    const next = await lockService('single', WAKE);
    const [server] = lockClients('single', holder.connection, holder.locks) as Redis[];
    const resource = unique('given-up-granted');
    const key = lockKey(resource);
    const first = await holder.locks.acquire(resource, { ttl: 20_000 });
    // the quitter's wait, begun by an attempt that found the lock busy ...
    const grants = (quitter.locks as unknown as { grants: LockGrants }).grants;
    const attempt = grants.begin(lockKeysOf(resource, key), 'quitter-wait-token', 20_000);
    expect(grants.busy(attempt, 20_000)).toBeUndefined();
    // ... then granted the lock by the holder's release, its message lost
    await server.set(key, 'quitter-wait-token', 'PX', 20_000);
    const waiting = next.locks.acquire(resource, { retry: { count: 1, delay: 600_000, jitter: 0 }, ttl: 20_000 });
    expect(await waitFor(async () => (await server.zcard(`${key}:waiters`)) === 1, 5_000)).toBe(true);
    expect(await waitingAndListening([server], resource, next.locks)).toBe(true);
    grants.stopWaiting(key); // its last caller gives up
    const second = await waiting;
    expect(await server.get(key)).toBe(second.token);
    expect(second.fencingToken).toBeGreaterThan(first.fencingToken);
    expect(wakeupsOf(next.locks).received).toBe(1);
    await second.release();
  }, 30_000);
});

/** Every lock server's waiting services for `resource` number `n` within `ms`. */
const waitingWithin = (servers: RedisClient[], resource: string, n: number, ms: number): Promise<boolean> =>
  waitFor(async () => {
    for (const server of servers) if ((await server.zcard(`${lockKey(resource)}:waiters`)) !== n) return false;
    return true;
  }, ms);

/** `promise`'s value, or 'not within <ms>' when it takes longer (a waiter woken by a release, not by a poll). */
const within = <T>(promise: Promise<T>, ms: number): Promise<T | string> => {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<string>((resolve) => (timer = setTimeout(resolve, ms, `not within ${ms} ms`)));
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
};

/** Waits by polling only every 10 minutes: a caller that gets the lock within a test was woken by the release. */
const NO_POLL = { retry: { count: 1, delay: 600_000, jitter: 0 }, ttl: 20_000 };

describe.each(['cluster', 'quorum'] as const)('waits given up on %s (a release wakes a waiting service)', (mode) => {
  // A given-up wait kept its service's id among the lock's waiting services: the next release woke that service (still
  // listening, so the wake counted as delivered) and deleted the lock, and the real waiter slept until its next poll.
  it('leave the waiting services on every server: the next real waiter is woken by the release itself', async () => {
    const holder = await lockService(mode, WAKE);
    const quitter = await lockService(mode, WAKE);
    const next = await lockService(mode, WAKE);
    const servers = lockClients(mode, holder.connection, holder.locks);
    const resource = unique('given-up-wake');
    const first = await holder.locks.acquire(resource, { ttl: 20_000 });
    for (let i = 0; i < 5; i++) {
      await expect(
        quitter.locks.acquire(resource, { retry: { count: 1, delay: 5, jitter: 0 } }),
      ).rejects.toBeInstanceOf(LockNotAcquiredError);
      await expect(
        quitter.locks.acquire(resource, { waitMs: 30, retry: { delay: 10, jitter: 0 } }),
      ).rejects.toBeInstanceOf(LockNotAcquiredError);
      expect(await quitter.locks.tryAcquire(resource)).toBeNull();
    }
    expect(await waitingWithin(servers, resource, 0, 2_000)).toBe(true);
    const waiting = next.locks.acquire(resource, NO_POLL);
    expect(await waitingWithin(servers, resource, 1, 5_000)).toBe(true);
    expect(await waitingAndListening(servers, resource, next.locks)).toBe(true);
    const releasedAt = Date.now();
    await first.release();
    const second = await within(waiting, 5_000);
    expect(typeof second === 'string' ? second : 'acquired').toBe('acquired');
    expect(Date.now() - releasedAt).toBeLessThan(5_000);
    // one wake, to the real waiter: none to the service that gave up
    expect(wakeupsOf(quitter.locks).received).toBe(0);
    expect(wakeupsOf(next.locks).received).toBe(1);
    expect(await waitingWithin(servers, resource, 0, 2_000)).toBe(true);
    await (second as Lock).release();
  }, 30_000);

  if (mode === 'quorum') return; // a quorum wakes a local waiter to try: no hand-over inside the process

  // A wait ended by a hand-over inside its process (a caller there released the lock to it) kept its entry too.
  it('a wait ended by a hand-over from a caller of its process leaves the waiting services', async () => {
    const holder = await lockService(mode, WAKE);
    const service = await lockService(mode, WAKE);
    const [server] = lockClients(mode, holder.connection, holder.locks);
    const resource = unique('handed-wake');
    const key = lockKey(resource);
    await holder.locks.acquire(resource, { ttl: 20_000 });
    const waiting = service.locks.acquire(resource, NO_POLL);
    expect(await waitingWithin([server], resource, 1, 5_000)).toBe(true);
    await server.del(key); // the holder's lock expired (no release: nobody is woken)
    const mine = await service.locks.tryAcquire(resource, { ttl: 20_000 });
    expect(mine).not.toBeNull();
    await (mine as Lock).release(); // handed to the waiting caller
    const handed = await within(waiting, 5_000);
    expect(typeof handed === 'string' ? handed : 'acquired').toBe('acquired');
    expect(await server.get(key)).toBe((handed as Lock).token);
    expect(await waitingWithin([server], resource, 0, 2_000)).toBe(true);
    await (handed as Lock).release();
  }, 30_000);
});

describe.each(MODES)('release() called twice at once on %s', (mode) => {
  it('both calls resolve: one release, one released event, nothing lost', async () => {
    const { locks, connection } = await lockService(mode);
    const [server] = lockClients(mode, connection, locks);
    const events: string[] = [];
    for (const name of ['released', 'lost'] as const) locks.events.on(name, () => events.push(name));
    const resource = unique('double-release');
    const lock = await locks.acquire(resource);
    const results = await Promise.allSettled([lock.release(), lock.release()]);
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'fulfilled']);
    expect(events).toEqual(['released']);
    expect(lock.isHeld).toBe(false);
    expect(await server.exists(lockKey(resource))).toBe(0);
    await expect(lock.release()).resolves.toBeUndefined();
  }, 30_000);

  it('with two callers of the process waiting, one of them gets the lock, then the other', async () => {
    const { locks } = await lockService(mode);
    const events: string[] = [];
    for (const name of ['released', 'lost'] as const) locks.events.on(name, () => events.push(name));
    const resource = unique('double-release-waiters');
    const lock = await locks.acquire(resource);
    const waiting = [locks.acquire(resource, { waitMs: 5_000 }), locks.acquire(resource, { waitMs: 5_000 })];
    await sleep(20);
    const results = await Promise.allSettled([lock.release(), lock.release()]);
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'fulfilled']);
    expect(events).toEqual(['released']);
    const firstWaiter = await Promise.race(waiting);
    expect(firstWaiter.fencingToken).toBeGreaterThan(lock.fencingToken);
    await firstWaiter.release();
    const [a, b] = await Promise.all(waiting);
    const secondWaiter = a === firstWaiter ? b : a;
    expect(secondWaiter.fencingToken).toBeGreaterThan(firstWaiter.fencingToken);
    await secondWaiter.release();
    expect(events).toEqual(['released', 'released', 'released']);
  }, 30_000);
});
