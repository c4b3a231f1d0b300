/**
 * An outsider's review of the behavioural prose of docs/cache.md: one case per promise a user relies on that no other
 * spec of test/cache proved (each case quotes the claim). Real Redis only; values and counts, no timing thresholds.
 */
import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import { Controller, Get, Injectable, InternalServerErrorException, UseInterceptors } from '@nestjs/common';
import request from 'supertest';
import {
  CacheEvict,
  CacheService,
  InvalidKeyError,
  InvalidOptionsError,
  RedisUnavailableError,
  SerializationError,
} from '../../lib/index.js';
import { CacheTTL, HttpCacheInterceptor, KeyBuilder, RedisConnection } from '../../lib/advanced.js';
import type { RedisClient } from '../../lib/common/lua-script.js';
import { trackForCleanup } from '../support/private-servers.js';
import { recordingLogger } from '../support/recording-logger.js';
import { startRedisServer } from '../support/redis-server.js';
import { bootToolkitApp } from '../support/toolkit-boot.js';
import { PLATFORMS, type RedisTarget, closeToolkitApps, createToolkitApp } from '../support/toolkit-app.js';
import { sleep, waitFor } from '../support/wait.js';

afterEach(closeToolkitApps);

const prefix = () => `rtk-gh${randomBytes(5).toString('hex')}:`;
/** The Redis key of cache key `key` under `keyPrefix`. */
const entryKey = (keyPrefix: string, key: string) => new KeyBuilder(keyPrefix).key('cache', key);

// ---------------------------------------------------------------------------------------------------------------
// HttpCacheInterceptor: stale-while-revalidate and grace
// ---------------------------------------------------------------------------------------------------------------

const swr = { n: 0, failing: false };

@Controller('g')
@UseInterceptors(HttpCacheInterceptor)
class GuaranteesController {
  @Get('swr')
  @CacheTTL(300)
  refreshed(): { n: number } {
    swr.n++;
    if (swr.failing) throw new InternalServerErrorException('backend down');
    return { n: swr.n };
  }
}

describe.each(PLATFORMS)('HttpCacheInterceptor stale-while-revalidate and grace on %s', (platform) => {
  beforeEach(() => {
    swr.n = 0;
    swr.failing = false;
  });

  // "During stale-while-revalidate the handler runs again in the background for the refresh; its answer replaces the
  // entry only if it is a cacheable one."
  it('a STALE answer refreshes the entry: the next request is a HIT with the refreshed body', async () => {
    const keyPrefix = prefix();
    const app = await createToolkitApp({
      keyPrefix,
      cache: { staleTtl: 60_000, beta: 0 },
      controllers: [GuaranteesController],
      http: true,
      platform,
    });
    const server = app.app.getHttpServer();
    const client = app.get(RedisConnection).client as RedisClient;
    const miss = await request(server).get('/g/swr').expect(200);
    const written = Date.now();
    expect([miss.headers['x-cache'], miss.body]).toEqual(['MISS', { n: 1 }]);
    await sleep(Math.max(0, written + 300 + 100 - Date.now()));
    const stale = await request(server).get('/g/swr').expect(200);
    expect([stale.headers['x-cache'], stale.body]).toEqual(['STALE', { n: 1 }]);
    // the background refresh ran the handler once; wait for its answer to be stored (or not: then the HIT below fails)
    expect(await waitFor(() => swr.n === 2, 5_000)).toBe(true);
    const key = entryKey(keyPrefix, 'http:/g/swr');
    const refreshed = await waitFor(async () => String(await client.get(key)).includes('"n":2'), 3_000);
    const next = await request(server).get('/g/swr').expect(200);
    expect({ refreshed, cache: next.headers['x-cache'], body: next.body }).toEqual({
      refreshed: true,
      cache: 'HIT',
      body: { n: 2 },
    });
    expect(swr.n).toBe(2);
  });

  // "With cache.grace, a handler that throws past the stale horizon is answered with the last cached body (X-Cache:
  // STALE, status 200) during the grace period, and the handler is run again at most once per graceBackoff."
  it('grace: a handler throwing past the stale horizon is answered with the last body (STALE, 200), run once per backoff', async () => {
    const app = await createToolkitApp({
      keyPrefix: prefix(),
      cache: { grace: 60_000, graceBackoff: 60_000, beta: 0 },
      controllers: [GuaranteesController],
      http: true,
      platform,
    });
    const server = app.app.getHttpServer();
    const miss = await request(server).get('/g/swr').expect(200);
    const written = Date.now();
    expect([miss.headers['x-cache'], miss.body]).toEqual(['MISS', { n: 1 }]);
    swr.failing = true;
    await sleep(Math.max(0, written + 300 + 100 - Date.now()));
    for (let i = 0; i < 3; i++) {
      const graced = await request(server).get('/g/swr');
      expect([graced.status, graced.headers['x-cache'], graced.body]).toEqual([200, 'STALE', { n: 1 }]);
    }
    // the first request past the horizon ran the handler; the two within graceBackoff did not
    expect(swr.n).toBe(2);
    expect(app.get(CacheService).stats().graceHits).toBe(3);
  });
});

// ---------------------------------------------------------------------------------------------------------------
// Failure policy
// ---------------------------------------------------------------------------------------------------------------

@Injectable()
class Evicting {
  runs = 0;

  @CacheEvict({ keys: (id: string) => [`item:${id}`] })
  async update(id: string): Promise<string> {
    this.runs++;
    return `updated ${id}`;
  }
}

describe('failure policy on a private server', () => {
  // Failure table: "Redis down ... getOrSet: loader's value, uncached (single-flight still applies)"
  it('Redis down: concurrent getOrSet of one key in different turns and with other options share one loader call', async () => {
    const server = trackForCleanup(await startRedisServer());
    const app = await bootToolkitApp({ target: { url: server.url }, keyPrefix: prefix(), commandTimeout: 300 });
    const cache = app.get(CacheService);
    await server.kill();
    let calls = 0;
    let open!: () => void;
    const gate = new Promise<void>((r) => (open = r));
    const loader = async () => {
      calls++;
      await gate;
      return 'loaded';
    };
    const first = cache.getOrSetWithStatus('k', loader);
    await new Promise((r) => setImmediate(r));
    const second = cache.getOrSetWithStatus('k', loader, { ttl: 5_000 });
    await new Promise((r) => setImmediate(r));
    const third = cache.getOrSet('k', loader, { tags: ['t'] });
    await sleep(50);
    open();
    const results = await Promise.all([first, second, third]);
    expect(results).toEqual([
      { value: 'loaded', status: 'miss', degraded: 'fail-open' },
      { value: 'loaded', status: 'miss', degraded: 'fail-open' },
      'loaded',
    ]);
    expect(calls).toBe(1);
  });

  // "If @CacheEvict cannot reach Redis after the method succeeded, the method's result is still returned; the failure
  // is counted in stats().errors and logged."
  it('@CacheEvict with Redis down: the result is returned, one error counted, one warning naming the method', async () => {
    const server = trackForCleanup(await startRedisServer());
    const { warnings, logger } = recordingLogger();
    const app = await bootToolkitApp({
      target: { url: server.url },
      keyPrefix: prefix(),
      commandTimeout: 300,
      providers: [Evicting],
      logger,
    });
    const cache = app.get(CacheService);
    const evicting = app.get(Evicting);
    await server.kill();
    const errorsBefore = cache.stats().errors;
    expect(await evicting.update('1')).toBe('updated 1');
    expect(evicting.runs).toBe(1);
    expect(cache.stats().errors - errorsBefore).toBe(1);
    expect(warnings.filter((w) => w.includes('@CacheEvict on Evicting.update could not evict'))).toHaveLength(1);
    // called directly, the same invalidation throws
    await expect(cache.del('item:1')).rejects.toBeInstanceOf(RedisUnavailableError);
  });
});

// ---------------------------------------------------------------------------------------------------------------
// mset
// ---------------------------------------------------------------------------------------------------------------

describe.each(['single', 'cluster'] as const)('mset on %s', (target: RedisTarget) => {
  // "`mset([{ key, value, options? }])` ... an InvalidOptionsError, nothing stored"
  it('an entry with a bad option refuses the whole mset: nothing stored', async () => {
    const keyPrefix = prefix();
    const app = await createToolkitApp({ target, keyPrefix });
    const cache = app.get(CacheService);
    const client = app.get(RedisConnection).client as RedisClient;
    const entries = [
      { key: 'a', value: 1 },
      { key: 'b', value: 2, options: { ttl: -1 } },
    ];
    await expect(cache.mset(entries)).rejects.toBeInstanceOf(InvalidOptionsError);
    // an undefined value ("undefined is refused") and a bad key are refused before anything is written, too
    await expect(
      cache.mset([
        { key: 'a', value: 1 },
        { key: 'c', value: undefined },
      ]),
    ).rejects.toBeInstanceOf(SerializationError);
    await expect(
      cache.mset([
        { key: 'a', value: 1 },
        { key: '', value: 3 },
      ]),
    ).rejects.toBeInstanceOf(InvalidKeyError);
    expect(await client.exists(entryKey(keyPrefix, 'a'))).toBe(0);
    // a good mset still stores every entry
    await cache.mset([
      { key: 'a', value: 1 },
      { key: 'b', value: 2, options: { ttl: 5_000 } },
    ]);
    expect(await cache.mget(['a', 'b'])).toEqual([1, 2]);
  });
});

// ---------------------------------------------------------------------------------------------------------------
// Foreign values and loads racing an invalidation
// ---------------------------------------------------------------------------------------------------------------

describe.each(['single', 'cluster'] as const)(
  'CacheService against foreign values and racing loads on %s',
  (target) => {
    // Failure table: "stored entry unreadable (another serializer) ... getOrSet: treated as a miss and overwritten"
    it('a foreign string under a cache key: getOrSet loads once and overwrites it; the next read is a hit', async () => {
      const keyPrefix = prefix();
      const app = await createToolkitApp({ target, keyPrefix, cache: { beta: 0 } });
      const cache = app.get(CacheService);
      const client = app.get(RedisConnection).client as RedisClient;
      await client.set(entryKey(keyPrefix, 'foreign'), '{"written":"by another app"}');
      let calls = 0;
      const loader = () => `ours ${++calls}`;
      expect(await cache.get('foreign')).toBeUndefined();
      expect(await cache.getOrSetWithStatus('foreign', loader)).toEqual({ value: 'ours 1', status: 'miss' });
      expect(await cache.getOrSetWithStatus('foreign', loader)).toEqual({ value: 'ours 1', status: 'hit' });
      expect(calls).toBe(1);
      expect(await cache.get('foreign')).toBe('ours 1');
    });

    // Guarantees: "a getOrSet made after an invalidation that covers its key does not join a load that started
    // before it: it runs its own"; the older load's value is not stored (the tag's mark, and this process's check).
    it('a load that began before invalidateTags: a caller after the invalidation runs its own load; the old value is not stored', async () => {
      const app = await createToolkitApp({ target, keyPrefix: prefix(), cache: { beta: 0 } });
      const cache = app.get(CacheService);
      let db = 'old';
      let calls = 0;
      let open!: () => void;
      const gate = new Promise<void>((r) => (open = r));
      const loader = async () => {
        calls++;
        const read = db;
        await gate;
        return read;
      };
      const before = cache.getOrSet('p', loader, { tags: ['products'] });
      await sleep(20);
      db = 'new';
      await cache.invalidateTags('products');
      const after = cache.getOrSet('p', loader, { tags: ['products'] });
      expect(await cache.get('p')).toBeUndefined();
      await sleep(20);
      open();
      expect(await Promise.all([before, after])).toEqual(['old', 'new']);
      expect(calls).toBe(2);
      // what the caller after the invalidation loaded is stored: the next call is a hit
      expect(await cache.getOrSetWithStatus('p', loader, { tags: ['products'] })).toEqual({
        value: 'new',
        status: 'hit',
      });
      expect(calls).toBe(2);
    });
  },
);
