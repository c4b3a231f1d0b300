import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import { CacheLoadTimeoutError, CacheService, InvalidOptionsError, type RedisToolkitOptions } from '../../lib/index.js';
import { RedisConnection } from '../../lib/advanced.js';
import type { RedisClient } from '../../lib/common/lua-script.js';
import { closeToolkitApps, createToolkitApp, type RedisTarget } from '../support/toolkit-app.js';
import { sleep } from '../support/wait.js';

afterEach(closeToolkitApps);

async function cacheApp(target: RedisTarget, cache: RedisToolkitOptions['cache'] = {}) {
  const keyPrefix = `rtk-g${randomBytes(5).toString('hex')}:`;
  const app = await createToolkitApp({ target, keyPrefix, cache });
  return { cache: app.get(CacheService), client: app.get(RedisConnection).client as RedisClient, keyPrefix };
}

/** Sleeps until `at` (performance.now() ms), however long the box took to get here. */
const until = (at: number) => sleep(Math.max(0, at - performance.now()));

describe.each(['single', 'cluster'] as const)('cache grace on %s', (target) => {
  it('serves the last value while the loader fails, within grace only, retrying once per graceBackoff', async () => {
    const TTL = 100;
    const GRACE = 3_000;
    const BACKOFF = 1_000;
    const { cache, client, keyPrefix } = await cacheApp(target, { beta: 0, grace: GRACE, graceBackoff: BACKOFF });
    let calls = 0;
    let failing = false;
    const loader = async () => {
      calls++;
      if (failing) throw new Error('database down');
      return `v${calls}`;
    };
    const written = performance.now();
    expect(await cache.getOrSet('a', loader, { ttl: TTL })).toBe('v1');
    // the key lives ttl + staleTtl + grace, so the value is still there to be served from grace
    const pttl = await client.pttl(`${keyPrefix}cache:a`);
    expect(pttl).toBeGreaterThan(GRACE);
    expect(pttl).toBeLessThanOrEqual(TTL + GRACE);

    failing = true;
    await until(written + TTL + 50);
    const failedAt = performance.now();
    expect(await cache.getOrSetWithStatus('a', loader, { ttl: TTL })).toEqual({ value: 'v1', status: 'grace' });
    expect(calls).toBe(2);
    // within graceBackoff: served from grace without calling the loader
    for (let i = 0; i < 5; i++) {
      expect(await cache.getOrSetWithStatus('a', loader, { ttl: TTL })).toEqual({ value: 'v1', status: 'grace' });
    }
    expect(performance.now() - failedAt).toBeLessThan(BACKOFF); // else the count below would not mean anything
    expect(calls).toBe(2);
    // past graceBackoff: the loader is tried again (once), the value still served
    await until(failedAt + BACKOFF + 100);
    expect(await cache.getOrSetWithStatus('a', loader, { ttl: TTL })).toEqual({ value: 'v1', status: 'grace' });
    expect(calls).toBe(3);
    expect(await cache.getOrSetWithStatus('a', loader, { ttl: TTL })).toEqual({ value: 'v1', status: 'grace' });
    expect(calls).toBe(3);
    expect(cache.stats().graceHits).toBe(8);

    // past the grace period the value is gone: the loader's error reaches the caller
    await until(written + TTL + GRACE + 200);
    await expect(cache.getOrSet('a', loader, { ttl: TTL })).rejects.toThrow('database down');
    expect(calls).toBe(4);
    expect(await client.exists(`${keyPrefix}cache:a`)).toBe(0);
    expect(cache.stats().graceHits).toBe(8);
  });

  it('a retry that succeeds serves and stores the new value; a hard timeout is a loader failure too', async () => {
    const { cache } = await cacheApp(target, { beta: 0 });
    const options = { ttl: 50, staleTtl: 50, grace: 60_000, graceBackoff: 300 };
    expect(await cache.getOrSet('b', () => 'old', options)).toBe('old');
    await sleep(150); // past ttl + staleTtl
    const hang = () => sleep(5_000).then(() => 'late');
    await expect(cache.getOrSetWithStatus('b', hang, { ...options, hardTimeout: 200 })).resolves.toEqual({
      value: 'old',
      status: 'grace',
    });
    await sleep(400); // past graceBackoff
    let calls = 0;
    const recovered = () => {
      calls++;
      return 'new';
    };
    // stored fresh for longer than the 50 ms the next call may take on a loaded box (it read 'stale' so in one run)
    const retry = { ...options, ttl: 60_000 };
    expect(await cache.getOrSetWithStatus('b', recovered, retry)).toEqual({ value: 'new', status: 'miss' });
    expect(await cache.getOrSetWithStatus('b', recovered, retry)).toEqual({ value: 'new', status: 'hit' });
    expect(calls).toBe(1);
  });

  it('a call without grace (the default) fails when its loader fails past staleTtl, value kept or not', async () => {
    const { cache, client, keyPrefix } = await cacheApp(target, { beta: 0 });
    await cache.set('c', 'old', { ttl: 50, grace: 60_000 });
    await sleep(100);
    expect(await client.exists(`${keyPrefix}cache:c`)).toBe(1);
    await expect(
      cache.getOrSet('c', () => sleep(5_000).then(() => 'late'), { hardTimeout: 100 }),
    ).rejects.toBeInstanceOf(CacheLoadTimeoutError);
    expect(cache.stats().graceHits).toBe(0);
  });

  it('set() keeps the key for grace too; bad grace options are refused', async () => {
    const { cache, client, keyPrefix } = await cacheApp(target, { grace: 10_000 });
    await cache.set('d', 1, { ttl: 1_000 });
    expect(await client.pttl(`${keyPrefix}cache:d`)).toBeGreaterThan(10_000);
    await expect(cache.getOrSet('d', () => 1, { grace: -1 })).rejects.toThrow(/grace/);
    await expect(cache.getOrSet('d', () => 1, { graceBackoff: 0 })).rejects.toThrow(InvalidOptionsError);
    await expect(createToolkitApp({ cache: { grace: '1h' as never } })).rejects.toThrow(/cache\.grace/);
    await expect(createToolkitApp({ cache: { graceBackoff: 0 } })).rejects.toThrow(/cache\.graceBackoff/);
  });
});
