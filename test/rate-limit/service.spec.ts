import 'reflect-metadata';
import { randomUUID } from 'node:crypto';
import {
  InvalidKeyError,
  InvalidOptionsError,
  RateLimitExceededError,
  REDIS_CLIENT,
  RateLimitService,
  Throttle,
  type RateLimitPolicy,
} from '../../lib/index.js';
import { type RateLimitAlgorithm } from '../../lib/advanced.js';
import type { RedisClient } from '../../lib/common/lua-script.js';
import { MAX_DECISIONS_PER_CALL } from '../../lib/rate-limit/rate-limit.decision-batcher.js';
import { shifted } from '../support/clock-shift.js';
import { recordCommands } from '../support/command-recorder.js';
import { commandStats } from '../support/commandstats.js';
import { closeToolkitApps, createToolkitApp } from '../support/toolkit-app.js';
import { sleep } from '../support/wait.js';

afterAll(closeToolkitApps);

const ALGORITHMS: RateLimitAlgorithm[] = ['sliding-window', 'fixed-window', 'token-bucket'];
const uid = () => randomUUID();

describe('token bucket arithmetic', () => {
  // GCRA keeps its state as an absolute time in µs (~1.8e15, where a double's step is 0.25 µs) and adds a fractional
  // interval per token (60 s / 9), so each step rounds. Nine rounded steps could put the ninth token of a full bucket
  // a little over a µs past `now`, and a burst of exactly `limit` was refused its last call at some instants.
  it('a concurrent burst of exactly limit is always admitted whole, whatever the instant (400 bursts)', async () => {
    const { get } = await createToolkitApp({ target: 'single' });
    const rl = get(RateLimitService);
    const short: string[] = [];
    for (let i = 0; i < 400; i++) {
      const limit = [3, 7, 9, 11, 13, 17, 19, 23][i % 8];
      const key = uid();
      const results = await Promise.all(
        Array.from({ length: limit }, () => rl.consume(key, { limit, ttl: 60_000, algorithm: 'token-bucket' })),
      );
      const allowed = results.filter((r) => r.allowed).length;
      if (allowed !== limit) short.push(`limit ${limit}: ${allowed}`);
    }
    expect(short).toEqual([]);
  });
});

describe.each(['single', 'cluster'] as const)('RateLimitService on %s', (target) => {
  let rl: RateLimitService;
  let client: RedisClient;
  beforeAll(async () => {
    const app = await createToolkitApp({ target });
    rl = app.get(RateLimitService);
    client = app.get<RedisClient>(REDIS_CLIENT);
  });

  it.each(ALGORITHMS)('%s: 200 concurrent calls against limit 50 admit exactly 50', async (algorithm) => {
    const key = uid();
    const policy: RateLimitPolicy = { limit: 50, ttl: 60_000, algorithm };
    const results = await Promise.all(Array.from({ length: 200 }, () => rl.consume(key, policy)));
    const allowed = results.filter((r) => r.allowed);
    expect(allowed).toHaveLength(50);
    expect(allowed.map((r) => r.remaining).sort((a, b) => a - b)).toEqual(Array.from({ length: 50 }, (_, i) => i));
    for (const r of results.filter((x) => !x.allowed)) {
      expect(r.remaining).toBe(0);
      expect(r.retryAfterMs).toBeGreaterThan(0);
      expect(r.retryAfterMs).toBeLessThanOrEqual(60_000);
      expect(r.limit).toBe(50);
    }
    expect(results.every((r) => r.degraded === undefined)).toBe(true);
  });

  it('sliding window: admits again once the oldest requests leave the window, not before', async () => {
    // Bounds from measured send/answer times (Redis runs on this host, its TIME is our clock), not from the sleeps:
    // a busy machine stretches every sleep. A 3 s window leaves second-sized margins.
    const key = uid();
    const ttl = 3_000;
    const policy: RateLimitPolicy = { limit: 5, ttl, algorithm: 'sliding-window' };
    const firstSent = Date.now();
    for (let i = 0; i < 3; i++) expect((await rl.consume(key, policy)).allowed).toBe(true);
    const firstDone = Date.now();
    await sleep(1_500);
    const laterSent = Date.now();
    for (let i = 0; i < 2; i++) expect((await rl.consume(key, policy)).allowed).toBe(true);
    const deniedSent = Date.now();
    const denied = await rl.consume(key, policy);
    const deniedDone = Date.now();
    expect(denied.allowed).toBe(false);
    // the first three leave at their admission + ttl
    expect(denied.retryAfterMs).toBeGreaterThanOrEqual(firstSent + ttl - deniedDone - 2);
    expect(denied.retryAfterMs).toBeLessThanOrEqual(firstDone + ttl - deniedSent + 2);
    const notYet = await rl.consume(key, policy);
    if (Date.now() < firstSent + ttl) expect(notYet.allowed).toBe(false); // not before (decided before they left)
    // once the first three have certainly left, and while the later two certainly have not
    await sleep(Math.max(0, firstDone + ttl + 50 - Date.now()));
    const again = await Promise.all(Array.from({ length: 5 }, () => rl.consume(key, policy)));
    expect(Date.now()).toBeLessThan(laterSent + ttl); // else the window's later members left too: no conclusion
    expect(again.filter((r) => r.allowed)).toHaveLength(3); // the two later ones are still in the window
  });

  it('sliding window: a peek that sees members which left the window (still stored) answers the same retry as a refusal', async () => {
    const key = uid();
    // A 5 s window: t1's member stays in it with seconds to spare on a busy machine.
    const policy: RateLimitPolicy = { limit: 2, ttl: 5_000, algorithm: 'sliding-window' };
    expect((await rl.consume(key, policy)).allowed).toBe(true); // t0
    await sleep(2_000);
    const t1Sent = Date.now();
    expect((await rl.consume(key, policy)).allowed).toBe(true); // t1 = t0 + 2 s
    await sleep(3_500); // t0's member has left the window; only a consume removes it
    const peekSent = Date.now();
    const peeked = await rl.peek(key, { ...policy, cost: 2 });
    const refused = await rl.consume(key, { ...policy, cost: 2 });
    const refusedDone = Date.now();
    expect(refusedDone).toBeLessThan(t1Sent + policy.ttl); // else t1 left too: no conclusion
    expect([peeked.allowed, refused.allowed]).toEqual([false, false]);
    // both wait for t1's member, not for t0's, which has already gone
    expect(peeked.retryAfterMs).toBeGreaterThan(0);
    // the two calls run back to back, so their answers differ by at most the time between them (measured)
    expect(Math.abs(peeked.retryAfterMs - refused.retryAfterMs)).toBeLessThanOrEqual(refusedDone - peekSent + 2);
  });

  it('boundary burst: a fixed window admits about 2x limit across a boundary, the sliding window does not', async () => {
    const limit = 10;
    const burst = async (algorithm: RateLimitAlgorithm): Promise<number> => {
      const key = uid();
      // A 4 s window: "before the boundary" and "after it, while the first burst is still in the sliding window"
      // both hold with a second or more to spare on a busy machine (checked from measured times).
      const ttl = 4_000;
      const policy: RateLimitPolicy = { limit, ttl, algorithm };
      const t0Sent = Date.now();
      expect((await rl.consume(key, policy)).allowed).toBe(true); // opens the window at t0
      const t0Done = Date.now();
      await sleep(2_500);
      const beforeSent = Date.now();
      const before = await Promise.all(Array.from({ length: limit - 1 }, () => rl.consume(key, policy)));
      expect(Date.now()).toBeLessThan(t0Sent + ttl); // still in t0's fixed window
      await sleep(Math.max(0, t0Done + ttl + 100 - Date.now())); // past t0 + ttl
      const after = await Promise.all(Array.from({ length: limit }, () => rl.consume(key, policy)));
      expect(Date.now()).toBeLessThan(beforeSent + ttl); // the burst before the boundary is still in the window
      return [...before, ...after].filter((r) => r.allowed).length;
    };
    const [fixed, sliding] = await Promise.all([burst('fixed-window'), burst('sliding-window')]);
    expect(fixed).toBe(2 * limit - 1);
    expect(sliding).toBe(limit);
  });

  it('token bucket: a burst of `burst`, then refills at limit per ttl', async () => {
    const key = uid();
    const policy: RateLimitPolicy = { limit: 10, ttl: 1_000, algorithm: 'token-bucket', burst: 4 };
    const firstSent = Date.now();
    const first = await Promise.all(Array.from({ length: 6 }, () => rl.consume(key, policy)));
    const firstDone = Date.now();
    expect(first.filter((r) => r.allowed)).toHaveLength(4);
    const denied = first.find((r) => !r.allowed);
    expect(denied?.retryAfterMs).toBeGreaterThan(0);
    expect(denied?.retryAfterMs).toBeLessThanOrEqual(100); // one token per 100 ms
    await sleep(330); // at least three tokens
    const refillSent = Date.now();
    const refilled = await Promise.all(Array.from({ length: 6 }, () => rl.consume(key, policy)));
    const refillDone = Date.now();
    // One token per 100 ms since the bucket was emptied, never above the burst: bounds from the measured times (a
    // busy machine stretches the 330 ms sleep).
    const admitted = refilled.filter((r) => r.allowed).length;
    expect(admitted).toBeGreaterThanOrEqual(Math.min(4, Math.floor((refillSent - firstDone) / 100)));
    expect(admitted).toBeLessThanOrEqual(Math.min(4, Math.ceil((refillDone - firstSent) / 100)));
    expect(admitted).toBeGreaterThanOrEqual(3);
    // full again, never above burst (was 2 s): full 400 ms after the last take; uncapped, 1 s would hold 10 tokens and
    // admit all 8, so the cap still shows (a busy machine only stretches the sleep: more tokens, same cap)
    await sleep(1_000);
    const full = await Promise.all(Array.from({ length: 8 }, () => rl.consume(key, policy)));
    expect(full.filter((r) => r.allowed)).toHaveLength(4);
  });

  it.each(ALGORITHMS)('%s: cost is charged in units; a refused call charges nothing', async (algorithm) => {
    const key = uid();
    const policy = { limit: 5, ttl: 60_000, algorithm };
    expect(await rl.consume(key, { ...policy, cost: 3 })).toMatchObject({ allowed: true, remaining: 2 });
    expect(await rl.consume(key, { ...policy, cost: 3 })).toMatchObject({ allowed: false, remaining: 2 });
    expect(await rl.consume(key, { ...policy, cost: 2 })).toMatchObject({ allowed: true, remaining: 0 });
    expect(await rl.peek(key, policy)).toMatchObject({ allowed: false, remaining: 0 });
  });

  it('several policies are checked and charged all or nothing in one call', async () => {
    const key = uid();
    const perSecond: RateLimitPolicy = { limit: 2, ttl: 1_000, algorithm: 'fixed-window' };
    const perMinute: RateLimitPolicy = { limit: 5, ttl: 60_000, algorithm: 'sliding-window' };
    const checks = [
      { key, policy: perSecond, name: 'second' },
      { key, policy: perMinute, name: 'minute' },
    ];
    const decisions = [];
    for (let i = 0; i < 4; i++) decisions.push(await rl.consumeAll(checks));
    expect(decisions.map((d) => d.allowed)).toEqual([true, true, false, false]);
    expect(decisions[2].results.map((r) => [r.name, r.allowed])).toEqual([
      ['second', false],
      ['minute', true],
    ]);
    // the refused calls did not charge the per-minute policy
    expect((await rl.peek(key, perMinute)).remaining).toBe(3);
    expect(decisions[3].retryAfterMs).toBeGreaterThan(0);
    expect(decisions[3].retryAfterMs).toBeLessThanOrEqual(1_000);
  });

  it('200 concurrent calls with three policies of every algorithm admit exactly the tightest limit', async () => {
    const key = uid();
    const checks = [
      { key, name: 's', policy: { limit: 80, ttl: 60_000, algorithm: 'sliding-window' as const } },
      { key, name: 'f', policy: { limit: 50, ttl: 60_000, algorithm: 'fixed-window' as const } },
      { key, name: 't', policy: { limit: 60, ttl: 60_000, algorithm: 'token-bucket' as const } },
    ];
    const decisions = await Promise.all(Array.from({ length: 200 }, () => rl.consumeAll(checks)));
    expect(decisions.filter((d) => d.allowed)).toHaveLength(50);
    const after = await rl.peekAll(checks);
    expect(after.results.map((r) => r.remaining)).toEqual([30, 0, 10]); // refused calls charged nothing
  });

  it('policies with different keys (per IP and per user) are decided together', async () => {
    const ip = uid();
    const user = uid();
    const checks = [
      { key: ip, name: 'ip', policy: { limit: 3, ttl: 60_000 } },
      { key: user, name: 'user', policy: { limit: 2, ttl: 60_000 } },
    ];
    const decisions = [];
    for (let i = 0; i < 3; i++) decisions.push(await rl.consumeAll(checks));
    expect(decisions.map((d) => d.allowed)).toEqual([true, true, false]);
    expect(decisions[2].results.map((r) => [r.name, r.allowed])).toEqual([
      ['ip', true],
      ['user', false],
    ]);
    // on a single server the refusal charged nothing; on a cluster the per-IP group was decided first
    const ipLeft = (await rl.peekAll([checks[0]])).results[0].remaining;
    expect(ipLeft).toBe(target === 'single' ? 1 : 0);
  });

  it('peek does not charge; reset clears one policy or every counter of a key', async () => {
    const key = uid();
    const a: RateLimitPolicy = { limit: 3, ttl: 60_000 };
    const b: RateLimitPolicy = { limit: 3, ttl: 60_000, algorithm: 'token-bucket' };
    for (let i = 0; i < 5; i++) expect((await rl.peek(key, a)).remaining).toBe(3);
    await rl.consume(key, a);
    await rl.consume(key, b);
    expect((await rl.peek(key, a)).remaining).toBe(2);
    expect(await rl.reset(key, a)).toBe(1);
    expect((await rl.peek(key, a)).remaining).toBe(3);
    expect((await rl.peek(key, b)).remaining).toBe(2);
    await rl.consume(key, a);
    expect(await rl.reset(key)).toBe(2);
    expect((await rl.peek(key, b)).remaining).toBe(3);
  });

  it('a key made of hostile characters stays contained in one fixed-length key under the prefix', async () => {
    const hostile = `*}{rtk:rl:{x}\n\r*?[a]${'z'.repeat(10 * 1024)}{}`;
    const policy: RateLimitPolicy = { limit: 2, ttl: 60_000, algorithm: 'fixed-window' };
    expect((await rl.consume(hostile, policy)).allowed).toBe(true);
    expect((await rl.consume(hostile, policy)).allowed).toBe(true);
    expect((await rl.consume(hostile, policy)).allowed).toBe(false);
    expect((await rl.consume(`${hostile}x`, policy)).allowed).toBe(true); // another key
    const redisKey = rl.redisKey(hostile, '2/60000', 'fixed-window');
    expect(redisKey).toMatch(/^rtk:rl:\{[A-Za-z0-9_-]{22}\}:[A-Za-z0-9_-]{22}:f$/);
    expect(await client.get(redisKey)).toBe('2');
    expect(await rl.reset(hostile)).toBe(1);
    await expect(rl.consume('', policy)).rejects.toBeInstanceOf(InvalidKeyError);
    await expect(rl.consume(42 as unknown as string, policy)).rejects.toBeInstanceOf(InvalidKeyError);
  });

  it('consumeOrThrow throws RateLimitExceededError with retryAfterMs', async () => {
    const key = uid();
    const policy: RateLimitPolicy = { limit: 1, ttl: 60_000, algorithm: 'fixed-window' };
    expect((await rl.consumeOrThrow(key, policy)).remaining).toBe(0);
    const err = await rl.consumeOrThrow(key, policy).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RateLimitExceededError);
    expect((err as RateLimitExceededError).code).toBe('E_RATE_LIMIT_EXCEEDED');
    expect((err as RateLimitExceededError).retryAfterMs).toBeGreaterThan(59_000);
  });

  it('rejects impossible policies with InvalidOptionsError naming the field', async () => {
    await expect(rl.consume('k', { limit: 0, ttl: 1_000 })).rejects.toThrow(/policy\.limit/);
    await expect(rl.consume('k', { limit: 5, ttl: -1 })).rejects.toThrow(/policy\.ttl/);
    await expect(rl.consume('k', { limit: 5, ttl: 1_000, cost: 6 })).rejects.toThrow(/policy\.cost/);
    await expect(
      rl.consume('k', { limit: 5, ttl: 1_000, algorithm: 'leaky' as RateLimitAlgorithm }),
    ).rejects.toBeInstanceOf(InvalidOptionsError);
    await expect(rl.consumeAll([])).rejects.toBeInstanceOf(InvalidOptionsError);
  });

  it('decides with the Redis clock: an app clock one hour ahead changes nothing', async () => {
    const key = uid();
    const policy: RateLimitPolicy = { limit: 3, ttl: 2_000, algorithm: 'sliding-window' };
    for (let i = 0; i < 3; i++) await rl.consume(key, policy);
    const r = await shifted(3_600_000, () => rl.consume(key, policy));
    expect(r.allowed).toBe(false);
    expect(r.retryAfterMs).toBeGreaterThan(1_000);
  });

  it('every decision is one round trip (EVALSHA)', async () => {
    const key = uid();
    const policy: RateLimitPolicy = { limit: 100, ttl: 60_000 };
    await rl.consume(key, policy); // loads the script if needed
    const { commands: calls } = await recordCommands(client, () =>
      rl.consumeAll([
        { key, policy, name: 'a' },
        { key, policy: { limit: 5, ttl: 1_000, algorithm: 'token-bucket' }, name: 'b' },
        { key, policy: { limit: 5, ttl: 1_000, algorithm: 'fixed-window' }, name: 'c' },
      ]),
    );
    expect(calls.filter((c) => c !== 'evalsha' && c !== 'eval')).toEqual([]);
    expect(calls.filter((c) => c === 'evalsha')).toHaveLength(1);
  });
});

describe('two app instances', () => {
  it.each(['single', 'cluster'] as const)('share one limit on %s', async (target) => {
    const [a, b] = await Promise.all([createToolkitApp({ target }), createToolkitApp({ target })]);
    const key = uid();
    const policy: RateLimitPolicy = { limit: 25, ttl: 60_000 };
    const results = await Promise.all(
      Array.from({ length: 100 }, (_, i) => (i % 2 ? a : b).get(RateLimitService).consume(key, policy)),
    );
    expect(results.filter((r) => r.allowed)).toHaveLength(25);
  });
});

describe('sliding window cap (issue 17 item 14)', () => {
  it('refuses a sliding window limit or cost over the cap with InvalidOptionsError before any Redis call', async () => {
    const app = await createToolkitApp({ target: 'single' });
    const rl = app.get(RateLimitService);
    const client = app.get<RedisClient>(REDIS_CLIENT);
    const key = uid();
    const calls = [
      () => rl.consume(key, { limit: 1e6, ttl: 60_000, cost: 1e6, algorithm: 'sliding-window' }),
      () => rl.consume(key, { limit: 10_001, ttl: 60_000 }), // the default algorithm is the sliding window
      () => rl.peek(key, { limit: 1e6, ttl: 60_000 }),
      () => rl.consumeAll([{ key, policy: { limit: 1e6, ttl: 60_000, cost: 1e6 } }]),
    ];
    for (const call of calls) {
      const { value, commands } = await recordCommands(client, () => call().catch((err: unknown) => err));
      expect(value).toBeInstanceOf(InvalidOptionsError);
      expect((value as Error).message).toMatch(/at most 10000 for a sliding window.*maxSlidingWindowLimit/);
      expect(commands).toEqual([]);
    }
    expect(await client.exists(key)).toBe(0);
    // at the cap, and any size with the O(1) algorithms, is fine
    expect((await rl.consume(key, { limit: 10_000, ttl: 60_000, cost: 10 })).remaining).toBe(9_990);
    expect((await rl.consume(key, { limit: 1e6, ttl: 60_000, cost: 1e6, algorithm: 'fixed-window' })).allowed).toBe(
      true,
    );
    expect((await rl.consume(key, { limit: 1e6, ttl: 60_000, algorithm: 'token-bucket' })).allowed).toBe(true);
  });

  it('takes a larger cap by option, up to a hard maximum of 100,000, and checks rateLimit.defaults at start', async () => {
    const app = await createToolkitApp({ target: 'single', rateLimit: { maxSlidingWindowLimit: 20_000 } });
    const rl = app.get(RateLimitService);
    expect((await rl.consume(uid(), { limit: 20_000, ttl: 60_000, cost: 20_000 })).allowed).toBe(true);
    await expect(rl.consume(uid(), { limit: 20_001, ttl: 60_000 })).rejects.toThrow(/at most 20000/);
    await expect(createToolkitApp({ rateLimit: { maxSlidingWindowLimit: 100_001 } })).rejects.toThrow(
      /rateLimit.maxSlidingWindowLimit must be an integer from 1 to 100000/,
    );
    await expect(createToolkitApp({ rateLimit: { defaults: { limit: 50_000, ttl: 1_000 } } })).rejects.toThrow(
      /rateLimit.defaults.limit must be at most 10000 for a sliding window/,
    );
    expect(() => Throttle({ limit: 1e6, ttl: 1_000 })).toThrow(InvalidOptionsError);
  });
});

describe('sliding window cost in Redis', () => {
  it('peeks and refusals on a window of 40,000 members cost about what they cost on a window of 4', async () => {
    const app = await createToolkitApp({ target: 'single', rateLimit: { maxSlidingWindowLimit: 40_000 } });
    const rl = app.get(RateLimitService);
    const client = app.get<RedisClient>(REDIS_CLIENT);
    const evalshaUsec = async (): Promise<number> => (await commandStats(client)).evalsha?.usec ?? 0;
    const big: RateLimitPolicy = { limit: 40_000, ttl: 60_000, algorithm: 'sliding-window' };
    const small: RateLimitPolicy = { limit: 4, ttl: 60_000, algorithm: 'sliding-window' };
    const bigKey = uid();
    const smallKey = uid();
    const filledAt = Date.now();
    for (let i = 0; i < 4; i++) expect((await rl.consume(bigKey, { ...big, cost: 10_000 })).allowed).toBe(true);
    for (let i = 0; i < 4; i++) expect((await rl.consume(smallKey, small)).allowed).toBe(true);
    // Redis time of 100 peeks and 100 refusals (each reads the newest member for the reset, a refusal also the
    // member whose exit admits it)
    const redisTime = async (key: string, policy: RateLimitPolicy): Promise<number> => {
      const before = await evalshaUsec();
      for (let i = 0; i < 100; i++) {
        const peeked = await rl.peek(key, policy);
        const refused = await rl.consume(key, policy);
        expect([peeked.allowed, refused.allowed, peeked.remaining]).toEqual([false, false, 0]);
        // the window's members are still there: reset is the rest of the 60 s window (measured, not assumed)
        expect(refused.resetMs).toBeGreaterThan(60_000 - (Date.now() - filledAt) - 5);
      }
      return (await evalshaUsec()) - before;
    };
    await redisTime(smallKey, small); // warm up
    const smallUsec = await redisTime(smallKey, small);
    const bigUsec = await redisTime(bigKey, big);
    // Walking the window (ZRANGEBYSCORE ... LIMIT count-1) made this ratio about 40 at 40,000 members.
    expect(bigUsec / smallUsec).toBeLessThan(4);
    expect(await client.zcard(rl.redisKey(bigKey, '40000/60000', 'sliding-window'))).toBe(40_000);
  });
});

describe('decisions of one tick share one script call (single server)', () => {
  let rl: RateLimitService;
  let client: RedisClient;
  beforeAll(async () => {
    const app = await createToolkitApp({ target: 'single' });
    rl = app.get(RateLimitService);
    client = app.get<RedisClient>(REDIS_CLIENT);
  });
  const recording = <T>(fn: () => Promise<T>) => recordCommands(client, fn);

  it('200 concurrent decisions on 4 keys: one EVALSHA per 16, and each key still admits exactly its limit', async () => {
    const keys = [uid(), uid(), uid(), uid()];
    await rl.consume(uid(), { limit: 1, ttl: 1_000 }); // the script is loaded
    const policy: RateLimitPolicy = { limit: 20, ttl: 60_000 };
    const { value: results, commands } = await recording(() =>
      Promise.all(Array.from({ length: 200 }, (_, i) => rl.consume(keys[i % 4], policy))),
    );
    expect(MAX_DECISIONS_PER_CALL).toBe(16);
    expect(commands).toEqual(Array.from({ length: 13 }, () => 'evalsha'));
    for (let k = 0; k < 4; k++) {
      const mine = results.filter((_, i) => i % 4 === k);
      expect(mine.filter((r) => r.allowed)).toHaveLength(20);
      // in call order: the first 20 calls of a key are admitted, remaining counts down, the rest wait
      expect(mine.slice(0, 20).map((r) => r.remaining)).toEqual(Array.from({ length: 20 }, (_, i) => 19 - i));
      expect(mine.slice(20).every((r) => !r.allowed && r.retryAfterMs > 0)).toBe(true);
    }
  });

  it('a batch mixes peeks, consumes, algorithms and multi-policy decisions, each answered as if alone', async () => {
    const [a, b, c] = [uid(), uid(), uid()];
    const tight: RateLimitPolicy = { limit: 1, ttl: 60_000, algorithm: 'fixed-window' };
    const loose: RateLimitPolicy = { limit: 10, ttl: 60_000, algorithm: 'token-bucket' };
    await rl.consume(c, tight); // c's tight counter is full before the batch
    const { value, commands } = await recording(() =>
      Promise.all([
        rl.peek(a, tight),
        rl.consume(a, tight),
        rl.consume(a, tight),
        rl.consumeAll([
          { key: b, policy: loose, name: 'loose' },
          { key: b, policy: { limit: 2, ttl: 60_000, algorithm: 'sliding-window' }, name: 'sliding' },
        ]),
        rl.consumeAll([
          { key: c, policy: loose, name: 'loose' },
          { key: c, policy: tight, name: 'tight' },
        ]),
        rl.peek(b, loose),
      ]),
    );
    expect(commands).toEqual(['evalsha']);
    const [peekA, first, second, both, refused, peekB] = value;
    expect([peekA.allowed, peekA.remaining]).toEqual([true, 1]);
    expect([first.allowed, first.remaining, second.allowed]).toEqual([true, 0, false]);
    expect(both.allowed).toBe(true);
    expect(both.results.map((r) => [r.name, r.allowed, r.remaining])).toEqual([
      ['loose', true, 9],
      ['sliding', true, 1],
    ]);
    // all or nothing inside a batch too: the tight policy refuses, so the loose one is not charged
    expect(refused.allowed).toBe(false);
    expect(refused.results.map((r) => [r.name, r.allowed])).toEqual([
      ['loose', true],
      ['tight', false],
    ]);
    expect((await rl.peek(c, loose)).remaining).toBe(10);
    // the peek after b's charge in the same call sees it
    expect(peekB.remaining).toBe(9);
  });

  it('decisions with 32 policies each batch as well: 40 of them in 3 calls, all or nothing each', async () => {
    const key = uid();
    const policies = Array.from({ length: 32 }, (_, i) => ({
      key,
      name: `p${i}`,
      scope: `p${i}`,
      policy: { limit: i === 31 ? 30 : 1_000, ttl: 60_000, algorithm: 'fixed-window' as const },
    }));
    const { value, commands } = await recording(() =>
      Promise.all(Array.from({ length: 40 }, () => rl.consumeAll(policies))),
    );
    expect(commands).toEqual(['evalsha', 'evalsha', 'evalsha']);
    expect(value.filter((d) => d.allowed)).toHaveLength(30);
    // the 10 refused decisions charged none of their 31 other counters
    expect((await rl.peekAll(policies)).results.map((r) => r.remaining)).toEqual([
      ...Array.from({ length: 31 }, () => 970),
      0,
    ]);
  });
});

describe('a token bucket whose span (burst × ttl / limit) passes 100 years is refused', () => {
  const Y100 = 100 * 365 * 24 * 3_600_000; // MAX_DURATION_MS
  // each refills over Y100 × burst / limit: 100 years × 100, × 40 001, × 2
  const wide: RateLimitPolicy = { limit: 2, ttl: Y100, algorithm: 'token-bucket', burst: 200 };
  const huge: RateLimitPolicy = { limit: 1, ttl: Y100, algorithm: 'token-bucket', burst: 40_001, cost: 40_000 };
  const past2p53: RateLimitPolicy = { limit: 1, ttl: Y100, algorithm: 'token-bucket', burst: 3 };

  it('at start: rateLimit.defaults and @Throttle (named too) name the burst', async () => {
    await expect(createToolkitApp({ rateLimit: { defaults: wide } })).rejects.toThrow(
      /rateLimit\.defaults\.burst must be at most 2 .*100 years.*got 200/,
    );
    await expect(createToolkitApp({ rateLimit: { defaults: wide } })).rejects.toBeInstanceOf(InvalidOptionsError);
    expect(() => Throttle(wide)).toThrow(/@Throttle policy 1\.burst must be at most 2 /);
    expect(() => Throttle({ limit: 5, ttl: 1_000 }, { ...huge, name: 'yearly' })).toThrow(
      /@Throttle policy 2 \("yearly"\)\.burst must be at most 1 /,
    );
    // at the bound: a bucket that refills in exactly 100 years, and a per-request value checked per call
    expect(() => Throttle({ limit: 2, ttl: Y100, algorithm: 'token-bucket', burst: 2 })).not.toThrow();
    expect(() => Throttle({ ...wide, burst: () => 200 })).not.toThrow();
  });

  it.each(['single', 'cluster'] as const)(
    'per call on %s: before any Redis call, and the other decisions of the tick are answered',
    async (target) => {
      const app = await createToolkitApp({ target });
      const rl = app.get(RateLimitService);
      const client = app.get<RedisClient>(REDIS_CLIENT);
      const key = uid();
      const calls = [
        () => rl.consume(key, { ...wide, cost: 63 }),
        () => rl.peek(key, wide),
        () => rl.consume(key, past2p53),
        () => rl.consumeAll([{ key, policy: wide, scope: 'Ctrl.handler:default' }]),
        () => rl.reward(key, 1, wide),
        () => rl.penalty(key, 1, wide),
      ];
      for (const call of calls) {
        const { value, commands } = await recordCommands(client, () => call().catch((err: unknown) => err));
        expect(value).toBeInstanceOf(InvalidOptionsError);
        expect((value as Error).message).toMatch(/policy\.burst must be at most [12] .*100 years/);
        expect(commands).toEqual([]);
      }
      // in the same tick as ordinary consumes (one script call on a single server): only the huge one fails
      const other: RateLimitPolicy = { limit: 10, ttl: 60_000, algorithm: 'token-bucket' };
      const [o1, o2] = [uid(), uid()];
      const settled = await Promise.allSettled([rl.consume(uid(), huge), rl.consume(o1, other), rl.consume(o2, other)]);
      expect(settled.map((s) => s.status)).toEqual(['rejected', 'fulfilled', 'fulfilled']);
      expect((settled[0] as PromiseRejectedResult).reason).toBeInstanceOf(InvalidOptionsError);
      for (const s of settled.slice(1))
        expect((s as PromiseFulfilledResult<{ allowed: boolean; remaining: number }>).value).toMatchObject({
          allowed: true,
          remaining: 9,
        });
      // at the bound: a full bucket admits cost == burst and stores a whole TAT, later consumes are answered
      const edge: RateLimitPolicy = { limit: 2, ttl: Y100, algorithm: 'token-bucket', burst: 2 };
      const k = uid();
      expect(await rl.consume(k, { ...edge, cost: 2 })).toMatchObject({ allowed: true, remaining: 0 });
      expect(await client.get(rl.redisKey(k, `2/${Y100}`, 'token-bucket'))).toMatch(/^-?\d+$/);
      expect(await rl.consume(k, edge)).toMatchObject({ allowed: false, remaining: 0 });
    },
  );
});
