import 'reflect-metadata';
import { InvalidOptionsError, type Lock, LockNotAcquiredError, type LockService } from '../../lib/index.js';
import type { RedisClient } from '../../lib/common/lua-script.js';
import { lockClients, lockKey, lockService, unique } from '../support/lock-modes.js';
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
});

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
