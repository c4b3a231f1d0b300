/**
 * The fixes for options-everywhere.hostile's decorator and call cases (@CurrentSession, @CacheKey, getOrSetForever,
 * mget/mset, runHolding's maxHoldMs, acquire/tryAcquire's autoExtend, sessionAuthenticate), beyond what that file
 * pins: the neighbouring wrong shapes the same checks now refuse, and the legitimate uses that still pass through them.
 */
import 'reflect-metadata';
import { randomBytes, randomUUID } from 'node:crypto';
import { type PipeTransform } from '@nestjs/common';
import { ROUTE_ARGS_METADATA } from '@nestjs/common/constants.js';
import {
  CacheService,
  CurrentSession,
  InvalidKeyError,
  InvalidOptionsError,
  LockService,
  type Session,
  SessionService,
} from '../../lib/index.js';
import { CacheKey } from '../../lib/advanced.js';
import { sessionAuthenticate } from '../../lib/notifications/index.js';
import { errorOf } from '../support/errors.js';
import { closeToolkitApps, createToolkitApp } from '../support/toolkit-app.js';

const prefix = (): string => `rtk-cs${randomBytes(4).toString('hex')}:`;

class Upper implements PipeTransform {
  transform(value: unknown): unknown {
    return typeof value === 'string' ? value.toUpperCase() : value;
  }
}

/** The data and pipes Nest stored for the one parameter of a handler declared with `decorator`. */
function paramOf(decorator: ParameterDecorator): { data: unknown; pipes: unknown[] } {
  class Probe {
    handler(_value: unknown): void {}
  }
  decorator(Probe.prototype, 'handler', 0);
  const args = Reflect.getMetadata(ROUTE_ARGS_METADATA, Probe, 'handler') as Record<
    string,
    { data: unknown; pipes: unknown[] }
  >;
  const [entry] = Object.values(args);
  return { data: entry.data, pipes: entry.pipes };
}

describe('@CurrentSession(property)', () => {
  const loose = CurrentSession as unknown as (...args: unknown[]) => ParameterDecorator;

  it.each([
    ['userID', /@CurrentSession\("userID"\): userID is not a property of a session \(did you mean userId\?\)/],
    ['name', /name is not a property of a session; properties: id, userId, data/],
    [5, /@CurrentSession\(5\): 5 is not a property of a session/],
    [true, /true is not a property/],
  ])('%j is refused where it is written', (property, message) => {
    expect(() => loose(property)).toThrow(InvalidOptionsError);
    expect(() => loose(property)).toThrow(message);
  });

  it('each property of a session, none, and pipes (an instance or a class) are given to Nest as before', () => {
    for (const property of ['id', 'userId', 'data', 'createdAt', 'lastAccessedAt', 'expiresAt'] as (keyof Session)[]) {
      expect(paramOf(CurrentSession(property)).data).toBe(property);
    }
    expect(paramOf(CurrentSession()).data).toBeUndefined();
    const pipe = new Upper();
    expect(paramOf(CurrentSession(pipe))).toEqual({ data: undefined, pipes: [pipe] });
    expect(paramOf(CurrentSession(Upper))).toEqual({ data: undefined, pipes: [Upper] });
    expect(paramOf(CurrentSession('userId', Upper))).toEqual({ data: 'userId', pipes: [Upper] });
  });
});

describe('@CacheKey(string)', () => {
  it.each([
    ['empty', '', /@CacheKey: key must not be empty/],
    ['with a newline', 'a\nb', /@CacheKey: key must not contain control characters/],
    ['with a lone surrogate', 'a\uD800b', /@CacheKey: key must be well-formed Unicode/],
  ])('a key %s is refused when declared', (_case, key, message) => {
    expect(() => CacheKey(key)).toThrow(InvalidOptionsError);
    expect(() => CacheKey(key)).toThrow(message);
  });

  it('a key past 1 KiB is left to the request (a route that varies by a header keys it by a hash)', () => {
    expect(() => CacheKey('k'.repeat(2_000))).not.toThrow();
    expect(() => CacheKey('products:all')).not.toThrow();
  });
});

describe('sessionAuthenticate(sessions)', () => {
  const none = async (): Promise<null> => null;
  it.each<[string, unknown, RegExp]>([
    ['null', null, /got null/],
    ['a string', 'sessions', /got a string/],
    ['an object with get only', { get: none }, /got an object missing idFromCookieHeader/],
    [
      'an idsFromCookieHeader that is not a function',
      { get: none, idFromCookieHeader: () => null, idsFromCookieHeader: [] },
      /got an object missing idsFromCookieHeader/,
    ],
  ])('%s is refused when called', (_case, sessions, message) => {
    expect(() => sessionAuthenticate(sessions as never)).toThrow(InvalidOptionsError);
    expect(() => sessionAuthenticate(sessions as never)).toThrow(message);
  });

  it('an object with get and idFromCookieHeader (no idsFromCookieHeader) authenticates', async () => {
    const authenticate = sessionAuthenticate({
      get: async (id) => (id === 'sid' ? { id: 'sid', userId: 'ada' } : null),
      idFromCookieHeader: (header) => (header === 'rtk.sid=sid' ? 'sid' : null),
    });
    expect(await authenticate({ headers: { cookie: 'rtk.sid=sid' } } as never)).toEqual({
      id: 'ada',
      sessionId: 'sid',
    });
    expect(await authenticate({ headers: {} } as never)).toBeNull();
  });
});

describe('call shapes on a running app', () => {
  let cache: CacheService;
  let locks: LockService;
  let sessions: SessionService;

  beforeAll(async () => {
    const app = await createToolkitApp({ keyPrefix: prefix() });
    cache = app.get(CacheService);
    locks = app.get(LockService);
    sessions = app.get(SessionService);
  });
  afterAll(closeToolkitApps);

  it('getOrSetForever refuses staleTtl and grace too, and a misspelled tags; { tags } and no options store', async () => {
    const key = randomUUID();
    for (const [options, message] of [
      [{ staleTtl: 1_000 }, /getOrSetForever: staleTtl is not a known option \(the entry is fresh for 100 years/],
      [{ grace: 1_000 }, /getOrSetForever: grace is not a known option/],
      [{ tag: ['a'] }, /getOrSetForever: tag is not a known option \(did you mean tags\?\)/],
      [null, /getOrSetForever: options must be an object \(\{ tags\? \}\), got null/],
      [5_000, /options must be an object \(\{ tags\? \}\) \(it takes no ttl: getOrSet does, as \{ ttl \}\), got 5000/],
    ] as const) {
      const err = await errorOf(() => cache.getOrSetForever(key, () => 1, options as never));
      expect(err).toBeInstanceOf(InvalidOptionsError);
      expect((err as Error).message).toMatch(message);
    }
    expect(await cache.has(key)).toBe(false);
    expect(await cache.getOrSetForever(key, () => 1, { tags: ['t'] })).toBe(1);
    expect(await cache.getOrSetForever(`${key}:2`, () => 2)).toBe(2);
    expect(await cache.ttl(key)).toBeGreaterThan(99 * 365 * 24 * 3_600_000);
  });

  it('mget of a non-array is InvalidKeyError; mset refuses a non-array, a non-object entry and a ttl beside key and value', async () => {
    const key = randomUUID();
    const mget = await errorOf(() => cache.mget('ab' as never));
    expect(mget).toBeInstanceOf(InvalidKeyError);
    expect((mget as Error).message).toBe('cache.mget: keys must be an array, got "ab"');
    for (const [entries, message] of [
      [{ key, value: 1 }, /cache\.mset: entries must be an array of \{ key, value, options\? \}, got \{"key"/],
      [[{ key, value: 1 }, null], /cache\.mset: entries\[1\] must be an object \{ key, value, options\? \}, got null/],
      // cache-manager's entry shape: the ttl was dropped, the entry stored for cache.defaultTtl
      [
        [{ key, value: 1, ttl: 60_000 }],
        /entries\[0\]\.ttl is not a key of an entry .*: give it as options: \{ ttl \}/,
      ],
      [
        [{ key, value: 1, option: { ttl: 1 } }],
        /entries\[0\]: option is not a known option \(did you mean options\?\)/,
      ],
    ] as const) {
      const err = await errorOf(() => cache.mset(entries as never));
      expect(err).toBeInstanceOf(InvalidOptionsError);
      expect((err as Error).message).toMatch(message);
    }
    expect(await cache.has(key)).toBe(false);
    await cache.mset([{ key, value: 1, options: { ttl: 60_000 } }]);
    expect(await cache.mget([key, `${key}:none`])).toEqual([1, undefined]);
  });

  it.each([
    ['acquire', 'false', (r: string) => locks.acquire(r, { ttl: 1_000, autoExtend: 'false' } as never)],
    ['acquire', 1, (r: string) => locks.acquire(r, { ttl: 1_000, autoExtend: 1 } as never)],
    ['tryAcquire', 'yes', (r: string) => locks.tryAcquire(r, { ttl: 1_000, autoExtend: 'yes' } as never)],
  ])('%s with autoExtend %j is refused before the lock is taken', async (api, value, run) => {
    const resource = randomUUID();
    const err = await errorOf(() => run(resource));
    expect(err).toBeInstanceOf(InvalidOptionsError);
    expect((err as Error).message).toBe(
      `${api}: autoExtend must be true, false or { extensionThreshold?, onLost? }, got ${value}`,
    );
    // never taken: another owner gets it at once
    const other = await locks.tryAcquire(resource, { ttl: 1_000 });
    expect(other).not.toBeNull();
    await other?.release();
  });

  it('acquire and tryAcquire still take autoExtend true, false, null and an object', async () => {
    for (const autoExtend of [true, false, null, { extensionThreshold: 500 }]) {
      const lock = await locks.acquire(randomUUID(), { ttl: 1_000, autoExtend: autoExtend as never });
      const tried = await locks.tryAcquire(randomUUID(), { ttl: 1_000, autoExtend: autoExtend as never });
      expect([lock.isHeld, tried?.isHeld]).toEqual([true, true]);
      await Promise.all([lock.release(), tried?.release()]);
    }
  });

  it('runHolding refuses maxHoldMs 0 and NaN (the lock released, fn not run) and takes Infinity', async () => {
    for (const maxHoldMs of [0, Number.NaN, -5]) {
      const resource = randomUUID();
      const lock = await locks.acquire(resource, { ttl: 5_000 });
      let ran = false;
      const err = await errorOf(() => locks.runHolding(lock, () => (ran = true), { maxHoldMs }));
      expect(err).toBeInstanceOf(InvalidOptionsError);
      expect((err as Error).message).toMatch(/^maxHoldMs must be a positive number of milliseconds, got/);
      expect([ran, lock.isHeld]).toEqual([false, false]);
    }
    const lock = await locks.acquire(randomUUID(), { ttl: 5_000 });
    expect(await locks.runHolding(lock, () => 'done', { maxHoldMs: Number.POSITIVE_INFINITY })).toBe('done');
    expect(lock.isHeld).toBe(false);
  });

  it('sessionAuthenticate(the SessionService) still authenticates a token', async () => {
    const session = await sessions.create('ada');
    const authenticate = sessionAuthenticate(sessions);
    expect(await authenticate({ auth: { token: session.id }, headers: {} } as never)).toEqual({
      id: 'ada',
      sessionId: session.id,
    });
  });
});
