import 'reflect-metadata';
import { InvalidOptionsError, LockLostError, MultiLock, RedisReplyError } from '../../lib/index.js';
import { LOCK_MODES, lockClients, lockKey, lockService, unique } from '../support/lock-modes.js';
import { closeToolkitApps } from '../support/toolkit-app.js';
import { sleep, waitFor } from '../support/wait.js';

afterEach(closeToolkitApps);

describe.each(LOCK_MODES)('multi-resource lock on %s', (mode) => {
  it('10 workers over overlapping resource sets never deadlock and never overlap', async () => {
    const services = await Promise.all([0, 1].map(() => lockService(mode, { retry: { delay: 5, jitter: 10 } })));
    const names = ['a', 'b', 'c', 'd', 'e'].map((n) => unique(n));
    // Every worker locks 2–3 resources, in its own order, sharing some with every other worker.
    const sets = Array.from({ length: 10 }, (_, w) => {
      const set = [names[w % 5], names[(w + 1) % 5], ...(w % 2 ? [names[(w + 3) % 5]] : [])];
      return w % 3 ? set.reverse() : set;
    });
    const inUse = new Map<string, number>();
    let overlaps = 0;
    let runs = 0;
    const fences = new Map<string, number[]>();
    await Promise.all(
      sets.map((set, w) =>
        (async () => {
          for (let i = 0; i < 5; i++) {
            await services[w % 2].locks.usingAll(set, { ttl: 5_000, waitMs: 60_000 }, async (_signal, lock) => {
              for (const r of set) {
                if (inUse.get(r)) overlaps++;
                inUse.set(r, 1);
                fences.set(r, [...(fences.get(r) ?? []), lock.fencingTokens[r]]);
              }
              runs++;
              await sleep(5);
              for (const r of set) inUse.set(r, 0);
            });
          }
        })(),
      ),
    );
    expect(runs).toBe(50);
    expect(overlaps).toBe(0);
    // Each resource's fencing tokens grow strictly in the order the holders ran.
    for (const tokens of fences.values()) expect(tokens).toEqual([...tokens].sort((x, y) => x - y));
    for (const tokens of fences.values()) expect(new Set(tokens).size).toBe(tokens.length);
  });

  it('all or none: a busy resource leaves the others free, and single locks and multi locks exclude each other', async () => {
    const { locks, connection } = await lockService(mode);
    const [a, b, c] = [unique('a'), unique('b'), unique('c')];
    const single = await locks.acquire(b, { ttl: 5_000 });
    expect(await locks.tryAcquireAll([a, b, c])).toBeNull();
    for (const client of lockClients(mode, connection, locks)) {
      expect(await client.exists(lockKey(a))).toBe(0);
      expect(await client.exists(lockKey(c))).toBe(0);
    }
    await single.release();
    const multi = await locks.acquireAll([c, a, b], { ttl: 5_000 });
    expect(multi).toBeInstanceOf(MultiLock);
    expect([...multi.resources].sort()).toEqual([a, b, c].sort());
    expect(multi.fencingTokens[b]).toBeGreaterThan(single.fencingToken);
    expect(await locks.tryAcquire(a)).toBeNull();
    await multi.extend(10_000);
    expect(multi.expiresAt).toBeGreaterThan(Date.now() + 9_000);
    await multi.release();
    const again = await locks.tryAcquire(a);
    expect(again).not.toBeNull();
    await again!.release();
  });

  it('a multi lock kept alive survives its ttl, and losing one resource loses it', async () => {
    const { locks, connection } = await lockService(mode);
    const [a, b] = [unique('a'), unique('b')];
    const lost: LockLostError[] = [];
    const multi = await locks.acquireAll([a, b], { ttl: 200, autoExtend: { onLost: (e) => lost.push(e) } });
    await sleep(600);
    expect(await locks.tryAcquire(b)).toBeNull();
    expect(lost).toHaveLength(0);
    await Promise.all(lockClients(mode, connection, locks).map((cl) => cl.del(lockKey(b))));
    await sleep(400);
    expect(lost).toHaveLength(1);
    await expect(multi.release()).rejects.toBeInstanceOf(LockLostError);
  });
});

describe.each(['single', 'cluster'] as const)('multi-resource fencing on %s', (mode) => {
  it('a lost fence counter does not make the next token go back (floored by the server clock)', async () => {
    const { locks, connection } = await lockService(mode);
    const [a, b] = [unique('a'), unique('b')];
    const first = await locks.acquire(a, { ttl: 5_000 });
    await first.release();
    await connection.client.del(`${lockKey(a)}:fence`);
    const multi = await locks.acquireAll([a, b], { ttl: 5_000 });
    expect(multi.fencingTokens[a]).toBeGreaterThan(first.fencingToken);
    await multi.release();
  });

  it('a fence counter holding a foreign value fails the multi lock (RedisReplyError) and leaves none of it held', async () => {
    const { locks, connection } = await lockService(mode);
    const [a, b] = [unique('a'), unique('b')];
    // the second resource in key order: the first one's lock is already set when its counter fails
    const second = lockKey(a) < lockKey(b) ? b : a;
    await connection.client.set(`${lockKey(second)}:fence`, 'not a number');
    await expect(locks.acquireAll([a, b], { ttl: 5_000, waitMs: 0 })).rejects.toBeInstanceOf(RedisReplyError);
    const held = async () =>
      (await connection.client.exists(lockKey(a))) + (await connection.client.exists(lockKey(b)));
    expect(await waitFor(async () => (await held()) === 0, 2_000)).toBe(true);
    await connection.client.del(`${lockKey(second)}:fence`);
    const multi = await locks.acquireAll([a, b], { ttl: 5_000 });
    expect(Object.keys(multi.fencingTokens).sort()).toEqual([a, b]);
    await multi.release();
  });
});

describe('multi-resource lock options', () => {
  it('empty, duplicate or too many resources are an InvalidOptionsError', async () => {
    const { locks } = await lockService('single');
    await expect(locks.acquireAll([])).rejects.toBeInstanceOf(InvalidOptionsError);
    await expect(locks.acquireAll(['x', 'x'])).rejects.toBeInstanceOf(InvalidOptionsError);
    await expect(locks.acquireAll(Array.from({ length: 101 }, (_, i) => `r${i}`))).rejects.toBeInstanceOf(
      InvalidOptionsError,
    );
  });
});
