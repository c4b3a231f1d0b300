/**
 * Positional arguments of the lock calls that are not keys (arguments-everywhere.hostile, a17235a, cases 5-7):
 * runHolding's lock and fn, and a semaphore's name given a Symbol. Until 2026-12-05 runHolding(<not a Lock>, fn)
 * rejected with a TypeError (`reading 'expiresAt'`) or a RangeError (`Invalid time value`), runHolding(lock, 'x') with
 * a TypeError (`fn is not a function`) where using says InvalidOptionsError, and semaphore(Symbol()) threw a TypeError
 * (`Cannot convert a Symbol value to a string`) from the options checks naming it before the name was validated.
 */
import 'reflect-metadata';
import { InvalidKeyError, InvalidOptionsError, type Lock, type LockService } from '../../lib/index.js';
import { KeyBuilder } from '../../lib/common/keys.js';
import { lockKey, lockService, unique } from '../support/lock-modes.js';
import { closeToolkitApps } from '../support/toolkit-app.js';

afterEach(closeToolkitApps);

const any = (value: unknown): never => value as never;

/** `call` returns a promise (no synchronous throw) that rejects with `type`, its message matching `message`. */
async function rejects(call: () => unknown, type: new (...args: never[]) => Error, message: RegExp): Promise<void> {
  const result = call();
  expect(result).toBeInstanceOf(Promise);
  const err = await (result as Promise<unknown>).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(type);
  expect((err as Error).message).toMatch(message);
}

/** The resource is free again: the lock was released (not left to expire). */
async function free(locks: LockService, resource: string): Promise<void> {
  const again = await locks.tryAcquire(resource, { ttl: 1_000 });
  expect(again).not.toBeNull();
  await again?.release();
}

describe('runHolding(lock, fn): the lock must be a Lock', () => {
  it.each([
    ['undefined', undefined, 'undefined'],
    ['null', null, 'null'],
    ["'lock'", 'lock', 'a string'],
    ['42', 42, 'a number'],
    ['a Symbol', Symbol('lock'), 'a symbol'],
    ['{}', {}, 'an object'],
  ])('runHolding(%s, fn): InvalidOptionsError naming the argument, fn not run', async (_l, value, kind) => {
    const { locks } = await lockService('single');
    let ran = 0;
    await rejects(
      () => locks.runHolding(any(value), () => ran++),
      InvalidOptionsError,
      new RegExp(`^runHolding\\(lock, fn, options\\): lock must be a Lock .*, got ${kind}$`),
    );
    expect(ran).toBe(0);
  });

  it('a look-alike (resource, expiresAt, release, startAutoExtend) is refused and none of its methods called', async () => {
    const { locks } = await lockService('single');
    const calls: string[] = [];
    const lookalike = {
      resource: 'r',
      expiresAt: Date.now() + 10_000,
      isHeld: true,
      release: async () => void calls.push('release'),
      startAutoExtend: () => {
        calls.push('startAutoExtend');
        return new AbortController().signal;
      },
      stopAutoExtend: () => void calls.push('stopAutoExtend'),
    };
    let ran = 0;
    await rejects(
      () => locks.runHolding(any(lookalike), () => ran++),
      InvalidOptionsError,
      /lock must be a Lock .*, got an object$/,
    );
    expect({ ran, calls }).toEqual({ ran: 0, calls: [] });
  });

  it('a Lock, a MultiLock and a semaphore permit are taken, run and released', async () => {
    const { locks, connection } = await lockService('single');
    const r = unique('rh-lock');
    const [a, b] = [unique('rh-multi-a'), unique('rh-multi-b')];
    const sem = locks.semaphore(unique('rh-sem'), { limit: 1 });
    const lock = await locks.acquire(r, { ttl: 5_000 });
    const multi = await locks.acquireAll([a, b], { ttl: 5_000 });
    const permit = await sem.acquire({ ttl: 5_000 });
    const kinds = await Promise.all(
      [lock, multi, permit].map((l: Lock) => locks.runHolding(l, (_signal, held) => held.kind)),
    );
    expect(kinds).toEqual(['lock', 'multi', 'semaphore']);
    expect([lock.isHeld, multi.isHeld, permit.isHeld]).toEqual([false, false, false]);
    expect(await connection.client.exists(lockKey(r), lockKey(a), lockKey(b))).toBe(0);
    expect(await sem.holders()).toBe(0);
  });
});

describe('the function of runHolding / using / a semaphore', () => {
  it.each([
    ["'not a function'", 'not a function', 'a string'],
    ['undefined', undefined, 'undefined'],
    ['{}', {}, 'an object'],
  ])('runHolding(lock, %s): InvalidOptionsError as using, and the lock released', async (_l, fn, kind) => {
    const { locks } = await lockService('single');
    const r = unique('rh-fn');
    const lock = await locks.acquire(r, { ttl: 10_000 });
    await rejects(
      () => locks.runHolding(lock, any(fn)),
      InvalidOptionsError,
      new RegExp(`^runHolding\\(lock, fn, options\\): fn must be a function, got ${kind}$`),
    );
    expect(lock.isHeld).toBe(false);
    await free(locks, r);
    // the fn is checked before the options: what the caller sees names the first wrong argument
    const other = await locks.acquire(r, { ttl: 10_000 });
    await rejects(() => locks.runHolding(other, any(fn), any({ maxHold: 1 })), InvalidOptionsError, /fn must be/);
    expect(other.isHeld).toBe(false);
  });

  it('using, a semaphore using and usingAll refuse it the same way, before taking anything', async () => {
    const { locks, connection } = await lockService('single');
    const r = unique('using-fn');
    await rejects(
      () => locks.using(r, {}, any('x')),
      InvalidOptionsError,
      /^using\(resource, options, fn\): fn must be a function, got a string$/,
    );
    expect(await connection.client.exists(lockKey(r))).toBe(0);
    const sem = locks.semaphore(unique('using-fn-sem'), { limit: 1 });
    await rejects(
      () => sem.using({}, any(null)),
      InvalidOptionsError,
      /^semaphore\.using\(options, fn\): fn must be a function, got null$/,
    );
    expect(await sem.holders()).toBe(0);
    // usingAll had its own check, without what it got (before: 'usingAll: fn must be a function')
    await rejects(
      () => locks.usingAll([unique('using-fn-all')], {}, any(42)),
      InvalidOptionsError,
      /^usingAll\(resources, options, fn\): fn must be a function, got a number$/,
    );
  });
});

describe('semaphore(name, options): the name is checked first', () => {
  it.each([
    ['{ limit: 2 }', { limit: 2 }],
    ['undefined options', undefined],
    ['{ limit: 0 }', { limit: 0 }],
    ['an unknown key', { limit: 2, tll: 5 }],
    ['{ ttl: -1 }', { limit: 2, ttl: -1 }],
  ])('semaphore(Symbol(), %s) throws InvalidKeyError, not a TypeError', async (_l, options) => {
    const { locks } = await lockService('single');
    expect(() => locks.semaphore(any(Symbol('s')), any(options))).toThrow(InvalidKeyError);
  });

  it('a valid name with bad options is still InvalidOptionsError; the key is the same as before', async () => {
    const { locks, connection } = await lockService('single');
    expect(() => locks.semaphore('ok', any({ limit: 0 }))).toThrow(InvalidOptionsError);
    expect(() => locks.semaphore('ok', any(undefined))).toThrow(InvalidOptionsError);
    const name = unique('sem-key');
    const sem = locks.semaphore(name, { limit: 1 });
    const permit = await sem.acquire({ ttl: 5_000 });
    expect(await connection.client.exists(new KeyBuilder('rtk:').tagged('lock', name, ':sem'))).toBe(1);
    await permit.release();
  });
});
