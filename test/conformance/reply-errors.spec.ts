import 'reflect-metadata';
import { randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import {
  InvalidOptionsError,
  LockService,
  PubSubService,
  REDIS_CLIENT,
  RateLimitService,
  RedisReplyError,
  RedisUnavailableError,
  SessionService,
  type RateLimitPolicy,
} from '../../lib/index.js';
import { KeyBuilder } from '../../lib/advanced.js';
import { closeToolkitApps, createToolkitApp } from '../support/toolkit-app.js';

// Issue 17 item 3: an error reply (a foreign value under one of our keys, an argument Redis refuses) is not an outage,
// and one bad item never fails the batch it was sent in (the decisions, acquisitions, reads of one tick).

afterEach(async () => {
  await closeToolkitApps();
});

async function app(rateLimit: { failOpen?: boolean } = {}) {
  const keyPrefix = `rtk-re-${randomUUID().slice(0, 8)}:`;
  const toolkit = await createToolkitApp({
    keyPrefix,
    commandTimeout: 2_000,
    rateLimit: { warnIntervalMs: 60_000, ...rateLimit },
  });
  return { toolkit, keyPrefix, redis: toolkit.get<Redis>(REDIS_CLIENT) };
}

describe.each([{ failOpen: true }, { failOpen: false }])('rate limit, failOpen: $failOpen', ({ failOpen }) => {
  it('a foreign string under one sliding-window counter fails only that client, never allowed; the 15 others of its batch are denied', async () => {
    const { toolkit, redis } = await app({ failOpen });
    const rl = toolkit.get(RateLimitService);
    const policy: RateLimitPolicy = { limit: 1, ttl: 60_000, algorithm: 'sliding-window' };
    const clients = Array.from({ length: 16 }, (_, i) => `client-${i}`);
    for (const c of clients) expect((await rl.consume(c, policy)).allowed).toBe(true); // each used its budget
    // a foreign value with no TTL under client-0's counter
    await redis.set(rl.redisKey('client-0', '1/60000', 'sliding-window'), 'not a sorted set');

    for (let round = 0; round < 3; round++) {
      // the 16 calls of one tick go to Redis as one batched script call
      const outcomes = await Promise.allSettled(clients.map((c) => rl.consume(c, policy)));
      const [bad, ...others] = outcomes;
      expect(bad.status).toBe('rejected');
      const err = (bad as PromiseRejectedResult).reason as RedisReplyError;
      expect(err).toBeInstanceOf(RedisReplyError);
      expect(err).not.toBeInstanceOf(RedisUnavailableError);
      expect(err.code).toBe('E_REDIS_REPLY');
      expect(err.replyCode).toBe('WRONGTYPE');
      expect(others.map((o) => (o.status === 'fulfilled' ? o.value.allowed : o.reason))).toEqual(
        Array.from({ length: 15 }, () => false),
      );
      expect(others.every((o) => o.status === 'fulfilled' && o.value.degraded === undefined)).toBe(true);
    }
    const stats = rl.stats();
    expect(stats).toMatchObject({ allowed: 16, denied: 45, failedOpen: 0, failedClosed: 0, replyErrors: 3 });
  });
});

it('rate limit: consumeAll of two policies with one bad counter fails that call and charges neither', async () => {
  const { toolkit, redis } = await app();
  const rl = toolkit.get(RateLimitService);
  const a: RateLimitPolicy = { limit: 5, ttl: 60_000, algorithm: 'fixed-window' };
  const b: RateLimitPolicy = { limit: 5, ttl: 60_000, algorithm: 'token-bucket' };
  await redis.hset(rl.redisKey('u', '5/60000', 'token-bucket'), 'x', '1');
  await expect(
    rl.consumeAll([
      { key: 'u', policy: a, name: 'a' },
      { key: 'u', policy: b, name: 'b' },
    ]),
  ).rejects.toMatchObject({ code: 'E_REDIS_REPLY', replyCode: 'WRONGTYPE' });
  expect(await redis.get(rl.redisKey('u', '5/60000', 'fixed-window'))).toBeNull();
});

it('locks: tryAcquire({ ttl: 1e19 }) is refused before any Redis call and fails only itself; 3 others of the tick acquire', async () => {
  const { toolkit } = await app();
  const locks = toolkit.get(LockService);
  const outcomes = await Promise.allSettled([
    locks.tryAcquire('a', { ttl: 5_000 }),
    locks.tryAcquire('huge', { ttl: 1e19 }),
    locks.tryAcquire('b', { ttl: 5_000 }),
    locks.tryAcquire('c', { ttl: 5_000 }),
  ]);
  expect(outcomes.map((o) => o.status)).toEqual(['fulfilled', 'rejected', 'fulfilled', 'fulfilled']);
  expect((outcomes[1] as PromiseRejectedResult).reason).toBeInstanceOf(InvalidOptionsError);
  for (const i of [0, 2, 3]) expect((outcomes[i] as PromiseFulfilledResult<unknown>).value).not.toBeNull();
  expect(locks.stats()).toEqual({ unavailable: 0, replyErrors: 0 });
});

it('locks: a foreign value under one fence counter fails only that acquisition (and leaves no lock behind)', async () => {
  const { toolkit, redis, keyPrefix } = await app();
  const locks = toolkit.get(LockService);
  const lockKey = new KeyBuilder(keyPrefix).tagged('lock', 'bad');
  await redis.hset(`${lockKey}:fence`, 'x', '1');
  for (let round = 0; round < 2; round++) {
    const outcomes = await Promise.allSettled(
      ['a', 'bad', 'b', 'c'].map((r) => locks.tryAcquire(`${r}`, { ttl: 5_000 })),
    );
    expect(outcomes.map((o) => o.status)).toEqual(['fulfilled', 'rejected', 'fulfilled', 'fulfilled']);
    expect((outcomes[1] as PromiseRejectedResult).reason).toMatchObject({
      code: 'E_REDIS_REPLY',
      replyCode: 'WRONGTYPE',
    });
    expect(await redis.exists(lockKey)).toBe(0);
    await Promise.all(outcomes.flatMap((o) => (o.status === 'fulfilled' && o.value ? [o.value.release()] : [])));
  }
  expect(locks.stats()).toEqual({ unavailable: 0, replyErrors: 2 });
});

it('sessions: a session key of another type fails only its own read; the touching reads of its tick succeed', async () => {
  const { toolkit, redis, keyPrefix } = await app();
  const sessions = toolkit.get(SessionService);
  const good = await Promise.all([1, 2, 3].map((i) => sessions.create(`user-${i}`, { i })));
  const victim = await sessions.create('user-x', {});
  await redis.del(`${keyPrefix}sess:{${victim.id}}`);
  await redis.hset(`${keyPrefix}sess:{${victim.id}}`, 'x', '1');
  const outcomes = await Promise.allSettled([...good.map((s) => sessions.get(s.id)), sessions.get(victim.id)]);
  expect(outcomes.slice(0, 3).map((o) => (o.status === 'fulfilled' ? o.value?.data : o.reason))).toEqual([
    { i: 1 },
    { i: 2 },
    { i: 3 },
  ]);
  expect(outcomes[3].status).toBe('rejected');
  const err = (outcomes[3] as PromiseRejectedResult).reason as RedisReplyError;
  expect(err).toBeInstanceOf(RedisReplyError);
  expect(err.replyCode).toBe('WRONGTYPE');
  expect(err.message).not.toContain(victim.id);
  expect(sessions.stats()).toEqual({ unavailable: 0, replyErrors: 1 });
});

it('cache: an entry key of another type is a miss (batched or not), and the loader result replaces it', async () => {
  const { toolkit, redis, keyPrefix } = await app();
  const { CacheService } = await import('../../lib/index.js');
  const cache = toolkit.get(CacheService);
  const keys = new KeyBuilder(keyPrefix);
  await redis.hset(keys.key('cache', 'bad'), 'x', '1');
  await cache.set('good', 1);
  // one tick: an MGET (nil for the hash)
  expect(await Promise.all([cache.get('good'), cache.get('bad')])).toEqual([1, undefined]);
  // alone: a GET (WRONGTYPE) — the same answer
  expect(await cache.get('bad')).toBeUndefined();
  expect(await cache.getOrSet('bad', () => 'loaded')).toBe('loaded');
  expect(await cache.get('bad')).toBe('loaded');
  expect(cache.stats().errors).toBe(0);
});

it('pub/sub: the batched publishes of one tick all go out; PubSubService counts no failure', async () => {
  const { toolkit } = await app();
  const pubsub = toolkit.get(PubSubService);
  const got: unknown[] = [];
  const off = await pubsub.subscribe('ch', (m) => void got.push(m));
  expect(await Promise.all([1, 2, 3].map((i) => pubsub.publish('ch', i)))).toEqual([1, 1, 1]);
  await off();
  expect(pubsub.stats()).toEqual({ unavailable: 0, replyErrors: 0 });
});
