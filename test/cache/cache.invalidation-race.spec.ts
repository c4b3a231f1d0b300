/**
 * A getOrSet made after an invalidation (del, invalidateTags, invalidatePattern, clear) must not get the value of a
 * load that started before it: it does not join that load (single-flight), and that load does not store its older
 * value over the invalidation. Callers with no invalidation of their key between them still share one loader call.
 * Real Redis, one server and the cluster; values and counts only.
 */
import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import { CacheService } from '../../lib/index.js';
import { type CacheGetOrSetOptions, KeyBuilder, RedisConnection } from '../../lib/advanced.js';
import type { RedisClient } from '../../lib/common/lua-script.js';
import { closeToolkitApps, createToolkitApp, type RedisTarget } from '../support/toolkit-app.js';
import { settleWithin, sleep, waitFor } from '../support/wait.js';

afterEach(closeToolkitApps);

const prefix = () => `rtk-ir${randomBytes(5).toString('hex')}:`;

/**
 * A data source read by the loaders: `slow` reads it when called and answers once `open()` is called; `fast` reads
 * and answers at once. `calls` counts both.
 */
function source() {
  const s = { db: 'old', calls: 0, open: () => {}, slow: async () => '', fast: async () => '' };
  const gate = new Promise<void>((r) => (s.open = r));
  s.slow = async () => {
    s.calls++;
    const read = s.db;
    await gate;
    return read;
  };
  s.fast = async () => {
    s.calls++;
    return s.db;
  };
  return s;
}

type Invalidate = (cache: CacheService) => Promise<unknown>;
const INVALIDATIONS: [string, Invalidate][] = [
  ['del', (cache) => cache.del('p')],
  ['invalidateTags', (cache) => cache.invalidateTags('products')],
  ['invalidatePattern', (cache) => cache.invalidatePattern('p*')],
  ['clear', (cache) => cache.clear()],
];

describe.each(['single', 'cluster'] as const)('a getOrSet after an invalidation, on %s', (target: RedisTarget) => {
  const boot = async (cache: object = {}) => {
    const keyPrefix = prefix();
    const app = await createToolkitApp({ target, keyPrefix, cache: { beta: 0, ...cache } });
    const client = app.get(RedisConnection).client as RedisClient;
    const entryKey = new KeyBuilder(keyPrefix).key('cache', 'p');
    const stored = async () => String(await client.get(entryKey));
    /**
     * Once a getOrSet made before it has had its read of 'p' answered and gone on to join a load: a GET of the same
     * key on the same connection is answered after that read (one connection answers in order; on a cluster, the
     * node's), then a turn lets the caller's continuation run. A fixed sleep was not enough on a loaded CI machine:
     * the caller's read came back after the invalidation below, and it rightly took the new load.
     */
    const readAnswered = async () => {
      await sleep(10); // the read has left the turn's batch
      await client.get(entryKey);
      await new Promise((resolve) => setImmediate(resolve));
    };
    return { cache: app.get(CacheService), stored, readAnswered };
  };
  const tagged: CacheGetOrSetOptions<string> = { tags: ['products'] };

  it.each(INVALIDATIONS)(
    'after %s it runs a new load and gets the new value; the cache then holds the new value',
    async (_name, invalidate) => {
      const { cache, stored, readAnswered } = await boot();
      const s = source();
      const first = cache.getOrSet('p', s.slow, tagged);
      expect(await waitFor(() => s.calls === 1, 5_000)).toBe(true);
      // a caller with no invalidation between it and the load's start still joins it
      await sleep(10);
      const joined = cache.getOrSet('p', s.fast, tagged);
      await readAnswered();
      s.db = 'new';
      await invalidate(cache);
      const second = cache.getOrSet('p', s.fast, tagged);
      await sleep(20);
      s.open();
      expect(await Promise.all([first, joined, second])).toEqual(['old', 'old', 'new']);
      expect(s.calls).toBe(2);
      expect(await cache.get('p')).toBe('new');
      expect(await stored()).toContain('new');
      expect(await cache.getOrSetWithStatus('p', s.fast, tagged)).toEqual({ value: 'new', status: 'hit' });
      expect(s.calls).toBe(2);
    },
  );

  it('tags given as a function of the value: after invalidateTags of its tag a later caller loads anew', async () => {
    const { cache } = await boot();
    const s = source();
    const byValue: CacheGetOrSetOptions<string> = { tags: () => ['products'] };
    const first = cache.getOrSet('p', s.slow, byValue);
    expect(await waitFor(() => s.calls === 1, 5_000)).toBe(true);
    s.db = 'new';
    await cache.invalidateTags('products');
    const second = cache.getOrSet('p', s.fast, byValue);
    await sleep(20);
    s.open();
    expect(await Promise.all([first, second])).toEqual(['old', 'new']);
    expect(s.calls).toBe(2);
    expect(await cache.get('p')).toBe('new');
  });

  // lockWait 0: the second load does not wait for the first one's lock, stores first, and the older load ends last
  it.each(INVALIDATIONS.filter(([name]) => name !== 'invalidateTags'))(
    'after %s, a load that started before it and ends last does not store over the new value',
    async (_name, invalidate) => {
      const { cache, stored } = await boot({ lockWait: 0 });
      const s = source();
      const first = cache.getOrSet('p', s.slow);
      expect(await waitFor(() => s.calls === 1, 5_000)).toBe(true);
      s.db = 'new';
      await invalidate(cache);
      // bounded: a caller that joined the older load would wait for its gate (opened below)
      expect(await settleWithin(cache.getOrSet('p', s.fast), 5_000, 'still waiting')).toBe('new');
      expect(await stored()).toContain('new');
      s.open();
      expect(await first).toBe('old');
      expect(s.calls).toBe(2);
      expect(await cache.get('p')).toBe('new');
      expect(await stored()).toContain('new');
    },
  );

  it('a background refresh that started before a del does not store its older value after it', async () => {
    const { cache, stored } = await boot({ staleTtl: 60_000 });
    const s = source();
    await cache.getOrSet('p', s.fast, { ttl: 100 });
    await sleep(150);
    // stale: served at once while the (slow) refresh runs in the background
    expect(await cache.getOrSetWithStatus('p', s.slow, { ttl: 100 })).toEqual({ value: 'old', status: 'stale' });
    expect(await waitFor(() => s.calls === 2, 5_000)).toBe(true);
    s.db = 'new';
    await cache.del('p');
    const second = cache.getOrSetWithStatus('p', s.fast, { ttl: 60_000 });
    await sleep(20);
    s.open();
    expect(await second).toEqual({ value: 'new', status: 'miss' });
    expect(s.calls).toBe(3);
    expect(await cache.get('p')).toBe('new');
    expect(await stored()).toContain('new');
  });

  it('an invalidation of another key, tag or pattern does not part callers: one loader call', async () => {
    const { cache } = await boot();
    const s = source();
    const first = cache.getOrSet('p', s.slow, tagged);
    expect(await waitFor(() => s.calls === 1, 5_000)).toBe(true);
    await cache.del('q');
    const afterDel = cache.getOrSet('p', s.fast, tagged);
    await cache.invalidateTags('other');
    const afterTags = cache.getOrSet('p', s.fast, tagged);
    await cache.invalidatePattern('q*');
    const afterPattern = cache.getOrSet('p', s.fast, tagged);
    await sleep(20);
    s.open();
    expect(await Promise.all([first, afterDel, afterTags, afterPattern])).toEqual(['old', 'old', 'old', 'old']);
    expect(s.calls).toBe(1);
    expect(await cache.get('p')).toBe('old');
  });
});
