import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import { Controller, Get, UseInterceptors, type ExecutionContext, type LoggerService } from '@nestjs/common';
import request from 'supertest';
import { CacheService, InvalidKeyError, InvalidOptionsError, SerializationError } from '../../lib/index.js';
import { CacheTTL, HttpCacheInterceptor, KeyBuilder, RedisConnection } from '../../lib/advanced.js';
import type { RedisClient } from '../../lib/common/lua-script.js';
import { PLATFORMS, closeToolkitApps, createToolkitApp, type RedisTarget } from '../support/toolkit-app.js';

afterEach(closeToolkitApps);

const prefix = () => `rtk-sl${randomBytes(5).toString('hex')}:`;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** How a promise settled: its value, or the error's class and message. */
const settled = <T>(p: Promise<T>) =>
  p.then(
    (value) => ({ value }),
    (err: Error) => ({ error: err.constructor.name, message: err.message }),
  );

/** The 500s of the failing requests are logged by Nest: kept out of the test output. */
const quiet: LoggerService = { log() {}, error() {}, warn() {} };

describe.each(['single', 'cluster'] as const)(
  'a load shared by callers with other options, on %s',
  (target: RedisTarget) => {
    /**
     * Caller A starts a slow load of `key` with `options`; caller B asks for the same key 10 ms later (another turn, so
     * it joins A's load) with plain options. Resolves to how each settled, the number of loader calls and whether the key
     * was stored.
     */
    const shareWith = async (options: object, loaded: unknown = { x: 1 }) => {
      const keyPrefix = prefix();
      const app = await createToolkitApp({ target, keyPrefix, cache: { beta: 0 } });
      const cache = app.get(CacheService);
      const client = app.get(RedisConnection).client as RedisClient;
      let loads = 0;
      const slow = async () => {
        loads++;
        await sleep(60);
        return loaded;
      };
      const a = settled(cache.getOrSetWithStatus('k', slow, options));
      await sleep(10);
      const b = settled(
        cache.getOrSetWithStatus(
          'k',
          () => {
            loads++;
            return { x: 2 };
          },
          { ttl: 60_000 },
        ),
      );
      const result = { a: await a, b: await b, loads };
      const stored = await client.exists(new KeyBuilder(keyPrefix).key('cache', 'k'));
      return { ...result, stored, cache };
    };

    it('a ttl function returning no valid duration fails its own caller only; the joined caller gets the value', async () => {
      const { a, b, loads, stored } = await shareWith({ ttl: () => 1e17 });
      expect(a).toEqual({
        error: InvalidOptionsError.name,
        message: expect.stringMatching(/ttl function must be at most/),
      });
      expect(b).toEqual({ value: { value: { x: 1 }, status: 'miss' } });
      // one load, nothing stored under the wrong ttl
      expect([loads, stored]).toEqual([1, 0]);
    });

    it('a tags function returning an invalid tag fails its own caller only', async () => {
      const { a, b, loads, stored } = await shareWith({ tags: () => [''] });
      expect(a).toEqual({ error: InvalidKeyError.name, message: expect.stringMatching(/tag must not be empty/) });
      expect(b).toEqual({ value: { value: { x: 1 }, status: 'miss' } });
      expect([loads, stored]).toEqual([1, 0]);
    });

    it('a throwing shouldCache fails its own caller only', async () => {
      const { a, b, loads, stored } = await shareWith({
        shouldCache: () => {
          throw new Error('boom');
        },
      });
      expect(a).toEqual({ error: 'Error', message: 'boom' });
      expect(b).toEqual({ value: { value: { x: 1 }, status: 'miss' } });
      expect([loads, stored]).toEqual([1, 0]);
    });

    it('a value the serializer cannot encode fails the caller who loaded it only', async () => {
      const { a, b, loads, stored } = await shareWith({}, { n: 1n });
      expect(a).toMatchObject({ error: SerializationError.name });
      expect(b).toEqual({ value: { value: { n: 1n }, status: 'miss' } });
      expect([loads, stored]).toEqual([1, 0]);
    });

    it('good options of the first caller: both get the value, stored once under its ttl', async () => {
      const { a, b, loads, stored, cache } = await shareWith({ ttl: () => 120_000 });
      expect(a).toEqual({ value: { value: { x: 1 }, status: 'miss' } });
      expect(b).toEqual({ value: { value: { x: 1 }, status: 'miss' } });
      expect([loads, stored]).toEqual([1, 1]);
      expect(await cache.ttl('k')).toBeGreaterThan(110_000);
    });
  },
);

const slowCalls = { n: 0 };

/** A route whose ttl function reads a request header: `x-ttl: bad` makes it return more than 100 years. */
@Controller('shared')
@UseInterceptors(HttpCacheInterceptor)
class SharedController {
  @Get()
  @CacheTTL((context: ExecutionContext) =>
    context.switchToHttp().getRequest<{ headers: Record<string, string> }>().headers['x-ttl'] === 'bad' ? 1e17 : 60_000,
  )
  async get(): Promise<{ n: number }> {
    const n = ++slowCalls.n;
    await sleep(80);
    return { n };
  }
}

describe.each(PLATFORMS)('HttpCacheInterceptor requests sharing a @CacheTTL(fn) load on %s', (platform) => {
  it.each(['single', 'cluster'] as const)(
    'a bad ttl of the first request fails that request only, on %s',
    async (target) => {
      slowCalls.n = 0;
      const app = await createToolkitApp({
        target,
        keyPrefix: prefix(),
        cache: { beta: 0 },
        controllers: [SharedController],
        http: true,
        platform,
        logger: quiet,
      });
      const server = app.app.getHttpServer();
      const first = request(server)
        .get('/shared')
        .set('x-ttl', 'bad')
        .then((r) => r);
      await sleep(30);
      const second = request(server)
        .get('/shared')
        .then((r) => r);
      const [a, b] = [await first, await second];
      expect(a.status).toBe(500);
      expect([b.status, b.headers['x-cache'], b.body]).toEqual([200, 'MISS', { n: 1 }]);
      expect(slowCalls.n).toBe(1);
      // nothing was stored: the next request loads (and stores, with its good ttl)
      const third = await request(server).get('/shared').expect(200);
      expect([third.headers['x-cache'], third.body]).toEqual(['MISS', { n: 2 }]);
      const fourth = await request(server).get('/shared').expect(200);
      expect([fourth.headers['x-cache'], fourth.body]).toEqual(['HIT', { n: 2 }]);
    },
  );
});
