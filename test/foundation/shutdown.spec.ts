import 'reflect-metadata';
import { randomUUID } from 'node:crypto';
import { Cluster, Redis } from 'ioredis';
import {
  CacheService,
  LockService,
  PubSubService,
  RateLimitService,
  RedisUnavailableError,
  SessionService,
} from '../../lib/index.js';
import { FaultProxy } from '../support/fault-proxy.js';
import { lockKey } from '../support/lock-modes.js';
import { recordingLogger } from '../support/recording-logger.js';
import { sharedServers } from '../support/shared-servers.js';
import { closeToolkitApps, createToolkitApp } from '../support/toolkit-app.js';
import { sleep } from '../support/wait.js';

afterEach(closeToolkitApps);

/** What `p` settles with: its value, or its error (taken at once, so a rejection is never left unhandled). */
const settled = (p: Promise<unknown>): Promise<unknown> => p.catch((err: unknown) => err);

describe.each(['single', 'cluster'] as const)('app.close() on %s', (target) => {
  it('answers the calls made in the same turn as app.close() (still in their batch) before it quits the connections', async () => {
    const { get, close } = await createToolkitApp({ target });
    const cache = get(CacheService);
    const rateLimit = get(RateLimitService);
    const locks = get(LockService);
    const pubsub = get(PubSubService);
    const id = randomUUID();
    await cache.set(`warm:${id}`, 'value', { ttl: 60_000 });
    const resource = `at-close:${id}`;
    const calls = [
      cache.get(`warm:${id}`),
      cache.mget([`warm:${id}`]),
      rateLimit.consume(`at-close:${id}`, { limit: 5, ttl: 60_000 }),
      locks.tryAcquire(resource, { ttl: 60_000 }),
      pubsub.publish(`at-close:${id}`, 1),
    ].map(settled);
    await close();
    const [got, many, decision, lock, published] = await Promise.all(calls);
    expect(got).toBe('value');
    expect(many).toEqual(['value']);
    expect(decision).toMatchObject({ allowed: true, remaining: 4 });
    expect((decision as { degraded?: string }).degraded).toBeUndefined();
    expect(rateLimit.stats().failedOpen).toBe(0);
    expect(cache.stats()).toMatchObject({ hits: 2, errors: 0 });
    expect(lock).toMatchObject({ resource });
    expect(published).toBe(0);
    // what Redis kept: the lock the call was granted is there, until its ttl (nobody released it)
    const check = target === 'single' ? new Redis(sharedServers().single.url) : new Cluster(sharedServers().cluster);
    try {
      expect(await check.exists(lockKey(resource))).toBe(1);
    } finally {
      check.disconnect();
    }
  });

  it('a call made after app.close() is refused in words: closed for good, where, and why', async () => {
    const { get, close } = await createToolkitApp({ target, session: {} });
    const locks = get(LockService);
    const sessions = get(SessionService);
    const pubsub = get(PubSubService);
    await close();
    const [lock, ...others] = await Promise.all(
      [
        locks.tryAcquire(`after-close:${randomUUID()}`),
        sessions.get('x'.repeat(43)),
        pubsub.publish('after-close', 1),
      ].map(settled),
    );
    // locks say it in their own words since f9e0625 (their shutdown ends their waiters)
    expect(lock).toBeInstanceOf(RedisUnavailableError);
    expect((lock as Error).message).toMatch(/the application shut down/);
    for (const err of others) {
      expect(err).toBeInstanceOf(RedisUnavailableError);
      // was 'session get failed: the Redis connection is end' (ioredis's status word, no address)
      expect((err as Error).message).toMatch(
        /failed: not connected to Redis at \S.* \((closed|closing): the application is shutting down, or the connection was quit\)/,
      );
    }
  });
});

describe('app.close() when the link is reset while the connections quit', () => {
  it('logs no connection error: a reset of a connection being quit is part of the close, not an outage', async () => {
    // What a lock release written after QUIT did in CI (Redis closes with that command unread: a TCP reset), or a
    // proxy or load balancer that resets rather than closes. Here a proxy resets the link at QUIT.
    const proxy = await FaultProxy.start({ port: sharedServers().single.port });
    try {
      const { warnings, errors, logger } = recordingLogger();
      const { get, close } = await createToolkitApp({ target: { url: proxy.url }, logger });
      await get(CacheService).set(`reset-at-close:${randomUUID()}`, 1, { ttl: 60_000 }); // connected, and used
      const [warned, failed] = [warnings.length, errors.length];
      proxy.resetOn('$4\r\nquit\r\n');
      await close();
      await sleep(100); // an error event after close() resolved would be logged late
      expect(proxy.stats.resets).toBe(1);
      // before: ['Redis main connection error: read ECONNRESET']
      expect([...warnings.slice(warned), ...errors.slice(failed)]).toEqual([]);
    } finally {
      await proxy.close();
    }
  });
});
