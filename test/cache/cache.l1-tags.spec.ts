/**
 * Dropping a tag's entries from L1 visited every entry of the LRU (for each invalidateTags here, and for each bus
 * message of another instance's): 9 ms at 10,000 entries, 29 ms at 100,000 and 0.6 s at 1,000,000 of the event loop
 * blocked per invalidation (l1.max allows 10,000,000). L1 now keeps the keys of each tag and visits only those.
 */
import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import { jest } from '@jest/globals';
import { LRUCache } from 'lru-cache';
import { CacheService } from '../../lib/index.js';
import { closeToolkitApps, createToolkitApp } from '../support/toolkit-app.js';

afterEach(closeToolkitApps);

describe.each(['single', 'cluster'] as const)('L1 tag invalidation on %s', (target) => {
  it("drops the tag's entries without visiting the others, on this instance and on the bus", async () => {
    const keyPrefix = `rtk-l${randomBytes(5).toString('hex')}:`;
    const l1 = { max: 10_000, ttl: 60_000, invalidation: 'bus' as const };
    // commandTimeout 5 s and 100 writes at a time: on a busy CI box 2,000 tagged writes at once overran the default
    // 1 s, and a set that times out fails open (counted, not thrown): the entries were then missing. 500 entries, not
    // 2,000: on a CI box at a tenth of its speed 2,000 took over 30 s (the spy below catches a visit of the LRU at any
    // size, so more entries prove nothing more)
    const app = () => createToolkitApp({ target, keyPrefix, commandTimeout: 5_000, cache: { l1 } });
    const a = (await app()).get(CacheService);
    const b = (await app()).get(CacheService);
    for (let at = 0; at < 500; at += 100)
      await Promise.all(
        Array.from({ length: 100 }, (_, i) =>
          a.set(`p:${at + i}`, at + i, { tags: ['products', `product:${at + i}`] }),
        ),
      );
    await a.set('other', 'o', { tags: ['misc'] });
    expect(a.stats().errors).toBe(0);
    // B holds some of them in its L1
    for (const k of ['p:5', 'p:6', 'p:7']) expect(await b.get(k)).toBe(Number(k.slice(2)));
    // Re-stored under other tags: the old tag no longer names it in L1
    await a.set('p:8', 8, { tags: ['misc'] });

    const visits = jest.spyOn(LRUCache.prototype, 'entries');
    try {
      const hits = a.stats().hits;
      await a.invalidateTags('product:5', 'product:8', { soft: true });
      expect(await a.get('p:5')).toBeUndefined(); // stale now: not served from L1
      expect(await a.get('p:6')).toBe(6);
      expect(await a.get('other')).toBe('o');
      expect(a.stats().hits).toBe(hits + 2); // p:6 and other from L1
      // B hears the tags on the bus and drops p:5 only
      const bHits = b.stats().hits;
      for (let i = 0; i < 100 && (await b.get('p:5')) !== undefined; i++) await new Promise((r) => setTimeout(r, 20));
      expect(await b.get('p:5')).toBeUndefined();
      expect(await b.get('p:6')).toBe(6);
      expect(b.stats().hits).toBeGreaterThan(bHits);
      expect(visits).not.toHaveBeenCalled();
    } finally {
      visits.mockRestore();
    }
  });
});
