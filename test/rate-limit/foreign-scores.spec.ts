import 'reflect-metadata';
import { randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import { REDIS_CLIENT, RateLimitService, RedisReplyError, type RateLimitPolicy } from '../../lib/index.js';
import { closeToolkitApps, createToolkitApp } from '../support/toolkit-app.js';

// A sliding-window log is a sorted set scored by µs; a foreign ZADD can score a member '+inf', '-inf' or any double
// ('nan' is refused by Redis itself). A member scored +inf or at or past 2^63 µs never leaves the window and has no
// time to leave it: resetMs and retryAfterMs read from it came back as -9223372036854775808 (Lua's inf, or 1e297 ms,
// as a Redis integer). A decision that reads such a score now fails alone with a reply error and writes nothing, as a
// counter holding 'inf' does. A member scored -inf or at or before -2^63 µs left the window long ago: trimmed by a
// consume as any member before the window is, never counted by a peek.

afterAll(closeToolkitApps);

const uid = () => randomUUID();
const policy: RateLimitPolicy = { limit: 3, ttl: 60_000, algorithm: 'sliding-window' };
const fixed: RateLimitPolicy = { limit: 5, ttl: 60_000, algorithm: 'fixed-window' };

/** The server's clock in µs (the log's scores). */
async function nowUs(redis: Redis): Promise<number> {
  const [s, us] = await redis.time();
  return Number(s) * 1_000_000 + Number(us);
}

/** The outcome of a call: its value, or its error's class name, code and reply code. */
const outcome = (p: Promise<unknown>) =>
  p.then(
    (v) => v,
    (e: unknown) =>
      e instanceof RedisReplyError ? { error: e.constructor.name, code: e.code, replyCode: e.replyCode } : e,
  );
const failed = { error: 'RedisReplyError', code: 'E_REDIS_REPLY', replyCode: 'ERR' };

describe.each(['single', 'cluster'] as const)('a sliding-window log member scored past the window on %s', (target) => {
  let rl: RateLimitService;
  let redis: Redis;
  beforeAll(async () => {
    const app = await createToolkitApp({ target, keyPrefix: `rtk-${uid().slice(0, 8)}:` });
    rl = app.get(RateLimitService);
    redis = app.get<Redis>(REDIS_CLIENT);
  });

  /** A log of 3 members (2 of the last second and one scored `bad`), at its limit. */
  async function foreignLog(bad: string) {
    const key = uid();
    const log = rl.redisKey(key, '3/60000', 'sliding-window');
    const now = await nowUs(redis);
    await redis.zadd(log, String(now - 2_000_000), 'a', String(now - 1_000_000), 'b', bad, 'x');
    await redis.pexpire(log, 120_000);
    return { key, log, state: () => redis.zrange(log, '0', '-1', 'WITHSCORES'), block: `${log}:b` };
  }

  it.each(['+inf', 'inf', '1e300', '9223372036854775808'])(
    'scored %s: consume, peek, blocking and cost-0 consumes fail alone with a reply error and write nothing',
    async (bad) => {
      const { key, state, block } = await foreignLog(bad);
      const before = await state();
      // one tick: the lean script's batch on a single server, one call each on a cluster
      const [fresh1, fresh2] = [uid(), uid()];
      const consumes = await Promise.all([key, fresh1, fresh2].map((k) => outcome(rl.consume(k, policy))));
      expect(consumes).toEqual([
        failed,
        expect.objectContaining({ allowed: true, remaining: 2 }),
        expect.objectContaining({ allowed: true, remaining: 2 }),
      ]);
      const peeks = await Promise.all([key, fresh1].map((k) => outcome(rl.peek(k, policy))));
      expect(peeks).toEqual([failed, expect.objectContaining({ allowed: true, remaining: 2 })]);
      // refused by its count, it would block its log: the block key is not written
      const blocking = { ...policy, blockDuration: 30_000 };
      const blocked = await Promise.all([key, fresh1].map((k) => outcome(rl.consume(k, blocking))));
      expect(blocked).toEqual([failed, expect.objectContaining({ allowed: true, remaining: 1 })]);
      // admitted at cost 0 (its resetMs is the newest member's); refused at cost 3 (its retryAfterMs too)
      expect(await outcome(rl.consume(key, { ...policy, cost: 0 }))).toEqual(failed);
      expect(await outcome(rl.consume(key, { ...policy, cost: 3 }))).toEqual(failed);
      expect(before).toEqual(await state());
      expect(await redis.exists(block)).toBe(0);
    },
  );

  it.each(['+inf', '1e300'])(
    'scored %s in a decision of several policies (consume.lua): it fails whole, nothing charged or blocked',
    async (bad) => {
      const { key, state, block } = await foreignLog(bad);
      const before = await state();
      const counter = rl.redisKey(key, '5/60000', 'fixed-window');
      const decide = (log: RateLimitPolicy) =>
        outcome(
          rl.consumeAll([
            { key, policy: fixed, name: 'a' },
            { key, policy: log, name: 'log' },
          ]),
        );
      // refused by the log, which blocks: the block key would be set before its resetMs was read
      expect(await decide({ ...policy, blockDuration: 30_000 })).toEqual(failed);
      // admitted (the log at cost 0): the fixed window would be charged before the log's resetMs was read
      expect(await decide({ ...policy, cost: 0 })).toEqual(failed);
      expect(before).toEqual(await state());
      expect(await redis.exists(block, counter)).toBe(0);
    },
  );

  it.each(['+inf', '1e300'])('scored %s: reward and penalty fail with a reply error and leave the log', async (bad) => {
    const { key, state } = await foreignLog(bad);
    const before = await state();
    expect(await outcome(rl.reward(key, 1, policy))).toEqual(failed);
    expect(await outcome(rl.penalty(key, 1, policy))).toEqual(failed);
    expect(before).toEqual(await state());
  });

  it.each(['-inf', '-1e300'])(
    'scored %s: left the window, as any member before it; a peek does not count it, a consume trims it',
    async (bad) => {
      const { key, log, state } = await foreignLog(bad);
      const peeked = await rl.peek(key, policy);
      expect([peeked.allowed, peeked.remaining]).toEqual([true, 1]);
      expect(peeked.resetMs).toBeGreaterThan(58_000);
      expect(peeked.resetMs).toBeLessThanOrEqual(60_000);
      expect(await redis.zcard(log)).toBe(3);
      const admitted = await rl.consume(key, policy);
      expect([admitted.allowed, admitted.remaining, admitted.resetMs]).toEqual([true, 0, 60_000]);
      expect((await state()).filter((_, i) => i % 2 === 0)).toEqual(['a', 'b', expect.any(String)]);
      const refused = await rl.consume(key, policy);
      expect(refused.allowed).toBe(false);
      expect(refused.retryAfterMs).toBeGreaterThan(57_000);
      expect(refused.retryAfterMs).toBeLessThanOrEqual(58_000);
    },
  );
});
