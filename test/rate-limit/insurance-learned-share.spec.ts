import 'reflect-metadata';
import { randomUUID } from 'node:crypto';
import { RateLimitService, type RateLimitPolicy } from '../../lib/index.js';
import type { RateLimitAlgorithm } from '../../lib/rate-limit/rate-limit.options.js';
import { closeToolkitApps, type ToolkitApp } from '../support/toolkit-app.js';
import { bootToolkitApp } from '../support/toolkit-boot.js';
import { insured, privateRedis, type PrivateRedis } from './insurance-harness.js';

// docs/rate-limit.md, Failure policy, "Insurance around an outage": each of N processes (divideLimitBy N) seeds its
// insurance window of a counter from Redis's last answer for it. Until 2026-12-06 each took ceil(remaining / N) of what
// Redis said was left, so N processes that learned the same `remaining` admitted together up to N - 1 units more than
// Redis had left when the outage began (remaining 4, 3 processes: 2 each, 6 admitted). Now floor(remaining / N): the
// total never exceeds `remaining` (the cost: a remaining under N admits nothing in the outage).

afterAll(closeToolkitApps);

const N = 3;
const LIMIT = 10;

describe('insurance seeded from Redis: N processes admit at most what Redis had left', () => {
  let redis: PrivateRedis;
  let apps: ToolkitApp[];
  let services: RateLimitService[];
  const cases: { algorithm: RateLimitAlgorithm; remaining: number; key: string }[] = [];
  beforeAll(async () => {
    redis = await privateRedis('single');
    // N processes, each on its own connection, under one key prefix (the same counters)
    const keyPrefix = `rtk-${randomUUID().slice(0, 8)}:`;
    apps = await Promise.all(
      Array.from({ length: N }, () =>
        bootToolkitApp({
          target: redis.connection,
          commandTimeout: 300,
          maxReconnectDelay: 100,
          keyPrefix,
          rateLimit: { warnIntervalMs: 60_000, insurance: { divideLimitBy: N } },
        }),
      ),
    );
    services = apps.map((a) => a.get(RateLimitService));
  }, 60_000);
  afterAll(() => redis?.stop());

  const policyOf = (algorithm: RateLimitAlgorithm, cost?: number): RateLimitPolicy => ({
    limit: LIMIT,
    ttl: 60_000,
    algorithm,
    ...(cost !== undefined && { cost }),
  });

  it('each learns the same remaining, Redis goes down: the total admitted is at most that remaining', async () => {
    const [first] = services;
    for (const algorithm of ['fixed-window', 'sliding-window', 'token-bucket'] as const) {
      // not 10: a counter Redis holds nothing of resets at once (resetMs 0, but for a fixed window's consume of cost
      // 0), so each process answers it with a fresh window of its share, ceil(10 / 3) (the window's rule, kept)
      for (const remaining of [0, 1, 2, 3, 4, 5, 7, 8, 9]) {
        const key = randomUUID();
        // one process spends down to `remaining`, then every process learns it (a consume of cost 0: a charging
        // decision that charges nothing, answered with what is left)
        await first.consume(key, policyOf(algorithm, LIMIT - remaining));
        for (const rl of services) {
          const r = await rl.consume(key, policyOf(algorithm, 0));
          expect(r.remaining).toBe(remaining);
        }
        cases.push({ algorithm, remaining, key });
      }
    }
    await redis.cut();
    for (const app of apps) await insured(app);
    const lines: string[] = [];
    for (const { algorithm, remaining, key } of cases) {
      let admitted = 0;
      for (const rl of services) {
        // until refused: at most the share (ceil(10 / 3) = 4) per process
        for (let i = 0; i < LIMIT; i++) {
          const r = await rl.consume(key, policyOf(algorithm));
          expect(r.degraded).toBe('insurance');
          if (!r.allowed) break;
          admitted++;
        }
      }
      lines.push(`${algorithm} remaining ${remaining}: ${admitted > remaining ? 'over' : 'within'} (${admitted})`);
    }
    expect(lines).toEqual(
      cases.map(
        ({ algorithm, remaining }) =>
          `${algorithm} remaining ${remaining}: within (${Math.min(Math.floor(remaining / N), Math.ceil(LIMIT / N)) * N})`,
      ),
    );
  }, 90_000);
});
