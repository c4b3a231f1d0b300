import 'reflect-metadata';
import { InvalidOptionsError, type Lock, WithLock } from '../../lib/index.js';
import { KeyBuilder } from '../../lib/common/keys.js';
import { lockKey, lockService, unique } from '../support/lock-modes.js';
import { errorOf } from '../support/errors.js';
import { closeToolkitApps } from '../support/toolkit-app.js';
import { sleep } from '../support/wait.js';

afterEach(closeToolkitApps);

/** Expects InvalidOptionsError with a message matching `message`. */
async function refused(run: () => unknown, message: RegExp): Promise<void> {
  const err = await errorOf(run);
  expect(err).toBeInstanceOf(InvalidOptionsError);
  expect((err as Error).message).toMatch(message);
}

const semaphoreKey = (name: string): string => new KeyBuilder('rtk:').tagged('lock', name, ':sem');

// A misspelled or unknown option key was ignored: `{ waitMS: 2_000 }` made one attempt (the default wait), `{ retry:
// { cout: 0 } }` retried 10 times, `{ autoExtend: { onlost } }` warned instead of calling it, `@WithLock({ waitMS })`
// used lock.retry. Each is now an InvalidOptionsError naming the key and the nearest known one, before any Redis call.
describe('lock option names', () => {
  it('acquire, tryAcquire and using refuse an unknown key (also in retry and autoExtend), nothing taken', async () => {
    const { locks, connection } = await lockService('single');
    const redis = connection.client;
    const r = unique('names');
    let ran = false;
    await refused(
      () => locks.acquire(r, { ttl: 5_000, waitMS: 2_000 } as never),
      /^acquire: waitMS is not a known option \(did you mean waitMs\?\); known: ttl, retry, waitMs/,
    );
    await refused(
      () => locks.acquire(r, { retry: { cout: 0 } } as never),
      /retry: cout is not .* \(did you mean count\?\)/,
    );
    await refused(
      () => locks.acquire(r, { autoExtend: { onlost: () => undefined } } as never),
      /autoExtend: onlost is not a known option \(did you mean onLost\?\)/,
    );
    // tryAcquire makes one attempt: a wait or an extension threshold would be ignored
    await refused(() => locks.tryAcquire(r, { ttl: 1_000, waitMs: 50 } as never), /^tryAcquire: waitMs is not a known/);
    await refused(
      () => locks.tryAcquire(r, { tll: 1_000 } as never),
      /tll is not a known option \(did you mean ttl\?\)/,
    );
    await refused(
      () => locks.using(r, { maxHold: 1_000 } as never, () => (ran = true)),
      /^using: maxHold is not a known option \(did you mean maxHoldMs\?\)/,
    );
    await refused(() => locks.acquire(r, 'fast' as never), /^acquire: options must be an object/);
    expect(ran).toBe(false);
    expect(await redis.exists(lockKey(r))).toBe(0);
    // every documented option is still accepted
    const lock = await locks.acquire(r, {
      ttl: 5_000,
      retry: { count: 1, delay: 10, jitter: 0 },
      waitMs: undefined,
      extensionThreshold: 1_000,
      autoExtend: { extensionThreshold: 1_000, onLost: () => undefined },
    });
    await lock.release();
    await ((await locks.tryAcquire(r, { ttl: 1_000, autoExtend: false })) as Lock).release();
    expect(
      await locks.using(r, { ttl: 1_000, waitMs: 100, maxHoldMs: 5_000, extensionThreshold: 500 }, () => 'ok'),
    ).toBe('ok');
  });

  it('startAutoExtend and runHolding refuse an unknown key', async () => {
    const { locks } = await lockService('single');
    const lock = (await locks.tryAcquire(unique('names-held'), { ttl: 5_000 })) as Lock;
    await refused(
      () => lock.startAutoExtend({ extentionThreshold: 1_000 } as never),
      /^startAutoExtend: extentionThreshold is not a known option \(did you mean extensionThreshold\?\)/,
    );
    let ran = false;
    await refused(
      () => locks.runHolding(lock, () => (ran = true), { maxHold: 100 } as never),
      /^runHolding: maxHold is not a known option \(did you mean maxHoldMs\?\)/,
    );
    expect(ran).toBe(false);
    // released, as when runHolding refuses an extensionThreshold
    expect(lock.isHeld).toBe(false);
  });

  it('acquireAll, tryAcquireAll and usingAll refuse an unknown key, nothing taken', async () => {
    const { locks, connection } = await lockService('single');
    const redis = connection.client;
    const rs = [unique('names-a'), unique('names-b')];
    await refused(
      () => locks.acquireAll(rs, { waitMs: 100, autoextend: true } as never),
      /^acquireAll: autoextend is not a known option \(did you mean autoExtend\?\)/,
    );
    await refused(
      () => locks.acquireAll(rs, { retry: { dealy: 5 } } as never),
      /dealy is not .* \(did you mean delay\?\)/,
    );
    await refused(() => locks.tryAcquireAll(rs, { waitMs: 100 } as never), /^tryAcquireAll: waitMs is not a known/);
    await refused(
      () => locks.usingAll(rs, { ttll: 1_000 } as never, () => 1),
      /^usingAll: ttll is not a known option \(did you mean ttl\?\)/,
    );
    // the call's extensionThreshold now applies with autoExtend: true, so it is checked before anything is taken
    await refused(
      () => locks.acquireAll(rs, { ttl: 500, autoExtend: true, extensionThreshold: 500 }),
      /^acquireAll: extensionThreshold must be a number of ms above 0 and below the ttl \(500\)/,
    );
    for (const r of rs) expect(await redis.exists(lockKey(r))).toBe(0);
    const all = await locks.acquireAll(rs, { ttl: 1_000, retry: { count: 0 }, waitMs: 10, autoExtend: true });
    await all.release();
  });

  it('a semaphore refuses an unknown key when made and in acquire, tryAcquire and using, nothing taken', async () => {
    const { locks, connection } = await lockService('single');
    const name = unique('names-sem');
    await refused(
      () => locks.semaphore(name, { limit: 2, tll: 1_000 } as never),
      /^semaphore "names-sem:[^"]+": tll is not a known option \(did you mean ttl\?\); known: limit, ttl$/,
    );
    const sem = locks.semaphore(name, { limit: 2, ttl: 1_000 });
    await refused(
      () => sem.acquire({ watiMs: 100 } as never),
      /watiMs is not a known option \(did you mean waitMs\?\)/,
    );
    await refused(() => sem.tryAcquire({ retry: { count: 1 } } as never), /tryAcquire: retry is not a known option/);
    // a semaphore's using has no maxHoldMs (it was ignored)
    await refused(() => sem.using({ maxHoldMs: 100 } as never, () => 1), /using: maxHoldMs is not a known option/);
    await refused(
      () => sem.acquire({ ttl: 500, autoExtend: true, extensionThreshold: 600 }),
      /extensionThreshold must be a number of ms above 0 and below the ttl \(500\)/,
    );
    expect(await connection.client.exists(semaphoreKey(name))).toBe(0);
    expect(await sem.holders()).toBe(0);
    expect(await sem.using({ ttl: 500, waitMs: 10, extensionThreshold: 100 }, () => 'ok')).toBe('ok');
  });

  // `using` keeps the lock alive itself and dropped an `autoExtend` (its onLost was never called): refused now
  it("using, usingAll and a semaphore's using refuse autoExtend", async () => {
    const { locks, connection } = await lockService('single');
    const r = unique('names-using');
    const onLost = () => undefined;
    await refused(() => locks.using(r, { autoExtend: { onLost } } as never, () => 1), /^using: autoExtend is not a/);
    await refused(() => locks.usingAll([r], { autoExtend: true } as never, () => 1), /^usingAll: autoExtend is not/);
    const sem = locks.semaphore(r, { limit: 1 });
    await refused(() => sem.using({ autoExtend: true } as never, () => 1), /using: autoExtend is not a known/);
    expect(await connection.client.exists(lockKey(r))).toBe(0);
    expect(await sem.holders()).toBe(0);
  });

  // acquire's extensionThreshold was ignored with `autoExtend: true` (the default two thirds of the ttl applied),
  // though documented to apply then
  it.each(['acquire', 'semaphore', 'acquireAll'] as const)(
    "%s with autoExtend: true extends at the call's extensionThreshold",
    async (api) => {
      const { locks } = await lockService('single');
      const r = unique('names-threshold');
      let extended = 0;
      locks.events.on('extended', () => extended++);
      // lead min(5_900, 9/10 of 6_000) = 5_400 ms: the first extension after ~600 ms (the default: after 2_000)
      const options = { ttl: 6_000, autoExtend: true, extensionThreshold: 5_900 };
      const lock =
        api === 'acquire'
          ? await locks.acquire(r, options)
          : api === 'semaphore'
            ? await locks.semaphore(r, { limit: 1 }).acquire(options)
            : await locks.acquireAll([r], options);
      await sleep(1_400);
      expect(extended).toBeGreaterThanOrEqual(1);
      await lock.release();
    },
  );

  it('@WithLock refuses an unknown key when the class is defined', () => {
    const define = (options: object) => () => {
      class Jobs {
        @WithLock(options as never)
        run(): number {
          return 1;
        }
      }
      return Jobs;
    };
    expect(define({ resource: 'x', waitMS: 5_000 })).toThrow(InvalidOptionsError);
    expect(define({ resource: 'x', waitMS: 5_000 })).toThrow(
      /^@WithLock: waitMS is not a known option \(did you mean waitMs\?\); known: resource, ttl, waitMs, onBusy, ext/,
    );
    expect(define({ resource: 'x', waitTimeout: 5_000 })).toThrow(/@WithLock: waitTimeout is not a known option/);
    expect(define({ resource: 'x', onbusy: 'skip' })).toThrow(/onbusy is not a known option \(did you mean onBusy\?\)/);
    expect(define({ resource: 'x', ttl: 1_000, waitMs: 0, onBusy: 'skip', extensionThreshold: 100 })).not.toThrow();
  });
});
