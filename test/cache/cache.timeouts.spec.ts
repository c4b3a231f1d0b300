import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import { CacheLoadTimeoutError, CacheService, InvalidOptionsError, type RedisToolkitOptions } from '../../lib/index.js';
import { closeToolkitApps, createToolkitApp, type RedisTarget } from '../support/toolkit-app.js';
import { hang as hangFor, sleep } from '../support/wait.js';

afterEach(closeToolkitApps);

async function cacheService(target: RedisTarget, cache: RedisToolkitOptions['cache'] = {}) {
  const app = await createToolkitApp({ target, keyPrefix: `rtk-to${randomBytes(5).toString('hex')}:`, cache });
  return app.get(CacheService);
}

describe.each(['single', 'cluster'] as const)('cache soft and hard timeouts on %s', (target) => {
  it('a loader hanging 10 s: the stale value at the soft timeout, CacheLoadTimeoutError at the hard one', async () => {
    const cache = await cacheService(target, { beta: 0 });
    await cache.set('soft', 'old', { ttl: 50, staleTtl: 60_000 });
    await sleep(80);
    let hangs = 0;
    const hang = () => {
      hangs++;
      return hangFor(10_000, 'late');
    };
    const order: string[] = [];
    const t0 = performance.now();
    const stale = cache.getOrSetWithStatus('soft', hang, { softTimeout: 300, hardTimeout: 2_000 }).then((r) => {
      order.push('stale');
      return { r, at: performance.now() - t0 };
    });
    const cold = cache.getOrSet('cold', hang, { softTimeout: 300, hardTimeout: 2_000 }).then(
      () => {
        order.push('value');
        return { err: undefined, at: performance.now() - t0 };
      },
      (err: unknown) => {
        order.push('error');
        return { err, at: performance.now() - t0 };
      },
    );
    const [s, c] = await Promise.all([stale, cold]);
    expect(s.r).toEqual({ value: 'old', status: 'stale' });
    // the stale caller waited for the soft timeout (a lower bound only: the box is busy)
    expect(s.at).toBeGreaterThanOrEqual(280);
    // a cold key has no stale value: its callers wait until the hard timeout, then fail (long before the 10 s)
    expect(c.err).toBeInstanceOf(CacheLoadTimeoutError);
    expect((c.err as Error).message).toBe('a cache loader did not settle within 2000 ms (hardTimeout)');
    expect((c.err as CacheLoadTimeoutError).key).toBe('cold');
    expect(c.at).toBeGreaterThanOrEqual(1_950);
    expect(c.at).toBeLessThan(9_000);
    expect(order).toEqual(['stale', 'error']);
    expect(hangs).toBe(2);
    // the stale value is still served; the hung refresh is still the one running (no second loader call)
    expect(await cache.getOrSetWithStatus('soft', hang, { hardTimeout: 2_000 })).toEqual({
      value: 'old',
      status: 'stale',
    });
    expect(hangs).toBe(2);
  });

  it('a refresh that settles within the soft timeout is served fresh to the caller that waited', async () => {
    const cache = await cacheService(target, { beta: 0, softTimeout: 5_000 });
    await cache.set('quick', 'old', { ttl: 50, staleTtl: 60_000 });
    await sleep(80);
    const result = await cache.getOrSetWithStatus('quick', () => sleep(50).then(() => 'new'));
    expect(result).toEqual({ value: 'new', status: 'miss' });
    expect(await cache.get('quick')).toBe('new');
  });

  it('rejects a bad softTimeout / hardTimeout', async () => {
    const cache = await cacheService(target);
    await expect(cache.getOrSet('k', () => 1, { softTimeout: -1 })).rejects.toThrow(/softTimeout/);
    await expect(cache.getOrSet('k', () => 1, { hardTimeout: 0 })).rejects.toThrow(InvalidOptionsError);
    await expect(createToolkitApp({ cache: { softTimeout: '5' as never } })).rejects.toThrow(/cache\.softTimeout/);
  });
});
