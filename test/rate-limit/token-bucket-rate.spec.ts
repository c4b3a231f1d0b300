import 'reflect-metadata';
import { randomUUID } from 'node:crypto';
import { RateLimitService, type RateLimitPolicy, type RateLimitResult } from '../../lib/index.js';
import { closeToolkitApps, createToolkitApp } from '../support/toolkit-app.js';
import { sleep } from '../support/wait.js';

// A token bucket's rate is `limit` per `ttl`, whatever the number of µs per token. Until 2026-12-03 the scripts
// rounded that to a whole number of µs (at least 1): at 450,000 a second a token took 2 µs, not 2.22 (the bucket
// refilled at 500,000 a second, 11 % over, and a drained bucket was full again after 900 ms); at 5,000,000 a second
// it took 1 µs, not 0.2 (1,000,000 a second, and a drained bucket reported resetMs 5000). Bytes-per-second limits
// (cost = bytes) meet such rates. Now the rate is exact but for the rounding of the stored TAT up to a whole µs, under
// 1 µs per decision.

afterAll(closeToolkitApps);

/** What `call` resolved with and a span of this host's clock (ms) holding the instant Redis decided it. */
async function timed<T>(call: () => Promise<T>): Promise<{ value: T; from: number; to: number }> {
  const from = Date.now();
  const value = await call();
  // Date.now() is whole ms, rounded down; the harness's Redis servers run on this host, on the same clock
  return { value, from, to: Date.now() + 1 };
}

describe.each(['single', 'cluster'] as const)('token bucket rate on %s', (target) => {
  let rl: RateLimitService;
  beforeAll(async () => {
    rl = (await createToolkitApp({ target, keyPrefix: `rtk-${randomUUID().slice(0, 8)}:` })).get(RateLimitService);
  });

  it.each([450_000, 5_000_000])(
    '%d tokens a second: a drained bucket is full again after 1 s and refills limit / ttl per ms',
    async (limit) => {
      const key = randomUUID();
      const policy: RateLimitPolicy = { limit, ttl: 1_000, algorithm: 'token-bucket' };
      const perMs = limit / 1_000;
      const drain = await timed(() => rl.consume(key, { ...policy, cost: limit }));
      expect(drain.value).toMatchObject({ allowed: true, remaining: 0, resetMs: 1_000, retryAfterMs: 0 });
      // a full bucket's cost at once is refused: told to wait what is left of that second
      const early = await timed(() => rl.consume(key, { ...policy, cost: limit }));
      expect(early.value.allowed).toBe(false);
      expect(early.value.retryAfterMs).toBeGreaterThanOrEqual(1_000 - (early.to - drain.from));
      expect(early.value.retryAfterMs).toBeLessThanOrEqual(1_000 - (early.from - drain.to) + 1);
      // every 100 ms: what a cost of 0 reports available, then that much taken (admitted)
      let admitted = 0;
      const off: string[] = [];
      for (let round = 0; round < 5; round++) {
        await sleep(100);
        const look = await timed(() => rl.consume(key, { ...policy, cost: 0 }));
        // each charge stores its TAT rounded up to a whole µs: under perMs / 1000 tokens each, and a floor
        const slack = (round + 1) * Math.ceil(perMs / 1_000) + 1;
        const least = Math.floor(perMs * (look.from - drain.to)) - admitted - slack;
        const most = Math.ceil(perMs * (look.to - drain.from)) - admitted;
        const available = look.value.remaining;
        if (available < least || available > most) off.push(`round ${round}: ${available} not in ${least}..${most}`);
        const took: RateLimitResult = await rl.consume(key, { ...policy, cost: available });
        if (!took.allowed) off.push(`round ${round}: ${available} available, refused`);
        admitted += available;
      }
      expect(off).toEqual([]);
      expect(admitted).toBeGreaterThan(perMs * 400);
    },
  );

  it.each([450_000, 5_000_000])(
    '%d tokens a second: a refused full cost is admitted after retryAfterMs',
    async (limit) => {
      const key = randomUUID();
      const policy: RateLimitPolicy = { limit, ttl: 1_000, algorithm: 'token-bucket', cost: limit };
      expect((await rl.consume(key, policy)).allowed).toBe(true);
      await sleep(200);
      const refused = await rl.consume(key, policy);
      expect(refused.allowed).toBe(false);
      expect(refused.retryAfterMs).toBeGreaterThan(0);
      expect(refused.retryAfterMs).toBeLessThanOrEqual(800);
      await sleep(refused.retryAfterMs);
      expect(await rl.consume(key, policy)).toMatchObject({ allowed: true, remaining: 0, resetMs: 1_000 });
    },
  );

  it('a burst of exactly `burst` at a rate of 2.22 µs a token, concurrent (one script call on a single server)', async () => {
    const key = randomUUID();
    const policy: RateLimitPolicy = { limit: 450_000, ttl: 1_000, algorithm: 'token-bucket', burst: 12 };
    const burst = await timed(() => Promise.all(Array.from({ length: 16 }, () => rl.consume(key, policy))));
    const allowed = burst.value.filter((r) => r.allowed);
    if (target === 'single') {
      // one call (16 decisions at most), one instant: had each charge lost what rounding its TAT up to a whole µs
      // adds, the 12th would not fit
      expect(allowed.map((r) => r.remaining)).toEqual(Array.from({ length: 12 }, (_, i) => 11 - i));
    } else {
      // one call per decision, each at its own instant: what refilled in between may be admitted too
      expect(allowed.length).toBeGreaterThanOrEqual(12);
      expect(allowed.length).toBeLessThanOrEqual(12 + Math.ceil(450 * (burst.to - burst.from)));
    }
  });
});
