import 'reflect-metadata';
import { Controller, UseGuards } from '@nestjs/common';
import { randomUUID } from 'node:crypto';
import type { Server } from 'node:http';
import request, { type Response } from 'supertest';
import { InvalidOptionsError, RateLimitGuard, RateLimitService, type RateLimitPolicy } from '../../lib/index.js';
import { closeToolkitApps, PLATFORMS_AND_TARGETS } from '../support/toolkit-app.js';
import { sleep } from '../support/wait.js';
import {
  bootInsured as boot,
  InsuredRoutes,
  insured,
  privateRedis,
  type PrivateRedis,
  bootPerHeaderMode,
  HEADER_MODES,
  type HeaderMode,
} from './insurance-harness.js';

// The insurance limiter (rateLimit.insurance: Redis unreachable) gives each process a share of a counter's capacity:
// ceil(limit / divideLimitBy) of a window, ceil(burst / divideLimitBy) of a token bucket, in a fixed window as long as
// the counter's span (ttl; a bucket's burst × ttl / limit, the time it takes to fill). Before 2026-12-03 a bucket's
// share came from its limit and its window was ttl: a cost between limit and burst, which Redis admits from a full
// bucket, was refused for a whole ttl, again and again; a bucket whose burst is under its limit had limit per ttl.
// Its results say that share as their limit, so limit, remaining and reset describe the one counter it enforces, in
// every header style. Before 2026-12-03 they said the policy's limit (a bucket's too, not even its burst) beside a
// remaining counted from the share: limit 5, remaining 2 for a share of 3.

afterAll(closeToolkitApps);

/** Counters of each algorithm, with the capacity a call of one cost can take at once (a bucket's burst). */
const CAPACITY_CASES: { label: string; policy: RateLimitPolicy; capacity: number }[] = [
  {
    label: 'bucket burst 6 limit 2',
    policy: { limit: 2, ttl: 60_000, algorithm: 'token-bucket', burst: 6 },
    capacity: 6,
  },
  {
    label: 'bucket burst 2 limit 6',
    policy: { limit: 6, ttl: 60_000, algorithm: 'token-bucket', burst: 2 },
    capacity: 2,
  },
  { label: 'fixed window 6', policy: { limit: 6, ttl: 60_000, algorithm: 'fixed-window' }, capacity: 6 },
  { label: 'sliding window 6', policy: { limit: 6, ttl: 60_000, algorithm: 'sliding-window' }, capacity: 6 },
];

/** What each cost from 1 to capacity + 1 gets from a fresh counter: admitted or not and units left, or the error. */
async function freshCounterAnswers(rl: RateLimitService, degraded: string[]): Promise<string[]> {
  const out: string[] = [];
  for (const { label, policy, capacity } of CAPACITY_CASES) {
    for (let cost = 1; cost <= capacity + 1; cost++) {
      try {
        const r = await rl.consume(randomUUID(), { ...policy, cost });
        out.push(`${label} cost ${cost}: ${r.allowed ? 'admitted' : 'refused'} r=${r.remaining}`);
        degraded.push(r.degraded ?? 'redis');
      } catch (err) {
        out.push(`${label} cost ${cost}: ${err instanceof InvalidOptionsError ? 'InvalidOptionsError' : String(err)}`);
      }
    }
  }
  return out;
}

describe.each(['single', 'cluster'] as const)('insurance share, service, %s', (target) => {
  let redis: PrivateRedis;
  let one: RateLimitService;
  let two: RateLimitService;
  const redisDegraded: string[] = [];
  let redisAnswers: string[];
  let redisFullSpend: { allowed: boolean; resetMs: number };
  beforeAll(async () => {
    redis = await privateRedis(target);
    const apps = await Promise.all([
      boot(redis, { insurance: { divideLimitBy: 1 } }),
      boot(redis, { insurance: { divideLimitBy: 2 } }),
    ]);
    [one, two] = apps.map((a) => a.get(RateLimitService));
    // what Redis answers, before it is made unreachable
    redisAnswers = await freshCounterAnswers(one, redisDegraded);
    redisFullSpend = await one.consume(randomUUID(), { ...CAPACITY_CASES[0].policy, cost: 6 });
    await redis.cut();
    await Promise.all(apps.map(insured));
  }, 60_000);
  afterAll(async () => {
    await closeToolkitApps();
    await redis.stop();
  });

  it('with divideLimitBy 1, every cost a fresh counter admits in Redis is admitted by insurance, alike', async () => {
    const degraded: string[] = [];
    const answers = await freshCounterAnswers(one, degraded);
    expect(redisDegraded.every((d) => d === 'redis')).toBe(true);
    expect(degraded.every((d) => d === 'insurance')).toBe(true);
    // e.g. 'bucket burst 6 limit 2 cost 3: admitted r=3'; a cost over the capacity: InvalidOptionsError from both
    expect(answers).toEqual(redisAnswers);
  });

  it('divideLimitBy 2: a bucket shares ceil(burst / 2): burst 5 limit 2 admits 3, refuses 4 for a ttl', async () => {
    const policy: RateLimitPolicy = { limit: 2, ttl: 60_000, algorithm: 'token-bucket', burst: 5 };
    const key = randomUUID();
    const three = await two.consume(key, { ...policy, cost: 3 });
    expect(three).toMatchObject({ allowed: true, remaining: 0, degraded: 'insurance' });
    // the window is the bucket's span, 5 × 60 s / 2: the next unit waits for its end
    const next = await two.consume(key, policy);
    expect(next).toMatchObject({ allowed: false, remaining: 0 });
    expect(next.retryAfterMs).toBeGreaterThan(145_000);
    expect(next.retryAfterMs).toBeLessThanOrEqual(150_000);
    // a cost over the share fits no insurance window: refused for a whole ttl, as Redis answers a cost over burst
    const four = await two.consume(randomUUID(), { ...policy, cost: 4 });
    expect(four).toMatchObject({ allowed: false, remaining: 3, retryAfterMs: 60_000, degraded: 'insurance' });
  });

  it("a bucket's insurance window is its span, burst × ttl / limit: its rate stays limit per ttl", async () => {
    // burst 2 of limit 6 per minute: 2 per 20 s (Redis: 2 at once, then 1 each 10 s)
    const policy: RateLimitPolicy = { limit: 6, ttl: 60_000, algorithm: 'token-bucket', burst: 2 };
    const key = randomUUID();
    const answers = [];
    for (let i = 0; i < 3; i++) answers.push(await one.consume(key, policy));
    expect(answers.map((r) => r.allowed)).toEqual([true, true, false]);
    expect(answers[2].retryAfterMs).toBeGreaterThan(15_000);
    expect(answers[2].retryAfterMs).toBeLessThanOrEqual(20_000);
    expect(answers[2].resetMs).toBe(answers[2].retryAfterMs);
    // burst 6 of limit 2 per minute spent at once: full again in 3 minutes, as Redis says
    const full = await one.consume(randomUUID(), { ...CAPACITY_CASES[0].policy, cost: 6 });
    expect(redisFullSpend).toEqual(expect.objectContaining({ allowed: true, resetMs: 180_000 }));
    expect(full).toMatchObject({ allowed: true, remaining: 0, resetMs: 180_000, degraded: 'insurance' });
  });

  it('a spent bucket is admitted again once its insurance window has passed', async () => {
    // burst 2 of limit 4 per 200 ms: a window of 100 ms
    const policy: RateLimitPolicy = { limit: 4, ttl: 200, algorithm: 'token-bucket', burst: 2, cost: 2 };
    const key = randomUUID();
    expect((await one.consume(key, policy)).allowed).toBe(true);
    const refused = await one.consume(key, { ...policy, cost: 1 });
    expect(refused.allowed).toBe(false);
    expect(refused.retryAfterMs).toBeLessThanOrEqual(100);
    await sleep(refused.retryAfterMs + 20);
    expect(await one.consume(key, policy)).toMatchObject({ allowed: true, remaining: 0 });
  });

  it('results say the per-process share as their limit, remaining counted down from it, every algorithm', async () => {
    // divideLimitBy 2: windows of limit 5 share 3 per minute, a bucket of burst 5 (limit 2) 3 per 150 s
    const policies: { policy: RateLimitPolicy; span: number }[] = [
      { policy: { limit: 5, ttl: 60_000, algorithm: 'fixed-window' }, span: 60_000 },
      { policy: { limit: 5, ttl: 60_000, algorithm: 'sliding-window' }, span: 60_000 },
      { policy: { limit: 2, ttl: 60_000, algorithm: 'token-bucket', burst: 5 }, span: 150_000 },
    ];
    const wrong: string[] = [];
    for (const { policy, span } of policies) {
      const key = randomUUID();
      const peeked = await two.peek(key, policy);
      const answers = [];
      for (let i = 0; i < 4; i++) answers.push(await two.consume(key, policy));
      const seen = [peeked, ...answers].map((r) => `${r.allowed ? 'admitted' : 'refused'} ${r.remaining}/${r.limit}`);
      const expected = ['admitted 3/3', 'admitted 2/3', 'admitted 1/3', 'admitted 0/3', 'refused 0/3'];
      if (seen.join() !== expected.join()) wrong.push(`${policy.algorithm}: ${seen.join(', ')}`);
      for (const r of answers)
        if (!(r.resetMs > span - 5_000 && r.resetMs <= span)) wrong.push(`${policy.algorithm}: reset ${r.resetMs}`);
    }
    expect(wrong).toEqual([]);
    // several policies of one call: each its own share (the bucket's from its burst 7: 4)
    const both = await two.consumeAll([
      { key: randomUUID(), name: 'w', policy: { limit: 5, ttl: 60_000, algorithm: 'fixed-window' } },
      { key: randomUUID(), name: 'b', policy: { limit: 2, ttl: 60_000, algorithm: 'token-bucket', burst: 7 } },
    ]);
    expect(both.degraded).toBe('insurance');
    expect(both.results.map((r) => `${r.name} ${r.remaining}/${r.limit}`)).toEqual(['w 2/3', 'b 3/4']);
  });
});

@Controller('insurance-share')
@UseGuards(RateLimitGuard)
class InsuranceShareController extends InsuredRoutes {}

/**
 * Limit, units left and reset (s) by style, as a response's headers say them (each route here has one policy), and the
 * quota of its policy header where the style has one (draft-6, draft-7: `3;w=60`; draft-8's q is its limit).
 */
interface Figures {
  limit: number;
  remaining: number;
  reset: number;
  quota?: number;
}

function figures(res: Response): Record<string, Figures> {
  const h = res.headers as Record<string, string | undefined>;
  const out: Record<string, Figures> = {};
  if (h['x-ratelimit-remaining'] !== undefined) {
    out.legacy = {
      limit: Number(h['x-ratelimit-limit']),
      remaining: Number(h['x-ratelimit-remaining']),
      reset: Number(h['x-ratelimit-reset']),
    };
  }
  const quota = /^(\d+);w=\d+$/.exec(h['ratelimit-policy'] ?? '');
  if (h['ratelimit-remaining'] !== undefined) {
    out['draft-6'] = {
      limit: Number(h['ratelimit-limit']),
      remaining: Number(h['ratelimit-remaining']),
      reset: Number(h['ratelimit-reset']),
      quota: Number(quota?.[1]),
    };
  }
  const draft7 = /^limit=(\d+), remaining=(\d+), reset=(\d+)$/.exec(h.ratelimit ?? '');
  if (draft7) {
    const [limit, remaining, reset] = draft7.slice(1).map(Number);
    out['draft-7'] = { limit, remaining, reset, quota: Number(quota?.[1]) };
  }
  const draft8 = /^"\w+";r=(\d+);t=(\d+)$/.exec(h.ratelimit ?? '');
  const q = /^"\w+";q=(\d+);w=\d+$/.exec(h['ratelimit-policy'] ?? '');
  if (draft8) out.draft = { limit: Number(q?.[1]), remaining: Number(draft8[1]), reset: Number(draft8[2]) };
  return out;
}

/** Each style's figure `field` that is not `expected`, and a response with none. */
function wrongFigures(res: Response, step: string, field: keyof Figures, expected: number): string[] {
  const all = Object.entries(figures(res));
  if (all.length === 0) return [`${step}: no rate-limit headers`];
  return all.filter(([, f]) => f[field] !== expected).map(([style, f]) => `${step} ${style}: ${field} ${f[field]}`);
}

describe.each(PLATFORMS_AND_TARGETS)('insurance share over HTTP on %s, %s', (platform, target) => {
  let redis: PrivateRedis;
  const apps = new Map<HeaderMode, Server>();
  beforeAll(async () => {
    redis = await privateRedis(target);
    const { booted, servers } = await bootPerHeaderMode(redis, 2, platform, InsuranceShareController);
    for (const [mode, server] of servers) apps.set(mode, server);
    await redis.cut();
    await Promise.all(booted.map(insured));
  }, 60_000);
  afterAll(async () => {
    await closeToolkitApps();
    await redis.stop();
  });

  const post = (mode: HeaderMode, path: string, user: string, cost: number) =>
    request(apps.get(mode) as Server)
      .post(`/insurance-share/${path}`)
      .set('X-User-Id', user)
      .set('X-Cost', String(cost));

  it('a cost between limit and burst within the share is admitted; over the share, refused for a ttl', async () => {
    const scenario = async (mode: HeaderMode): Promise<string[]> => {
      const user = randomUUID();
      // 3 of the share ceil(8 / 2) = 4: over the limit 2, which Redis admits from a full bucket
      const three = await post(mode, 'bucket', user, 3);
      if (three.status !== 201) return [`${mode} cost 3: ${three.status}, Retry-After ${three.headers['retry-after']}`];
      const wrong = wrongFigures(three, `${mode} cost 3`, 'remaining', 1);
      // 2 more: the window (8 × 60 s / 2 = 240 s) is what the client waits for
      const two = await post(mode, 'bucket', user, 2);
      if (two.status !== 429 || two.headers['retry-after'] !== '240')
        wrong.push(`${mode} cost 2 after 3: ${two.status}, Retry-After ${two.headers['retry-after']}`);
      wrong.push(...wrongFigures(two, `${mode} cost 2 after 3`, 'reset', 240));
      // 5 of a share of 4, which no insurance window admits: a whole ttl, units left as they stand
      const five = await post(mode, 'bucket', randomUUID(), 5);
      if (five.status !== 429 || five.headers['retry-after'] !== '60' || five.body.retryAfterMs !== 60_000)
        wrong.push(`${mode} cost 5: ${five.status}, Retry-After ${five.headers['retry-after']}`);
      wrong.push(...wrongFigures(five, `${mode} cost 5`, 'remaining', 4));
      return wrong;
    };
    const wrong = await Promise.all(HEADER_MODES.map(scenario));
    expect(wrong.flat()).toEqual([]);
  });

  it("every style says the per-process share as the limit, with its remaining and its window's reset", async () => {
    // divideLimitBy 2: fixed and sliding window 5 per minute share 3 (reset 60 s), the bucket 4 (reset 240 s)
    const routes = [
      { path: 'fixed', share: 3, reset: 60 },
      { path: 'sliding', share: 3, reset: 60 },
      { path: 'bucket', share: 4, reset: 240 },
    ];
    const scenario = async (mode: HeaderMode, { path, share, reset }: (typeof routes)[number]): Promise<string[]> => {
      const user = randomUUID();
      const wrong: string[] = [];
      const steps = [
        { cost: 1, status: 201, remaining: share - 1 },
        { cost: share - 1, status: 201, remaining: 0 },
        { cost: 1, status: 429, remaining: 0 },
      ];
      for (const [i, step] of steps.entries()) {
        const res = await post(mode, path, user, step.cost);
        const at = `${mode} ${path} #${i + 1}`;
        if (res.status !== step.status) wrong.push(`${at}: ${res.status}`);
        wrong.push(...wrongFigures(res, at, 'limit', share), ...wrongFigures(res, at, 'remaining', step.remaining));
        wrong.push(...wrongFigures(res, at, 'reset', reset));
        for (const [style, f] of Object.entries(figures(res)))
          if (f.quota !== undefined && f.quota !== share) wrong.push(`${at} ${style}: policy quota ${f.quota}`);
        if (step.status === 429 && res.headers['retry-after'] !== String(reset))
          wrong.push(`${at}: Retry-After ${res.headers['retry-after']}`);
      }
      return wrong;
    };
    const wrong = await Promise.all(HEADER_MODES.flatMap((mode) => routes.map((route) => scenario(mode, route))));
    expect(wrong.flat()).toEqual([]);
  });
});
