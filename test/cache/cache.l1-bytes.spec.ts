/**
 * The L1 was bounded in entries only: with values of 1 MB and `l1.max: 10_000` it could hold ~10 GB of heap.
 * `cache.l1.maxBytes` bounds the bytes of its entries together, each counted as its key and its stored text in UTF-8
 * bytes (what Redis holds for it, STRLEN): the least recently used leave first, and an entry larger than the whole
 * bound is never kept (it is read from Redis each time). With both invalidation modes and with tags; the bound is
 * checked here against Redis's own byte counts, not only the LRU's.
 */
import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import { jest } from '@jest/globals';
import { CacheService, InvalidOptionsError, type RedisToolkitOptions } from '../../lib/index.js';
import { RedisConnection } from '../../lib/advanced.js';
import type { RedisClient } from '../../lib/common/lua-script.js';
import { recordCommands } from '../support/command-recorder.js';
import { closeToolkitApps, createToolkitApp, type RedisTarget } from '../support/toolkit-app.js';
import { waitFor } from '../support/wait.js';

jest.setTimeout(120_000);
afterEach(closeToolkitApps);

type Mode = 'tracking' | 'bus';
type L1Options = NonNullable<NonNullable<RedisToolkitOptions['cache']>['l1']>;

/** The L1 of a CacheService, read through the object (private fields). */
interface L1Internals {
  lru: { size: number; calculatedSize: number; has(key: string): boolean; keys(): Iterable<string> };
  byTag: Map<string, Set<string>>;
}
const l1Of = (cache: CacheService): L1Internals => (cache as unknown as { l1: L1Internals }).l1;

const GETS = new Set(['get', 'mget']);
/** The GETs and MGETs a call sent to Redis. */
async function redisReads<T>(client: RedisClient, fn: () => Promise<T>): Promise<{ value: T; reads: number }> {
  const { value, commands } = await recordCommands(client, fn);
  return { value, reads: commands.filter((c) => GETS.has(c.toLowerCase())).length };
}

/** What L1 holds, in bytes as Redis counts them: each key's UTF-8 bytes plus its stored entry's (STRLEN). */
async function heldBytes(client: RedisClient, l1: L1Internals): Promise<number> {
  const keys = [...l1.lru.keys()];
  const lengths = await Promise.all(keys.map((k) => client.strlen(k)));
  return keys.reduce((sum, k, i) => sum + Buffer.byteLength(k) + lengths[i], 0);
}

/** Every key filed under a tag in L1 is an entry of the LRU (nothing kept for an entry that left or never came). */
function tagIndexInLru(l1: L1Internals): string[] {
  const strays: string[] = [];
  for (const keys of l1.byTag.values()) for (const k of keys) if (!l1.lru.has(k)) strays.push(k);
  return strays;
}

async function twoInstances(target: RedisTarget, l1: L1Options) {
  const keyPrefix = `rtk-b${randomBytes(5).toString('hex')}:`;
  const app = () => createToolkitApp({ target, keyPrefix, commandTimeout: 5_000, cache: { l1 } });
  const a = await app();
  const b = await app();
  return {
    a: a.get(CacheService),
    b: b.get(CacheService),
    client: a.get(RedisConnection).client as RedisClient,
    keyPrefix,
  };
}

const MODES_AND_TARGETS = (['tracking', 'bus'] as const).flatMap((mode) =>
  (['single', 'cluster'] as const).map((target) => [mode, target] as const),
);

describe.each(MODES_AND_TARGETS)('cache.l1.maxBytes with invalidation %s on %s', (mode: Mode, target) => {
  const MAX_BYTES = 10_000;
  const l1: L1Options = { max: 1_000, ttl: 60_000, maxBytes: MAX_BYTES, invalidation: mode };

  it('past the bound the least recently used entry leaves L1 and is read from Redis again; tags still drop entries', async () => {
    const { a, b, client, keyPrefix } = await twoInstances(target, l1);
    const value = (i: number) => `${i}:${'x'.repeat(3_000)}`;
    // ~3,070 bytes each (key, header, tags, value): three fit in 10,000, a fourth passes it
    for (const i of [0, 1, 2]) await a.set(`k${i}`, value(i), { tags: ['t', `t${i}`] });
    const warm = await redisReads(client, async () => [await a.get('k0'), await a.get('k1'), await a.get('k2')]);
    expect(warm).toEqual({ value: [value(0), value(1), value(2)], reads: 0 });
    expect(await a.get('k0')).toBe(value(0)); // k0 used last: k1 is now the least recently used

    await a.set('k3', value(3), { tags: ['t', 't3'] });
    const l1a = l1Of(a);
    expect(['k0', 'k1', 'k2', 'k3'].map((k) => l1a.lru.has(`${keyPrefix}cache:${k}`))).toEqual([
      true,
      false,
      true,
      true,
    ]);
    expect(l1a.lru.calculatedSize).toBeLessThanOrEqual(MAX_BYTES);
    expect(await heldBytes(client, l1a)).toBe(l1a.lru.calculatedSize);
    expect(tagIndexInLru(l1a)).toEqual([]);
    expect(l1a.byTag.has('t1')).toBe(false);

    // the others from L1, k1 from Redis (one read), and back in L1 (pushing out the least recently used, k2)
    const hot = await redisReads(client, async () => [await a.get('k0'), await a.get('k3')]);
    expect(hot).toEqual({ value: [value(0), value(3)], reads: 0 });
    const cold = await redisReads(client, () => a.get('k1'));
    expect(cold).toEqual({ value: value(1), reads: 1 });
    expect(l1a.lru.has(`${keyPrefix}cache:k1`)).toBe(true);
    expect(l1a.lru.has(`${keyPrefix}cache:k2`)).toBe(false);
    expect(await redisReads(client, () => a.getOrSet('k2', () => 'loaded'))).toEqual({ value: value(2), reads: 1 });
    expect(l1a.lru.calculatedSize).toBeLessThanOrEqual(MAX_BYTES);
    expect(await heldBytes(client, l1a)).toBe(l1a.lru.calculatedSize);

    // another instance's write still reaches what L1 holds (tracking reports it, or the bus carries it)
    const held = [...l1a.lru.keys()].map((k) => k.slice(`${keyPrefix}cache:`.length));
    expect(held.length).toBeGreaterThan(0);
    await b.set(held[0], 'changed by b', { tags: ['t'] });
    expect(await waitFor(async () => (await a.get(held[0])) === 'changed by b', 5_000)).toBe(true);
    // and a tag invalidation (by the other instance) drops the tagged entries from this L1
    await b.invalidateTags('t');
    expect(await waitFor(() => l1a.lru.size === 0, 5_000)).toBe(true);
    for (const k of ['k0', 'k1', 'k2', 'k3']) expect(await a.get(k)).toBeUndefined();
    expect(tagIndexInLru(l1a)).toEqual([]);
    expect(a.stats().errors + b.stats().errors).toBe(0);
  });

  it('an entry larger than the whole bound is never kept in L1: every read goes to Redis', async () => {
    const { a, client, keyPrefix } = await twoInstances(target, l1);
    const l1a = l1Of(a);
    const small = 'small';
    const big = 'y'.repeat(MAX_BYTES);
    await a.set('big', small, { tags: ['big'] });
    expect(await a.get('big')).toBe(small);
    expect(l1a.lru.has(`${keyPrefix}cache:big`)).toBe(true);
    await a.set('other', 'o');

    // the same key now too large: its older copy leaves L1 too, and the new one is not kept
    await a.set('big', big, { tags: ['big'] });
    for (let i = 0; i < 3; i++) expect(await redisReads(client, () => a.get('big'))).toEqual({ value: big, reads: 1 });
    expect(l1a.lru.has(`${keyPrefix}cache:big`)).toBe(false);
    expect(l1a.byTag.has('big')).toBe(false);
    // through getOrSet (a load stored, then hits read from Redis), and with multi-byte text: 3,400 UTF-16 units,
    // 10,200 UTF-8 bytes, counted as the bytes
    let loads = 0;
    const wide = '日'.repeat(3_400);
    const loaded = () => a.getOrSetWithStatus('wide', () => (loads++, wide), { tags: ['wide'] });
    expect(await loaded()).toEqual({ value: wide, status: 'miss' });
    for (let i = 0; i < 2; i++)
      expect(await redisReads(client, loaded)).toEqual({ value: { value: wide, status: 'hit' }, reads: 1 });
    expect(loads).toBe(1);
    expect(l1a.lru.has(`${keyPrefix}cache:wide`)).toBe(false);
    expect(l1a.byTag.has('wide')).toBe(false);
    // the small entry stays, from L1
    expect(await redisReads(client, () => a.get('other'))).toEqual({ value: 'o', reads: 0 });
    expect(tagIndexInLru(l1a)).toEqual([]);
  });
});

describe.each(['tracking', 'bus'] as const)('cache.l1.maxBytes under 5,000 random-size entries (%s)', (mode) => {
  it('the bytes L1 holds stay at or under the bound after every batch; every read answers its value', async () => {
    const MAX_BYTES = 100_000;
    const { a, b, client } = await twoInstances('single', {
      max: 2_000,
      ttl: 60_000,
      maxBytes: MAX_BYTES,
      invalidation: mode,
    });
    const l1a = l1Of(a);
    // a fixed sequence: from 0 to 10,000 characters, one in 50 past the whole bound, one in 5 two UTF-8 bytes each
    let seed = 12_345;
    const next = () => (seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31) / 2 ** 31;
    const values: string[] = [];
    for (let i = 0; i < 5_000; i++) {
      const length = next() < 0.02 ? MAX_BYTES + Math.floor(next() * 20_000) : Math.floor(next() * 10_000);
      values.push(`${i}:${(next() < 0.2 ? 'é' : 'x').repeat(length)}`);
    }
    const tagOf = (i: number) => `g${i % 7}`;
    /** The batch start of each tag's last invalidation: an entry written before it is gone from Redis. */
    const invalidatedAt = new Map<string, number>();
    const expected = (i: number) => ((invalidatedAt.get(tagOf(i)) ?? 0) > i ? undefined : values[i]);
    let peak = 0;
    let samples = 0;
    const wrong: string[] = [];
    const BATCH = 50;
    for (let start = 0; start < values.length; start += BATCH) {
      await Promise.all(
        Array.from({ length: BATCH }, async (_, j) => {
          const i = start + j;
          const tags = [tagOf(i)];
          const got =
            i % 3 === 0
              ? (await a.set(`e${i}`, values[i], { tags }), await a.get(`e${i}`))
              : await a.getOrSet(`e${i}`, () => values[i], { tags });
          if (got !== values[i]) wrong.push(`e${i}`);
          // an entry of an earlier batch read again (from L1 or Redis)
          if (start === 0) return;
          const old = Math.floor(next() * start);
          if ((await a.get(`e${old}`)) !== expected(old)) wrong.push(`e${old} again`);
        }),
      );
      if (start % 1_000 === 950) {
        // the other instance invalidates a tag; once this L1 has heard it, none of its entries is held
        const tag = tagOf(start / 50);
        await b.invalidateTags(tag);
        invalidatedAt.set(tag, start + BATCH);
        expect(await waitFor(() => !l1a.byTag.has(tag), 5_000)).toBe(true);
      }
      const bytes = await heldBytes(client, l1a);
      peak = Math.max(peak, bytes, l1a.lru.calculatedSize);
      expect(bytes).toBe(l1a.lru.calculatedSize);
      expect(tagIndexInLru(l1a)).toEqual([]);
      samples++;
    }
    expect(samples).toBe(100);
    expect(invalidatedAt.size).toBe(5);
    expect(wrong).toEqual([]);
    expect(peak).toBeLessThanOrEqual(MAX_BYTES);
    expect(peak).toBeGreaterThan(MAX_BYTES * 0.8); // the bound was reached, not merely approached
    expect(l1a.lru.size).toBeGreaterThan(5);
    // no entry past the bound ever in L1
    for (const k of l1a.lru.keys()) expect(await client.strlen(k)).toBeLessThan(MAX_BYTES);
    expect(a.stats().errors + b.stats().errors).toBe(0);
    await a.clear();
  });
});

describe('cache.l1.maxBytes options', () => {
  const start = (l1: Record<string, unknown>) =>
    createToolkitApp({
      keyPrefix: `rtk-b${randomBytes(5).toString('hex')}:`,
      cache: { l1: { max: 100, ttl: 1_000, ...l1 } as L1Options },
    });

  it.each([0, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY, '1000', null])(
    'maxBytes %p stops the start with InvalidOptionsError naming cache.l1.maxBytes',
    async (maxBytes) => {
      const started = start({ maxBytes });
      await expect(started).rejects.toBeInstanceOf(InvalidOptionsError);
      await expect(started).rejects.toThrow(/cache\.l1\.maxBytes must be an integer from 1 to \d+, got /);
    },
  );

  it('a misspelling is refused naming the option it meant', async () => {
    const started = start({ maxByte: 1_000 });
    await expect(started).rejects.toBeInstanceOf(InvalidOptionsError);
    await expect(started).rejects.toThrow(
      /cache\.l1\.maxByte is not a known option \(did you mean cache\.l1\.maxBytes\?\)/,
    );
  });

  it("lru-cache's and bentocache's name, maxSize, is refused naming maxBytes (no edit distance reaches it)", async () => {
    const started = start({ maxSize: 1_000 });
    await expect(started).rejects.toBeInstanceOf(InvalidOptionsError);
    await expect(started).rejects.toThrow(
      /cache\.l1\.maxSize is not a known option \(did you mean cache\.l1\.maxBytes\?\)/,
    );
  });

  it('a whole number of bytes is accepted; without it the L1 has no byte bound (as before)', async () => {
    const bounded = (await start({ maxBytes: 1 })).get(CacheService);
    await bounded.set('k', 'v');
    expect(l1Of(bounded).lru.size).toBe(0); // every entry is larger than 1 byte
    expect(await bounded.get('k')).toBe('v');
    const unbounded = (await start({})).get(CacheService);
    await unbounded.set('k', 'v'.repeat(1_000_000));
    expect(l1Of(unbounded).lru.size).toBe(1);
  });
});
