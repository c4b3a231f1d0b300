import 'reflect-metadata';
import { InvalidOptionsError, LockLostError, LockService, RedisUnavailableError, WithLock } from '../../lib/index.js';
import { KeyBuilder } from '../../lib/common/keys.js';
import { SEMAPHORE_ACQUIRE } from '../../lib/lock/lock.scripts.js';
import { LOCK_MODES, lockClients, lockKey, lockService, quorumNodeClients, unique } from '../support/lock-modes.js';
import { sharedServers } from '../support/shared-servers.js';
import { closeToolkitApps, createToolkitApp } from '../support/toolkit-app.js';
import { settleWithin, sleep, waitFor } from '../support/wait.js';

afterEach(closeToolkitApps);

const semaphoreKey = (name: string): string => new KeyBuilder('rtk:').tagged('lock', name, ':sem');

describe.each(['single', 'cluster'] as const)('a fractional lock.ttl on %s', (mode) => {
  // 1500.5 passed the start-up check but reached Redis as is: every acquire failed with "ERR value is not an integer",
  // and a semaphore's permit was added before its PEXPIRE failed, so it stayed until its ttl.
  it('is rounded up to whole ms: locks, permits and acquireAll work with the module ttl', async () => {
    const { locks, connection } = await lockService(mode, { ttl: 1500.5 });
    const [client] = lockClients(mode, connection, locks);
    const resource = unique('fractional');
    const lock = await locks.acquire(resource);
    expect(lock.ttl).toBe(1501);
    const pttl = await client.pttl(lockKey(resource));
    expect(pttl).toBeGreaterThan(1_000);
    expect(pttl).toBeLessThanOrEqual(1501);
    await lock.release();

    const name = unique('fractional-sem');
    const semaphore = locks.semaphore(name, { limit: 1 });
    expect(semaphore.ttl).toBe(1501);
    const permit = await semaphore.tryAcquire();
    expect(permit).not.toBeNull();
    expect(permit!.ttl).toBe(1501);
    expect(await semaphore.holders()).toBe(1);
    await permit!.release();
    expect(await semaphore.holders()).toBe(0);
    expect(await client.zcard(semaphoreKey(name))).toBe(0);

    const multi = await locks.acquireAll([unique('a'), unique('b')]);
    expect(multi.ttl).toBe(1501);
    await multi.release();
  });

  it('semaphore-acquire.lua leaves no permit behind when the expiry of the holders set fails', async () => {
    const { locks, connection } = await lockService(mode);
    const [client] = lockClients(mode, connection, locks);
    const key = semaphoreKey(unique('sem-pexpire'));
    // A fractional ttl (never sent by the library since it rounds up): ZADD takes it, PEXPIRE refuses it.
    await expect(SEMAPHORE_ACQUIRE.run(client, [key], ['holder', '1500.5', 2])).rejects.toThrow(/not an integer/);
    expect(await client.zcard(key)).toBe(0);
    expect(await SEMAPHORE_ACQUIRE.run(client, [key], ['holder', 1_500, 2])).toEqual([1]);
    expect(await client.zcard(key)).toBe(1);
  });
});

const DAY = 86_400_000;

describe('durations past what a Node timer can wait (2^31 - 1 ms, ~24.8 days)', () => {
  // setTimeout fires after 1 ms for a longer delay: the watchdog of a 30-day lock lost it at once, and a 90-day
  // lock's next extension (30 days away) ran every millisecond.
  it('a 30-day lock kept alive by using or startAutoExtend stays held and is not extended early', async () => {
    const { locks } = await lockService('single');
    let extended = 0;
    const lost: unknown[] = [];
    locks.events.on('extended', () => extended++);
    locks.events.on('lost', (e) => lost.push(e.reason));
    const result = await locks.using(unique('30-days'), { ttl: 30 * DAY }, async (signal) => {
      await sleep(100);
      return signal.aborted ? 'aborted' : 'ok';
    });
    expect(result).toBe('ok');

    const lock = await locks.acquire(unique('90-days'), { ttl: 90 * DAY });
    const signal = lock.startAutoExtend({ onLost: (err) => lost.push(err) });
    await sleep(100);
    expect(signal.aborted).toBe(false);
    expect(lock.isHeld).toBe(true);
    await lock.release();
    expect(lost).toEqual([]);
    expect(extended).toBe(0);
  });

  it('a retry pause (delay + jitter) past it is an InvalidOptionsError, for the module and per call', async () => {
    await expect(lockService('single', { retry: { count: 5, delay: 3e9 } })).rejects.toThrow(/lock\.retry.*2147483647/);
    await expect(lockService('single', { retry: { delay: 2e9, jitter: 2e9 } })).rejects.toBeInstanceOf(
      InvalidOptionsError,
    );
    const { locks } = await lockService('single');
    const resource = unique('retry-pause');
    const holder = await locks.acquire(resource, { ttl: 60_000 });
    const calls = [
      locks.acquire(resource, { retry: { count: 100, delay: 1e12 } }),
      locks.acquire(resource, { waitMs: 5e9, retry: { delay: 3e9, jitter: 0 } }),
      locks.acquire(resource, { retry: { delay: 2e9, jitter: 2e9 } }),
      locks.semaphore(unique('sem'), { limit: 1 }).acquire({ retry: { delay: 3e9 } }),
      locks.acquireAll([unique('a'), unique('b')], { retry: { delay: 3e9 } }),
    ];
    for (const call of calls) {
      expect(
        await settleWithin(
          call.then(String, (err: unknown) => err),
          1_000,
          'pending',
        ),
      ).toBeInstanceOf(InvalidOptionsError);
    }
    // The longest pause a timer keeps is fine.
    const waiting = locks.acquire(resource, { retry: { count: 1, delay: 2_147_483_597, jitter: 50 } });
    await holder.release();
    await (await waiting).release();
  });
});

describe('release on a quorum', () => {
  // A's lock expired on two nodes while a write pause on the first kept it there (t6 of the audit: CLIENT PAUSE), and
  // B took it on those two. A's release freed the first node and took the two refusals for "not held": it resolved,
  // where one server says LockLostError.
  it('is LockLostError when another owner holds the lock (a lock, a permit, a multi-lock) on a majority', async () => {
    const a = await lockService('quorum');
    const b = await lockService('quorum');
    const [n1, n2, n3] = quorumNodeClients(a.locks);
    const resource = unique('taken');
    const lock = await a.locks.acquire(resource, { ttl: 10_000 });
    for (const node of [n2, n3]) await node.del(lockKey(resource));
    const taken = await b.locks.tryAcquire(resource, { ttl: 10_000 });
    expect(taken).not.toBeNull();
    await expect(lock.release()).rejects.toBeInstanceOf(LockLostError);
    expect(await n1.exists(lockKey(resource))).toBe(0);
    for (const node of [n2, n3]) expect(await node.get(lockKey(resource))).toBe(taken!.token);
    await taken!.release();

    const name = unique('taken-sem');
    const permit = await a.locks.semaphore(name, { limit: 1 }).acquire({ ttl: 10_000 });
    for (const node of [n2, n3]) await node.zrem(semaphoreKey(name), permit.token);
    const other = await b.locks.semaphore(name, { limit: 1 }).tryAcquire({ ttl: 10_000 });
    expect(other).not.toBeNull();
    await expect(permit.release()).rejects.toBeInstanceOf(LockLostError);
    await other!.release();

    const [x, y] = [unique('x'), unique('y')];
    const multi = await a.locks.acquireAll([x, y], { ttl: 10_000 });
    for (const node of [n2, n3]) await node.del(lockKey(x), lockKey(y));
    const both = await b.locks.tryAcquireAll([x, y], { ttl: 10_000 });
    expect(both).not.toBeNull();
    await expect(multi.release()).rejects.toBeInstanceOf(LockLostError);
    await both!.release();
  });

  it('resolves when a majority released it, though a minority no longer held it', async () => {
    const { locks } = await lockService('quorum');
    const [, , n3] = quorumNodeClients(locks);
    const resource = unique('minority-gone');
    const lock = await locks.acquire(resource, { ttl: 10_000 });
    await n3.del(lockKey(resource));
    await lock.release();
    expect(lock.isHeld).toBe(false);
  });
});

describe.each(LOCK_MODES)('a multi-lock found lost by extend on %s', (mode) => {
  // extend refused (one key gone) marked the lock lost, after which release() threw at once without asking Redis:
  // the keys still ours stayed held for their whole ttl, though release "releases what is still ours".
  it('frees the resources still held, at once', async () => {
    const { locks, connection } = await lockService(mode);
    const clients = lockClients(mode, connection, locks);
    const [a, b, c] = [unique('a'), unique('b'), unique('c')];
    const multi = await locks.acquireAll([a, b, c], { ttl: 10_000 });
    for (const client of clients) await client.del(lockKey(a));
    await expect(multi.extend()).rejects.toBeInstanceOf(LockLostError);
    for (const client of clients) {
      expect(await client.exists(lockKey(b))).toBe(0);
      expect(await client.exists(lockKey(c))).toBe(0);
    }
    await expect(multi.release()).rejects.toBeInstanceOf(LockLostError);
    const next = await locks.tryAcquireAll([b, c]);
    expect(next).not.toBeNull();
    await next!.release();
  });
});

describe('a permit found lost by extend on a quorum', () => {
  // The nodes that still held it extended it for another ttl: a place of the semaphore taken there by nobody.
  it('is removed from the nodes that still held it', async () => {
    const { locks } = await lockService('quorum');
    const [n1, n2, n3] = quorumNodeClients(locks);
    const name = unique('lost-permit');
    const permit = await locks.semaphore(name, { limit: 2 }).acquire({ ttl: 10_000 });
    for (const node of [n2, n3]) await node.zrem(semaphoreKey(name), permit.token);
    await expect(permit.extend()).rejects.toBeInstanceOf(LockLostError);
    expect(await waitFor(async () => (await n1.zscore(semaphoreKey(name), permit.token)) === null, 1_000)).toBe(true);
  });
});

describe.each(['single', 'cluster'] as const)('a bad autoExtend on a semaphore or acquireAll (%s)', (mode) => {
  // It was checked by startAutoExtend, after the permits or locks were taken: the call threw and left them held.
  it('is an InvalidOptionsError before anything is taken', async () => {
    const { locks, connection } = await lockService(mode);
    const [client] = lockClients(mode, connection, locks);
    const name = unique('sem-bad-auto-extend');
    const semaphore = locks.semaphore(name, { limit: 1, ttl: 10_000 });
    const onLost = 'log' as unknown as () => void;
    for (const call of [
      () => semaphore.acquire({ autoExtend: { extensionThreshold: 99_999 } }),
      () => semaphore.acquire({ ttl: 500, autoExtend: { extensionThreshold: 500 } }),
      () => semaphore.tryAcquire({ autoExtend: { extensionThreshold: 10_000 } }),
      () => semaphore.tryAcquire({ autoExtend: { onLost } }),
      () => semaphore.using({ extensionThreshold: 10_000 }, () => 1),
    ]) {
      await expect(call()).rejects.toBeInstanceOf(InvalidOptionsError);
    }
    expect(await client.zcard(semaphoreKey(name))).toBe(0);
    const permit = await semaphore.tryAcquire({ autoExtend: { extensionThreshold: 9_000 } });
    expect(permit).not.toBeNull();
    await permit!.release();

    const [a, b] = [unique('a'), unique('b')];
    for (const call of [
      () => locks.acquireAll([a, b], { ttl: 10_000, autoExtend: { extensionThreshold: 99_999 } }),
      () => locks.tryAcquireAll([a, b], { autoExtend: { onLost } }),
      () => locks.tryAcquireAll([a, b], { ttl: 1_000, autoExtend: { extensionThreshold: 1_000 } }),
    ]) {
      await expect(call()).rejects.toBeInstanceOf(InvalidOptionsError);
    }
    expect(await client.exists(lockKey(a))).toBe(0);
    expect(await client.exists(lockKey(b))).toBe(0);
    const both = await locks.tryAcquireAll([a, b], { ttl: 1_000, autoExtend: { extensionThreshold: 500 } });
    expect(both).not.toBeNull();
    await both!.release();
  });

  // usingAll checked its extensionThreshold only once it held every lock: with one of them busy it waited for it (here
  // LockNotAcquiredError) before telling the caller the option was wrong, and a free set was taken and released.
  it('usingAll: an extensionThreshold not below the ttl is an InvalidOptionsError before any lock is asked for', async () => {
    const { locks } = await lockService(mode);
    const [a, b] = [unique('a'), unique('b')];
    const busy = await locks.acquire(b, { ttl: 10_000 });
    let ran = 0;
    await expect(
      locks.usingAll([a, b], { ttl: 1_000, extensionThreshold: 5_000, waitMs: 0 }, () => ran++),
    ).rejects.toBeInstanceOf(InvalidOptionsError);
    expect(ran).toBe(0);
    await busy.release();
    expect(await locks.usingAll([a, b], { ttl: 1_000, extensionThreshold: 500 }, () => ++ran)).toBe(1);
  });
});

describe('@WithLock', () => {
  // Accepted at decoration, then every call failed in startAutoExtend.
  it('an extensionThreshold not below its ttl is an InvalidOptionsError at decoration', () => {
    expect(() => WithLock({ resource: 'r', ttl: 1_000, extensionThreshold: 5_000 })).toThrow(InvalidOptionsError);
    expect(() => WithLock({ resource: 'r', ttl: 1_000, extensionThreshold: 1_000 })).toThrow(/below the ttl/);
    expect(() => WithLock({ resource: 'r', ttl: 999.5, extensionThreshold: 999 })).not.toThrow();
    // without a ttl of its own the module's decides, at the call
    expect(() => WithLock({ resource: 'r', extensionThreshold: 5_000 })).not.toThrow();
  });
});

describe('a ttl too short for a quorum', () => {
  // validity(ttl) = ttl - round(ttl * driftFactor) - 2 was <= 0 for a ttl of 1-2 ms and 1-3 ms up to 5: healthy nodes
  // gave RedisUnavailableError "fewer than 2 of 3 lock servers answered (no answer in time)", or null (busy).
  it('is an InvalidOptionsError when it leaves under 10 ms of validity (ttl 12 at the default driftFactor)', async () => {
    const { locks } = await lockService('quorum');
    for (const ttl of [1, 2, 3, 5, 11]) {
      await expect(locks.tryAcquire(unique('short'), { ttl })).rejects.toThrow(/at least 12 ms/);
    }
    await expect(locks.acquire(unique('short'), { ttl: 2 })).rejects.toBeInstanceOf(InvalidOptionsError);
    await expect(locks.acquireAll([unique('a'), unique('b')], { ttl: 3 })).rejects.toBeInstanceOf(InvalidOptionsError);
    expect(() => locks.semaphore(unique('short-sem'), { limit: 2, ttl: 2 })).toThrow(InvalidOptionsError);
    const semaphore = locks.semaphore(unique('short-sem'), { limit: 2 });
    await expect(semaphore.tryAcquire({ ttl: 3 })).rejects.toBeInstanceOf(InvalidOptionsError);
    const lock = await locks.acquire(unique('short-extend'), { ttl: 5_000 });
    await expect(lock.extend(3)).rejects.toBeInstanceOf(InvalidOptionsError);
    expect(lock.isHeld).toBe(true);
    await lock.release();
    // 12 ms is accepted: granted, or null when the nodes took longer than its 10 ms of validity, or (a loaded
    // machine, a run of 2026-12-07) RedisUnavailableError when fewer than 2 answered within those 10 ms; never
    // refused as an option
    const shortest = await locks.tryAcquire(unique('shortest'), { ttl: 12 }).then(
      (lock) => lock?.release().catch(() => undefined),
      (err: unknown) => err,
    );
    if (shortest !== undefined) {
      expect(shortest).toBeInstanceOf(RedisUnavailableError);
      expect((shortest as Error).message).toContain('no answer in time');
    }
    // one server has no drift allowance: no minimum there
    const single = await lockService('single');
    const one = await single.locks.tryAcquire(unique('single-short'), { ttl: 2 });
    expect(one).not.toBeNull();
  });

  it('lock.ttl on a quorum is checked at start-up, with the driftFactor given', async () => {
    const nodes = sharedServers().quorum.map((q) => ({ url: q.url }));
    await expect(createToolkitApp({ target: 'single', lock: { ttl: 5, quorum: { nodes } } })).rejects.toThrow(
      /lock\.ttl .*at least 12 ms/,
    );
    await expect(
      createToolkitApp({ target: 'single', lock: { ttl: 20, quorum: { nodes, driftFactor: 0.5 } } }),
    ).rejects.toThrow(/at least 24 ms/);
    const app = await createToolkitApp({ target: 'single', lock: { ttl: 24, quorum: { nodes, driftFactor: 0.5 } } });
    expect(app.get(LockService).nodes).toBe(3);
  });
});
