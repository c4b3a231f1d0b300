/**
 * A bound on the size of a cached value (`cache.maxValueBytes`, by default from the server's
 * `client-output-buffer-limit normal`): an entry whose GET reply is past that limit can be written (a write's reply is
 * small) but every read of it makes Redis close the connection, failing every call in flight on it. Over the bound,
 * set / mset refuse the value (CacheValueTooLargeError); getOrSet, @Cacheable and HttpCacheInterceptor return it
 * without storing it (counted in stats().tooLarge, warned). docs/cache.md, "Size of a value".
 */
import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import { Controller, Get, Injectable, UseInterceptors } from '@nestjs/common';
import { Redis } from 'ioredis';
import request from 'supertest';
import { Cacheable, CacheService, RateLimitService, RedisToolkitError, SerializationError } from '../../lib/index.js';
import { CacheValueTooLargeError, HttpCacheInterceptor, RedisConnection } from '../../lib/advanced.js';
import { errorOf, forRootRefusal } from '../support/errors.js';
import { useDisposableCluster } from '../support/disposable-cluster.js';
import { usePrivateRedis } from '../support/private-servers.js';
import { allLines, BOUND, LIMIT, LIMITED, limitThreeMasters, noConfigUser } from '../support/reply-limit.js';
import { closeToolkitApps, createToolkitApp, PLATFORMS, type ToolkitAppOptions } from '../support/toolkit-app.js';
import { sleep, waitFor } from '../support/wait.js';

afterEach(closeToolkitApps);

const prefix = () => `rtk-vs${randomBytes(5).toString('hex')}:`;
const policy = { limit: 1_000, ttl: 60_000 };

const about = (lines: string[]) => lines.filter((l) => /client-output-buffer-limit|maxValueBytes|size bound/.test(l));

describe('a server with `client-output-buffer-limit normal 256kb 128kb 10`', () => {
  const redis = usePrivateRedis({ args: LIMITED });
  const boot = (options: ToolkitAppOptions = {}) =>
    createToolkitApp({ target: { url: redis.server.url }, keyPrefix: prefix(), ...options });

  // Before: the set was stored, and its read made Redis close the connection, failing the read beside it and the
  // rate-limit charge in flight (both as an outage: failed open), at every read of that key.
  it('the poison pill: a value past the limit is refused at set, and the calls beside its read are not failed', async () => {
    const app = await boot();
    const cache = app.get(CacheService);
    const limits = app.get(RateLimitService);
    await cache.set('small', 'tiny');
    const refused = await errorOf(() => cache.set('big', 'x'.repeat(300_000)));
    const [read, beside, charge] = await Promise.all([
      cache.get('big'),
      cache.get('small'),
      limits.consume('r', policy),
    ]);
    expect(beside).toBe('tiny');
    expect(charge.degraded).toBeUndefined();
    expect(read).toBeUndefined();
    expect(cache.stats().failedOpen).toBe(0);
    expect(limits.stats().failedOpen).toBe(0);
    expect(refused).toMatchObject({ code: 'E_CACHE_VALUE_TOO_LARGE', key: 'big' });
  });

  it('the bound comes from the server: 4/5 of its hard limit less 128 bytes; an entry at it is stored and read back', async () => {
    const { logs, warnings, logger } = allLines();
    const keyPrefix = prefix();
    const app = await boot({ logger, keyPrefix });
    const cache = app.get(CacheService);
    const client = app.get(RedisConnection).client as Redis;
    const refused = await errorOf(() => cache.set('over', 'x'.repeat(BOUND)));
    expect(refused).toMatchObject({ code: 'E_CACHE_VALUE_TOO_LARGE', key: 'over', maxBytes: BOUND });
    expect((refused as { bytes: number }).bytes).toBeGreaterThan(BOUND);
    expect((refused as Error).message).toMatch(new RegExp(`client-output-buffer-limit normal.*${LIMIT}`));
    // an entry of exactly BOUND bytes: its header's length read from what is stored for an empty string
    await cache.set('probe', '');
    const headerBytes = Buffer.byteLength((await client.get(`${keyPrefix}cache:probe`)) as string);
    await cache.set('at', 'y'.repeat(BOUND - headerBytes));
    expect(await client.strlen(`${keyPrefix}cache:at`)).toBe(BOUND);
    const [value, beside] = await Promise.all([cache.get<string>('at'), cache.get('probe')]);
    expect(value).toHaveLength(BOUND - headerBytes);
    expect(beside).toBe('');
    expect(cache.stats()).toMatchObject({ failedOpen: 0, tooLarge: 1 });
    // read without a word: nothing logged about the limit
    expect(about([...logs, ...warnings])).toEqual([]);
  });

  it('with lazyConnect the limit is read at the first ready', async () => {
    const app = await boot({ lazyConnect: true });
    const cache = app.get(CacheService);
    // the first call opens the connection; the bound follows its ready
    expect(await cache.get('k')).toBeUndefined();
    const refused = await waitFor(
      async () =>
        ((await errorOf(() => cache.set('big', 'x'.repeat(BOUND)))) as { code?: string } | undefined)?.code ===
        'E_CACHE_VALUE_TOO_LARGE',
      3_000,
    );
    expect(refused).toBe(true);
  });

  it('cache.maxValueBytes below the server limit is the bound (no warning)', async () => {
    const { logs, warnings, logger } = allLines();
    const app = await boot({ logger, cache: { maxValueBytes: 10_000 } });
    const refused = await errorOf(() => app.get(CacheService).set('k', 'x'.repeat(10_000)));
    expect(refused).toMatchObject({ code: 'E_CACHE_VALUE_TOO_LARGE', maxBytes: 10_000 });
    expect((refused as Error).message).toMatch(/cache\.maxValueBytes/);
    expect(about([...logs, ...warnings])).toEqual([]);
  });

  it('cache.maxValueBytes above the server limit wins, with a warning at start naming both numbers', async () => {
    const { warnings, logger } = allLines();
    const app = await boot({ logger, cache: { maxValueBytes: 1_000_000 } });
    const named = about(warnings);
    expect(named).toHaveLength(1);
    expect(named[0]).toMatch(/cache\.maxValueBytes \(1000000 bytes\)/);
    expect(named[0]).toContain(String(LIMIT));
    expect(named[0]).toContain(String(BOUND));
    const cache = app.get(CacheService);
    await cache.set('k', 'x'.repeat(250_000));
    expect(cache.stats().tooLarge).toBe(0);
  });
});

describe('the limit cannot be read: no bound, one log line at start (not a warning), and the start succeeds', () => {
  describe('CONFIG refused by the ACL', () => {
    const redis = usePrivateRedis({ args: LIMITED });

    it('starts, logs once that there is no bound, and stores a value past the limit', async () => {
      const { url, admin } = await noConfigUser(redis.server);
      const { logs, warnings, logger } = allLines();
      const app = await createToolkitApp({ target: { url }, keyPrefix: prefix(), logger });
      const named = about(logs);
      expect(named).toHaveLength(1);
      expect(named[0]).toMatch(/could not read client-output-buffer-limit/);
      expect(named[0]).toMatch(/NOPERM/);
      expect(named[0]).toMatch(/no bound/);
      expect(about(warnings)).toEqual([]);
      // asked without running it (redis.acl_check_cmd): no refused CONFIG GET in ACL LOG at each start
      const log = (await admin.call('acl', 'log')) as unknown[][];
      expect(log.map((entry) => entry[entry.indexOf('object') + 1])).not.toContain('config|get');
      const cache = app.get(CacheService);
      await cache.set('big', 'x'.repeat(300_000));
      expect(cache.stats().tooLarge).toBe(0);
    });
  });

  describe('CONFIG renamed', () => {
    const redis = usePrivateRedis({
      args: [...LIMITED, '--rename-command', 'CONFIG', ''],
    });

    it('starts and logs once that there is no bound', async () => {
      const { logs, warnings, logger } = allLines();
      await createToolkitApp({ target: { url: redis.server.url }, keyPrefix: prefix(), logger });
      const named = about(logs);
      expect(named).toHaveLength(1);
      expect(named[0]).toMatch(/could not read client-output-buffer-limit/);
      expect(named[0]).toMatch(/unknown command/i);
      expect(about(warnings)).toEqual([]);
    });
  });
});

it("Redis's default (`normal 0 0 0`): no bound and nothing logged", async () => {
  const { logs, warnings, logger } = allLines();
  const app = await createToolkitApp({ keyPrefix: prefix(), logger });
  const cache = app.get(CacheService);
  await cache.set('big', 'x'.repeat(300_000));
  expect(((await cache.get('big')) as string).length).toBe(300_000);
  expect(cache.stats().tooLarge).toBe(0);
  expect(about([...logs, ...warnings])).toEqual([]);
});

describe('cache.maxValueBytes', () => {
  it('is a positive whole number of bytes, checked at start; a misspelt name is refused naming it', () => {
    expect(forRootRefusal({ cache: { maxValueBytes: 1 } })).toBeUndefined();
    expect(forRootRefusal({ cache: { maxValueBytes: 64 * 1024 * 1024 } })).toBeUndefined();
    for (const bad of [0, -1, 1.5, '1000', Number.NaN, Number.POSITIVE_INFINITY, null]) {
      const err = forRootRefusal({ cache: { maxValueBytes: bad as number } });
      expect(err).toMatchObject({ code: 'E_INVALID_OPTIONS' });
      expect((err as Error).message).toMatch(/cache\.maxValueBytes must be an integer/);
    }
    const misspelt = forRootRefusal({ cache: { maxValueByte: 1_000 } as never });
    expect((misspelt as Error).message).toMatch(
      /cache\.maxValueByte is not a known option \(did you mean cache\.maxValueBytes\?\)/,
    );
  });

  it('set and mset refuse an entry past it with CacheValueTooLargeError (UTF-8 bytes), writing nothing', async () => {
    const app = await createToolkitApp({ keyPrefix: prefix(), cache: { maxValueBytes: 1_000 } });
    const cache = app.get(CacheService);
    const refused = await errorOf(() => cache.set('big:1', 'x'.repeat(2_000)));
    expect(refused).toMatchObject({ code: 'E_CACHE_VALUE_TOO_LARGE', key: 'big:1', maxBytes: 1_000 });
    expect(refused).toBeInstanceOf(CacheValueTooLargeError);
    expect(refused).toBeInstanceOf(SerializationError); // caught with the root's names, as pubsub.maxMessageBytes'
    expect(refused).toBeInstanceOf(RedisToolkitError);
    expect((refused as Error).message).toMatch(/big:1.*\d+ bytes.*1000 bytes.*cache\.maxValueBytes/);
    expect(await cache.get('big:1')).toBeUndefined();
    // 350 characters of 3 bytes each: over 1,000 bytes, under 1,000 characters
    await expect(cache.set('euro', '€'.repeat(350))).rejects.toMatchObject({ code: 'E_CACHE_VALUE_TOO_LARGE' });
    await cache.set('euro', '€'.repeat(300));
    expect(await cache.get('euro')).toBe('€'.repeat(300));
    // mset checks every entry before writing any: one past the bound stores nothing
    const batch = await errorOf(() =>
      cache.mset<unknown>([
        { key: 'a', value: 1 },
        { key: 'huge', value: { blob: 'x'.repeat(2_000) } },
      ]),
    );
    expect(batch).toMatchObject({ code: 'E_CACHE_VALUE_TOO_LARGE', key: 'huge' });
    expect(await cache.mget(['a', 'huge'])).toEqual([undefined, undefined]);
    expect(cache.stats().tooLarge).toBe(3);
  });

  it('getOrSet returns a value past it to every caller, stores it neither in Redis nor in L1, counts and warns once', async () => {
    const { warnings, logger } = allLines();
    const keyPrefix = prefix();
    const app = await createToolkitApp({
      keyPrefix,
      logger,
      cache: { maxValueBytes: 1_000, l1: { max: 100, ttl: 60_000 } },
    });
    const cache = app.get(CacheService);
    const client = app.get(RedisConnection).client as Redis;
    let loads = 0;
    const big = async () => (loads++, 'x'.repeat(2_000));
    const first = await Promise.all([1, 2, 3].map(() => cache.getOrSetWithStatus('big:1', big)));
    expect(first).toEqual([1, 2, 3].map(() => ({ value: 'x'.repeat(2_000), status: 'miss' })));
    expect(await cache.getOrSet('big:1', big)).toBe('x'.repeat(2_000));
    expect(loads).toBe(2);
    expect(await client.exists(`${keyPrefix}cache:big%3A1`)).toBe(0);
    expect(cache.stats()).toMatchObject({ tooLarge: 2, loads: 2, errors: 0 });
    const named = warnings.filter((w) => w.includes('big:1'));
    expect(named).toHaveLength(1);
    expect(named[0]).toMatch(/not stored.*\d+ bytes.*1000 bytes.*cache\.maxValueBytes/);
    // a value under it is stored as always
    expect((await cache.getOrSetWithStatus('small', () => 'y')).status).toBe('miss');
    expect((await cache.getOrSetWithStatus('small', () => 'z')).status).toBe('hit');
  });

  it('a background refresh whose value is past it stores nothing: the stale value stays', async () => {
    const app = await createToolkitApp({ keyPrefix: prefix(), cache: { maxValueBytes: 1_000 } });
    const cache = app.get(CacheService);
    const options = { ttl: 50, staleTtl: 60_000 };
    expect(await cache.getOrSet('r', () => 'small', options)).toBe('small');
    await sleep(100);
    const big = () => 'x'.repeat(2_000);
    expect(await cache.getOrSetWithStatus('r', big, options)).toEqual({ value: 'small', status: 'stale' });
    expect(await waitFor(() => cache.stats().tooLarge === 1, 3_000)).toBe(true);
    expect(await cache.getOrSetWithStatus('r', () => 'small again', options)).toEqual({
      value: 'small',
      status: 'stale',
    });
  });

  it('@Cacheable returns a result past it uncached: the method runs each time', async () => {
    @Injectable()
    class Reports {
      calls = 0;
      @Cacheable({ key: (id: string) => `report:${id}` })
      async report(id: string): Promise<{ id: string; rows: string }> {
        this.calls++;
        return { id, rows: 'r'.repeat(2_000) };
      }
    }
    const app = await createToolkitApp({ keyPrefix: prefix(), cache: { maxValueBytes: 1_000 }, providers: [Reports] });
    const reports = app.get(Reports);
    expect(await reports.report('a')).toEqual({ id: 'a', rows: 'r'.repeat(2_000) });
    expect(await reports.report('a')).toEqual({ id: 'a', rows: 'r'.repeat(2_000) });
    expect(reports.calls).toBe(2);
    expect(app.get(CacheService).stats().tooLarge).toBe(2);
  });
});

describe.each(PLATFORMS)('HttpCacheInterceptor on %s, a response past cache.maxValueBytes', (platform) => {
  it('is sent with X-Cache: MISS and never stored; a small one is cached as before', async () => {
    const calls = { big: 0, small: 0 };
    @Controller('sized')
    @UseInterceptors(HttpCacheInterceptor)
    class SizedController {
      @Get('big')
      big(): { blob: string } {
        calls.big++;
        return { blob: 'b'.repeat(2_000) };
      }

      @Get('small')
      small(): { n: number } {
        calls.small++;
        return { n: calls.small };
      }
    }
    const app = await createToolkitApp({
      keyPrefix: prefix(),
      cache: { maxValueBytes: 1_000 },
      controllers: [SizedController],
      http: true,
      platform,
    });
    const server = app.app.getHttpServer();
    for (let i = 0; i < 2; i++) {
      const res = await request(server).get('/sized/big');
      expect(res.status).toBe(200);
      expect(res.headers['x-cache']).toBe('MISS');
      expect(res.body).toEqual({ blob: 'b'.repeat(2_000) });
    }
    expect(calls.big).toBe(2);
    const small = [await request(server).get('/sized/small'), await request(server).get('/sized/small')];
    expect(small.map((r) => r.headers['x-cache'])).toEqual(['MISS', 'HIT']);
    expect(small.map((r) => r.body)).toEqual([{ n: 1 }, { n: 1 }]);
    expect(app.get(CacheService).stats().tooLarge).toBe(2);
  });
});

describe('a cluster: the smallest limit of its masters', () => {
  const cluster = useDisposableCluster();

  it('takes the bound from the master with the smallest non-zero limit', async () => {
    const b = cluster().masters[1];
    await limitThreeMasters(cluster().masters);
    const { logs, warnings, logger } = allLines();
    const app = await createToolkitApp({
      target: { cluster: cluster().startupNodes },
      keyPrefix: prefix(),
      logger,
    });
    const cache = app.get(CacheService);
    const refused = await errorOf(() => cache.set('over', 'x'.repeat(BOUND)));
    expect(refused).toMatchObject({ code: 'E_CACHE_VALUE_TOO_LARGE', maxBytes: BOUND });
    expect((refused as Error).message).toContain(`127.0.0.1:${b.port}`);
    await cache.set('under', 'x'.repeat(BOUND - 100));
    expect(((await cache.get('under')) as string).length).toBe(BOUND - 100);
    expect(about([...logs, ...warnings])).toEqual([]);
  });
});
