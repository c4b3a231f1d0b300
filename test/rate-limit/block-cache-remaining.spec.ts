import 'reflect-metadata';
import { randomUUID } from 'node:crypto';
import { RateLimitService, type RateLimitPolicy } from '../../lib/index.js';
import type { RateLimitCheck, RateLimitDecision } from '../../lib/advanced.js';
import { closeToolkitApps, createToolkitApp, type RedisTarget } from '../support/toolkit-app.js';
import { sleep } from '../support/wait.js';

// A decision the block cache answers (rateLimit.blockCache) reports what Redis would report for the same call at that
// moment: the same remaining for every policy (a refused counter keeps the units it has: a cost of 5 refused with 1
// left says 1, and a token bucket's refill shows while it is refused; the other policies of a multi-policy decision
// refill, or are full once their window has passed), and resetMs / retryAfterMs within a round trip. Compared here with
// a process without the cache on the SAME counters, asked right after the cache's answer: a refused decision charges
// nothing, so both see one state. Before 2026-12-03 the cache said remaining 0 for a refused counter, and the
// snapshot of the other policies never moved (a token bucket with 4 left of 6 said 2 until the refusal ended).

afterAll(closeToolkitApps);

/** Figures in ms agree within this: the answers are a round trip apart, and the cache counts from the call's send. */
const MS_TOLERANCE = 50;
/** A pair of answers taken further apart than this (the machine stalled between them) is not compared. */
const MAX_PAIR_MS = 40;
/** The token buckets below (limit 4 per 2 s) refill a token every 500 ms: samples fall halfway between two. */
const TOKEN_MS = 500;

interface Sampled {
  wrong: string[];
  compared: number;
}

/** Per policy name, what Redis must say is left at `offset` ms after the charge (the scenario's own check). */
type Expected = Record<string, (offset: number) => number>;

/** Where the figures of the cache's answer `a` and of Redis's `b` for the same call differ (beyond the tolerance). */
function differences(a: RateLimitDecision, b: RateLimitDecision, step: string): string[] {
  const wrong: string[] = [];
  const near = (x: number, y: number) => Math.abs(x - y) <= MS_TOLERANCE;
  if (a.allowed !== b.allowed || !near(a.retryAfterMs, b.retryAfterMs))
    wrong.push(`${step}: decision ${a.allowed}/${a.retryAfterMs} ms, Redis ${b.allowed}/${b.retryAfterMs} ms`);
  a.results.forEach((r, i) => {
    const s = b.results[i];
    const same =
      r.allowed === s.allowed &&
      r.limit === s.limit &&
      r.remaining === s.remaining &&
      near(r.resetMs, s.resetMs) &&
      near(r.retryAfterMs, s.retryAfterMs);
    if (!same) {
      const show = (x: typeof r) =>
        `${x.allowed} r=${x.remaining}/${x.limit} reset=${x.resetMs} retry=${x.retryAfterMs}`;
      wrong.push(`${step} ${r.name}: cache ${show(r)}, Redis ${show(s)}`);
    }
  });
  return wrong;
}

let queue: Promise<unknown> = Promise.resolve();
/** Runs the pairs of scenarios sampled side by side one after the other, so stats().deniedLocally tells whose it is. */
function oneAtATime<T>(pair: () => Promise<T>): Promise<T> {
  const run = queue.then(pair);
  queue = run.catch(() => undefined);
  return run;
}

/**
 * At `from + offset` for each offset: the decision of `checks` by `cached` (which must answer it itself), then by
 * `plain` (Redis) at once; their differences, and where Redis did not say what the scenario expects.
 */
async function sample(
  cached: RateLimitService,
  plain: RateLimitService,
  checks: RateLimitCheck[],
  from: number,
  offsets: number[],
  expected: Expected,
  label: string,
): Promise<Sampled> {
  const out: Sampled = { wrong: [], compared: 0 };
  for (const offset of offsets) {
    await sleep(Math.max(0, from + offset - performance.now()));
    const pair = await oneAtATime(async () => {
      const local = cached.stats().deniedLocally;
      const started = performance.now();
      const a = await cached.consumeAll(checks);
      const b = await plain.consumeAll(checks);
      return { a, b, local: cached.stats().deniedLocally === local + 1, ms: performance.now() - started, started };
    });
    // What Redis must say is judged at the time the pair was taken, not at the one aimed at: a busy machine wakes the
    // sleep late. A pair taken within the tolerance of a token's or a window's turn (multiples of TOKEN_MS) is not
    // compared: which side of it Redis counted the call on is a round trip's luck.
    const at = pair.started - from;
    const fromTurn = Math.abs(at - Math.round(at / TOKEN_MS) * TOKEN_MS);
    if (pair.ms > MAX_PAIR_MS || fromTurn < MS_TOLERANCE) continue;
    const { a, b } = pair;
    const step = `${label} +${offset} ms`;
    if (!pair.local) out.wrong.push(`${step}: not answered by the block cache`);
    out.wrong.push(...differences(a, b, step));
    out.compared++;
    for (const r of b.results) {
      const want = expected[r.name](at);
      if (r.remaining !== want) out.wrong.push(`${step} ${r.name}: Redis says ${r.remaining} left, expected ${want}`);
    }
  }
  return out;
}

/** Charges `checks` once (admitted), then has Redis refuse them to `cached` (learnt); returns when the charge was sent. */
async function chargeThenRefuse(cached: RateLimitService, checks: RateLimitCheck[]): Promise<number> {
  const charged = performance.now();
  expect((await cached.consumeAll(checks)).allowed).toBe(true);
  expect((await cached.consumeAll(checks)).allowed).toBe(false);
  return charged;
}

/** A bucket (6 tokens, one back every 500 ms) with `left` tokens at the offset 0: what it has at `offset`. */
const tokensBack = (left: number) => (offset: number) => Math.min(6, left + Math.floor(offset / TOKEN_MS));

/** Halfway between two tokens of a bucket charged at the offset 0: 250, 750, ... ms, `count` of them. */
const midTokens = (count: number) => Array.from({ length: count }, (_, j) => TOKEN_MS / 2 + j * TOKEN_MS);

describe.each(['single', 'cluster'] as const)('the block cache answers as Redis does on %s', (target) => {
  let cached: RateLimitService;
  let plain: RateLimitService;
  beforeAll(async () => {
    const keyPrefix = `rtk-${randomUUID().slice(0, 8)}:`;
    const boot = async (blockCache: boolean) =>
      (await createToolkitApp({ target: target as RedisTarget, keyPrefix, rateLimit: { blockCache } })).get(
        RateLimitService,
      );
    [cached, plain] = await Promise.all([boot(true), boot(false)]);
  });

  it('a counter refused for a cost > 1: the units it has (a token bucket refilling), the same reset and retry', async () => {
    const bucket = async (): Promise<Sampled> => {
      // 6 tokens, 5 taken: refused for 5 with 1 left, 2 left 500 ms later... until 5 are back (2 s)
      const policy: RateLimitPolicy = { limit: 4, ttl: 2_000, algorithm: 'token-bucket', burst: 6, cost: 5 };
      const checks: RateLimitCheck[] = [{ key: randomUUID(), name: 'bucket', policy }];
      const from = await chargeThenRefuse(cached, checks);
      return sample(cached, plain, checks, from, midTokens(4), { bucket: tokensBack(1) }, 'token bucket');
    };
    const window = async (algorithm: 'fixed-window' | 'sliding-window'): Promise<Sampled> => {
      // 5 per 2 s, 3 taken: refused for 3 with 2 left until the window has passed
      const policy: RateLimitPolicy = { limit: 5, ttl: 2_000, algorithm, cost: 3 };
      const checks: RateLimitCheck[] = [{ key: randomUUID(), name: algorithm, policy }];
      const from = await chargeThenRefuse(cached, checks);
      return sample(
        cached,
        plain,
        checks,
        from,
        [300, 900, 1_500],
        { [algorithm]: (at) => (at < 2_000 ? 2 : 5) },
        algorithm,
      );
    };
    const runs = await Promise.all([bucket(), window('fixed-window'), window('sliding-window')]);
    expect(runs.flatMap((r) => r.wrong)).toEqual([]);
    expect(runs.every((r) => r.compared >= 2)).toBe(true);
  }, 20_000);

  it('one policy refused, the others as Redis has them now: a bucket refilling, windows full once passed', async () => {
    const key = randomUUID();
    const checks: RateLimitCheck[] = [
      { key, name: 'x', policy: { limit: 1, ttl: 3_000, algorithm: 'fixed-window' } },
      { key, name: 'tb', policy: { limit: 4, ttl: 2_000, algorithm: 'token-bucket', burst: 6, cost: 4 } },
      { key, name: 'fw', policy: { limit: 5, ttl: 1_000, algorithm: 'fixed-window', cost: 2 } },
      { key, name: 'sw', policy: { limit: 5, ttl: 1_000, algorithm: 'sliding-window', cost: 2 } },
    ];
    // admitted (x 0 left, tb 2, fw 3, sw 3), then refused by x alone until its window ends (3 s)
    const from = await chargeThenRefuse(cached, checks);
    const windowOf1s = (offset: number) => (offset < 1_000 ? 3 : 5);
    const expected: Expected = { x: () => 0, tb: tokensBack(2), fw: windowOf1s, sw: windowOf1s };
    const run = await sample(cached, plain, checks, from, midTokens(5), expected, 'four policies');
    expect(run.wrong).toEqual([]);
    expect(run.compared).toBeGreaterThanOrEqual(4);
  }, 20_000);

  it('a blocked token bucket (block(), blockDuration) says 0 left until the block ends, as Redis does', async () => {
    const handBlocked = async (): Promise<Sampled> => {
      // 3 of 6 taken, then blocked by hand for 2.5 s: the bucket is full again after 1.5 s, the block still refuses
      const policy: RateLimitPolicy = { limit: 4, ttl: 2_000, algorithm: 'token-bucket', burst: 6, cost: 3 };
      const checks: RateLimitCheck[] = [{ key: randomUUID(), name: 'hand', policy }];
      const from = performance.now();
      expect((await cached.consumeAll(checks)).allowed).toBe(true);
      await plain.block(checks[0].key, 2_500, policy);
      expect((await cached.consumeAll(checks)).allowed).toBe(false);
      return sample(cached, plain, checks, from, midTokens(4), { hand: () => 0 }, 'block()');
    };
    const blockDuration = async (): Promise<Sampled> => {
      // 4 of 6 taken, refused for 4 (2 left): Redis blocks the bucket for 2.5 s
      const policy: RateLimitPolicy = {
        limit: 4,
        ttl: 2_000,
        algorithm: 'token-bucket',
        burst: 6,
        cost: 4,
        blockDuration: 2_500,
      };
      const checks: RateLimitCheck[] = [{ key: randomUUID(), name: 'blocked', policy }];
      const from = await chargeThenRefuse(cached, checks);
      return sample(cached, plain, checks, from, midTokens(4), { blocked: () => 0 }, 'blockDuration');
    };
    const runs = await Promise.all([handBlocked(), blockDuration()]);
    expect(runs.flatMap((r) => r.wrong)).toEqual([]);
    expect(runs.every((r) => r.compared >= 3)).toBe(true);
  }, 20_000);
});
