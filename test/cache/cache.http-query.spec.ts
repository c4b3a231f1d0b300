import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import { Controller, Get, Query } from '@nestjs/common';
import { APP_INTERCEPTOR } from '@nestjs/core';
import { Redis } from 'ioredis';
import request from 'supertest';
import { InvalidOptionsError } from '../../lib/index.js';
import { CacheKey, HttpCacheInterceptor } from '../../lib/advanced.js';
import { trackForCleanup } from '../support/private-servers.js';
import { scanAll } from '../support/scan.js';
import { sharedServers } from '../support/shared-servers.js';
import { PLATFORMS, type Platform, closeToolkitApps, createToolkitApp } from '../support/toolkit-app.js';

/**
 * Redis filled by an attacker through the URL cache: its default key is the whole URL, so `?x=<random>` on a cached
 * route makes one Redis entry per request. `@CacheKey({ query: [...] })` keys a route by the query parameters listed
 * only. The default keying is unchanged (existing entries keep their keys).
 */

afterEach(closeToolkitApps);

/**
 * `@CacheKey({ query })`. Before it existed @CacheKey refused an object at declaration (InvalidOptionsError), which
 * would stop this file from loading: then the route is left with its default key (the whole URL), as an app had no
 * other choice, and the cases below fail on their assertions.
 */
function keyByQuery(names: string[]): MethodDecorator {
  try {
    return CacheKey({ query: names } as never) as MethodDecorator;
  } catch {
    return () => undefined;
  }
}

const calls = { list: 0, none: 0, plain: 0 };

@Controller('q')
class QueryController {
  @Get('list')
  @keyByQuery(['page', 'sort'])
  list(@Query('page') page?: string, @Query('sort') sort?: string): { page: string; sort: string; n: number } {
    return { page: page ?? '-', sort: sort ?? '-', n: ++calls.list };
  }

  @Get('none')
  @keyByQuery([])
  none(): { n: number } {
    return { n: ++calls.none };
  }

  @Get('plain')
  plain(): { n: number } {
    return { n: ++calls.plain };
  }
}

async function queryApp(platform: Platform) {
  const keyPrefix = `rtk-hq${randomBytes(4).toString('hex')}:`;
  const app = await createToolkitApp({
    keyPrefix,
    cache: { defaultTtl: 60_000, beta: 0 },
    controllers: [QueryController],
    providers: [{ provide: APP_INTERCEPTOR, useClass: HttpCacheInterceptor }],
    http: true,
    platform,
  });
  const redis = trackForCleanup(new Redis(sharedServers().single.url));
  /** The entry keys of this app under `http:<path>`, as stored (`:` escaped as %3A), sorted. */
  const entries = async (path: string) =>
    (await scanAll(redis, `${keyPrefix}cache:http%3A${path}*`)).map((k) => k.slice(keyPrefix.length)).sort();
  return { http: request(app.app.getHttpServer()), entries };
}

const seen = (res: request.Response) => [res.headers['x-cache'], res.body];

describe.each(PLATFORMS)('@CacheKey({ query }) on %s', (platform) => {
  beforeEach(() => {
    calls.list = 0;
    calls.none = 0;
    calls.plain = 0;
  });

  it('200 requests with a random extra parameter make one Redis entry and one handler call', async () => {
    const { http, entries } = await queryApp(platform);
    const answers: request.Response[] = [];
    for (let i = 0; i < 200; i++) {
      answers.push(await http.get(`/q/list?page=2&x=${randomBytes(8).toString('hex')}`).expect(200));
    }
    // before: 200 entries, 200 handler calls, every answer a MISS
    expect(await entries('/q/list')).toEqual(['cache:http%3A/q/list?page=2']);
    expect(calls.list).toBe(1);
    expect(answers.map(seen)).toEqual([
      ['MISS', { page: '2', sort: '-', n: 1 }],
      ...Array(199).fill(['HIT', { page: '2', sort: '-', n: 1 }]),
    ]);
  });

  it('the listed parameters still key entries apart, whatever their order or encoding; the rest is ignored', async () => {
    const { http, entries } = await queryApp(platform);
    const ask = async (query: string) => seen(await http.get(`/q/list${query}`).expect(200));
    expect([
      await ask('?page=1&sort=name'),
      await ask('?sort=name&utm_source=mail&page=1'), // reordered, one more parameter: the same entry
      await ask('?page=1'),
      await ask('?page=2&sort=name'),
      await ask('?page=1&sort=a%20b'),
      await ask('?sort=a+b&page=1'), // the same value, encoded otherwise
      await ask(''),
      await ask('?x=1'), // nothing listed: the path's entry
    ]).toEqual([
      ['MISS', { page: '1', sort: 'name', n: 1 }],
      ['HIT', { page: '1', sort: 'name', n: 1 }],
      ['MISS', { page: '1', sort: '-', n: 2 }],
      ['MISS', { page: '2', sort: 'name', n: 3 }],
      ['MISS', { page: '1', sort: 'a b', n: 4 }],
      ['HIT', { page: '1', sort: 'a b', n: 4 }],
      ['MISS', { page: '-', sort: '-', n: 5 }],
      ['HIT', { page: '-', sort: '-', n: 5 }],
    ]);
    expect(await entries('/q/list')).toEqual([
      'cache:http%3A/q/list',
      'cache:http%3A/q/list?page=1',
      'cache:http%3A/q/list?page=1&sort=a%2520b', // the % escaped as stored
      'cache:http%3A/q/list?page=1&sort=name',
      'cache:http%3A/q/list?page=2&sort=name',
    ]);
  });

  it('query: [] keys by the path alone', async () => {
    const { http, entries } = await queryApp(platform);
    const answers = [await http.get('/q/none?a=1').expect(200), await http.get('/q/none?b=2').expect(200)];
    expect(answers.map(seen)).toEqual([
      ['MISS', { n: 1 }],
      ['HIT', { n: 1 }],
    ]);
    expect(await entries('/q/none')).toEqual(['cache:http%3A/q/none']);
  });

  it('a request with credentials still bypasses it (the key is the same for every user)', async () => {
    const { http } = await queryApp(platform);
    const res = await http.get('/q/list?page=1').set('Authorization', 'Bearer a').expect(200);
    expect(seen(res)).toEqual(['BYPASS', { page: '1', sort: '-', n: 1 }]);
  });

  it('a route without it keeps its default key: the whole URL', async () => {
    const { http, entries } = await queryApp(platform);
    await http.get('/q/plain?x=1').expect(200);
    await http.get('/q/plain?x=2').expect(200);
    expect(await entries('/q/plain')).toEqual(['cache:http%3A/q/plain?x=1', 'cache:http%3A/q/plain?x=2']);
    expect(calls.plain).toBe(2);
  });
});

describe('@CacheKey({ query }) declaration', () => {
  it('refuses a misspelt option, a query that is not a list of names, and an array', () => {
    const declare = (options: unknown) => () => CacheKey(options as never);
    expect(declare({ qurey: ['page'] })).toThrow(InvalidOptionsError);
    expect(declare({ qurey: ['page'] })).toThrow('did you mean query?');
    expect(declare({ query: 'page' })).toThrow(InvalidOptionsError);
    expect(declare({ query: [''] })).toThrow(InvalidOptionsError);
    expect(declare({ query: [1] })).toThrow(InvalidOptionsError);
    expect(declare(['page'])).toThrow(InvalidOptionsError);
    expect(declare({})).toThrow(InvalidOptionsError);
  });
});
