/**
 * Edges of the cache's module options and call arguments, on real Redis: durations with a fraction of a ms (accepted
 * as durations) reach Redis and the LRU rounded up to whole ms; l1.max is bounded; invalidateTags refuses what is
 * neither a tag nor an options object; invalidatePattern's glob means what it means on the keys as given.
 */
import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import { CacheService, InvalidOptionsError, type RedisToolkitOptions } from '../../lib/index.js';
import { CACHE_OPTIONS, RedisConnection, type ResolvedCacheOptions } from '../../lib/advanced.js';
import { resolveCacheOptions } from '../../lib/cache/cache.options.js';
import type { RedisClient } from '../../lib/common/lua-script.js';
import { OptionProblems } from '../../lib/common/option-checks.js';
import { closeToolkitApps, createToolkitApp, type RedisTarget } from '../support/toolkit-app.js';
import { waitFor } from '../support/wait.js';

afterEach(closeToolkitApps);

const rand = () => randomBytes(5).toString('hex');

async function cacheApp(target: RedisTarget, cache: RedisToolkitOptions['cache'] = {}) {
  const keyPrefix = `rtk-t${rand()}:`;
  const app = await createToolkitApp({ target, keyPrefix, cache });
  return {
    app,
    cache: app.get(CacheService),
    options: app.get<ResolvedCacheOptions>(CACHE_OPTIONS),
    client: app.get(RedisConnection).client as RedisClient,
    keyPrefix,
  };
}

describe.each(['single', 'cluster'] as const)('cache options with a fraction of a ms on %s', (target) => {
  it('lockTtl 1500.5: a getOrSet miss takes a lock of 1501 ms, loads once and stores the value', async () => {
    const { cache, client, keyPrefix, options } = await cacheApp(target, { lockTtl: 1500.5 });
    let loads = 0;
    let release: () => void = () => undefined;
    const loading = new Promise<void>((r) => (release = r));
    const first = cache.getOrSet('k1', async () => {
      loads++;
      await loading;
      return 'v';
    });
    // While the loader runs, its lock is in Redis with a whole-ms expiry of at most 1501 ms.
    const lockKey = `${keyPrefix}cache:{k1}:lock`;
    expect(await waitFor(async () => (await client.exists(lockKey)) === 1, 2_000)).toBe(true);
    const pttl = await client.pttl(lockKey);
    expect(pttl).toBeGreaterThan(0);
    expect(pttl).toBeLessThanOrEqual(1501);
    release();
    expect(await first).toBe('v');
    expect(await cache.getOrSet('k1', () => (loads++, 'other'))).toBe('v');
    expect(loads).toBe(1);
    expect(await client.exists(`${keyPrefix}cache:k1`)).toBe(1);
    expect(options.lockTtl).toBe(1501);
  });

  it('lockTtl 60000.5: invalidateTags removes the entries and marks the tag for 60001 ms', async () => {
    const { cache, client, keyPrefix, options } = await cacheApp(target, { lockTtl: 60_000.5 });
    await cache.set('x', 1, { tags: ['t'] });
    await cache.set('y', 2, { tags: ['t'] });
    expect(await cache.invalidateTags('t')).toBe(2);
    expect(await cache.get('x')).toBeUndefined();
    expect(await cache.get('y')).toBeUndefined();
    const pttl = await client.pttl(`${keyPrefix}cache:{t}:inv`);
    expect(pttl).toBeGreaterThan(59_000);
    expect(pttl).toBeLessThanOrEqual(60_001);
    expect(options.lockTtl).toBe(60_001);
  });

  it('defaultTtl, staleTtl and grace with a fraction are whole ms in the options and in the entry key', async () => {
    const { cache, client, keyPrefix, options } = await cacheApp(target, {
      defaultTtl: 1500.5,
      staleTtl: 100.25,
      grace: 0.5,
    });
    expect(await cache.getOrSet('d', () => 'v')).toBe('v');
    const pttl = await client.pttl(`${keyPrefix}cache:d`);
    expect(pttl).toBeGreaterThan(1_000);
    expect(pttl).toBeLessThanOrEqual(1501 + 101 + 1);
    expect([options.defaultTtl, options.staleTtl, options.grace]).toEqual([1501, 101, 1]);
  });
});

describe.each(['single', 'cluster'] as const)('cache.l1 limits on %s', (target) => {
  it('l1.ttl 1500.5 is rounded up to 1501: the app starts and its L1 serves', async () => {
    const { cache, options } = await cacheApp(target, { l1: { max: 100, ttl: 1500.5, invalidation: 'bus' } });
    await cache.set('k', 1);
    expect(await cache.get('k')).toBe(1);
    expect(await cache.get('k')).toBe(1);
    expect(cache.stats().hits).toBe(2);
    expect(options.l1?.ttl).toBe(1501);
  });
});

describe('cache.l1.max bounds', () => {
  it('l1.max 1e12 stops the start with InvalidOptionsError naming cache.l1.max (not a RangeError of the LRU)', async () => {
    const started = cacheApp('single', { l1: { max: 1e12, ttl: 1_000 } });
    await expect(started).rejects.toBeInstanceOf(InvalidOptionsError);
    await expect(started).rejects.toThrow(/cache\.l1\.max must be an integer from 1 to 10000000, got 1000000000000/);
  });

  it('accepts 1 to 10,000,000 (whole numbers) and names every other max', () => {
    const problemsOf = (max: number) => {
      const problems = new OptionProblems();
      resolveCacheOptions({ l1: { max, ttl: 1_000 } }, problems);
      try {
        problems.throwIfAny();
        return '';
      } catch (err) {
        return (err as Error).message;
      }
    };
    expect(problemsOf(1)).toBe('');
    expect(problemsOf(10_000_000)).toBe('');
    for (const bad of [0, 1.5, 10_000_001, 2 ** 32, 1e12, Number.NaN]) {
      expect(problemsOf(bad)).toMatch(/cache\.l1\.max must be an integer from 1 to 10000000/);
    }
  });
});

describe.each(['single', 'cluster'] as const)('invalidateTags arguments on %s', (target) => {
  /** Calls invalidateTags as a JS caller may, with arguments its types refuse. */
  const call = (cache: CacheService, ...args: unknown[]) =>
    (cache.invalidateTags as (...a: unknown[]) => unknown)(...args);

  it('an array of tags as one argument is InvalidOptionsError (it was taken as the options: nothing was removed)', async () => {
    const { cache } = await cacheApp(target);
    await cache.set('p1', 1, { tags: ['products'] });
    await cache.set('p2', 2, { tags: ['other'] });
    await expect(call(cache, ['products'])).rejects.toThrow(InvalidOptionsError);
    await expect(call(cache, ['products'])).rejects.toThrow(
      /cache\.invalidateTags: tags are separate string arguments \(invalidateTags\('a', 'b'\) or invalidateTags\(\.\.\.tags\)\), got an array/,
    );
    await expect(call(cache, ['products'], { soft: true })).rejects.toThrow(InvalidOptionsError);
    await expect(call(cache, 'products', ['other'])).rejects.toThrow(InvalidOptionsError);
    expect(await cache.get('p1')).toBe(1);
    expect(await cache.get('p2')).toBe(2);
    // Spread, the array's tags are invalidated.
    const tags = ['products', 'other'];
    expect(await cache.invalidateTags(...tags)).toBe(2);
    expect(await cache.get('p1')).toBeUndefined();
    expect(await cache.get('p2')).toBeUndefined();
  });

  it('a last argument that is neither a tag nor a plain options object is InvalidOptionsError; nothing is removed', async () => {
    const { cache } = await cacheApp(target);
    await cache.set('p1', 1, { tags: ['products'] });
    for (const bad of [null, undefined, 5, true, new Date(), new Map(), () => 1]) {
      await expect(call(cache, 'products', bad)).rejects.toThrow(InvalidOptionsError);
    }
    await expect(call(cache, 5)).rejects.toThrow(InvalidOptionsError);
    await expect(call(cache, 'products', 5, {})).rejects.toThrow(
      /cache\.invalidateTags: a tag must be a string, got 5/,
    );
    await expect(call(cache, 'products', { soft: 'yes' })).rejects.toThrow(
      /cache\.invalidateTags: soft must be true or false, got "yes"/,
    );
    expect(await cache.get('p1')).toBe(1);
    // Plain objects are options (also one without a prototype), and the soft one marks the entry stale.
    expect(await cache.invalidateTags('products', Object.assign(Object.create(null), { soft: true }))).toBe(1);
    expect(await cache.get('p1')).toBeUndefined();
    expect(await cache.invalidateTags({ soft: true })).toBe(0);
    expect(await cache.invalidateTags()).toBe(0);
  });
});

describe.each(['single', 'cluster'] as const)('invalidatePattern on %s', (target) => {
  /** Sets each key, runs the pattern, and returns how many it removed and which of the keys are left. */
  async function run(cache: CacheService, keys: string[], pattern: string) {
    for (const k of keys) await cache.set(k, k);
    const removed = await cache.invalidatePattern(pattern);
    const left: string[] = [];
    for (const k of keys) if ((await cache.get(k)) !== undefined) left.push(k);
    await cache.invalidatePattern('*');
    return { removed, left };
  }

  it('matches the glob against the keys as given, not their escaped form (? and [...] stand for one character)', async () => {
    const { cache } = await cacheApp(target);
    // ? is one character, also one the stored key escapes (: % { })
    expect(await run(cache, ['a:b', 'axb', 'ab', 'a::b'], 'a?b')).toEqual({ removed: 2, left: ['ab', 'a::b'] });
    expect(await run(cache, ['x%', 'x{', 'x}', 'xy', 'x%%'], 'x?')).toEqual({ removed: 4, left: ['x%%'] });
    // a class holds the characters written in it, never the letters of an escape
    expect(await run(cache, ['A1', ':1', '%1', '31'], '[:]*')).toEqual({ removed: 1, left: ['A1', '%1', '31'] });
    expect(await run(cache, ['A1', ':1', 'a1'], '[^a]1')).toEqual({ removed: 2, left: ['a1'] });
    expect(await run(cache, ['{t}', '{tt}', 't'], '{?}')).toEqual({ removed: 1, left: ['{tt}', 't'] });
    // * never ends inside an escape: '*3A' matches a key ending in the text 3A, not one ending in ':'
    expect(await run(cache, ['b:', 'x3A', '%'], '*3A')).toEqual({ removed: 1, left: ['b:', '%'] });
    expect(await run(cache, ['%', '%25', 'a%'], '*25')).toEqual({ removed: 1, left: ['%', 'a%'] });
    // escaped glob characters are literal
    expect(await run(cache, ['a*', 'ab', ':x'], 'a\\*')).toEqual({ removed: 1, left: ['ab', ':x'] });
    expect(await run(cache, ['a*', ':x', 'x:'], '\\:*')).toEqual({ removed: 1, left: ['a*', 'x:'] });
    // as Redis's MATCH, ? is one byte of the key's UTF-8: é is two
    expect(await run(cache, ['é', 'e'], '?')).toEqual({ removed: 1, left: ['é'] });
    expect(await run(cache, ['é', 'e'], '??')).toEqual({ removed: 1, left: ['e'] });
  });

  it('leaves internal keys (tag indexes, locks) alone whatever the pattern', async () => {
    const { cache, client, keyPrefix } = await cacheApp(target);
    await cache.set('a', 1, { tags: ['t'] });
    expect(await cache.invalidatePattern('?*')).toBe(1);
    expect(await client.exists(`${keyPrefix}cache:{t}:tag`)).toBe(1);
  });
});
