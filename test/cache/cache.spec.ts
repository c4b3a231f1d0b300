import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import type { Command } from 'ioredis';
import {
  CacheLoadTimeoutError,
  CacheService,
  InvalidKeyError,
  InvalidOptionsError,
  SerializationError,
  type RedisToolkitOptions,
} from '../../lib/index.js';
import { RedisConnection } from '../../lib/advanced.js';
import type { RedisClient } from '../../lib/common/lua-script.js';
import { recordCommands } from '../support/command-recorder.js';
import { closeToolkitApps, createToolkitApp, type RedisTarget } from '../support/toolkit-app.js';
import { settleWithin, sleep, waitFor } from '../support/wait.js';

afterEach(closeToolkitApps);

const rand = () => randomBytes(5).toString('hex');

async function cacheApp(target: RedisTarget, cache: RedisToolkitOptions['cache'] = {}, keyPrefix = `rtk-t${rand()}:`) {
  const app = await createToolkitApp({ target, keyPrefix, cache });
  return { app, cache: app.get(CacheService), client: app.get(RedisConnection).client as RedisClient, keyPrefix };
}

/** How long an L1 invalidation may take to reach another instance here: far below the L1 ttl (60 s). */
const L1_WAIT = 5_000;

describe.each(['single', 'cluster'] as const)('CacheService on %s', (target) => {
  it('expires a value after its ttl (milliseconds) and stores it with PEXPIRE', async () => {
    const { cache, client, keyPrefix } = await cacheApp(target);
    await cache.set('a', { n: 1 }, { ttl: 150 });
    expect(await cache.get('a')).toEqual({ n: 1 });
    const pttl = await client.pttl(`${keyPrefix}cache:a`);
    expect(pttl).toBeGreaterThan(0);
    expect(pttl).toBeLessThanOrEqual(150);
    await sleep(250);
    expect(await cache.get('a')).toBeUndefined();
    expect(await client.exists(`${keyPrefix}cache:a`)).toBe(0);
  });

  it('caches null but never undefined', async () => {
    const { cache } = await cacheApp(target);
    let nullLoads = 0;
    let undefinedLoads = 0;
    for (let i = 0; i < 3; i++) {
      expect(await cache.getOrSet('n', () => (nullLoads++, null))).toBeNull();
      expect(await cache.getOrSet('u', () => (undefinedLoads++, undefined))).toBeUndefined();
    }
    expect(nullLoads).toBe(1);
    expect(undefinedLoads).toBe(3);
    expect(await cache.get('n')).toBeNull();
    await expect(cache.set('x', undefined)).rejects.toBeInstanceOf(SerializationError);
  });

  it('round-trips Dates and reports hits, misses and loads in stats()', async () => {
    const { cache } = await cacheApp(target);
    const at = new Date('2026-01-01T00:00:00.000Z');
    expect(await cache.getOrSet('d', () => ({ at }))).toEqual({ at });
    const again = await cache.getOrSet('d', () => ({ at: new Date(0) }));
    expect(again.at).toBeInstanceOf(Date);
    expect(again.at.getTime()).toBe(at.getTime());
    expect(await cache.get('missing')).toBeUndefined();
    expect(cache.stats()).toEqual({
      hits: 1,
      misses: 2,
      staleHits: 0,
      graceHits: 0,
      loads: 1,
      errors: 0,
      failedOpen: 0,
      tooLarge: 0,
      hitRatio: 1 / 3,
    });
  });

  it('a loader that never settles fails its callers with CacheLoadTimeoutError after the lock ttl and frees the key', async () => {
    // loadTimeout defaults to lockTtl (issue 17 item 4: before, later callers with a healthy loader hung for good)
    const { cache, app } = await cacheApp(target, { lockTtl: 400 });
    expect(app.get(CacheService)).toBe(cache);
    const never = () => new Promise<string>(() => undefined);
    const first = cache.getOrSet('hung', never).catch((err: unknown) => err);
    const joined = cache.getOrSet('hung', () => 'healthy').catch((err: unknown) => err); // shares the hung load
    const bound = <T>(p: Promise<T>) => settleWithin(p, 8_000, 'still pending');
    const [a, b] = await Promise.all([bound(first), bound(joined)]);
    expect(a).toBeInstanceOf(CacheLoadTimeoutError);
    expect(b).toBeInstanceOf(CacheLoadTimeoutError);
    expect((a as Error).message).toBe('a cache loader did not settle within 400 ms (cache.loadTimeout)');
    expect((a as CacheLoadTimeoutError).key).toBe('hung');
    // the key is free: a later caller with a healthy loader gets its value (and it is stored)
    expect(await bound(cache.getOrSet('hung', () => 'healthy'))).toBe('healthy');
    expect(await cache.get('hung')).toBe('healthy');
  });

  it('a background refresh that never settles is given up after loadTimeout, and the next one runs', async () => {
    const { cache } = await cacheApp(target, { loadTimeout: 300, beta: 0 });
    await cache.set('swr', 'old', { ttl: 50, staleTtl: 60_000 });
    await sleep(80);
    let hungCalls = 0;
    const hung = () => {
      hungCalls++;
      return new Promise<string>(() => undefined);
    };
    expect(await cache.getOrSetWithStatus('swr', hung, { ttl: 60_000, staleTtl: 60_000 })).toEqual({
      value: 'old',
      status: 'stale',
    });
    expect(await waitFor(() => hungCalls === 1, 5_000)).toBe(true); // the refresh takes the lock first
    // while the hung refresh runs, no second refresh starts
    await cache.getOrSet('swr', hung, { ttl: 60_000, staleTtl: 60_000 });
    expect(hungCalls).toBe(1);
    // after loadTimeout, a stale read starts a new refresh, which stores its value
    const refreshed = await waitFor(async () => {
      await cache.getOrSet('swr', () => 'new', { ttl: 60_000, staleTtl: 60_000 });
      return (await cache.get('swr')) === 'new';
    }, 8_000);
    expect(refreshed).toBe(true);
    expect(hungCalls).toBe(1);
  });

  it('500 concurrent getOrSet on a cold key call the loader exactly once', async () => {
    const { cache } = await cacheApp(target);
    let loads = 0;
    const loader = async () => {
      loads++;
      await sleep(50);
      return { id: 7 };
    };
    const values = await Promise.all(Array.from({ length: 500 }, () => cache.getOrSet('cold', loader)));
    expect(loads).toBe(1);
    expect(values.every((v) => v.id === 7)).toBe(true);
  });

  it.each([
    [100, 100],
    [1_000, 50], // issue 15
  ])('%i concurrent callers over two app instances share one loader call through the Redis lock', async (n, ms) => {
    const keyPrefix = `rtk-t${rand()}:`;
    const a = await cacheApp(target, {}, keyPrefix);
    const b = await cacheApp(target, {}, keyPrefix);
    let loads = 0;
    const loader = async () => {
      loads++;
      await sleep(ms);
      return { id: n };
    };
    const values = await Promise.all(
      Array.from({ length: n }, (_, i) => (i % 2 ? a.cache : b.cache).getOrSet(`race-${n}`, loader)),
    );
    expect(loads).toBe(1);
    expect(values).toHaveLength(n);
    expect(values.every((v) => v.id === n)).toBe(true);
  });

  it('a load that outlives the lock ttl still gives every caller sharing it the value, and stores it', async () => {
    // loadTimeout above lockTtl: the lock expires while the loader runs; its callers must not be dropped
    const { cache, client, keyPrefix } = await cacheApp(target, { lockTtl: 150, loadTimeout: 30_000 });
    let release: (v: string) => void = () => undefined;
    let loads = 0;
    const loader = () => {
      loads++;
      return new Promise<string>((r) => (release = r));
    };
    const callers = Promise.all(Array.from({ length: 200 }, () => cache.getOrSet('outlives', loader)));
    const lockKey = `${keyPrefix}cache:{outlives}:lock`;
    expect(await waitFor(async () => loads === 1 && (await client.exists(lockKey)) === 1, 5_000)).toBe(true);
    expect(await waitFor(async () => (await client.exists(lockKey)) === 0, 5_000)).toBe(true); // the lock expired
    release('late');
    const values = await settleWithin(callers, 8_000, 'still pending');
    expect(values).toEqual(Array.from({ length: 200 }, () => 'late'));
    expect(loads).toBe(1);
    expect(await cache.get('outlives')).toBe('late');
  });

  it('after taking the lock it reads the key again: a value another instance stored just before is served, not loaded', async () => {
    const keyPrefix = `rtk-t${rand()}:`;
    const a = await cacheApp(target, {}, keyPrefix);
    const b = await cacheApp(target, {}, keyPrefix);
    // Another instance stores the value between A's first read (a miss) and A's lock: on one server the lock and the
    // re-read go in one socket write (sent with sendCommand, the socket corked), on a cluster the lock is a SET NX of
    // its own; the store is slipped in before either (on one server, A's commands wait for it, in their order).
    let slipped = false;
    if (target === 'single') {
      const client = a.client as unknown as { sendCommand: (command: Command, ...rest: unknown[]) => unknown };
      const original = client.sendCommand.bind(a.client);
      let queue: Promise<unknown> | undefined;
      client.sendCommand = (command: Command, ...rest: unknown[]) => {
        if (!slipped && command.name === 'set' && command.args.includes('NX')) {
          slipped = true;
          queue = b.cache.set('reread', 'from-b');
        }
        if (queue === undefined) return original(command, ...rest);
        queue = queue.then(() => original(command, ...rest));
        return command.promise;
      };
    } else {
      const hooked = a.client as unknown as Record<'set', (...args: unknown[]) => Promise<unknown>>;
      const original = hooked.set.bind(a.client);
      hooked.set = (...args: unknown[]) => {
        if (slipped || !args.includes('NX')) return original(...args);
        slipped = true;
        return b.cache.set('reread', 'from-b').then(() => original(...args));
      };
    }
    let loads = 0;
    const got = await a.cache.getOrSetWithStatus('reread', () => (loads++, 'from-a'));
    expect(slipped).toBe(true);
    expect(got).toEqual({ value: 'from-b', status: 'hit' });
    expect(loads).toBe(0);
  });

  it('a waiter loads by itself when the lock holder takes longer than lockWait', async () => {
    const keyPrefix = `rtk-t${rand()}:`;
    const a = await cacheApp(target, { lockWait: 100 }, keyPrefix);
    const b = await cacheApp(target, { lockWait: 100 }, keyPrefix);
    const order: string[] = [];
    const slow = a.cache.getOrSet('slow', async () => (await sleep(4_000), 'from-a')).finally(() => order.push('a'));
    await sleep(30);
    // B gives up waiting after lockWait (100 ms) and loads itself: it finishes before A's 4 s load (order, not time).
    expect(await b.cache.getOrSet('slow', () => 'from-b')).toBe('from-b');
    order.push('b');
    expect(await slow).toBe('from-a');
    expect(order).toEqual(['b', 'a']);
  });

  it('stale-while-revalidate: serves the stale value, refreshes once in the background, then serves fresh', async () => {
    const { cache } = await cacheApp(target, { beta: 0 }); // no XFetch early refresh: this test is about the stale window
    let loads = 0;
    const loader = async () => {
      loads++;
      await sleep(50);
      return `v${loads}`;
    };
    expect(await cache.getOrSetWithStatus('swr', loader, { ttl: 100, staleTtl: 5_000 })).toEqual({
      value: 'v1',
      status: 'miss',
    });
    expect((await cache.getOrSetWithStatus('swr', loader, { ttl: 100, staleTtl: 5_000 })).status).toBe('hit');
    await sleep(150);
    const stale = await Promise.all(
      Array.from({ length: 20 }, () => cache.getOrSetWithStatus('swr', loader, { ttl: 100, staleTtl: 5_000 })),
    );
    expect(stale).toEqual(Array.from({ length: 20 }, () => ({ value: 'v1', status: 'stale' })));
    expect(await waitFor(async () => (await cache.get('swr')) === 'v2', 1_000)).toBe(true);
    expect(await cache.getOrSetWithStatus('swr', loader, { ttl: 100, staleTtl: 5_000 })).toEqual({
      value: 'v2',
      status: 'hit',
    });
    expect(loads).toBe(2);
    expect(cache.stats().staleHits).toBe(20);
  });

  it('stale-if-error: a failing loader leaves the stale value served; loader errors are never cached', async () => {
    const { cache } = await cacheApp(target);
    await cache.getOrSet('sie', () => 'old', { ttl: 80, staleTtl: 5_000 });
    await sleep(120);
    let failures = 0;
    const failing = () => {
      failures++;
      throw new Error('backend down');
    };
    for (let i = 0; i < 3; i++) expect(await cache.getOrSet('sie', failing, { ttl: 80, staleTtl: 5_000 })).toBe('old');
    await sleep(50);
    expect(failures).toBeGreaterThanOrEqual(1);
    expect(await cache.getOrSet('sie', failing, { ttl: 80, staleTtl: 5_000 })).toBe('old');

    // No stale value: the error reaches the caller, and the next call tries again.
    let attempts = 0;
    const flaky = async () => {
      attempts++;
      if (attempts === 1) throw new Error('first call fails');
      return 'ok';
    };
    await expect(cache.getOrSet('cold-error', flaky)).rejects.toThrow('first call fails');
    expect(await cache.getOrSet('cold-error', flaky)).toBe('ok');
    expect(attempts).toBe(2);
  });

  it('XFetch: hot keys are refreshed before they expire, keys far from expiry are not', async () => {
    const { cache, client, keyPrefix } = await cacheApp(target);
    const calledAt: number[] = [];
    const loader = async () => {
      calledAt.push(Date.now());
      await sleep(300); // δ ≈ 300 ms is stored with the entry
      return calledAt.length;
    };
    // Far from expiry (δ·β ≪ remaining ttl): P(early) = e^-(10000/300) per read, i.e. never.
    await cache.getOrSet('far', loader, { ttl: 10_000 });
    for (let i = 0; i < 100; i++) await cache.getOrSet('far', loader, { ttl: 10_000 });
    expect(calledAt).toHaveLength(1);

    calledAt.length = 0;
    await cache.getOrSet('hot', loader, { ttl: 1_000 });
    const header = (await client.get(`${keyPrefix}cache:hot`))!;
    const expiry = Number(header.slice(0, header.indexOf(',')));
    const delta = Number(header.split(',')[2]);
    expect(delta).toBeGreaterThanOrEqual(290);
    await sleep(Math.max(0, expiry - 400 - Date.now()));
    // From 400 ms before expiry each read refreshes with probability e^-(remaining/300): 0.26, rising to ~1.
    const served: number[] = [];
    while (calledAt.length < 2 && Date.now() < expiry + 500) {
      served.push(await cache.getOrSet('hot', loader, { ttl: 1_000 }));
      await sleep(5);
    }
    expect(calledAt).toHaveLength(2);
    expect(calledAt[1]).toBeLessThan(expiry); // refreshed early, by a reader, without anyone waiting
    expect(served.every((v) => v === 1)).toBe(true);
    expect(
      await waitFor(async () => (await client.get(`${keyPrefix}cache:hot`))?.endsWith('\n2') ?? false, 2_000),
    ).toBe(true);
    expect(calledAt).toHaveLength(2);
  });

  it('hard tag invalidation removes every entry of the tag (tags static, from arguments or from the result)', async () => {
    const { cache, client, keyPrefix } = await cacheApp(target);
    await cache.set('product:1', { id: 1 }, { tags: ['products', 'product:1'] });
    await cache.set('product:2', { id: 2 }, { tags: ['products'] });
    await cache.getOrSet('product:3', () => ({ id: 3, category: 'tea' }), {
      tags: (v) => ['products', `category:${v.category}`],
    });
    await cache.set('user:1', { id: 1 }, { tags: ['users'] });
    expect(await cache.invalidateTags('category:tea')).toBe(1);
    expect(await cache.get('product:3')).toBeUndefined();
    expect(await cache.invalidateTags('products')).toBe(2);
    expect(await cache.get('product:1')).toBeUndefined();
    expect(await cache.get('product:2')).toBeUndefined();
    expect(await cache.get('user:1')).toEqual({ id: 1 });
    expect(await client.zcard(`${keyPrefix}cache:{products}:tag`)).toBe(0);
    expect(await cache.invalidateTags('products', 'nothing-here')).toBe(0);
  });

  it('invalidates a tag with more entries than one batch (paged index, UNLINK batches per slot)', async () => {
    const { cache, client, keyPrefix } = await cacheApp(target);
    for (let i = 0; i < 1_200; i += 200) {
      await Promise.all(Array.from({ length: 200 }, (_, j) => cache.set(`big:${i + j}`, i + j, { tags: ['big'] })));
    }
    await cache.set('keep', 1, { tags: ['small'] });
    expect(await client.zcard(`${keyPrefix}cache:{big}:tag`)).toBe(1_200);
    expect(await cache.invalidateTags('big')).toBe(1_200);
    expect(await cache.get('big:0')).toBeUndefined();
    expect(await cache.get('big:1199')).toBeUndefined();
    expect(await cache.get('keep')).toBe(1);
    expect(await cache.invalidatePattern('big:*')).toBe(0);
  });

  it('a load that started before a tag invalidation returns its value but does not store it', async () => {
    const { cache } = await cacheApp(target);
    let loads = 0;
    // The first load is held open until the invalidation is done: ordered by a gate, not by sleeps.
    let openGate: () => void = () => undefined;
    const gate = new Promise<void>((resolve) => (openGate = resolve));
    const slow = async () => {
      loads++;
      const mine = loads;
      if (mine === 1) await gate;
      return `v${mine}`;
    };
    const inFlight = cache.getOrSet('race', slow, { tags: ['t'] });
    expect(await waitFor(() => loads === 1, 10_000)).toBe(true);
    await cache.invalidateTags('t');
    openGate();
    expect(await inFlight).toBe('v1'); // the caller still gets its value
    expect(await cache.get('race')).toBeUndefined(); // but the invalidation is not undone
    expect(await cache.getOrSet('race', slow, { tags: ['t'] })).toBe('v2'); // a load after it is stored
    expect(await cache.get('race')).toBe('v2');
    await cache.set('race', 'explicit', { tags: ['t'] }); // explicit sets are never refused
    expect(await cache.get('race')).toBe('explicit');
  });

  it('soft tag invalidation keeps entries servable as stale while one refresh runs', async () => {
    const { cache } = await cacheApp(target);
    let loads = 0;
    const loader = async () => {
      loads++;
      await sleep(30);
      return `v${loads}`;
    };
    await cache.getOrSet('soft', loader, { ttl: 60_000, tags: ['catalog'] });
    expect(await cache.invalidateTags('catalog', { soft: true })).toBe(1);
    expect(await cache.get('soft')).toBeUndefined(); // no longer fresh
    const served = await Promise.all(
      Array.from({ length: 10 }, () => cache.getOrSetWithStatus('soft', loader, { ttl: 60_000, tags: ['catalog'] })),
    );
    expect(served.every((r) => r.value === 'v1' && r.status === 'stale')).toBe(true);
    expect(await waitFor(async () => (await cache.get('soft')) === 'v2', 1_000)).toBe(true);
    expect(loads).toBe(2);
  });

  it('tag indexes clean themselves: expired members are pruned on write and the index expires with its entries', async () => {
    const { cache, client, keyPrefix } = await cacheApp(target);
    const index = `${keyPrefix}cache:{t}:tag`;
    await Promise.all(Array.from({ length: 50 }, (_, i) => cache.set(`short:${i}`, i, { ttl: 300, tags: ['t'] })));
    expect(await client.zcard(index)).toBe(50);
    await sleep(400);
    await cache.set('long', 1, { ttl: 600, tags: ['t'] });
    expect(await client.zcard(index)).toBe(1);
    const pttl = await client.pttl(index);
    expect(pttl).toBeGreaterThan(0);
    expect(pttl).toBeLessThanOrEqual(1_700);
  });

  it('pattern invalidation stays under our prefix, escapes user braces, and leaves foreign keys alone', async () => {
    const { cache, client, keyPrefix } = await cacheApp(target);
    await Promise.all(Array.from({ length: 30 }, (_, i) => cache.set(`products:${i}`, i)));
    await cache.set('products-archive', 'a');
    await cache.set('orders:1', 'o', { tags: ['orders'] });
    await cache.set('{weird}*key', 'w');
    await client.set('products:1', 'foreign');
    await client.set(`x${keyPrefix}cache:products:1`, 'foreign too');
    expect(await cache.invalidatePattern('products:?')).toBe(10);
    expect(await cache.invalidatePattern('products:[12]?')).toBe(20);
    expect(await cache.get('products-archive')).toBe('a');
    expect(await cache.get('orders:1')).toBe('o');
    // The user's braces are matched literally (escaped like stored keys), never as a hash tag.
    expect(await cache.invalidatePattern('{weird}*')).toBe(1);
    // '*' is ours only: entries go, our own tag index does not, foreign keys survive.
    expect(await cache.invalidatePattern('*')).toBe(2);
    expect(await client.get('products:1')).toBe('foreign');
    expect(await client.get(`x${keyPrefix}cache:products:1`)).toBe('foreign too');
    expect(await client.exists(`${keyPrefix}cache:{orders}:tag`)).toBe(1);
    await client.del('products:1');
    await client.del(`x${keyPrefix}cache:products:1`);
  });

  it('concurrent reads of many keys (batched into MGETs on a single server) each get their own value', async () => {
    const { cache } = await cacheApp(target);
    await Promise.all(Array.from({ length: 200 }, (_, i) => cache.set(`m:${i}`, { i })));
    const keys = [...Array.from({ length: 200 }, (_, i) => `m:${i}`), 'm:missing', 'm:7'];
    const values = await Promise.all(keys.map((k) => cache.get<{ i: number }>(k)));
    expect(values.slice(0, 200).map((v) => v?.i)).toEqual(Array.from({ length: 200 }, (_, i) => i));
    expect(values[200]).toBeUndefined();
    expect(values[201]).toEqual({ i: 7 });
  });

  it('del removes keys in any slot and reports how many existed', async () => {
    const { cache } = await cacheApp(target);
    await Promise.all(['a', 'b', 'c'].map((k) => cache.set(k, k)));
    expect(await cache.del('a', 'b', 'c', 'd')).toBe(3);
    expect(await cache.get('a')).toBeUndefined();
  });

  it('refuses unencodable values with SerializationError and writes nothing', async () => {
    const { cache, client, keyPrefix } = await cacheApp(target);
    const circular: Record<string, unknown> = {};
    circular.self = circular;
    await expect(cache.set('big', { n: 10n })).rejects.toBeInstanceOf(SerializationError);
    await expect(cache.set('circ', circular, { tags: ['t'] })).rejects.toBeInstanceOf(SerializationError);
    await expect(cache.getOrSet('big2', () => 1n)).rejects.toBeInstanceOf(SerializationError);
    expect(await client.exists(`${keyPrefix}cache:big`)).toBe(0);
    expect(await client.exists(`${keyPrefix}cache:big2`)).toBe(0);
    expect(await client.exists(`${keyPrefix}cache:{t}:tag`)).toBe(0);
  });

  it('rejects bad keys, tags and TTLs with typed errors', async () => {
    const { cache } = await cacheApp(target);
    await expect(cache.get('')).rejects.toBeInstanceOf(InvalidKeyError);
    await expect(cache.set('k\n', 1)).rejects.toBeInstanceOf(InvalidKeyError);
    await expect(cache.set('k', 1, { ttl: -1 })).rejects.toBeInstanceOf(InvalidOptionsError);
    await expect(cache.set('k', 1, { ttl: '60' as unknown as number })).rejects.toThrow(
      /ttl must be a positive number of milliseconds/,
    );
    await expect(cache.set('k', 1, { staleTtl: Number.NaN })).rejects.toBeInstanceOf(InvalidOptionsError);
    await expect(cache.set('k', 1, { tags: [''] })).rejects.toBeInstanceOf(InvalidKeyError);
    await expect(cache.invalidatePattern('x'.repeat(2_000))).rejects.toBeInstanceOf(InvalidKeyError);
    await expect(cache.getOrSet('k', 'nope' as unknown as () => number)).rejects.toBeInstanceOf(InvalidOptionsError);
  });

  it('L1: a set, del or tag invalidation on one instance evicts the key from the other (pushed, long before the L1 ttl)', async () => {
    const keyPrefix = `rtk-t${rand()}:`;
    const l1 = { max: 1_000, ttl: 60_000 };
    const a = await cacheApp(target, { l1 }, keyPrefix);
    const b = await cacheApp(target, { l1 }, keyPrefix);
    await a.cache.set('k', 'v1', { tags: ['grp'] });
    await sleep(500); // A's own eviction message for 'k' (sent without waiting) must not land after B's read
    expect(await b.cache.get('k')).toBe('v1');
    // Served from L1: the Redis key can go without B noticing (no broadcast for a raw delete).
    await b.client.del(`${keyPrefix}cache:k`);
    expect(await b.cache.get('k')).toBe('v1');

    await a.cache.set('k', 'v2', { tags: ['grp'] });
    // Bounded well below the L1 ttl (60 s): the broadcast evicted it, not the expiry. No tighter bound on a busy box.
    expect(await waitFor(async () => (await b.cache.get('k')) === 'v2', L1_WAIT)).toBe(true);

    await a.cache.invalidateTags('grp');
    expect(await waitFor(async () => (await b.cache.get('k')) === undefined, L1_WAIT)).toBe(true);

    await a.cache.set('k', 'v3');
    expect(await waitFor(async () => (await b.cache.get('k')) === 'v3', L1_WAIT)).toBe(true);
    await a.cache.del('k');
    expect(await waitFor(async () => (await b.cache.get('k')) === undefined, L1_WAIT)).toBe(true);

    await a.cache.set('p:1', 1);
    await sleep(500);
    expect(await b.cache.get('p:1')).toBe(1);
    await a.cache.invalidatePattern('p:*');
    expect(await waitFor(async () => (await b.cache.get('p:1')) === undefined, L1_WAIT)).toBe(true);
  });
});

describe('reads of one event-loop turn share an MGET (single server)', () => {
  it('70 concurrent gets of 40 keys (some twice, some missing): 2 MGETs of at most 32 keys, each caller gets its value', async () => {
    const { cache, client } = await cacheApp('single');
    await Promise.all(Array.from({ length: 30 }, (_, i) => cache.set(`k${i}`, { i }, { ttl: 60_000 })));
    const names = Array.from({ length: 70 }, (_, n) => `k${n % 40}`); // k30..k39 do not exist
    const { value, commands } = await recordCommands(client, () => Promise.all(names.map((k) => cache.get(k))));
    expect(commands).toEqual(['mget', 'mget']); // 40 distinct keys: 32 + 8 (a key read twice in a turn is read once)
    expect(value).toEqual(names.map((_, n) => (n % 40 < 30 ? { i: n % 40 } : undefined)));
  });
});
