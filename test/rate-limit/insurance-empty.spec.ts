import 'reflect-metadata';
import { randomUUID } from 'node:crypto';
import { RateLimitService, type RateLimitPolicy, type RateLimitResult } from '../../lib/index.js';
import { InsuranceLimiter, type InsuranceCheck } from '../../lib/rate-limit/rate-limit.insurance-limiter.js';
import { closeToolkitApps } from '../support/toolkit-app.js';
import { sleep } from '../support/wait.js';
import { bootInsured, insured, privateRedis, type PrivateRedis } from './insurance-harness.js';

// A counter the insurance limiter (Redis unreachable) holds nothing of is answered as Redis answers a counter it does
// not hold: its share left, and the reset the scripts give an absent key, 0 (nothing to wait for) for a peek, a
// counter a refused decision left uncharged and a consume of cost 0, except a fixed window's consume of cost 0, which
// says its ttl (consume.lua and consume-fixed-window.lua answer the window a charge would open). Before 2026-12-03
// every such answer said the insurance window's whole span (60 s, a bucket's 180 s), and a cost over the share of an
// empty bucket a reset of its span beside a Retry-After of its ttl.
// A window opens only with a charge of 1 or more, as Redis writes nothing for a peek or a cost of 0. Before 2026-12-03
// a peek or a consume of cost 0 opened one, so the first charge after it landed in a window that ended that much
// sooner (the client's fresh window sooner than Redis gives it), and peeks of new counters pushed charged windows out
// of the LRU. A peek is decided with the policy's cost, as its script call is: before 2026-12-03 it was decided as a
// cost of 0 and said admitted where the consume it stands for was refused.

afterAll(closeToolkitApps);

const NOW = 1_000_000;
type Policy = InsuranceCheck['policy'];
/** divideLimitBy 2: each a share of 3; the bucket's window is its span, 6 × 60 s / 2 = 180 s. */
const FIXED: Policy = { algorithm: 'fixed-window', limit: 6, ttl: 60_000, burst: 6 };
const SLIDING: Policy = { algorithm: 'sliding-window', limit: 6, ttl: 60_000, burst: 6 };
const BUCKET: Policy = { algorithm: 'token-bucket', limit: 2, ttl: 60_000, burst: 6 };
const EACH = [FIXED, SLIDING, BUCKET];

type Figures = Pick<RateLimitResult, 'allowed' | 'limit' | 'remaining' | 'resetMs' | 'retryAfterMs'>;
const say = (r: Figures): string =>
  `${r.allowed ? 'admitted' : 'refused'} ${r.remaining}/${r.limit} reset ${r.resetMs} retry ${r.retryAfterMs}`;

const check = (policy: Policy, cost: number, redisKey = randomUUID()): InsuranceCheck => ({ redisKey, policy, cost });

describe('InsuranceLimiter, a counter that holds nothing', () => {
  it('a peek says its share left and reset 0, as Redis answers an absent key; also once its window has ended', () => {
    const limiter = new InsuranceLimiter(2, 100);
    const seen = EACH.flatMap((policy) => {
      const ended = check(policy, 1);
      const span = limiter.consume([ended], NOW).results[0].resetMs;
      return [
        `${policy.algorithm} fresh: ${say(limiter.consume([check(policy, 0)], NOW, 'p').results[0])}`,
        `${policy.algorithm} ended: ${say(limiter.consume([{ ...ended, cost: 0 }], NOW + span, 'p').results[0])}`,
      ];
    });
    expect(seen).toEqual(
      EACH.flatMap((p) => [
        `${p.algorithm} fresh: admitted 3/3 reset 0 retry 0`,
        `${p.algorithm} ended: admitted 3/3 reset 0 retry 0`,
      ]),
    );
  });

  it("a consume of cost 0 says what the scripts say: a fixed window's ttl, a sliding window's and a bucket's 0", () => {
    const limiter = new InsuranceLimiter(2, 100);
    const seen = EACH.map((p) => `${p.algorithm}: ${say(limiter.consume([check(p, 0)], NOW).results[0])}`);
    expect(seen).toEqual([
      'fixed-window: admitted 3/3 reset 60000 retry 0',
      'sliding-window: admitted 3/3 reset 0 retry 0',
      'token-bucket: admitted 3/3 reset 0 retry 0',
    ]);
  });

  it('a counter a refused decision leaves uncharged says reset 0, as the scripts answer it as it stands', () => {
    const limiter = new InsuranceLimiter(2, 100);
    const spent = check({ algorithm: 'fixed-window', limit: 1, ttl: 60_000, burst: 1 }, 1);
    expect(limiter.consume([spent], NOW).allowed).toBe(true);
    const seen = EACH.map((p) => {
      const decided = limiter.consume([spent, check(p, 1)], NOW + 1_000);
      return `${decided.allowed} ${p.algorithm}: ${say(decided.results[1])}`;
    });
    expect(seen).toEqual(EACH.map((p) => `false ${p.algorithm}: admitted 3/3 reset 0 retry 0`));
  });

  it('a cost over the share of an empty counter is refused for a ttl, its reset that ttl (not a span of 180 s)', () => {
    const limiter = new InsuranceLimiter(2, 100);
    const seen = EACH.map((p) => `${p.algorithm}: ${say(limiter.consume([check(p, 4)], NOW).results[0])}`);
    expect(seen).toEqual(EACH.map((p) => `${p.algorithm}: refused 3/3 reset 60000 retry 60000`));
  });
});

describe('InsuranceLimiter, a peek opens no window', () => {
  it('the first consume after a peek or a consume of cost 0 gets a whole window from its own time', () => {
    const limiter = new InsuranceLimiter(2, 100);
    const seen = EACH.flatMap((policy) =>
      (['peek', 'cost 0'] as const).map((first) => {
        const key = randomUUID();
        limiter.consume([check(policy, 0, key)], NOW, first === 'peek' ? 'p' : 'c');
        const later = limiter.consume([check(policy, 1, key)], NOW + 10_000).results[0];
        return `${policy.algorithm} after a ${first}: ${say(later)}`;
      }),
    );
    // a window's span from the charge: 60 s, the bucket's 180 s
    const reset = (p: Policy) => (p.algorithm === 'token-bucket' ? 180_000 : 60_000);
    expect(seen).toEqual(
      EACH.flatMap((p) =>
        ['peek', 'cost 0'].map((first) => `${p.algorithm} after a ${first}: admitted 2/3 reset ${reset(p)} retry 0`),
      ),
    );
  });

  it('a peek after a window has ended does not open the next one', () => {
    const limiter = new InsuranceLimiter(2, 100);
    const key = randomUUID();
    expect(limiter.consume([check(FIXED, 3, key)], NOW).results[0].resetMs).toBe(60_000);
    limiter.consume([check(FIXED, 0, key)], NOW + 65_000, 'p');
    const later = limiter.consume([check(FIXED, 1, key)], NOW + 80_000).results[0];
    expect(say(later)).toBe('admitted 2/3 reset 60000 retry 0');
  });

  it('peeks and consumes of cost 0 of other counters never push a charged window out (maxKeys 2)', () => {
    const limiter = new InsuranceLimiter(2, 2);
    const spent = check(FIXED, 3);
    expect(limiter.consume([spent], NOW).allowed).toBe(true);
    for (let i = 0; i < 4; i++) {
      limiter.consume([check(FIXED, 0)], NOW + i, 'p');
      limiter.consume([check(SLIDING, 0)], NOW + i);
    }
    // still spent: refused until its window ends
    expect(say(limiter.consume([{ ...spent, cost: 1 }], NOW + 1_000).results[0])).toBe(
      'refused 0/3 reset 59000 retry 59000',
    );
  });
});

/** Counters of each algorithm, for the service (divideLimitBy 1: insurance's share is the counter's capacity). */
const POLICIES: { label: string; policy: RateLimitPolicy }[] = [
  { label: 'fixed window 6', policy: { limit: 6, ttl: 60_000, algorithm: 'fixed-window' } },
  { label: 'sliding window 6', policy: { limit: 6, ttl: 60_000, algorithm: 'sliding-window' } },
  { label: 'bucket burst 6 limit 2', policy: { limit: 2, ttl: 60_000, algorithm: 'token-bucket', burst: 6 } },
  { label: 'bucket burst 2 limit 6', policy: { limit: 6, ttl: 60_000, algorithm: 'token-bucket', burst: 2 } },
];
const TIGHT: RateLimitPolicy = { limit: 1, ttl: 60_000, algorithm: 'fixed-window' };

/**
 * What the service answers about fresh counters of each algorithm: a peek, a peekAll, a consume of cost 0, and the
 * uncharged counter of a consumeAll another (spent) counter refuses; with each answer's `degraded`.
 */
async function emptyCounterAnswers(rl: RateLimitService, degraded: string[]): Promise<string[]> {
  const out: string[] = [];
  const note = (label: string, r: Figures & { degraded?: string }) => {
    out.push(`${label}: ${say(r)}`);
    degraded.push(r.degraded ?? 'redis');
  };
  for (const { label, policy } of POLICIES) {
    note(`${label} peek`, await rl.peek(randomUUID(), policy));
    const all = await rl.peekAll([{ key: randomUUID(), policy }]);
    note(`${label} peekAll`, { ...all.results[0], degraded: all.degraded });
    note(`${label} cost 0`, await rl.consume(randomUUID(), { ...policy, cost: 0 }));
    const tight = randomUUID();
    await rl.consume(tight, TIGHT);
    const refused = await rl.consumeAll([
      { key: tight, name: 'tight', policy: TIGHT },
      { key: randomUUID(), name: 'fresh', policy },
    ]);
    note(`${label} beside a refusal (${refused.allowed})`, { ...refused.results[1], degraded: refused.degraded });
  }
  return out;
}

/**
 * The first consume of counters a peek or a consume of cost 0 found fresh, 1.1 s after it, beside a fresh counter's
 * reset (its window; a bucket's span under insurance, under Redis the time its unit takes to come back).
 */
async function firstConsumeAfter(rl: RateLimitService): Promise<string[]> {
  const keys = POLICIES.map(() => [randomUUID(), randomUUID()]);
  for (const [i, { policy }] of POLICIES.entries()) {
    await rl.peek(keys[i][0], policy);
    await rl.consume(keys[i][1], { ...policy, cost: 0 });
  }
  await sleep(1_100);
  const out: string[] = [];
  for (const [i, { label, policy }] of POLICIES.entries()) {
    for (const [j, first] of ['peek', 'cost 0'].entries()) {
      const r = await rl.consume(keys[i][j], policy);
      const fresh = await rl.consume(randomUUID(), policy);
      out.push(`${label} after a ${first}: ${say(r)} (fresh: reset ${fresh.resetMs}) ${r.degraded ?? 'redis'}`);
    }
  }
  return out;
}

/**
 * Peeks of a counter with one unit left, of cost 1 and 2 (a peek is what a consume of the policy's cost would answer):
 * admitted or not, units left, whether it says to wait and whether its reset is at least that wait.
 */
async function peeksOfOneLeft(rl: RateLimitService): Promise<string[]> {
  const out: string[] = [];
  const note = (label: string, r: Figures) =>
    out.push(
      `${label}: ${r.allowed ? 'admitted' : 'refused'} ${r.remaining}/${r.limit}` +
        `${r.retryAfterMs > 0 ? ' waits' : ''}${r.resetMs >= r.retryAfterMs ? '' : ' reset before retry'}`,
    );
  for (const { label, policy } of POLICIES) {
    const key = randomUUID();
    const capacity = policy.algorithm === 'token-bucket' ? (policy.burst ?? policy.limit) : policy.limit;
    if (capacity > 1) await rl.consume(key, { ...policy, cost: capacity - 1 });
    for (const cost of [1, 2]) {
      note(`${label} peek cost ${cost}`, await rl.peek(key, { ...policy, cost }));
      note(`${label} peekAll cost ${cost}`, (await rl.peekAll([{ key, policy: { ...policy, cost } }])).results[0]);
    }
  }
  return out;
}

describe.each(['single', 'cluster'] as const)('insurance, empty counters through RateLimitService, %s', (target) => {
  let redis: PrivateRedis;
  let rl: RateLimitService;
  const redisDegraded: string[] = [];
  let redisAnswers: string[];
  let redisAfter: string[];
  let redisPeeks: string[];
  beforeAll(async () => {
    redis = await privateRedis(target);
    const app = await bootInsured(redis, { insurance: { divideLimitBy: 1 } });
    rl = app.get(RateLimitService);
    // what Redis answers, before it is made unreachable
    redisAnswers = await emptyCounterAnswers(rl, redisDegraded);
    redisAfter = await firstConsumeAfter(rl);
    redisPeeks = await peeksOfOneLeft(rl);
    await redis.cut();
    await insured(app);
  }, 60_000);
  afterAll(async () => {
    await closeToolkitApps();
    await redis.stop();
  });

  it('a peek or a consume of cost 0 opens no window: the first consume after it gets a whole one, as from Redis', async () => {
    const answers = await firstConsumeAfter(rl);
    // a window from that consume, as a fresh counter's (a bucket's: its span)
    expect(answers.filter((a) => !/reset (\d+) retry 0 \(fresh: reset \1\) insurance$/.test(a))).toEqual([]);
    // the windows' answers are Redis's (Redis answers a bucket's unit with the time it takes to come back)
    const windows = (all: string[]) => all.filter((a) => !a.startsWith('bucket')).map((a) => a.split(' (')[0]);
    expect(windows(answers)).toEqual(windows(redisAfter));
    expect(windows(redisAfter)[0]).toBe('fixed window 6 after a peek: admitted 5/6 reset 60000 retry 0');
  });

  it("a peek says what a consume of the policy's cost would: a cost over the units left is refused, as by Redis", async () => {
    expect(await peeksOfOneLeft(rl)).toEqual(redisPeeks);
    expect(redisPeeks.slice(0, 4)).toEqual([
      'fixed window 6 peek cost 1: admitted 1/6',
      'fixed window 6 peekAll cost 1: admitted 1/6',
      'fixed window 6 peek cost 2: refused 1/6 waits',
      'fixed window 6 peekAll cost 2: refused 1/6 waits',
    ]);
  });

  it('every answer about a counter that holds nothing is the one Redis gave (limit, remaining, reset, retry)', async () => {
    const degraded: string[] = [];
    const answers = await emptyCounterAnswers(rl, degraded);
    expect([...new Set(redisDegraded)]).toEqual(['redis']);
    expect([...new Set(degraded)]).toEqual(['insurance']);
    expect(answers).toEqual(redisAnswers);
    // what the scripts answer an absent key: reset 0, but a fixed window's consume of cost 0 says its window
    expect(redisAnswers.filter((a) => !a.endsWith(' reset 0 retry 0'))).toEqual([
      'fixed window 6 cost 0: admitted 6/6 reset 60000 retry 0',
    ]);
  });
});
