import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import { Controller, Get, Injectable, Param, UseInterceptors } from '@nestjs/common';
import request from 'supertest';
import { Cacheable, CachePut, CacheService, InvalidOptionsError } from '../../lib/index.js';
import { CacheIf, CacheTTL, HttpCacheInterceptor, KeyBuilder, RedisConnection } from '../../lib/advanced.js';
import type { RedisClient } from '../../lib/common/lua-script.js';
import { PLATFORMS, closeToolkitApps, createToolkitApp, type RedisTarget } from '../support/toolkit-app.js';

afterEach(closeToolkitApps);

const prefix = () => `rtk-v${randomBytes(5).toString('hex')}:`;
/** The Redis key of cache key `key` (escaped as KeyBuilder does). */
const entry = (keyPrefix: string, key: string) => new KeyBuilder(keyPrefix).key('cache', key);

interface Page {
  id: string;
  final: boolean;
  items: string[];
}
const page = (id: string): Page => ({ id, final: id.startsWith('f'), items: id.startsWith('e') ? [] : [id] });

@Injectable()
class Pages {
  calls = 0;

  @Cacheable({
    key: (id: string) => `page:${id}`,
    ttl: (p: Page, id: string) => (p.final && id !== '' ? 600_000 : 5_000),
    shouldCache: (p: Page) => p.items.length > 0,
  })
  async find(id: string): Promise<Page> {
    this.calls++;
    return page(id);
  }

  @CachePut({
    key: (id: string) => `put:${id}`,
    ttl: (p: Page) => (p.final ? 600_000 : 5_000),
    shouldCache: (p: Page) => p.items.length > 0,
  })
  async put(id: string): Promise<Page> {
    this.calls++;
    return page(id);
  }
}

const httpCalls = { n: 0 };

@Controller('pages')
@UseInterceptors(HttpCacheInterceptor)
class PagesController {
  @Get(':id')
  @CacheTTL((_context, body: Page) => (body.final ? 600_000 : 5_000))
  @CacheIf((body: Page) => body.items.length > 0)
  get(@Param('id') id: string): Page {
    httpCalls.n++;
    return page(id);
  }
}

describe.each(['single', 'cluster'] as const)('ttl and "do not cache" from the value on %s', (target: RedisTarget) => {
  it('getOrSet: ttl as a function of the value; shouldCache false returns the value uncached', async () => {
    const keyPrefix = prefix();
    const app = await createToolkitApp({ target, keyPrefix });
    const cache = app.get(CacheService);
    const client = app.get(RedisConnection).client as RedisClient;
    const ttl = (p: Page) => (p.final ? 600_000 : 5_000);
    const shouldCache = (p: Page) => p.items.length > 0;
    let loads = 0;
    const load = (id: string) => () => {
      loads++;
      return page(id);
    };
    expect(await cache.getOrSet('final', load('final'), { ttl, shouldCache })).toEqual(page('final'));
    expect(await cache.getOrSet('draft', load('draft'), { ttl, shouldCache })).toEqual(page('draft'));
    expect(await client.pttl(`${keyPrefix}cache:final`)).toBeGreaterThan(590_000);
    const draftTtl = await client.pttl(`${keyPrefix}cache:draft`);
    expect(draftTtl).toBeGreaterThan(0);
    expect(draftTtl).toBeLessThanOrEqual(5_000);
    // an empty page is returned to every caller but never stored: each call loads again
    expect(await cache.getOrSetWithStatus('empty', load('empty'), { ttl, shouldCache })).toEqual({
      value: page('empty'),
      status: 'miss',
    });
    expect(await cache.getOrSet('empty', load('empty'), { ttl, shouldCache })).toEqual(page('empty'));
    expect(await client.exists(`${keyPrefix}cache:empty`)).toBe(0);
    expect(loads).toBe(4);
    expect(await cache.getOrSetWithStatus('final', load('final'), { ttl, shouldCache })).toMatchObject({
      status: 'hit',
    });
    expect(loads).toBe(4);
    // a ttl function returning no valid duration fails the call with a clear error and stores nothing
    await expect(cache.getOrSet('bad', () => 1, { ttl: () => -5 })).rejects.toThrow(
      /result of the ttl function must be a positive number/,
    );
    expect(await client.exists(`${keyPrefix}cache:bad`)).toBe(0);
    await expect(cache.getOrSet('bad', () => 1, { shouldCache: true as never })).rejects.toThrow(InvalidOptionsError);
  });

  it('@Cacheable and @CachePut: ttl and shouldCache from the result and the arguments', async () => {
    const keyPrefix = prefix();
    const app = await createToolkitApp({ target, keyPrefix, providers: [Pages] });
    const pages = app.get(Pages);
    const client = app.get(RedisConnection).client as RedisClient;
    await pages.find('final');
    await pages.find('final');
    await pages.find('draft');
    await pages.find('empty');
    await pages.find('empty');
    expect(pages.calls).toBe(4);
    expect(await client.pttl(entry(keyPrefix, 'page:final'))).toBeGreaterThan(590_000);
    expect(await client.pttl(entry(keyPrefix, 'page:draft'))).toBeGreaterThan(0);
    expect(await client.pttl(entry(keyPrefix, 'page:draft'))).toBeLessThanOrEqual(5_000);
    expect(await client.exists(entry(keyPrefix, 'page:empty'))).toBe(0);
    await pages.put('final');
    await pages.put('empty');
    expect(await client.pttl(entry(keyPrefix, 'put:final'))).toBeGreaterThan(590_000);
    expect(await client.exists(entry(keyPrefix, 'put:empty'))).toBe(0);
  });
});

describe.each(PLATFORMS)('HttpCacheInterceptor with @CacheTTL(fn) and @CacheIf on %s', (platform) => {
  it('the ttl comes from the response body; a body refused by @CacheIf is sent uncached (MISS)', async () => {
    httpCalls.n = 0;
    const keyPrefix = prefix();
    const app = await createToolkitApp({ keyPrefix, controllers: [PagesController], http: true, platform });
    const client = app.get(RedisConnection).client as RedisClient;
    const server = app.app.getHttpServer();
    const get = async (id: string) => {
      const res = await request(server).get(`/pages/${id}`).expect(200);
      return [res.headers['x-cache'], res.body] as const;
    };
    expect(await get('final')).toEqual(['MISS', page('final')]);
    expect(await get('final')).toEqual(['HIT', page('final')]);
    expect(await get('draft')).toEqual(['MISS', page('draft')]);
    expect(await get('empty')).toEqual(['MISS', page('empty')]);
    expect(await get('empty')).toEqual(['MISS', page('empty')]);
    expect(httpCalls.n).toBe(4);
    expect(await client.pttl(entry(keyPrefix, 'http:/pages/final'))).toBeGreaterThan(590_000);
    expect(await client.pttl(entry(keyPrefix, 'http:/pages/draft'))).toBeGreaterThan(0);
    expect(await client.pttl(entry(keyPrefix, 'http:/pages/draft'))).toBeLessThanOrEqual(5_000);
    expect(await client.exists(entry(keyPrefix, 'http:/pages/empty'))).toBe(0);
  });

  it('refuses a bad @CacheIf at declaration', () => {
    expect(() => CacheIf('yes' as never)).toThrow(/predicate must be a function/);
    expect(() => CacheTTL('5' as never)).toThrow(/ttl/);
  });
});
