/**
 * The toolkit on a busy machine and through time: the app's event loop blocked by a synchronous busy loop while calls
 * are in flight, Redis slow (DEBUG SLEEP) rather than down, an app clock that disagrees with the others or steps
 * back, and a CPU-bound neighbour starving Redis. Every server is private (harness-tracked, DEBUG enabled); a "second
 * instance" with a skewed clock is a second app in this process whose calls (and, where the toolkit measures Redis's
 * clock against its own at connect, its boot) run while `Date.now` is shifted (the toolkit reads the clock at those
 * times; the shift is undone before anything else runs).
 *
 * Held (plain tests): a stall shorter than commandTimeout changes nothing; a lock held across a stall past its ttl is
 * lost (isHeld false, extend and release LockLostError, the next holder's fencing token larger) and `using` rejects
 * with LockLostError after its signal aborted, as does a @WithLock method, while stalls shorter than the extension
 * lead are bridged by @WithLock's auto-extension; stale-while-revalidate across a stall serves the stale value once and
 * refreshes it; the block cache across a stall admits what Redis admits and refuses only what Redis refuses; rate
 * limits of two instances an hour apart share one window (Redis TIME), and so do cache entries (an entry written by an
 * instance an hour ahead is stale on the others after its ttl); a Redis asleep for less than commandTimeout
 * answers every feature exactly, one asleep for longer gets each feature's failure policy and leaves no lock behind;
 * with two CPU-bound neighbours, 200 concurrent decisions at limit 50 admit exactly 50 and a lock keeps 12 sections
 * apart.
 *
 * Bugs this file found (it.failing at first, each fixed since and now a plain test): a reply that arrived while the
 * event loop was blocked past commandTimeout was reported as a timeout (ioredis's per-command timer ran before the
 * poll phase read the socket; b1aa9b8, 1c764e1), and so was a loader's reply by the cache's hard timeout (16f4dd2); a
 * session read on an instance whose clock was ahead past maxAgeMs deleted the session for every instance (3d77bcf:
 * Redis's clock judges the deadline); after the app clock stepped back `touchAfter` stopped extending sessions
 * (07633d0) and a lock Redis had expired stayed `isHeld` (3ee1e5a: local durations on the monotonic clock); a cache
 * entry written by an instance whose clock was ahead was a fresh `hit` on the others past its ttl, with no refresh
 * (cache.read-path.ts compared the writer's `freshUntil` with the reader's Date.now(); now both are Redis's clock as
 * each instance estimates it: cache.clock.ts; more in test/cache/cache.clock-skew.spec.ts).
 */
import 'reflect-metadata';
import { type ChildProcess, spawn } from 'node:child_process';
import { Redis } from 'ioredis';
import { Injectable } from '@nestjs/common';
import {
  CacheLoadTimeoutError,
  CacheService,
  LockLostError,
  LockService,
  RateLimitService,
  REDIS_CLIENT,
  RedisUnavailableError,
  SessionService,
  WithLock,
} from '../../lib/index.js';
import { restoreClocks, shiftDateNow, shifted, shiftPerfNow, useClockShift } from '../support/clock-shift.js';
import { trackForCleanup, usePrivateRedis } from '../support/private-servers.js';
import { closeToolkitApps, type ToolkitAppOptions } from '../support/toolkit-app.js';
import { bootToolkitApp } from '../support/toolkit-boot.js';
import { ANY_COMMAND, busy, stallOnSend } from '../support/stall.js';
import { sleep, waitFor } from '../support/wait.js';

const redis = usePrivateRedis({ args: ['--enable-debug-command', 'yes'] });
let admin: Redis;
beforeAll(() => {
  admin = trackForCleanup(new Redis(redis.server.port, '127.0.0.1'));
});
afterEach(closeToolkitApps);

const HOUR = 3_600_000;
useClockShift();

let prefixes = 0;
/** A toolkit app on the private server; `keyPrefix` defaults to one of the test's own. */
async function boot(options: Partial<ToolkitAppOptions> = {}, keyPrefix = `bm${++prefixes}:`) {
  const app = await bootToolkitApp({ target: { url: redis.server.url }, keyPrefix, ...options });
  return { app, keyPrefix };
}

const SCRIPT = ['evalsha', 'eval'];
const COMMAND_TIMEOUT = 500;
const STALL = 1_500;

describe('the event loop blocked while a call is in flight', () => {
  it('a stall shorter than commandTimeout changes nothing', async () => {
    const { app } = await boot({ commandTimeout: 2_000 });
    const client = app.get<Redis>(REDIS_CLIENT);
    const sessions = app.get(SessionService);
    const rl = app.get(RateLimitService);
    const locks = app.get(LockService);
    const s = await sessions.create('u', { a: 1 });
    const stall = stallOnSend([client], SCRIPT, 600);
    const [got, decision, lock] = await Promise.all([
      sessions.get(s.id),
      rl.consume('k', { limit: 5, ttl: 60_000 }),
      locks.tryAcquire('r', { ttl: 10_000 }),
    ]);
    expect(stall.fired()).toBe(true);
    expect(got?.data).toEqual({ a: 1 });
    expect(decision).toMatchObject({ allowed: true, remaining: 4 });
    expect(decision.degraded).toBeUndefined();
    expect(lock?.isHeld).toBe(true);
    await lock?.release();
  });

  // redis-client.factory.ts: ioredis's commandTimeout timer fired in the timers phase after the stall, before the
  // poll phase reads the reply already in the socket; resetOnCommandTimeout then dropped the connection. The toolkit's
  // own timer (armCommandTimeout) now gives its verdict after the poll phase.
  it('a session read whose reply came during a stall past commandTimeout returns the session', async () => {
    const { app } = await boot({ commandTimeout: COMMAND_TIMEOUT });
    const sessions = app.get(SessionService);
    const s = await sessions.create('u', { a: 1 });
    const stall = stallOnSend([app.get<Redis>(REDIS_CLIENT)], ANY_COMMAND, STALL);
    const got = await sessions.get(s.id).catch((err: unknown) => err);
    expect(stall.fired()).toBe(true);
    // showed: RedisUnavailableError "session get failed: Command timed out" (a 503), Redis had answered at once
    expect(got).not.toBeInstanceOf(RedisUnavailableError);
    expect((got as { data?: unknown }).data).toEqual({ a: 1 });
  });

  // the same cause: the acquisition ran in Redis (the lock was set) and is reported as an outage
  it('a lock granted while the loop was stalled past commandTimeout is returned', async () => {
    const { app } = await boot({ commandTimeout: COMMAND_TIMEOUT });
    const locks = app.get(LockService);
    const stall = stallOnSend([app.get<Redis>(REDIS_CLIENT)], SCRIPT, STALL);
    const lock = await locks.tryAcquire('stalled', { ttl: 30_000 }).catch((err: unknown) => err);
    expect(stall.fired()).toBe(true);
    // showed: RedisUnavailableError "lock acquire on "stalled" failed: Command timed out"
    expect(lock).not.toBeInstanceOf(RedisUnavailableError);
    expect((lock as { isHeld?: boolean }).isHeld).toBe(true);
  });

  // the same cause: Redis charged the decision and answered, the caller gets the failure policy (fail open)
  it('a decision Redis made while the loop was stalled past commandTimeout is Redis’s', async () => {
    const { app } = await boot({ commandTimeout: COMMAND_TIMEOUT });
    const rl = app.get(RateLimitService);
    const stall = stallOnSend([app.get<Redis>(REDIS_CLIENT)], SCRIPT, STALL);
    const decision = await rl.consume('stalled', { limit: 5, ttl: 60_000 });
    expect(stall.fired()).toBe(true);
    // showed: { allowed: true, degraded: 'fail-open', ... } (remaining the policy's, not Redis's 4)
    expect(decision.degraded).toBeUndefined();
    expect(decision.remaining).toBe(4);
  });

  // the same cause: the value was in Redis and read, the caller's loader runs instead (an uncached load)
  it('a cache hit whose reply came during a stall past commandTimeout is a hit', async () => {
    const { app } = await boot({ commandTimeout: COMMAND_TIMEOUT });
    const cache = app.get(CacheService);
    await cache.set('hot', { v: 1 }, { ttl: 60_000 });
    let loads = 0;
    const stall = stallOnSend([app.get<Redis>(REDIS_CLIENT)], ['get', 'mget'], STALL);
    const result = await cache.getOrSetWithStatus('hot', async () => ({ v: ++loads + 1 }));
    expect(stall.fired()).toBe(true);
    // showed: { value: { v: 2 }, status: 'miss', degraded: 'fail-open' }: the loader ran, an error counted
    expect(result).toEqual({ value: { v: 1 }, status: 'hit' });
    expect({ loads, errors: cache.stats().errors }).toEqual({ loads: 0, errors: 0 });
  });

  // the same cause, with every other call in flight on the connection failed by the reset
  it('a stall past commandTimeout fails none of 20 session reads Redis answered', async () => {
    const { app } = await boot({ commandTimeout: COMMAND_TIMEOUT });
    const sessions = app.get(SessionService);
    const ids = await Promise.all(Array.from({ length: 20 }, (_, i) => sessions.create(`u${i}`, { i })));
    const stall = stallOnSend([app.get<Redis>(REDIS_CLIENT)], ANY_COMMAND, STALL);
    const outcomes = await Promise.all(
      ids.map((s) =>
        sessions.get(s.id).then(
          (x) => (x ? 'ok' : 'null'),
          (e: unknown) => (e as Error).name,
        ),
      ),
    );
    expect(stall.fired()).toBe(true);
    // showed: 20 × RedisUnavailableError
    expect(outcomes).toEqual(ids.map(() => 'ok'));
  });
});

describe('a lock held across a stall past its ttl', () => {
  it('is lost: not held, extend and release fail with LockLostError, the next holder gets a larger token', async () => {
    const { app, keyPrefix } = await boot({ commandTimeout: 2_000 });
    const { app: other } = await boot({ commandTimeout: 2_000 }, keyPrefix);
    const lock = await app.get(LockService).acquire('stall-ttl', { ttl: 500 });
    const lost: string[] = [];
    app.get(LockService).events.on('lost', (e) => lost.push(e.resource));
    busy(1_500);
    expect(lock.isHeld).toBe(false);
    const next = await other.get(LockService).acquire('stall-ttl', { ttl: 10_000 });
    expect(next.fencingToken).toBeGreaterThan(lock.fencingToken);
    await expect(lock.extend()).rejects.toBeInstanceOf(LockLostError);
    await expect(lock.release()).rejects.toBeInstanceOf(LockLostError);
    expect(next.isHeld).toBe(true);
    await next.release();
    expect(lost).toEqual(['stall-ttl']);
  });

  it('`using` whose function stalls past the ttl aborts its signal and rejects with LockLostError', async () => {
    const { app, keyPrefix } = await boot({ commandTimeout: 2_000 });
    const { app: other } = await boot({ commandTimeout: 2_000 }, keyPrefix);
    let abortedAfter: boolean | undefined;
    const run = app.get(LockService).using('stall-using', { ttl: 600 }, async (signal) => {
      busy(1_800); // no extension can be sent meanwhile: the lock expires in Redis
      await sleep(200);
      abortedAfter = signal.aborted;
      return 'done';
    });
    await expect(run).rejects.toBeInstanceOf(LockLostError);
    expect(abortedAfter).toBe(true);
    // and it is free for another instance at once (not held by anyone who thinks so)
    const next = await other.get(LockService).tryAcquire('stall-using', { ttl: 5_000 });
    expect(next?.isHeld).toBe(true);
    await next?.release();
  });
});

@Injectable()
class StallingJob {
  /** Stalls past its ttl in one go: no extension can be sent meanwhile. */
  @WithLock({ resource: 'withlock-long-stall', ttl: 600 })
  async longStall(): Promise<string> {
    busy(1_800);
    await sleep(200);
    return 'done';
  }

  /**
   * Stalls of 300 ms with awaits between, 2.4 s in all under a 2 s ttl: the auto-extension keeps up. (Under a 1.2 s
   * ttl the lock was lost once, in CI at fe6b813 on a loaded box, the watchdog firing first; not reproduced alone, the
   * cause not found: 2 s gives each extension more room, and the loss past the ttl is the other test's.)
   */
  @WithLock({ resource: 'withlock-short-stalls', ttl: 2_000 })
  async shortStalls(): Promise<number> {
    let extended = 0;
    for (let i = 0; i < 8; i++) {
      busy(300);
      await sleep(1);
      if (LockService.current()?.signal.aborted) return -1;
      extended = i;
    }
    // still held in Redis after 2.4 s under a 2 s ttl
    return (await admin.exists('bm-withlock:lock:{withlock-short-stalls}')) === 1 ? extended : -2;
  }
}

describe('@WithLock auto-extension under stalls', () => {
  it('a method stalling past its ttl rejects with LockLostError; short stalls are bridged by the extension', async () => {
    const { app } = await boot({ commandTimeout: 2_000, providers: [StallingJob] }, 'bm-withlock:');
    const job = app.get(StallingJob);
    await expect(job.longStall()).rejects.toBeInstanceOf(LockLostError);
    expect(await job.shortStalls()).toBe(7);
    expect(await admin.exists('bm-withlock:lock:{withlock-short-stalls}')).toBe(0); // released after
  });
});

describe('the cache across a stall', () => {
  it('a stall past the ttl serves the stale value once and refreshes it in the background', async () => {
    const { app } = await boot({ commandTimeout: 2_000 });
    const cache = app.get(CacheService);
    let loads = 0;
    const loader = async () => ++loads;
    expect(await cache.getOrSetWithStatus('swr', loader, { ttl: 500, staleTtl: 60_000 })).toEqual({
      value: 1,
      status: 'miss',
    });
    busy(1_200);
    expect(await cache.getOrSetWithStatus('swr', loader, { ttl: 500, staleTtl: 60_000 })).toEqual({
      value: 1,
      status: 'stale',
    });
    expect(await waitFor(async () => (await cache.get('swr')) === 2, 5_000)).toBe(true);
    expect(await cache.getOrSetWithStatus('swr', loader, { ttl: 60_000, staleTtl: 60_000 })).toEqual({
      value: 2,
      status: 'hit',
    });
    expect(loads).toBe(2);
  });

  // cache.loader.ts boundedLoad: the hard timeout's timer runs in the timers phase after the stall, before the poll
  // phase reads the reply the loader was waiting for; its verdict now waits for the poll phase (setVerdictTimeout).
  it('a loader whose reply came during a stall past its hard timeout gives its value', async () => {
    const { app } = await boot({ commandTimeout: 2_000 });
    const source = trackForCleanup(new Redis(redis.server.port, '127.0.0.1'));
    await source.set('source', 'from-source');
    const stall = stallOnSend([source], ['get'], STALL);
    const result = await app
      .get(CacheService)
      .getOrSet('loaded-in-stall', async () => source.get('source'), { hardTimeout: COMMAND_TIMEOUT })
      .catch((err: unknown) => err);
    expect(stall.fired()).toBe(true);
    // showed: CacheLoadTimeoutError (a 504), the loader's value had been in the socket since the stall began
    expect(result).not.toBeInstanceOf(CacheLoadTimeoutError);
    expect(result).toBe('from-source');
  });

  // cache.read-path.ts: `now < entry.freshUntil` compared the writer's clock (freshUntil = its Date.now() + ttl) with
  // the reader's Date.now(). Both are now Redis's clock (TIME's offset from the instance's own, measured at connect:
  // cache.clock.ts), so the instance ahead boots on its clock too.
  it('an entry written by an instance whose clock is an hour ahead is stale on the others after its ttl', async () => {
    const { app, keyPrefix } = await boot({ commandTimeout: 2_000 });
    await shifted(HOUR, async () => {
      const { app: ahead } = await boot({ commandTimeout: 2_000 }, keyPrefix);
      await ahead.get(CacheService).getOrSet('skew', async () => 'old', { ttl: 500, staleTtl: 60_000 });
    });
    await sleep(1_500);
    let loads = 0;
    const result = await app
      .get(CacheService)
      .getOrSetWithStatus('skew', async () => `new${++loads}`, { ttl: 500, staleTtl: 60_000 });
    // showed: { value: 'old', status: 'hit' } and no refresh: the 500 ms entry was fresh for an hour (its Redis key
    // lives ttl + staleTtl, so it was served as fresh for that whole minute)
    expect(result).toEqual({ value: 'old', status: 'stale' });
    expect(await waitFor(() => loads === 1, 5_000)).toBe(true);
  });
});

describe('sessions and clocks', () => {
  it('a session whose idle ttl passes during a stall reads as gone', async () => {
    const { app } = await boot({ commandTimeout: 2_000, session: { ttl: 800, touchAfter: 200 } });
    const sessions = app.get(SessionService);
    const s = await sessions.create('u', { a: 1 });
    expect((await sessions.get(s.id))?.data).toEqual({ a: 1 });
    busy(1_500);
    expect(await sessions.get(s.id)).toBeNull();
  });

  it('touchAfter across a stall longer than it: the next read extends, so the session outlives its first ttl', async () => {
    const { app } = await boot({ commandTimeout: 2_000, session: { ttl: 4_000, touchAfter: 500 } });
    const sessions = app.get(SessionService);
    const s = await sessions.create('u', { a: 1 });
    await sessions.get(s.id);
    busy(1_500);
    expect((await sessions.get(s.id))?.data).toEqual({ a: 1 }); // extends: 4 s from now
    await sleep(3_000); // past the first touch's expiry, within the second's
    expect((await sessions.get(s.id))?.data).toEqual({ a: 1 });
  });

  // session.recent-touches.ts RecentTouches.expiryOf measured a touch's age as Date.now() - touch.at, negative after
  // the clock stepped back and so under `reuse.ms`: every read was a plain GET until the clock caught up. Now the age
  // is measured on the monotonic clock.
  it('after the app clock steps back an hour, a session read every 250 ms stays alive', async () => {
    const { app } = await boot({ commandTimeout: 2_000, session: { ttl: 1_500, touchAfter: 300 } });
    const sessions = app.get(SessionService);
    const s = await sessions.create('u', { a: 1 });
    await sessions.get(s.id);
    shiftDateNow(-HOUR);
    const reads: boolean[] = [];
    for (let i = 0; i < 12; i++) {
      await sleep(250);
      reads.push((await sessions.get(s.id)) !== null);
    }
    restoreClocks();
    // before the fix: true for ~1.5 s, then false: no read extended the session after the step
    expect(reads).toEqual(reads.map(() => true));
  });

  // session.records.ts SessionRecords.read compared the deadline made with the creating instance's clock (m = its
  // Date.now() + maxAgeMs) with this instance's Date.now(), and deleted the session. Now Redis's clock judges it
  // (session.deadline.ts): the instance ahead asks Redis (PEXPIREAT m, EXISTS) and warns that its clock runs ahead.
  it('an instance whose clock is an hour ahead neither ends nor deletes a session within its maxAgeMs', async () => {
    const session = { ttl: 60_000, maxAgeMs: 30 * 60_000 };
    const warnings: string[] = [];
    const logger = {
      log: () => undefined,
      error: () => undefined,
      warn: (m: unknown) => void warnings.push(String(m)),
    };
    const { app, keyPrefix } = await boot({ commandTimeout: 2_000, session });
    const { app: ahead } = await boot({ commandTimeout: 2_000, session, logger }, keyPrefix);
    const s = await app.get(SessionService).create('u', { a: 1 });
    shiftDateNow(HOUR);
    // RedisClock rides the monotonic clock since its estimate was taken: shifting it too makes this instance's
    // estimate of Redis's clock an hour ahead, the case this test is about (a wall-clock step alone no longer is)
    shiftPerfNow(HOUR);
    let read: unknown;
    try {
      read = await ahead.get(SessionService).get(s.id);
    } finally {
      restoreClocks();
    }
    const after = await app.get(SessionService).get(s.id);
    // before: null on the instance ahead, and then null on the creating instance too (the key was deleted)
    expect({ ahead: read !== null, creator: after !== null }).toEqual({ ahead: true, creator: true });
    expect(warnings.filter((w) => w.includes("clock runs ahead of Redis's"))).toHaveLength(1);
  });
});

describe('locks and clocks', () => {
  // lock.ts Lock.isHeld compared `Date.now()` with its expiry, the wall clock against a lease Redis times with its own
  // clock; the time since the request is now measured on the monotonic clock (lock.clock.ts).
  it('after the app clock steps back an hour, a lock Redis has expired is not isHeld', async () => {
    const { app, keyPrefix } = await boot({ commandTimeout: 2_000 });
    const lock = await app.get(LockService).acquire('step-back', { ttl: 400 });
    expect(await admin.exists(`${keyPrefix}lock:{step-back}`)).toBe(1);
    shiftDateNow(-HOUR);
    await sleep(1_000);
    restoreClocks();
    const inRedis = await admin.exists(`${keyPrefix}lock:{step-back}`);
    shiftDateNow(-HOUR);
    const held = lock.isHeld;
    restoreClocks();
    expect(inRedis).toBe(0);
    // before the fix: true, for an hour after Redis let the lock go
    expect(held).toBe(false);
  });
});

describe('rate limits across a stall and across clocks', () => {
  it('the block cache across a stall admits what Redis admits and refuses only what Redis refuses', async () => {
    const { app, keyPrefix } = await boot({ commandTimeout: 2_000, rateLimit: { blockCache: true } });
    const rl = app.get(RateLimitService);
    const policy = { limit: 2, ttl: 1_500, algorithm: 'fixed-window' as const };
    const long = { limit: 1, ttl: 60_000, algorithm: 'fixed-window' as const };
    expect((await rl.consume('short', policy)).allowed).toBe(true);
    expect((await rl.consume('short', policy)).allowed).toBe(true);
    expect((await rl.consume('short', policy)).allowed).toBe(false);
    expect((await rl.consume('long', long)).allowed).toBe(true);
    expect((await rl.consume('long', long)).allowed).toBe(false);
    const deniedBefore = rl.stats().deniedLocally;
    busy(2_000);
    // the short window ended during the stall: Redis admits, and so must this process
    const short = await rl.consume('short', policy);
    expect(short).toMatchObject({ allowed: true, remaining: 1 });
    // the long one is still refused, locally (no Redis call) and with Redis's wait counted down across the stall
    const refused = await rl.consume('long', long);
    expect(refused.allowed).toBe(false);
    expect(rl.stats().deniedLocally).toBe(deniedBefore + 1);
    expect(refused.retryAfterMs).toBeLessThanOrEqual(60_000 - 2_000);
    // Redis's own figure, asked by an instance without the cache (a refused call charges nothing)
    const { app: plain } = await boot({ commandTimeout: 2_000 }, keyPrefix);
    const fromRedis = await plain.get(RateLimitService).consume('long', long);
    expect(fromRedis.allowed).toBe(false);
    expect(Math.abs(refused.retryAfterMs - fromRedis.retryAfterMs)).toBeLessThan(1_000);
  });

  it('two instances an hour apart share one window: Redis TIME decides', async () => {
    const { app, keyPrefix } = await boot({ commandTimeout: 2_000 });
    const { app: ahead } = await boot({ commandTimeout: 2_000 }, keyPrefix);
    const policy = { limit: 5, ttl: 60_000 };
    const allowed: boolean[] = [];
    for (const algorithm of ['fixed-window', 'sliding-window', 'token-bucket'] as const) {
      for (let i = 0; i < 4; i++) {
        const svc = (i % 2 === 0 ? ahead : app).get(RateLimitService);
        const consume = () => svc.consume(`clock-${algorithm}`, { ...policy, algorithm, cost: 2 });
        allowed.push((await (i % 2 === 0 ? shifted(HOUR, consume) : consume())).allowed);
      }
    }
    // 2 + 2 of 5 admitted, the third charge of 2 refused, from whichever instance: per algorithm
    expect(allowed).toEqual([true, true, false, false, true, true, false, false, true, true, false, false]);
  });
});

describe('Redis slow, not down (DEBUG SLEEP on a private server)', () => {
  const sleepRedis = (seconds: number) => {
    const sleeper = trackForCleanup(new Redis(redis.server.port, '127.0.0.1'));
    return sleeper.call('debug', 'sleep', String(seconds));
  };

  it('asleep for well under commandTimeout: every feature answers exactly', async () => {
    const { app } = await boot({ commandTimeout: 3_000 });
    const sessions = app.get(SessionService);
    const cache = app.get(CacheService);
    const s = await sessions.create('u', { a: 1 });
    await cache.set('c', 'v', { ttl: 60_000 });
    const asleep = sleepRedis(0.8);
    await sleep(50);
    const [got, decision, lock, value] = await Promise.all([
      sessions.get(s.id),
      app.get(RateLimitService).consume('slow', { limit: 3, ttl: 60_000 }),
      app.get(LockService).tryAcquire('slow', { ttl: 30_000 }),
      cache.getOrSet('c', async () => 'loaded'),
    ]);
    await asleep;
    expect(got?.data).toEqual({ a: 1 });
    expect(decision).toMatchObject({ allowed: true, remaining: 2 });
    expect(decision.degraded).toBeUndefined();
    expect(lock?.isHeld).toBe(true);
    expect(value).toBe('v');
    expect(cache.stats().errors).toBe(0);
    await lock?.release();
  });

  it('asleep for longer: each feature’s failure policy, no lock left behind, and all is well after', async () => {
    const { app, keyPrefix } = await boot({ commandTimeout: 600 });
    const sessions = app.get(SessionService);
    const cache = app.get(CacheService);
    const locks = app.get(LockService);
    const s = await sessions.create('u', { a: 1 });
    const asleep = sleepRedis(2.5);
    await sleep(50);
    const [got, decision, lock, value] = await Promise.all([
      sessions.get(s.id).catch((e: unknown) => e),
      app.get(RateLimitService).consume('asleep', { limit: 3, ttl: 60_000 }),
      locks.tryAcquire('asleep', { ttl: 30_000 }).catch((e: unknown) => e),
      cache.getOrSet('c2', async () => 'loaded'),
    ]);
    expect(got).toBeInstanceOf(RedisUnavailableError);
    expect(decision).toMatchObject({ allowed: true, degraded: 'fail-open' });
    expect(lock).toBeInstanceOf(RedisUnavailableError);
    expect(value).toBe('loaded');
    await asleep;
    // the acquisition that timed out ran in Redis after the sleep: its lock is released for it
    expect(await waitFor(async () => (await admin.exists(`${keyPrefix}lock:{asleep}`)) === 0, 10_000)).toBe(true);
    expect(await waitFor(async () => (await sessions.get(s.id).catch(() => null))?.data !== undefined, 10_000)).toBe(
      true,
    );
    const again = await locks.tryAcquire('asleep', { ttl: 5_000 });
    expect(again?.isHeld).toBe(true);
    await again?.release();
  });
});

describe('a CPU-bound neighbour starving Redis', () => {
  const neighbours: ChildProcess[] = [];
  afterEach(() => {
    for (const n of neighbours.splice(0)) if (n.pid !== undefined && n.exitCode === null) n.kill('SIGKILL');
  });

  it('200 concurrent decisions at limit 50 admit exactly 50, and a lock keeps 12 sections apart', async () => {
    const { app } = await boot({ commandTimeout: 10_000 });
    for (let i = 0; i < 2; i++) {
      neighbours.push(spawn(process.execPath, ['-e', 'for (;;) {}'], { stdio: 'ignore' }));
    }
    await sleep(200);
    const rl = app.get(RateLimitService);
    const decisions = await Promise.all(
      Array.from({ length: 200 }, () => rl.consume('starved', { limit: 50, ttl: 60_000 })),
    );
    expect(decisions.filter((d) => d.degraded !== undefined)).toEqual([]);
    expect(decisions.filter((d) => d.allowed)).toHaveLength(50);

    const locks = app.get(LockService);
    let inside = 0;
    let most = 0;
    let runs = 0;
    await Promise.all(
      Array.from({ length: 12 }, () =>
        locks.using('starved', { ttl: 5_000, waitMs: 40_000 }, async () => {
          inside++;
          most = Math.max(most, inside);
          await sleep(5);
          inside--;
          runs++;
        }),
      ),
    );
    expect({ most, runs }).toEqual({ most: 1, runs: 12 });
  }, 60_000);
});
