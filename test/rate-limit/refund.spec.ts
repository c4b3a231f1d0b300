import 'reflect-metadata';
import { Body, Controller, HttpCode, Post, UnauthorizedException, UseGuards } from '@nestjs/common';
import { jest } from '@jest/globals';
import { randomUUID } from 'node:crypto';
import request from 'supertest';
import type { Redis } from 'ioredis';
import {
  InvalidOptionsError,
  REDIS_CLIENT,
  RateLimitGuard,
  RateLimitService,
  RedisReplyError,
  Throttle,
} from '../../lib/index.js';
import { FEATURES } from '../../lib/common/keys.js';
import { closeToolkitApps, createToolkitApp, PLATFORMS } from '../support/toolkit-app.js';
import { sleep } from '../support/wait.js';

@Controller()
@UseGuards(RateLimitGuard)
class LoginController {
  @Post('login')
  @HttpCode(200)
  @Throttle({ limit: 3, ttl: 60_000, skipSuccessfulRequests: true })
  login(@Body() body: { password?: string }): { ok: true } {
    if (body.password !== 'right') throw new UnauthorizedException();
    return { ok: true };
  }

  @Post('upload')
  @HttpCode(200)
  @Throttle({ limit: 2, ttl: 60_000, skipFailedRequests: true })
  upload(@Body() body: { fail?: boolean }): { ok: true } {
    if (body.fail) throw new UnauthorizedException();
    return { ok: true };
  }
}

afterEach(() => closeToolkitApps());

describe.each(PLATFORMS)('skipSuccessfulRequests / skipFailedRequests over HTTP (%s)', (platform) => {
  it('a failed login is charged, a successful one refunded; skipFailedRequests the other way round', async () => {
    const app = await createToolkitApp({
      platform,
      http: true,
      keyPrefix: `rtk-${randomUUID().slice(0, 8)}:`,
      controllers: [LoginController],
    });
    const server = app.app.getHttpServer();
    const login = async (password: string) => {
      const r = await request(server).post('/login').send({ password });
      await sleep(50); // the refund is sent when the response finishes
      return r.status;
    };
    const statuses: number[] = [];
    for (let i = 0; i < 6; i++) statuses.push(await login('right'));
    expect(statuses).toEqual([200, 200, 200, 200, 200, 200]); // 6 successes against a limit of 3: all refunded
    const failures: number[] = [];
    for (let i = 0; i < 4; i++) failures.push(await login('wrong'));
    expect(failures).toEqual([401, 401, 401, 429]); // 3 failures charged, the 4th attempt refused
    expect(await login('right')).toBe(429); // locked out now, even with the right password

    const upload = async (fail: boolean) => {
      const r = await request(server).post('/upload').send({ fail });
      await sleep(50);
      return r.status;
    };
    const uploads: number[] = [];
    for (const fail of [true, true, true, false, false, false]) uploads.push(await upload(fail));
    expect(uploads).toEqual([401, 401, 401, 200, 200, 429]);
    expect(app.get(RateLimitService).stats()).toMatchObject({ denied: 3 });
  });
});

describe.each(PLATFORMS)("the guard's refund names the window of its charge (%s)", (platform) => {
  // The guard sent a refund while its charge's window was open by its own clock, but named no window: one that reached
  // Redis after the window ended (held in flight, a stalled event loop) was taken from the next window's charges.
  it("reward is given the charge's windowEndsAt: the time before the charge plus its resetMs", async () => {
    const app = await createToolkitApp({
      platform,
      http: true,
      keyPrefix: `rtk-${randomUUID().slice(0, 8)}:`,
      controllers: [LoginController],
    });
    const rl = app.get(RateLimitService);
    const rewards = jest.spyOn(rl, 'reward');
    const before = performance.now();
    expect((await request(app.app.getHttpServer()).post('/login').send({ password: 'right' })).status).toBe(200);
    await sleep(50); // the refund is sent when the response finishes
    const after = performance.now();
    expect(rewards).toHaveBeenCalledTimes(1);
    const [, points, policy, , charge] = rewards.mock.calls[0];
    expect([points, policy.limit, policy.ttl]).toEqual([1, 3, 60_000]);
    // a new window: resetMs is the policy's ttl, timed from just before the charge
    expect(charge?.windowEndsAt).toBeGreaterThanOrEqual(before + 60_000);
    expect(charge?.windowEndsAt).toBeLessThanOrEqual(after + 60_000);
    rewards.mockRestore();
  });
});

describe.each(['single', 'cluster'] as const)('reward / penalty on %s', (target) => {
  it.each(['sliding-window', 'fixed-window', 'token-bucket'] as const)(
    '%s: reward gives units back, penalty takes them',
    async (algorithm) => {
      const rl = (await createToolkitApp({ target, keyPrefix: `rtk-${randomUUID().slice(0, 8)}:` })).get(
        RateLimitService,
      );
      const key = randomUUID();
      const policy = { limit: 5, ttl: 60_000, algorithm };
      for (let i = 0; i < 5; i++) expect((await rl.consume(key, policy)).allowed).toBe(true);
      expect((await rl.consume(key, policy)).allowed).toBe(false);
      expect(await rl.reward(key, 2, policy)).toBe(2);
      const after = [await rl.consume(key, policy), await rl.consume(key, policy), await rl.consume(key, policy)];
      expect(after.map((r) => r.allowed)).toEqual([true, true, false]);
      const fresh = randomUUID();
      expect(await rl.penalty(fresh, 4, policy)).toBe(1);
      expect((await rl.consume(fresh, policy)).allowed).toBe(true);
      expect((await rl.consume(fresh, policy)).allowed).toBe(false);
    },
  );
});

// 7 per minute: 8,571,428.57 µs per token. reward.lua used that fraction and stored a TAT with one, which the
// consume scripts' INCRBY then refused: every later consume of the bucket in the same window-long cell failed
// (ERR value is not an integer), and a reward answered with the limit's figures, not the burst's.
describe.each(['single', 'cluster'] as const)(
  'token-bucket reward on %s, a token not a whole number of µs',
  (target) => {
    const policy = { limit: 7, ttl: 60_000, algorithm: 'token-bucket' as const };
    const other = { limit: 100, ttl: 60_000, algorithm: 'fixed-window' as const };

    it('consumes after a reward go on as the bucket says: lone (lean script) and with another policy (consume.lua)', async () => {
      const rl = (await createToolkitApp({ target, keyPrefix: `rtk-${randomUUID().slice(0, 8)}:` })).get(
        RateLimitService,
      );
      const key = randomUUID();
      for (let i = 0; i < 3; i++) expect((await rl.consume(key, policy)).allowed).toBe(true);
      expect(await rl.reward(key, 1, policy)).toBe(5);
      const lone = [await rl.consume(key, policy), await rl.consume(key, policy)];
      expect(lone.map((r) => [r.allowed, r.remaining])).toEqual([
        [true, 4],
        [true, 3],
      ]);
      expect(await rl.reward(key, 2, policy)).toBe(5);
      const both = await rl.consumeAll([
        { key, policy },
        { key, policy: other },
      ]);
      expect([both.allowed, both.results[0].remaining]).toEqual([true, 4]);
      const again = await rl.consumeAll([
        { key, policy },
        { key, policy: other },
      ]);
      expect([again.allowed, again.results[0].remaining]).toEqual([true, 3]);
      expect(rl.stats()).toMatchObject({ replyErrors: 0, failedOpen: 0 });
    });

    it('a reward answers with the burst: what the next consume then finds', async () => {
      const rl = (await createToolkitApp({ target, keyPrefix: `rtk-${randomUUID().slice(0, 8)}:` })).get(
        RateLimitService,
      );
      const key = randomUUID();
      const bursty = { ...policy, burst: 10 };
      for (let i = 0; i < 4; i++) expect((await rl.consume(key, bursty)).remaining).toBe(9 - i);
      expect(await rl.reward(key, 1, bursty)).toBe(7);
      expect((await rl.consume(key, bursty)).remaining).toBe(6);
      expect(await rl.reward(key, 20, bursty)).toBe(10); // back to a full bucket, never over it
      expect((await rl.consume(key, bursty)).remaining).toBe(9);
      expect(await rl.penalty(key, 3, bursty)).toBe(6);
    });
  },
);

describe('a TAT with a fraction, as reward.lua stored it before 2026-12-03', () => {
  it('is rounded up by the next consume and stored whole; the consumes after it go on', async () => {
    const keyPrefix = `rtk-${randomUUID().slice(0, 8)}:`;
    const app = await createToolkitApp({ keyPrefix });
    const rl = app.get(RateLimitService);
    const redis = app.get<Redis>(REDIS_CLIENT);
    const key = randomUUID();
    const policy = { limit: 7, ttl: 60_000, algorithm: 'token-bucket' as const };
    expect((await rl.consume(key, policy)).remaining).toBe(6);
    const [counter] = (await redis.scan('0', 'MATCH', `${keyPrefix}${FEATURES.rateLimit}:*`, 'COUNT', 1000))[1];
    const tat = -Number(await redis.get(counter));
    await redis.set(counter, `${tat + 0.5}`, 'PX', 60_000);
    const after = [await rl.consume(key, policy), await rl.consume(key, policy)];
    expect(after.map((r) => [r.allowed, r.remaining])).toEqual([
      [true, 5],
      [true, 4],
    ]);
    const both = await rl.consumeAll([
      { key, policy },
      { key, policy: { limit: 100, ttl: 60_000 } },
    ]);
    expect([both.allowed, both.results[0].remaining]).toEqual([true, 3]);
    expect(Number.isInteger(Number(await redis.get(counter)))).toBe(true);
  });
});

/** A fresh app on `target` under a key prefix of its own (closed after each test): its limiter and Redis client. */
async function limiterApp(target: 'single' | 'cluster'): Promise<{ rl: RateLimitService; redis: Redis }> {
  const app = await createToolkitApp({ target, keyPrefix: `rtk-${randomUUID().slice(0, 8)}:` });
  return { rl: app.get(RateLimitService), redis: app.get<Redis>(REDIS_CLIENT) };
}

describe.each(['single', 'cluster'] as const)('reward / penalty answers and bounds on %s', (target) => {
  // an app per test: the apps are closed after each (afterEach above)
  let rl: RateLimitService;
  let redis: Redis;
  beforeEach(async () => ({ rl, redis } = await limiterApp(target)));

  it('fixed window: a reward of a counter charged past its limit answers 0 left, never less', async () => {
    const key = randomUUID();
    const policy = { limit: 5, ttl: 60_000, algorithm: 'fixed-window' as const };
    expect((await rl.consume(key, policy)).remaining).toBe(4);
    expect(await rl.penalty(key, 10, policy)).toBe(0); // 11 charged
    expect(await rl.reward(key, 1, policy)).toBe(0); // 10: was -5
    expect(await rl.reward(key, 6, policy)).toBe(1); // 4
    expect((await rl.consume(key, policy)).remaining).toBe(0);
  });

  it('sliding window: penalties fill the log up to its limit, no further (20 penalties of 100 at limit 100)', async () => {
    const key = randomUUID();
    const policy = { limit: 100, ttl: 60_000, algorithm: 'sliding-window' as const };
    const log = rl.redisKey(key, '100/60000', 'sliding-window');
    for (let i = 0; i < 3; i++) await rl.consume(key, policy);
    expect(await rl.penalty(key, 50, policy)).toBe(47);
    expect(await redis.zcard(log)).toBe(53);
    const answers: number[] = [];
    for (let i = 0; i < 20; i++) answers.push(await rl.penalty(key, 100, policy));
    expect(answers).toEqual(Array(20).fill(0));
    expect(await redis.zcard(log)).toBe(100);
    expect((await rl.consume(key, policy)).allowed).toBe(false);
    expect(await rl.reward(key, 2, policy)).toBe(2);
    expect(await redis.zcard(log)).toBe(98);
  });

  it('sliding window: a penalty of the whole limit (10,000) is added in chunks', async () => {
    const key = randomUUID();
    const policy = { limit: 10_000, ttl: 60_000, algorithm: 'sliding-window' as const };
    const log = rl.redisKey(key, '10000/60000', 'sliding-window');
    expect(await rl.penalty(key, 10_000, policy)).toBe(0);
    expect(await rl.penalty(key, 10_000, policy)).toBe(0);
    expect(await redis.zcard(log)).toBe(10_000);
    expect(await redis.pttl(log)).toBeGreaterThan(59_000);
  });

  it('token bucket at 450,000 a second: a penalty of a full bucket takes 1 s to refill (was 900 ms)', async () => {
    const key = randomUUID();
    const policy = { limit: 450_000, ttl: 1_000, algorithm: 'token-bucket' as const };
    const from = Date.now();
    expect(await rl.penalty(key, 450_000, policy)).toBe(0);
    const peeked = await rl.peek(key, policy);
    const elapsed = Date.now() + 1 - from;
    expect(peeked.resetMs).toBeGreaterThanOrEqual(1_000 - elapsed);
    expect(peeked.resetMs).toBeLessThanOrEqual(1_000);
    // half of it back: half a second of refill owed
    const half = await rl.reward(key, 225_000, policy);
    expect(half).toBeGreaterThanOrEqual(225_000);
    expect(half).toBeLessThanOrEqual(225_000 + 450 * (Date.now() + 1 - from));
    expect((await rl.peek(key, policy)).resetMs).toBeLessThanOrEqual(500);
    expect((await rl.peek(key, policy)).resetMs).toBeGreaterThanOrEqual(500 - (Date.now() + 1 - from));
  });

  it.each(['fixed-window', 'token-bucket'] as const)(
    '%s: a counter holding nan, inf or past 2^63 fails the call with a reply error and is left as it is',
    async (algorithm) => {
      const policy = { limit: 5, ttl: 60_000, algorithm };
      for (const bad of ['nan', 'inf', '-inf', '1e300']) {
        const key = randomUUID();
        const counter = rl.redisKey(key, '5/60000', algorithm);
        await redis.set(counter, bad, 'PX', 60_000);
        for (const call of [() => rl.reward(key, 1, policy), () => rl.penalty(key, 1, policy)]) {
          const err = await call().then(
            (v) => v,
            (e: unknown) => e,
          );
          expect([bad, err]).toEqual([bad, expect.any(RedisReplyError)]);
        }
        expect(await redis.get(counter)).toBe(bad);
      }
    },
  );
});

// A refund names the window its charge was made in (`windowEndsAt`: performance.now() before the consume plus its
// resetMs, what the guard's refunds pass). reward.lua gave `points` back from whatever the counter held when the
// refund arrived: one that came after its window had ended freed a unit of the next window's limit.
describe.each(['single', 'cluster'] as const)(
  'a fixed-window refund is given only to its own window (%s)',
  (target) => {
    const policy = { limit: 5, ttl: 300, algorithm: 'fixed-window' as const };
    let rl: RateLimitService;
    let redis: Redis;
    beforeEach(async () => ({ rl, redis } = await limiterApp(target)));

    it('charged in window 1, refunded once window 2 counts: window 2 keeps its count', async () => {
      const key = randomUUID();
      const counter = rl.redisKey(key, '5/300', 'fixed-window');
      const chargedAt = performance.now();
      const charge = await rl.consume(key, policy);
      expect([charge.allowed, charge.remaining]).toEqual([true, 4]);
      const windowEndsAt = chargedAt + charge.resetMs;
      // window 1 ends (its key expires), then window 2 opens with two charges
      await sleep(policy.ttl + 100);
      expect(await redis.get(counter)).toBeNull();
      for (let i = 0; i < 2; i++) expect((await rl.consume(key, policy)).allowed).toBe(true);
      expect(await redis.get(counter)).toBe('2');
      // the refund of window 1's charge: nothing given back, the units left of window 2 answered
      expect(await rl.reward(key, 1, policy, undefined, { windowEndsAt })).toBe(3);
      expect(await redis.get(counter)).toBe('2');
      expect((await rl.peek(key, policy)).remaining).toBe(3);
    });

    it('options that are not RewardOptions: InvalidOptionsError, the counter left as it is', async () => {
      const key = randomUUID();
      const counter = rl.redisKey(key, '5/300', 'fixed-window');
      await rl.consume(key, policy);
      for (const [options, message] of [
        [null, /reward: options must be an object, got null/],
        [{ windowEnd: 1 }, /windowEnd is not a known option \(did you mean windowEndsAt\?\)/],
        [{ windowEndsAt: Number.NaN }, /windowEndsAt must be a finite number \(performance.now\(\) ms\), got NaN/],
        [{ windowEndsAt: '5000' }, /windowEndsAt must be a finite number .*got "5000"/],
      ] as const) {
        const err = await rl.reward(key, 1, policy, undefined, options as never).then(
          () => undefined,
          (e: unknown) => e,
        );
        expect(err).toBeInstanceOf(InvalidOptionsError);
        expect((err as Error).message).toMatch(message);
      }
      expect(await redis.get(counter)).toBe('1');
    });

    it('refunded within its window: the unit is given back (with a scope too)', async () => {
      const key = randomUUID();
      const counter = rl.redisKey(key, 'route:a', 'fixed-window');
      const long = { limit: 5, ttl: 60_000, algorithm: 'fixed-window' as const };
      const chargedAt = performance.now();
      const decision = await rl.consumeAll([{ key, policy: long, scope: 'route:a' }]);
      await rl.consumeAll([{ key, policy: long, scope: 'route:a' }]);
      expect(await redis.get(counter)).toBe('2');
      const windowEndsAt = chargedAt + decision.results[0].resetMs;
      expect(await rl.reward(key, 1, long, 'route:a', { windowEndsAt })).toBe(4);
      expect(await redis.get(counter)).toBe('1');
    });
  },
);
