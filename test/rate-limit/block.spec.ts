import 'reflect-metadata';
import { randomUUID } from 'node:crypto';
import { InvalidOptionsError, RateLimitService, Throttle, type RateLimitPolicy } from '../../lib/index.js';
import type { RateLimitAlgorithm } from '../../lib/advanced.js';
import { closeToolkitApps, createToolkitApp } from '../support/toolkit-app.js';
import { within } from '../support/timing.js';
import { sleep } from '../support/wait.js';

afterAll(closeToolkitApps);

const ALGORITHMS: RateLimitAlgorithm[] = ['sliding-window', 'fixed-window', 'token-bucket'];

describe.each(['single', 'cluster'] as const)('blockDuration and block() on %s', (target) => {
  let rl: RateLimitService;
  beforeAll(async () => {
    rl = (await createToolkitApp({ target, keyPrefix: `rtk-${randomUUID().slice(0, 8)}:` })).get(RateLimitService);
  });

  it.each(ALGORITHMS)(
    '%s: after the limit is hit the key stays refused for blockDuration, then is admitted',
    async (algorithm) => {
      const BLOCK = 2_500;
      const key = randomUUID();
      const policy: RateLimitPolicy = { limit: 2, ttl: 500, algorithm, blockDuration: BLOCK };
      expect((await rl.consume(key, policy)).allowed).toBe(true);
      expect((await rl.consume(key, policy)).allowed).toBe(true);
      const sentAt = Date.now();
      const refused = await rl.consume(key, policy);
      expect(refused).toMatchObject({ allowed: false, remaining: 0 });
      expect(refused.retryAfterMs).toBeGreaterThan(BLOCK - 200);
      expect(refused.retryAfterMs).toBeLessThanOrEqual(BLOCK);
      // the 500 ms window has long passed: without the block these would be admitted
      await sleep(1_000);
      const during = await Promise.all([rl.consume(key, policy), rl.peek(key, policy)]);
      expect(during.map((r) => r.allowed)).toEqual([false, false]);
      expect(during[0].retryAfterMs).toBeGreaterThan(0);
      expect(during[0].retryAfterMs).toBeLessThanOrEqual(BLOCK - 900);
      // a refusal during the block does not extend it: the first admission comes once BLOCK ms after the refusal
      let admittedAt = 0;
      let refusals = 0;
      while (Date.now() - sentAt < within(BLOCK + 2_000)) {
        const r = await rl.consume(key, policy);
        if (r.allowed) {
          admittedAt = Date.now();
          break;
        }
        refusals++;
        await sleep(100);
      }
      expect(refusals).toBeGreaterThan(0);
      expect(admittedAt).toBeGreaterThan(0);
      expect(admittedAt - sentAt).toBeGreaterThanOrEqual(BLOCK - 10); // the block is set after the call was sent
      expect(admittedAt - sentAt).toBeLessThan(within(BLOCK + 2_000));
    },
  );

  it('block(key, ms, policy) refuses that counter until then, leaves other counters alone; reset lifts it', async () => {
    const key = randomUUID();
    const policy: RateLimitPolicy = { limit: 100, ttl: 60_000 };
    const other: RateLimitPolicy = { limit: 100, ttl: 30_000 };
    await rl.block(key, 60_000, policy);
    const r = await rl.consume(key, policy);
    expect(r.allowed).toBe(false);
    expect(r.retryAfterMs).toBeGreaterThan(55_000);
    expect(r.retryAfterMs).toBeLessThanOrEqual(60_000);
    expect((await rl.consume(key, other)).allowed).toBe(true);
    expect(await rl.reset(key, policy)).toBe(1); // the block key (the counter was never charged)
    expect((await rl.consume(key, policy)).allowed).toBe(true);
    expect((await rl.consume(key, policy)).remaining).toBe(98);
  });

  it('in a multi-policy decision only the policy that refused blocks its counter', async () => {
    const key = randomUUID();
    const tight = { key, name: 'tight', policy: { limit: 1, ttl: 60_000, blockDuration: 120_000 } };
    const loose = { key, name: 'loose', policy: { limit: 100, ttl: 60_000, blockDuration: 120_000 } };
    expect((await rl.consumeAll([tight, loose])).allowed).toBe(true);
    const refused = await rl.consumeAll([tight, loose]);
    expect(refused.allowed).toBe(false);
    expect(refused.retryAfterMs).toBeGreaterThan(115_000);
    expect(refused.results.map((x) => x.allowed)).toEqual([false, true]);
    // loose alone: not blocked, 1 unit charged so far
    expect((await rl.consumeAll([loose])).results[0]).toMatchObject({ allowed: true, remaining: 98 });
  });
});

describe('blockDuration is validated', () => {
  it('refuses a negative or fractional blockDuration, at decoration and at call time', async () => {
    expect(() => Throttle({ limit: 1, ttl: 1_000, blockDuration: -1 })).toThrow(/blockDuration/);
    const rl = (await createToolkitApp()).get(RateLimitService);
    await expect(rl.consume('k', { limit: 1, ttl: 1_000, blockDuration: 1.5 })).rejects.toThrow(InvalidOptionsError);
    await expect(rl.block('k', 0, { limit: 1, ttl: 1_000 })).rejects.toThrow(InvalidOptionsError);
  });
});
