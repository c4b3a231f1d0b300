import 'reflect-metadata';
import {
  InvalidOptionsError,
  type Lock,
  LockLostError,
  LockNotAcquiredError,
  LockService,
  Semaphore,
} from '../../lib/index.js';
import { LOCK_MODES, lockClients, lockService, unique } from '../support/lock-modes.js';
import { closeToolkitApps } from '../support/toolkit-app.js';
import { sleep, waitFor } from '../support/wait.js';

afterEach(closeToolkitApps);

describe.each(LOCK_MODES)('semaphore on %s', (mode) => {
  it('a semaphore of 3 under 30 concurrent holders (3 app instances) never has more than 3', async () => {
    const services = await Promise.all([0, 1, 2].map(() => lockService(mode, { retry: { delay: 5, jitter: 5 } })));
    const name = unique('sem30');
    const semaphores = services.map(({ locks }) => locks.semaphore(name, { limit: 3, ttl: 5_000 }));
    let holding = 0;
    let most = 0;
    let runs = 0;
    await Promise.all(
      Array.from({ length: 30 }, (_, w) =>
        semaphores[w % 3].using({ waitMs: 60_000 }, async (_signal, permit) => {
          expect(permit.kind).toBe('semaphore');
          holding++;
          runs++;
          most = Math.max(most, holding);
          await sleep(20);
          holding--;
        }),
      ),
    );
    expect(runs).toBe(30);
    expect(most).toBe(3);
    expect(await semaphores[0].holders()).toBe(0);
  });

  // Paced by what Redis holds, not by the machine: with a and b on a ttl of 300 ms, a slow moment (a loaded machine,
  // a GC pause) past 300 ms between the two acquires and the checks below let a permit expire first, and a check
  // failed: a third permit granted, the `waitMs: 50` acquire resolved, or b was lost before its auto-extension began.
  it("a lost holder's permit is recovered after its ttl, and it can no longer extend or release", async () => {
    const { locks } = await lockService(mode);
    const sem = locks.semaphore(unique('sem-lost'), { limit: 2, ttl: 2_000 });
    const a = await sem.acquire({ ttl: 30_000 }); // held through the checks, however long they take
    const b = await sem.acquire();
    b.startAutoExtend(); // b keeps its permit alive: extended when 2/3 of its 2 s are left
    expect(await sem.tryAcquire()).toBeNull();
    await expect(sem.acquire({ waitMs: 50 })).rejects.toBeInstanceOf(LockNotAcquiredError);
    // a "crashes" with 2.2 s left (never extended or released again): its permit ends after b's own ttl would have, so
    // b still holding then is its auto-extension's doing
    await a.extend(2_200);
    let c = null as Lock | null;
    expect(await waitFor(async () => (c = await sem.tryAcquire({ ttl: 5_000 })) !== null, 10_000)).toBe(true);
    expect(await sem.tryAcquire()).toBeNull(); // b (kept alive) and c hold the 2 permits
    await expect(a.extend()).rejects.toBeInstanceOf(LockLostError);
    await expect(a.release()).rejects.toBeInstanceOf(LockLostError);
    await b.release();
    await c!.release();
    const d = await sem.tryAcquire();
    expect(d).not.toBeNull();
    await d!.release();
  });

  it('release gives the permit back at once, and a waiter of the same process is woken', async () => {
    const { locks } = await lockService(mode, { retry: { count: 100, delay: 5_000, jitter: 0 } });
    const sem = locks.semaphore(unique('sem-wake'), { limit: 1 });
    const first = await sem.acquire();
    const order: string[] = [];
    const waiting = sem.acquire().then((p: Lock) => {
      order.push('second');
      return p;
    });
    await sleep(50);
    order.push('release');
    await first.release();
    const second = await waiting;
    expect(order).toEqual(['release', 'second']);
    await second.release();
  });
});

describe('semaphore options', () => {
  it('a limit that is not an integer >= 1 is an InvalidOptionsError', async () => {
    const { locks } = await lockService('single');
    expect(() => locks.semaphore('x', { limit: 0 })).toThrow(InvalidOptionsError);
    expect(() => locks.semaphore('x', { limit: 1.5 })).toThrow(InvalidOptionsError);
    expect(() => locks.semaphore('x', { limit: 2, ttl: -1 })).toThrow(InvalidOptionsError);
    expect(locks.semaphore('x', { limit: 2 })).toBeInstanceOf(Semaphore);
    expect(LockService.current()).toBeUndefined();
  });

  // semaphoreQuorum(3, 1e16) is 4 (1e16 + 1 is 1e16 in a double): such a permit could never be granted on a quorum.
  it('a limit past 2^53 - 1 is an InvalidOptionsError; the largest one grants permits on a quorum', async () => {
    const { locks } = await lockService('quorum');
    for (const limit of [2 ** 53, 1e16, 2 ** 60]) {
      expect(() => locks.semaphore(unique('huge'), { limit })).toThrow(/limit must be an integer from 1 to/);
    }
    const semaphore = locks.semaphore(unique('largest'), { limit: Number.MAX_SAFE_INTEGER });
    const permit = await semaphore.tryAcquire();
    expect(permit).not.toBeNull();
    expect(await semaphore.holders()).toBe(1);
    await permit!.release();
  });

  // A ttl past 100 years reached the batched acquire script, whose PEXPIRE refused it (1e+17): every acquire of that
  // tick failed, and every permit of it stayed, with no expiry on the holders' set.
  it('a ttl over 100 years is an InvalidOptionsError before any Redis call; the calls of its tick are unharmed', async () => {
    const { locks } = await lockService('single');
    expect(() => locks.semaphore('y', { limit: 2, ttl: 1e17 })).toThrow(InvalidOptionsError);
    const semaphore = locks.semaphore(unique('sem-ttl'), { limit: 2 });
    const calls = [semaphore.acquire({ ttl: 10_000 }), semaphore.acquire({ ttl: 1e17 })];
    const [fine, huge] = await Promise.allSettled(calls);
    expect(huge.status === 'rejected' && huge.reason).toBeInstanceOf(InvalidOptionsError);
    expect(fine.status).toBe('fulfilled');
    if (fine.status === 'fulfilled') await fine.value.release();
    await expect(locks.acquireAll([unique('a'), unique('b')], { ttl: 1e17 })).rejects.toBeInstanceOf(
      InvalidOptionsError,
    );
  });
});

describe('semaphore on a quorum: never limit + 1 holders', () => {
  it('needs more than a majority when limit > 1 (3 nodes: all 3), so interleaved grants cannot admit a 4th', async () => {
    const { semaphoreQuorum } = await import('../../lib/lock/lock.semaphore.js');
    expect(semaphoreQuorum(3, 1)).toBe(2);
    expect(semaphoreQuorum(3, 2)).toBe(3);
    expect(semaphoreQuorum(3, 3)).toBe(3);
    expect(semaphoreQuorum(5, 1)).toBe(3);
    expect(semaphoreQuorum(5, 3)).toBe(4);
    expect(semaphoreQuorum(5, 4)).toBe(5);

    const { SEMAPHORE_ACQUIRE } = await import('../../lib/lock/lock.scripts.js');
    const { KeyBuilder } = await import('../../lib/common/keys.js');
    const { locks, connection } = await lockService('quorum');
    const name = unique('sem-interleaved');
    const key = new KeyBuilder('rtk:').tagged('lock', name, ':sem');
    const [n1, n2, n3] = lockClients('quorum', connection, locks);
    // Three holders, each granted by a majority: A and B on n1+n2, C on n1+n3. n1 is full, n2 and n3 are not.
    for (const [client, token] of [
      [n1, 'A'],
      [n2, 'A'],
      [n1, 'B'],
      [n2, 'B'],
      [n1, 'C'],
      [n3, 'C'],
    ] as const) {
      expect(await SEMAPHORE_ACQUIRE.run(client, [key], [token, 5_000, 3])).toEqual([1]);
    }
    // A majority (n2 + n3) would admit a 4th holder. Ours asks all three and n1 refuses.
    const sem = locks.semaphore(name, { limit: 3 });
    expect(await sem.tryAcquire()).toBeNull();
    for (const client of [n1, n2]) expect(await client.zscore(key, 'A')).not.toBeNull();
    // Our refused attempt is undone everywhere. n1's refusal alone decides the answer, so a node that had not replied
    // by then is undone once its grant arrives: on a busy machine that is after tryAcquire returned.
    const undone = async () => (await n2.zcard(key)) === 2 && (await n3.zcard(key)) === 1;
    expect(await waitFor(undone, 2_000)).toBe(true);
  });
});
