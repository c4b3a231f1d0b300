import 'reflect-metadata';
import { jest } from '@jest/globals';
import { Logger } from '@nestjs/common';
import { CacheService, RedisUnavailableError } from '../../lib/index.js';
import { trackForCleanup } from '../support/private-servers.js';
import { startRedisServer } from '../support/redis-server.js';
import { bootToolkitApp } from '../support/toolkit-boot.js';
import { closeToolkitApps } from '../support/toolkit-app.js';
import { waitFor } from '../support/wait.js';

afterEach(closeToolkitApps);

describe('CacheService when Redis fails', () => {
  it('Redis killed mid-test: loader values are served, get is undefined, errors counted, one warning; restarted: hits again', async () => {
    const server = trackForCleanup(await startRedisServer());
    const app = await bootToolkitApp({ target: { url: server.url }, commandTimeout: 300, maxReconnectDelay: 100 });
    const cache = app.get(CacheService);
    let loads = 0;
    const loader = () => `v${++loads}`;
    expect(await cache.getOrSet('k', loader)).toBe('v1');
    expect(await cache.getOrSetWithStatus('k', loader)).toEqual({ value: 'v1', status: 'hit' });

    const warn = jest.spyOn(Logger.prototype, 'warn').mockImplementation(() => undefined);
    try {
      await server.kill();
      const results = [];
      for (let i = 0; i < 20; i++) results.push(await cache.getOrSet('k', loader));
      // Every call got a loader value (no exception), nothing cached meanwhile.
      expect(results).toEqual(Array.from({ length: 20 }, (_, i) => `v${i + 2}`));
      expect(await cache.get('k')).toBeUndefined();
      await expect(cache.set('other', 1)).resolves.toBeUndefined();
      const concurrent = await Promise.all(Array.from({ length: 50 }, () => cache.getOrSet('cold', () => 'c')));
      expect(concurrent.every((v) => v === 'c')).toBe(true);
      expect(cache.stats().errors).toBeGreaterThanOrEqual(22);
      // Invalidations cannot be silently dropped: they say so.
      await expect(cache.del('k')).rejects.toBeInstanceOf(RedisUnavailableError);
      await expect(cache.invalidateTags('t')).rejects.toBeInstanceOf(RedisUnavailableError);
      const cacheWarnings = warn.mock.calls.filter((c) => String(c[0]).includes('cache'));
      expect(cacheWarnings.length).toBeGreaterThanOrEqual(1);
      expect(cacheWarnings.length).toBeLessThanOrEqual(2);
    } finally {
      warn.mockRestore();
    }

    await server.restart();
    // Caching resumes by itself: a load is stored again and then hit.
    expect(
      await waitFor(async () => {
        await cache.getOrSet('k2', loader);
        return (await cache.getOrSetWithStatus('k2', loader)).status === 'hit';
      }, 5_000),
    ).toBe(true);
    const before = loads;
    expect((await cache.getOrSetWithStatus('k2', loader)).status).toBe('hit');
    expect(loads).toBe(before);
  });

  it('failOpen: false turns a Redis failure into RedisUnavailableError', async () => {
    const server = trackForCleanup(await startRedisServer());
    const app = await bootToolkitApp({
      target: { url: server.url },
      commandTimeout: 300,
      cache: { failOpen: false },
    });
    const cache = app.get(CacheService);
    await server.kill();
    let loads = 0;
    await expect(cache.getOrSet('k', () => ++loads)).rejects.toBeInstanceOf(RedisUnavailableError);
    await expect(cache.get('k')).rejects.toBeInstanceOf(RedisUnavailableError);
    await expect(cache.set('k', 1)).rejects.toBeInstanceOf(RedisUnavailableError);
    expect(loads).toBe(0);
  });

  it('L1 keeps serving and is cleared when the connection comes back (invalidations may have been missed)', async () => {
    const server = trackForCleanup(await startRedisServer());
    const app = await bootToolkitApp({
      target: { url: server.url },
      commandTimeout: 300,
      maxReconnectDelay: 100,
      cache: { l1: { max: 100, ttl: 60_000 } },
    });
    const cache = app.get(CacheService);
    await cache.set('k', 'v1');
    await server.kill();
    expect(await cache.get('k')).toBe('v1'); // L1 hit, no Redis needed
    await server.restart(); // the server lost everything (no persistence in the harness)
    expect(await waitFor(async () => (await cache.get('k')) === undefined, 5_000)).toBe(true);
  });
});
