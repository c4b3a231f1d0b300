/**
 * Adversarial review of the rule "bad input gets a clear, typed error (lib/common/errors.ts), never a crash, a hang
 * or lost data", over the POSITIONAL arguments of every public method (options objects are
 * test/foundation/options-everywhere.hostile.spec.ts). Each call is made on a booted app against the shared Redis with
 * undefined, null, '', a number, a BigInt, a Symbol, an object, an array, a function, a 2,000-byte string, NUL / BEL
 * and a lone surrogate where a key, id, name or channel goes; NaN, ±Infinity, 0, 1.5, '5' and 5n where a number goes;
 * circular, BigInt-holding, function-holding, Date, Map and Set values where a value goes. Expected: an async method
 * returns a promise that rejects with a RedisToolkitError (never a synchronous throw, never a hang: each call is bounded
 * by `settle`), or the documented answer; no unhandled rejection; the app keeps working.
 *
 * What hostile-input.spec.ts (KeyBuilder, payload round trips), the feature hostile specs and the property specs
 * hold is not repeated. The sure bugs were pinned as `it.failing` (a17235a) and are fixed (sessions c988786, locks
 * 4751f32); each comment names the fix and what happened before it.
 */
import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import { Injectable } from '@nestjs/common';
import { Redis } from 'ioredis';
import {
  Cacheable,
  CacheEvict,
  CachePut,
  CacheService,
  InvalidKeyError,
  InvalidOptionsError,
  type Lock,
  LockService,
  PubSubService,
  RateLimitService,
  RedisSessionStore,
  RedisToolkitError,
  RedisUnavailableError,
  SerializationError,
  SessionNotFoundError,
  SessionService,
  WithLock,
} from '../../lib/index.js';
import { settle } from '../support/settle.js';
import { sharedServers } from '../support/shared-servers.js';
import { closeToolkitApps, createToolkitApp, type ToolkitApp } from '../support/toolkit-app.js';
import { countUnhandledRejections, type RejectionCounter, settleRejections } from '../support/unhandled.js';

const circular: Record<string, unknown> = { a: 1 };
circular.self = circular;

/** Hostile values where a key, id, resource, channel or user id goes. */
const KEYS: [string, unknown][] = [
  ['undefined', undefined],
  ['null', null],
  ["''", ''],
  ['42', 42],
  ['10n', 10n],
  ['a Symbol', Symbol('k')],
  ['an object', { a: 1 }],
  ['an array', ['a']],
  ['a function', () => 'k'],
  ['2,000 bytes', 'x'.repeat(2_000)],
  ['a NUL', 'a\u0000b'],
  ['a BEL', 'a\u0007b'],
  ['a lone surrogate', 'a\ud800b'],
];
/** Of KEYS, the values that are not strings at all. */
const NOT_STRINGS = KEYS.slice(0, 9).filter(([, v]) => v !== '');
const NUMBERS: [string, unknown][] = [
  ['NaN', Number.NaN],
  ['Infinity', Number.POSITIVE_INFINITY],
  ['-5', -5],
  ['0', 0],
  ['1.5', 1.5],
  ["'5'", '5'],
  ['5n', 5n],
  ['null', null],
];
const UNSERIALIZABLE: [string, unknown][] = [
  ['a circular object', circular],
  ['a BigInt inside', { n: 1n }],
  ['a function', () => 1],
];

/** Expects the call to return a promise rejecting with `type` (a RedisToolkitError). */
async function expectTypedRejection(call: () => unknown, type: typeof RedisToolkitError = RedisToolkitError) {
  const outcome = await settle(call);
  expect(outcome.kind).toBe('rejected');
  const { error } = outcome as { error: unknown };
  expect(error).toBeInstanceOf(type);
  expect(error).toBeInstanceOf(RedisToolkitError);
}

// on the real process from the app's start to the last case (checked in 'afterwards')
let rejections: RejectionCounter;
const clients: Redis[] = [];
let app: ToolkitApp;
let cache: CacheService;
let rl: RateLimitService;
let sessions: SessionService;
let locks: LockService;
let pubsub: PubSubService;
let store: RedisSessionStore;
const policy = { limit: 5, ttl: 60_000 };

beforeAll(async () => {
  rejections = countUnhandledRejections();
  app = await createToolkitApp({
    keyPrefix: `rtk-ae${randomBytes(4).toString('hex')}:`,
    session: { cookie: { secret: 'arguments-everywhere-secret-0123456789' } },
  });
  cache = app.get(CacheService);
  rl = app.get(RateLimitService);
  sessions = app.get(SessionService);
  locks = app.get(LockService);
  pubsub = app.get(PubSubService);
  const client = new Redis(sharedServers().single.url);
  clients.push(client);
  store = new RedisSessionStore({ client, prefix: `rtk-aes${randomBytes(4).toString('hex')}:` });
});

afterAll(async () => {
  await closeToolkitApps();
  for (const c of clients) c.disconnect();
  rejections.stop();
});

const any = (v: unknown) => v as never;

/** Every public async method taking a key, id, resource, channel or user id, called with the hostile value. */
const KEY_CALLS: [string, typeof RedisToolkitError, (v: unknown) => unknown][] = [
  ['cache.get', InvalidKeyError, (v) => cache.get(any(v))],
  ['cache.set', InvalidKeyError, (v) => cache.set(any(v), 1)],
  ['cache.del', InvalidKeyError, (v) => cache.del(any(v))],
  ['cache.has', InvalidKeyError, (v) => cache.has(any(v))],
  ['cache.ttl', InvalidKeyError, (v) => cache.ttl(any(v))],
  ['cache.getOrSet', InvalidKeyError, (v) => cache.getOrSet(any(v), async () => 1)],
  ['cache.getOrSetWithStatus', InvalidKeyError, (v) => cache.getOrSetWithStatus(any(v), async () => 1)],
  ['cache.getOrSetForever', InvalidKeyError, (v) => cache.getOrSetForever(any(v), async () => 1)],
  ['cache.mget([v])', InvalidKeyError, (v) => cache.mget([any(v)])],
  ['cache.mset([{ key: v }])', InvalidKeyError, (v) => cache.mset([{ key: any(v), value: 1 }])],
  ['cache.invalidatePattern', InvalidKeyError, (v) => cache.invalidatePattern(any(v))],
  ['sessions.update', SessionNotFoundError, (v) => sessions.update(any(v), { a: 1 })],
  ['sessions.regenerate', SessionNotFoundError, (v) => sessions.regenerate(any(v))],
  ['sessions.create (userId)', RedisToolkitError, (v) => sessions.create(any(v))],
  ['sessions.listForUser', RedisToolkitError, (v) => sessions.listForUser(any(v))],
  ['sessions.destroyAllForUser', RedisToolkitError, (v) => sessions.destroyAllForUser(any(v))],
  ['store.set', InvalidKeyError, (v) => store.set(any(v), any({ cookie: {} }))],
  ['locks.acquire', InvalidKeyError, (v) => locks.acquire(any(v), { waitMs: 0 })],
  ['locks.tryAcquire', InvalidKeyError, (v) => locks.tryAcquire(any(v))],
  ['locks.using', InvalidKeyError, (v) => locks.using(any(v), {}, async () => 1)],
  ['locks.acquireAll([v])', InvalidKeyError, (v) => locks.acquireAll([any(v)])],
  ['locks.tryAcquireAll([v])', InvalidKeyError, (v) => locks.tryAcquireAll([any(v)])],
  ['locks.usingAll([v])', InvalidKeyError, (v) => locks.usingAll([any(v)], {}, async () => 1)],
  ['pubsub.publish', InvalidKeyError, (v) => pubsub.publish(any(v), 1)],
  ['pubsub.subscribe', InvalidKeyError, (v) => pubsub.subscribe(any(v), () => undefined)],
  ['pubsub.notifyUser', InvalidKeyError, (v) => pubsub.notifyUser(any(v), 1)],
  ['pubsub.replay (userId)', InvalidKeyError, (v) => pubsub.replay(any(v), '0-0')],
];

describe('keys, ids, resources, channels and user ids', () => {
  it.each(KEY_CALLS.flatMap(([name, type, call]) => KEYS.map(([label, v]) => [name, label, type, call, v] as const)))(
    '%s(%s) rejects with a typed error',
    async (_name, _label, type, call, v) => {
      await expectTypedRejection(() => call(v), type);
    },
  );

  it.each(KEYS.filter(([, v]) => typeof v !== 'object' || v === null || Array.isArray(v)))(
    'the non-key arguments: cache.invalidateTags(%s), locks.using(r, {}, <it>), subscribe(ch, <it>) and a loader',
    async (_label, v) => {
      // invalidateTags: a key-shaped tag is checked as a key; an array is refused as documented.
      await expectTypedRejection(() => cache.invalidateTags(any(v)));
      if (typeof v !== 'function') {
        await expectTypedRejection(() => locks.using('ae-fn', {}, any(v)), InvalidOptionsError);
        await expectTypedRejection(() => pubsub.subscribe('ae-handler', any(v)), InvalidOptionsError);
        await expectTypedRejection(() => cache.getOrSet('ae-loader', any(v)), InvalidOptionsError);
      }
    },
  );

  it.each(KEYS)(
    'sessions.get / exists / destroy and store.get / destroy of %s: null / false, as documented',
    async (_l, v) => {
      expect(await settle(() => sessions.get(any(v)))).toEqual({ kind: 'resolved', value: null });
      expect(await settle(() => sessions.exists(any(v)))).toEqual({ kind: 'resolved', value: false });
      expect(await settle(() => sessions.destroy(any(v)))).toEqual({ kind: 'resolved', value: false });
      expect(await settle(() => store.get(any(v)))).toEqual({ kind: 'resolved', value: null });
      expect((await settle(() => store.destroy(any(v)))).kind).toBe('resolved');
    },
  );

  it.each(KEYS.slice(9))(
    'rate-limit keys and scopes are hashed (docs/rate-limit.md): %s is its own counter, limited exactly',
    async (_l, v) => {
      const key = v as string;
      const tight = { limit: 2, ttl: 60_000 };
      const allowed = [];
      for (let i = 0; i < 3; i++) allowed.push((await rl.consume(key, tight)).allowed);
      expect(allowed).toEqual([true, true, false]);
      expect((await rl.peek(`${key}-other`, tight)).remaining).toBe(2);
      expect(await rl.reward(key, 1, tight, undefined)).toBe(1);
      expect(await rl.reset(key)).toBeGreaterThanOrEqual(1);
    },
  );

  it.each(NOT_STRINGS)('rate-limit key %s: every call rejects with InvalidKeyError', async (_l, v) => {
    for (const call of [
      () => rl.consume(any(v), policy),
      () => rl.consumeOrThrow(any(v), policy),
      () => rl.peek(any(v), policy),
      () => rl.reset(any(v)),
      () => rl.block(any(v), 1_000, policy),
      () => rl.reward(any(v), 1, policy),
      () => rl.penalty(any(v), 1, policy),
      () => rl.consumeAll([{ key: any(v), policy }]),
      () => rl.peekAll([{ key: any(v), policy }]),
    ])
      await expectTypedRejection(call, InvalidKeyError);
  });

  it.each(KEYS.filter(([, v]) => !Array.isArray(v)))(
    'rate-limit policy, checks and counter %s: a typed rejection',
    async (_l, v) => {
      await expectTypedRejection(() => rl.consume('ae-p', any(v)));
      await expectTypedRejection(() => rl.consumeAll(any(v)));
      await expectTypedRejection(() => rl.peekAll(any(v)));
      await expectTypedRejection(() => rl.consumeAll([any(v)]));
      if (v !== undefined && v !== null && v !== '') await expectTypedRejection(() => rl.reset('ae-p', any(v)));
    },
  );

  it.each(KEYS.filter(([, v]) => typeof v !== 'symbol'))(
    'locks.semaphore(%s) throws InvalidKeyError (a synchronous method)',
    (_l, v) => {
      expect(() => locks.semaphore(any(v), { limit: 2 })).toThrow(InvalidKeyError);
    },
  );

  // Fixed in 4751f32; before it: TypeError "Cannot convert a Symbol value to a string", from the template literals
  // naming the semaphore in the options checks (`semaphore "${name}"`, lib/lock/lock.semaphore.ts constructor) that run
  // before KeyBuilder.validate(name). Fix: validate the name first in the Semaphore constructor.
  it('locks.semaphore(Symbol()) throws InvalidKeyError', () => {
    expect(() => locks.semaphore(any(Symbol('s')), { limit: 2 })).toThrow(InvalidKeyError);
  });
});

describe('numbers', () => {
  it.each(NUMBERS)('%s as block ms, reward / penalty points and replay limit: InvalidOptionsError', async (_l, v) => {
    await expectTypedRejection(() => rl.block('ae-n', any(v), policy), InvalidOptionsError);
    await expectTypedRejection(() => rl.reward('ae-n', any(v), policy), InvalidOptionsError);
    await expectTypedRejection(() => rl.penalty('ae-n', any(v), policy), InvalidOptionsError);
    await expectTypedRejection(() => pubsub.replay('ae-user', '0-0', any(v)), InvalidOptionsError);
  });

  // 1.5 is a duration (rounded up, as every lock ttl is); null is the default ttl.
  it.each(NUMBERS.filter(([, v]) => v !== null && v !== 1.5))(
    'a held lock extend(%s): InvalidOptionsError, still held',
    async (_l, v) => {
      const lock = await locks.acquire(`ae-extend-${String(_l)}`, { ttl: 10_000 });
      try {
        await expectTypedRejection(() => lock.extend(any(v)), InvalidOptionsError);
        expect(lock.isHeld).toBe(true);
      } finally {
        await lock.release();
      }
    },
  );

  it.each(KEYS.slice(1, 9).filter(([, v]) => v !== ''))(
    'pubsub.replay after id %s: a typed rejection',
    async (_l, v) => {
      await expectTypedRejection(() => pubsub.replay('ae-user', any(v)));
    },
  );
});

describe('values', () => {
  it.each(UNSERIALIZABLE)('%s: SerializationError from every writer, nothing written', async (label, v) => {
    const key = `ae-unser-${label.replace(/\W/g, '')}`;
    await expectTypedRejection(() => cache.set(key, v), SerializationError);
    await expectTypedRejection(() => cache.mset([{ key, value: v }]), SerializationError);
    await expectTypedRejection(() => cache.getOrSet(key, async () => v), SerializationError);
    expect(await cache.has(key)).toBe(false);
    await expectTypedRejection(() => sessions.create('ae-u', { f: v }), SerializationError);
    const session = await sessions.create('ae-u', { kept: 1 });
    await expectTypedRejection(() => sessions.update(session.id, { f: v }), SerializationError);
    expect((await sessions.get(session.id))?.data).toEqual({ kept: 1 });
    await expectTypedRejection(() => pubsub.publish('ae-ch', v), SerializationError);
    await expectTypedRejection(() => pubsub.notifyUser('ae-u', v), SerializationError);
  });

  it('a Date comes back as a Date from the cache, a session field and a pub/sub handler (docs: Dates kept)', async () => {
    const when = new Date(Date.UTC(2026, 0, 2, 3, 4, 5, 6));
    await cache.set('ae-date', { when });
    expect(await cache.get('ae-date')).toEqual({ when });
    const session = await sessions.create('ae-u', { when });
    expect((await sessions.get(session.id))?.data.when).toEqual(when);
    await sessions.update(session.id, { again: when });
    expect((await sessions.get(session.id))?.data.again).toEqual(when);
    const got = new Promise<unknown>((resolve) => {
      void pubsub
        .subscribe('ae-date-ch', (payload) => resolve(payload))
        .then(async () => {
          await pubsub.publish('ae-date-ch', { when });
        });
    });
    expect((await settle(() => got)) as unknown).toEqual({ kind: 'resolved', value: { when } });
    const sid = `aedate${randomBytes(12).toString('hex')}`;
    await store.set(sid, any({ cookie: { originalMaxAge: 60_000 }, when }));
    expect(((await store.get(sid)) as { when?: unknown })?.when).toEqual(when);
  });

  it('a Map and a Set in the cache come back as {} (documented in docs/cache.md)', async () => {
    await cache.set('ae-map', { m: new Map([['a', 1]]), s: new Set([1]) });
    expect(await cache.get('ae-map')).toEqual({ m: {}, s: {} });
  });

  // Fixed in c988786; before it: both resolve and store nothing of it: the checks in SessionService.create / update
  // (lib/session/session.service.ts, "session data / patch must be a plain object") take any non-array object, so a
  // Map's entries (not own enumerable properties) are dropped without a word (create gives `data: {}`), as are a Set's
  // and a Date's. A string, a function or NaN is refused. Fix: refuse data / a patch whose prototype is not
  // Object.prototype or null, as the message says (InvalidKeyError).
  it.each([
    ['a Map', new Map([['a', 1]])],
    ['a Date', new Date(0)],
  ])('sessions.create(userId, %s) and update(id, it) are refused, never a silent no-op', async (_l, v) => {
    await expectTypedRejection(() => sessions.create('ae-u', any(v)), InvalidKeyError);
    const session = await sessions.create('ae-u', { kept: 1 });
    await expectTypedRejection(() => sessions.update(session.id, any(v)), InvalidKeyError);
  });
});

describe('RedisSessionStore: the session argument', () => {
  const sid = (): string => `aesess${randomBytes(12).toString('hex')}`;
  const stored = { cookie: { originalMaxAge: 60_000 }, a: 1 };

  // Fixed in c988786; before it: rejects with RedisUnavailableError "session store failed: Cannot convert undefined or
  // null to object": the TypeError of Object.keys(session) in RedisSessionStore.set is reported under the store's
  // failure policy as a Redis outage (Express answers 503; counted in stats().unavailable). Fix: RedisSessionStore.set
  // (lib/session/session.store.ts) refuses a session that is not a plain object before anything else (InvalidKeyError,
  // as SessionService.create does); the failure mapping there (near "the failure policy's typed error") should not turn
  // an error that is not Redis's into RedisUnavailableError.
  it.each([
    ['undefined', undefined],
    ['null', null],
  ])(
    'store.set(sid, %s): a typed error that is not RedisUnavailableError; the stored session untouched',
    async (_l, v) => {
      const id = sid();
      await store.set(id, any(stored));
      const outcome = await settle(() => store.set(id, any(v)));
      expect(outcome.kind).toBe('rejected');
      expect((outcome as { error: unknown }).error).toBeInstanceOf(RedisToolkitError);
      expect((outcome as { error: unknown }).error).not.toBeInstanceOf(RedisUnavailableError);
      expect(await store.get(id)).toEqual(stored);
    },
  );

  // Fixed in c988786; before it: resolves, and the session is REPLACED by what Object.keys makes of the value: {} for
  // 42, 10n, a Symbol, a function, a Map, a Date; {"0":"x","1":"x",...} (2,000 fields) for a 2,000-character string;
  // {"0":"a"} for ['a']: the user's session data is lost without a word. Fix: RedisSessionStore.set
  // (lib/session/session.store.ts) refuses a session that is not a plain object with InvalidKeyError before any Redis
  // command.
  it.each([
    ['42', 42],
    ["'x' * 2,000", 'x'.repeat(2_000)],
    ["['a']", ['a']],
    ['a function', () => 1],
    ['a Map', new Map([['a', 1]])],
  ])('store.set(sid, %s) is refused and the stored session is kept', async (_l, v) => {
    const id = sid();
    await store.set(id, any(stored));
    await expectTypedRejection(() => store.set(id, any(v)), InvalidKeyError);
    expect(await store.get(id)).toEqual(stored);
  });

  it.each(KEYS.concat([['a Map', new Map()]]))(
    'store.touch(sid, %s): settles without a hang and the stored session is kept',
    async (_l, v) => {
      const id = sid();
      await store.set(id, any(stored));
      expect((await settle(() => store.touch(id, any(v)))).kind).not.toBe('hang');
      expect(await store.get(id)).toEqual(stored);
    },
  );
});

describe('session cookie helpers (synchronous, no Redis)', () => {
  it.each([undefined, '', 'rtk.sid=x', ['a=b'], 'x'.repeat(10_000), 'a\u0000b'])(
    'idFromCookieHeader(%j) is null and idsFromCookieHeader [] ',
    (header) => {
      expect(sessions.idFromCookieHeader(any(header))).toBeNull();
      expect(sessions.idsFromCookieHeader(any(header))).toEqual([]);
    },
  );

  // Fixed in c988786; before it: TypeError ("Cannot read properties of null (reading 'length')" for null, "text.split
  // is not a function" for the others) from the cookie parser: a caller passing `socket.handshake.headers.cookie ??
  // null` or a parsed object crashes instead of getting "no session". Fix: readSessionIdFromCookieHeader /
  // readSessionIdsFromCookieHeader (lib/session/session.cookie.ts): anything not a string or array of strings is no
  // cookie (null / []), as for undefined.
  it.each([
    ['null', null],
    ['42', 42],
    ['an object', { cookie: 'x' }],
    ['10n', 10n],
  ])('idFromCookieHeader(%s) and idsFromCookieHeader: null / [], never a TypeError', (_l, header) => {
    expect(sessions.idFromCookieHeader(any(header))).toBeNull();
    expect(sessions.idsFromCookieHeader(any(header))).toEqual([]);
  });
});

describe('locks: runHolding and a Lock given back', () => {
  // Fixed in 4751f32; before it: TypeError "Cannot read properties of undefined (reading 'expiresAt')" for undefined /
  // null, RangeError "Invalid time value" for a string, number or plain object (the lock's expiresAt fed to a Date).
  // Fix: LockService.runHolding (lib/lock/lock.service.ts) / runHolding in lib/lock/lock.holding.ts: refuse a first
  // argument that is not a Lock with InvalidOptionsError before anything runs.
  it.each([
    ['undefined', undefined],
    ['null', null],
    ["'lock'", 'lock'],
    ['{ }', {}],
  ])('runHolding(%s, fn) rejects with a typed error and never runs fn', async (_l, v) => {
    let ran = 0;
    await expectTypedRejection(() =>
      locks.runHolding(any(v), async () => {
        ran++;
      }),
    );
    expect(ran).toBe(0);
  });

  // Fixed in 4751f32; before it: TypeError "fn is not a function" (lib/lock/lock.holding.ts calls it inside its
  // promise), where locks.using(r, {}, 'x') says InvalidOptionsError. The lock is released either way (checked below).
  // Fix: runHolding in lib/lock/lock.holding.ts checks `typeof fn === 'function'` with the options, before
  // startAutoExtend, as using does, releasing the lock.
  it('runHolding(lock, <not a function>) is a typed rejection', async () => {
    const lock: Lock = await locks.acquire('ae-rh-typed', { ttl: 10_000 });
    await expectTypedRejection(() => locks.runHolding(lock, any('not a function')), InvalidOptionsError);
  });

  it('runHolding(lock, <not a function>) rejects (no hang) and releases the lock', async () => {
    const lock: Lock = await locks.acquire('ae-rh', { ttl: 10_000 });
    expect((await settle(() => locks.runHolding(lock, any('not a function')))).kind).toBe('rejected');
    expect(lock.isHeld).toBe(false);
    const again = await locks.tryAcquire('ae-rh');
    expect(again).not.toBeNull();
    await again?.release();
  });

  it.each(NOT_STRINGS.filter(([, v]) => v !== undefined))(
    'a released Lock: extend(%s) and release() again are typed, never a crash',
    async (_l, v) => {
      const lock = await locks.acquire('ae-released', { ttl: 10_000 });
      await lock.release();
      expect((await settle(() => lock.release())).kind).not.toBe('sync');
      await expectTypedRejection(() => lock.extend(any(v)));
    },
  );
});

describe('RedisSessionStore callbacks', () => {
  it.each([undefined, null])('a callback of %s: the promise form', async (cb) => {
    expect(await settle(() => store.get('ae-missing-session-000', any(cb)))).toEqual({ kind: 'resolved', value: null });
    expect(await settle(() => store.length(any(cb)))).toMatchObject({ kind: 'resolved' });
  });

  // Fixed in c988786; before it: the call runs, then rejects with TypeError "callback is not a function" (settle in
  // lib/session/session.store.ts calls it): express-session code passing a wrong argument gets an untyped error after
  // the command ran. Fix: settle (lib/session/session.store.ts) refuses a callback that is neither undefined nor a
  // function with InvalidOptionsError before any Redis command.
  it.each([
    ["'cb'", 'cb'],
    ['42', 42],
    ['{ }', {}],
  ])('a callback of %s: a typed error, not a TypeError', async (_l, cb) => {
    await expectTypedRejection(() => store.get('ae-missing-session-000', any(cb)), InvalidOptionsError);
    await expectTypedRejection(() => store.length(any(cb)), InvalidOptionsError);
    await expectTypedRejection(() => store.ids(any(cb)), InvalidOptionsError);
  });
});

/** Methods whose decorator takes its key / resource from the argument itself, so the argument is what it returns. */
@Injectable()
class Decorated {
  runs = 0;
  @Cacheable({ key: (k: unknown) => k as string })
  async cached(_k: unknown): Promise<number> {
    return ++this.runs;
  }
  @CachePut({ key: (k: unknown) => k as string })
  async put(_k: unknown): Promise<number> {
    return ++this.runs;
  }
  @CacheEvict({ keys: (k: unknown) => k as string })
  async evict(_k: unknown): Promise<number> {
    return ++this.runs;
  }
  @Cacheable({ key: 'ae-tagged', tags: (t: unknown) => t as string[] })
  async tagged(_t: unknown): Promise<number> {
    return ++this.runs;
  }
  @CacheEvict({ tags: (t: unknown) => t as string[] })
  async evictTags(_t: unknown): Promise<number> {
    return ++this.runs;
  }
  @CacheEvict({ pattern: (p: unknown) => p as string })
  async evictPattern(_p: unknown): Promise<number> {
    return ++this.runs;
  }
  @WithLock({ resource: (r: unknown) => r as string, waitMs: 0 })
  async locked(_r: unknown): Promise<number> {
    return ++this.runs;
  }
}

describe('decorators: what a key / resource function returns', () => {
  let decorated: Decorated;
  beforeAll(async () => {
    const own = await createToolkitApp({
      keyPrefix: `rtk-aed${randomBytes(4).toString('hex')}:`,
      providers: [Decorated],
    });
    decorated = own.get(Decorated);
  });

  it.each(KEYS)(
    'a key / resource function returning %s: each call rejects typed; @Cacheable never runs the method',
    async (_l, v) => {
      const before = decorated.runs;
      await expectTypedRejection(() => decorated.cached(v), InvalidKeyError);
      expect(decorated.runs).toBe(before);
      await expectTypedRejection(() => decorated.locked(v), InvalidKeyError);
    },
  );

  it.each(KEYS)('@CachePut with a key function returning %s: a typed rejection', async (_l, v) => {
    await expectTypedRejection(() => decorated.put(v));
  });

  // `keys` may give an array (several keys); undefined is refused (its type has none: [] evicts nothing). Until
  // 2026-12-05 undefined resolved and evicted nothing, without a word.
  it.each(KEYS.filter(([, v]) => v !== undefined && !Array.isArray(v)))(
    '@CacheEvict with a keys function returning %s: a typed rejection',
    async (_l, v) => {
      await expectTypedRejection(() => decorated.evict(v));
    },
  );

  it('@CacheEvict with keys giving undefined or an array of a hostile key: typed rejections', async () => {
    await expectTypedRejection(() => decorated.evict(undefined), InvalidOptionsError);
    await expectTypedRejection(() => decorated.evict(['ok', 'a\u0000b']), InvalidKeyError);
  });

  // Until 2026-12-05 a tags or pattern function that gave undefined tagged or evicted nothing, without a word
  // (docs/cache.md: "a tags function that returns no array fails the call"); [] still means none.
  it('a tags or pattern function giving undefined: InvalidOptionsError naming it; [] is none', async () => {
    for (const call of [() => decorated.tagged(undefined), () => decorated.evictTags(undefined)]) {
      const outcome = await settle(call);
      expect(outcome.kind).toBe('rejected');
      expect(String((outcome as { error: unknown }).error)).toMatch(
        /the tags function gave undefined \(give \[\] for none\)/,
      );
    }
    await expectTypedRejection(() => decorated.evictPattern(undefined), InvalidOptionsError);
    expect((await settle(() => decorated.evictTags([]))).kind).toBe('resolved');
    expect((await settle(() => decorated.evict([]))).kind).toBe('resolved');
  });
});

describe('afterwards', () => {
  it('no unhandled rejection, and every feature still works', async () => {
    await settleRejections();
    expect(rejections.reasons).toEqual([]);
    await cache.set('ae-alive', { ok: 1 });
    expect(await cache.get('ae-alive')).toEqual({ ok: 1 });
    expect((await rl.consume('ae-alive', policy)).allowed).toBe(true);
    const session = await sessions.create('ae-alive-user', { a: 1 });
    expect((await sessions.get(session.id))?.data).toEqual({ a: 1 });
    await locks.using('ae-alive', {}, async () => undefined);
    expect(typeof (await pubsub.publish('ae-alive', 1))).toBe('number');
  });
});
