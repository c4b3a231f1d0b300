import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import { get } from 'node:http';
import {
  Controller,
  Get,
  HttpCode,
  NotFoundException,
  Param,
  Post,
  Query,
  Req,
  StreamableFile,
  UseInterceptors,
  type CallHandler,
  type ExecutionContext,
  type NestInterceptor,
} from '@nestjs/common';
import { APP_INTERCEPTOR } from '@nestjs/core';
import { map, type Observable } from 'rxjs';
import request from 'supertest';
import { CacheService, InvalidOptionsError } from '../../lib/index.js';
import { CacheKey, CacheTTL, HttpCacheInterceptor, KeyBuilder, RedisConnection } from '../../lib/advanced.js';
import type { RedisClient } from '../../lib/common/lua-script.js';
import { PLATFORMS, closeToolkitApps, createToolkitApp } from '../support/toolkit-app.js';

afterEach(closeToolkitApps);

const calls = { stream: 0, items: 0, post: 0, missing: 0, me: 0, global: 0, created: 0 };

@Controller('items')
@UseInterceptors(HttpCacheInterceptor)
class ItemsController {
  @Get()
  @CacheTTL(60_000)
  list(@Query('page') page: string | undefined, @Req() req: { method: string }): { page: string; n: number } {
    calls.items++;
    return { page: page ?? '1', n: calls.items + (req.method === 'GET' ? 0 : 1000) };
  }

  @Post()
  create(): { n: number } {
    calls.post++;
    return { n: calls.post };
  }

  @Get('missing/:id')
  missing(@Param('id') id: string): never {
    calls.missing++;
    throw new NotFoundException(`no ${id}`);
  }

  @Get('created')
  @HttpCode(202)
  created(): { n: number } {
    calls.created++;
    return { n: calls.created };
  }

  @Get('stream')
  stream(): StreamableFile {
    calls.stream++;
    return new StreamableFile(Buffer.from(`chunk ${calls.stream}`));
  }

  @Get('me')
  @CacheKey((req: { headers: Record<string, string | undefined> }) => `me:${req.headers['x-user'] ?? 'anon'}`)
  me(@Req() req: { headers: Record<string, string | undefined> }): { user: string; n: number } {
    calls.me++;
    return { user: req.headers['x-user'] ?? 'anon', n: calls.me };
  }
}

@Controller('global')
class GlobalController {
  @Get()
  get(): { n: number } {
    calls.global++;
    return { n: calls.global };
  }
}

/** An interceptor that changes the value: it must get the value, not the stored JSON text, on a hit. */
class WrapInterceptor implements NestInterceptor {
  intercept(_context: ExecutionContext, next: CallHandler): Observable<unknown> {
    return next.handle().pipe(map((data: unknown) => ({ data })));
  }
}

const bodies = { json: 0, text: 0, count: 0, wrapped: 0 };

@Controller('bodies')
@UseInterceptors(HttpCacheInterceptor)
class BodiesController {
  @Get('json')
  json(): { n: number; when: Date; list: (string | null)[] } {
    bodies.json++;
    return { n: bodies.json, when: new Date(0), list: ['a', null] };
  }

  @Get('text')
  text(): string {
    bodies.text++;
    return `text ${bodies.text}`;
  }

  @Get('count')
  count(): number {
    bodies.count++;
    return 40 + bodies.count;
  }
}

@Controller('wrapped')
@UseInterceptors(WrapInterceptor, HttpCacheInterceptor)
class WrappedController {
  @Get()
  get(): { n: number } {
    bodies.wrapped++;
    return { n: bodies.wrapped };
  }
}

describe.each(PLATFORMS)('HttpCacheInterceptor on %s', (platform) => {
  beforeEach(() => {
    for (const k of Object.keys(calls) as (keyof typeof calls)[]) calls[k] = 0;
  });

  it('HIT for the same URL and query, MISS for another; non-GET, errors and non-2xx never cached; key by user', async () => {
    const app = await createToolkitApp({
      keyPrefix: `rtk-h${randomBytes(4).toString('hex')}:`,
      cache: { defaultTtl: 60_000, beta: 0 },
      controllers: [ItemsController],
      http: true,
      platform,
    });
    const server = app.app.getHttpServer();
    const first = await request(server).get('/items?page=2').expect(200);
    expect(first.headers['x-cache']).toBe('MISS');
    expect(first.body).toEqual({ page: '2', n: 1 });
    const again = await request(server).get('/items?page=2').expect(200);
    expect(again.headers['x-cache']).toBe('HIT');
    expect(again.body).toEqual({ page: '2', n: 1 });
    const other = await request(server).get('/items?page=3').expect(200);
    expect(other.headers['x-cache']).toBe('MISS');
    expect(other.body).toEqual({ page: '3', n: 2 });
    expect(calls.items).toBe(2);

    // POST goes through every time, without the header
    for (let i = 1; i <= 2; i++) {
      const post = await request(server).post('/items').expect(201);
      expect(post.body).toEqual({ n: i });
      expect(post.headers['x-cache']).toBeUndefined();
    }
    expect(calls.post).toBe(2);

    // errors are never cached
    await request(server).get('/items/missing/1').expect(404);
    await request(server).get('/items/missing/1').expect(404);
    expect(calls.missing).toBe(2);

    // a non-200 2xx set by @HttpCode is applied after the handler: it is cached and keeps its code
    expect((await request(server).get('/items/created').expect(202)).headers['x-cache']).toBe('MISS');
    expect((await request(server).get('/items/created').expect(202)).headers['x-cache']).toBe('HIT');
    expect(calls.created).toBe(1);

    // streamed responses are never cached
    expect((await request(server).get('/items/stream').buffer(true).expect(200)).headers['x-cache']).toBe('MISS');
    expect((await request(server).get('/items/stream').buffer(true).expect(200)).headers['x-cache']).toBe('MISS');
    expect(calls.stream).toBe(2);

    // per-user key: one entry per user, same URL
    expect((await request(server).get('/items/me').set('x-user', 'ann').expect(200)).body).toEqual({
      user: 'ann',
      n: 1,
    });
    expect((await request(server).get('/items/me').set('x-user', 'bob').expect(200)).body).toEqual({
      user: 'bob',
      n: 2,
    });
    const annAgain = await request(server).get('/items/me').set('x-user', 'ann').expect(200);
    expect(annAgain.headers['x-cache']).toBe('HIT');
    expect(annAgain.body).toEqual({ user: 'ann', n: 1 });
    expect(calls.me).toBe(2);
  });

  it('applies globally through APP_INTERCEPTOR', async () => {
    const app = await createToolkitApp({
      keyPrefix: `rtk-h${randomBytes(4).toString('hex')}:`,
      cache: { defaultTtl: 60_000, beta: 0 },
      controllers: [GlobalController],
      providers: [{ provide: APP_INTERCEPTOR, useClass: HttpCacheInterceptor }],
      http: true,
      platform,
    });
    const server = app.app.getHttpServer();
    expect((await request(server).get('/global').expect(200)).headers['x-cache']).toBe('MISS');
    const hit = await request(server).get('/global').expect(200);
    expect(hit.headers['x-cache']).toBe('HIT');
    expect(hit.body).toEqual({ n: 1 });
    expect(calls.global).toBe(1);
  });

  it.each(['single', 'cluster'] as const)(
    'a URL too long for a key is keyed by its hash: 200, HIT for the same URL, MISS for another (%s)',
    async (target) => {
      const keyPrefix = `rtk-h${randomBytes(4).toString('hex')}:`;
      const app = await createToolkitApp({
        target,
        keyPrefix,
        cache: { defaultTtl: 60_000, beta: 0 },
        controllers: [ItemsController],
        http: true,
        platform,
      });
      const server = app.app.getHttpServer();
      const long = (c: string) => `/items?page=${c.repeat(1100)}`;
      const miss = await request(server).get(long('a')).expect(200);
      expect([miss.headers['x-cache'], miss.body]).toEqual(['MISS', { page: 'a'.repeat(1100), n: 1 }]);
      const hit = await request(server).get(long('a')).expect(200);
      expect([hit.headers['x-cache'], hit.body]).toEqual(['HIT', { page: 'a'.repeat(1100), n: 1 }]);
      const other = await request(server).get(long('b')).expect(200);
      expect([other.headers['x-cache'], other.body]).toEqual(['MISS', { page: 'b'.repeat(1100), n: 2 }]);
      // escaped characters (3 bytes each once escaped in the key) do not matter: the limit is on the URL
      const braces = `/items?page=${'%7B'.repeat(400)}`;
      expect((await request(server).get(braces).expect(200)).headers['x-cache']).toBe('MISS');
      expect((await request(server).get(braces).expect(200)).headers['x-cache']).toBe('HIT');
      expect(calls.items).toBe(3);

      // the key keeps the URL's first 256 characters, so a pattern of the path still reaches it
      const client = app.get(RedisConnection).client as RedisClient;
      const stored = new KeyBuilder(keyPrefix).key(
        'cache',
        `http:${long('a').slice(0, 256)}#${KeyBuilder.hash(long('a'))}`,
      );
      expect(await client.exists(stored)).toBe(1);
      // a URL with a '#' is hashed too: it cannot name the entry of a long URL
      const address = server.address() as { port: number };
      const forged = await rawGet(address.port, `${long('a').slice(0, 256)}#${KeyBuilder.hash(long('a'))}`);
      expect([forged.status, forged.cache]).toEqual([200, 'MISS']);
      expect(calls.items).toBe(4);
      expect(await app.get(CacheService).invalidatePattern('http:/items*')).toBe(4);
      expect((await request(server).get(long('a')).expect(200)).headers['x-cache']).toBe('MISS');
    },
  );

  it('keys a URL the same on every request: as it is up to 256 characters and past them, hashed with a #', async () => {
    const keyPrefix = `rtk-h${randomBytes(4).toString('hex')}:`;
    const app = await createToolkitApp({
      keyPrefix,
      cache: { defaultTtl: 60_000, beta: 0 },
      controllers: [ItemsController],
      http: true,
      platform,
    });
    const server = app.app.getHttpServer();
    const { port } = server.address() as { port: number };
    const client = app.get(RedisConnection).client as RedisClient;
    const keys = new KeyBuilder(keyPrefix);
    // the interceptor keeps the keys of URLs of up to 256 characters in a memo: the same key on both sides of that
    const urls = [256, 257].map((length) => `/items?page=${'x'.repeat(length - 12)}`);
    const fragment = '/items?page=f#part';
    const keyed = [...urls.map((url) => `http:${url}`), `http:/items?page=f#${KeyBuilder.hash(fragment)}`];
    for (let round = 0; round < 3; round++) {
      const answers = [...(await Promise.all(urls.map((url) => rawGet(port, url)))), await rawGet(port, fragment)];
      expect(answers).toEqual(Array(3).fill({ status: 200, cache: round === 0 ? 'MISS' : 'HIT' }));
    }
    for (const key of keyed) expect(await client.exists(keys.key('cache', key))).toBe(1);
    expect(calls.items).toBe(3);
  });
});

/** A GET sent as written (supertest drops a `#...` part of the path). */
function rawGet(port: number, path: string): Promise<{ status: number | undefined; cache: unknown }> {
  return new Promise((resolve, reject) => {
    get({ host: '127.0.0.1', port, path }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode, cache: res.headers['x-cache'] }));
    }).on('error', reject);
  });
}

describe.each(PLATFORMS)('HttpCacheInterceptor answers on %s', (platform) => {
  beforeEach(() => {
    for (const k of Object.keys(bodies) as (keyof typeof bodies)[]) bodies[k] = 0;
  });

  it('a hit is sent exactly as the miss was: body, status and content type, for objects, strings and numbers', async () => {
    const app = await createToolkitApp({
      keyPrefix: `rtk-h${randomBytes(4).toString('hex')}:`,
      cache: { defaultTtl: 60_000, beta: 0 },
      controllers: [BodiesController, WrappedController],
      http: true,
      platform,
    });
    const server = app.app.getHttpServer();
    for (const path of ['/bodies/json', '/bodies/text', '/bodies/count']) {
      const miss = await request(server).get(path).expect(200);
      const hit = await request(server).get(path).expect(200);
      expect([miss.headers['x-cache'], hit.headers['x-cache']]).toEqual(['MISS', 'HIT']);
      expect(hit.text).toBe(miss.text);
      expect(hit.headers['content-type']).toBe(miss.headers['content-type']);
    }
    expect((await request(server).get('/bodies/json')).text).toBe(
      '{"n":1,"when":"1970-01-01T00:00:00.000Z","list":["a",null]}',
    );
    expect((await request(server).get('/bodies/text')).text).toBe('text 1');
    expect((await request(server).get('/bodies/count')).text).toBe('41');
    expect(bodies).toEqual({ json: 1, text: 1, count: 1, wrapped: 0 });

    // behind an interceptor that changes the value, that interceptor gets the value on a hit as on a miss
    const miss = await request(server).get('/wrapped').expect(200);
    const hit = await request(server).get('/wrapped').expect(200);
    expect([miss.headers['x-cache'], miss.body, hit.headers['x-cache'], hit.body]).toEqual([
      'MISS',
      { data: { n: 1 } },
      'HIT',
      { data: { n: 1 } },
    ]);
    expect(bodies.wrapped).toBe(1);
  });

  it('answers an L1 hit as a Redis hit: same body and header, the handler run once, every read counted', async () => {
    const app = await createToolkitApp({
      keyPrefix: `rtk-h${randomBytes(4).toString('hex')}:`,
      cache: { defaultTtl: 60_000, beta: 0, l1: { max: 100, ttl: 60_000 } },
      controllers: [BodiesController, WrappedController],
      http: true,
      platform,
    });
    const server = app.app.getHttpServer();
    for (const path of ['/bodies/json', '/bodies/text', '/bodies/count', '/wrapped']) {
      const miss = await request(server).get(path).expect(200);
      const hits = [await request(server).get(path).expect(200), await request(server).get(path).expect(200)];
      expect([miss.headers['x-cache'], ...hits.map((h) => h.headers['x-cache'])]).toEqual(['MISS', 'HIT', 'HIT']);
      for (const hit of hits) {
        expect(hit.text).toBe(miss.text);
        expect(hit.headers['content-type']).toBe(miss.headers['content-type']);
      }
    }
    expect(bodies).toEqual({ json: 1, text: 1, count: 1, wrapped: 1 });
    expect(app.get(CacheService).stats()).toMatchObject({ hits: 8, misses: 4, loads: 4 });
  });

  if (platform === 'express') {
    /** An app serving BodiesController, with its Express instance (to read and change its ETag settings). */
    const expressApp = async (keyPrefix: string) => {
      const app = await createToolkitApp({
        keyPrefix,
        cache: { defaultTtl: 60_000, beta: 0 },
        controllers: [BodiesController],
        http: true,
        platform,
      });
      const express = app.app.getHttpAdapter().getInstance() as {
        get(name: string): unknown;
        set(name: string, value: unknown): void;
      };
      return { app, express };
    };

    it("stores Express's ETag with the JSON text: a hit sends it unhashed, 304 on a match", async () => {
      const keyPrefix = `rtk-h${randomBytes(4).toString('hex')}:`;
      const { app, express } = await expressApp(keyPrefix);
      // the same built-in weak ETag function, counted
      const weak = express.get('etag fn') as (body: string, encoding?: string) => string;
      let hashed = 0;
      express.set('etag fn', (body: string, encoding?: string) => {
        hashed++;
        return weak(body, encoding);
      });
      const server = app.app.getHttpServer();
      const miss = await request(server).get('/bodies/json').expect(200);
      const hit = await request(server).get('/bodies/json').expect(200);
      const expected = weak(miss.text, 'utf8');
      expect(expected).toMatch(/^W\/"/);
      expect([miss.headers.etag, hit.headers['x-cache'], hit.headers.etag, hit.text]).toEqual([
        expected,
        'HIT',
        expected,
        miss.text,
      ]);
      const stored = await (app.get(RedisConnection).client as RedisClient).get(
        new KeyBuilder(keyPrefix).key('cache', 'http:/bodies/json'),
      );
      // the entry's payload is the stored text as it is (a string value: cache.entry.ts)
      expect(stored?.slice(stored.indexOf('\n') + 1)).toBe(`e${expected}\n${miss.text}`);
      const notModified = await request(server).get('/bodies/json').set('If-None-Match', expected).expect(304);
      expect([notModified.headers['x-cache'], notModified.text]).toEqual(['HIT', '']);
      // hashed once, when the miss was stored; a string body (no stored ETag) is hashed by Express as before
      expect(hashed).toBe(1);
      await request(server).get('/bodies/text').expect(200);
      await request(server).get('/bodies/text').expect(200);
      expect([hashed, bodies.json, bodies.text]).toEqual([3, 1, 1]);
    });

    it('sends a stored ETag only to an app of the same ETag kind; none with ETags off', async () => {
      const keyPrefix = `rtk-h${randomBytes(4).toString('hex')}:`;
      const boot = async (etag: boolean | 'strong') => {
        const { app, express } = await expressApp(keyPrefix);
        express.set('etag', etag);
        return { server: app.app.getHttpServer(), etagFn: express.get('etag fn') as (b: string) => string };
      };
      const weak = await boot(true);
      const strong = await boot('strong');
      const off = await boot(false);
      const miss = await request(weak.server).get('/bodies/json').expect(200);
      expect(miss.headers.etag).toMatch(/^W\//);
      // the entry holds a weak ETag: the strong app's hit gets Express's own strong one
      const strongHit = await request(strong.server).get('/bodies/json').expect(200);
      expect([strongHit.headers['x-cache'], strongHit.text]).toEqual(['HIT', miss.text]);
      expect(strongHit.headers.etag).toBe(strong.etagFn(miss.text));
      expect(strongHit.headers.etag).toMatch(/^"/);
      const offHit = await request(off.server).get('/bodies/json').expect(200);
      expect([offHit.headers['x-cache'], offHit.text, offHit.headers.etag]).toEqual(['HIT', miss.text, undefined]);
      expect(bodies.json).toBe(1);
    });

    it("keeps Express's json spaces on a hit", async () => {
      const app = await createToolkitApp({
        keyPrefix: `rtk-h${randomBytes(4).toString('hex')}:`,
        cache: { defaultTtl: 60_000, beta: 0 },
        controllers: [BodiesController],
        http: true,
        platform,
      });
      (app.app.getHttpAdapter().getInstance() as { set(name: string, value: unknown): void }).set('json spaces', 2);
      const server = app.app.getHttpServer();
      const miss = await request(server).get('/bodies/json').expect(200);
      const hit = await request(server).get('/bodies/json').expect(200);
      expect(miss.text).toContain('\n  "n": 1');
      expect([hit.headers['x-cache'], hit.text]).toEqual(['HIT', miss.text]);
    });
  }
});

describe('HttpCacheInterceptor decorators', () => {
  it('refuse a bad ttl or key at declaration', () => {
    expect(() => CacheTTL(-1)).toThrow(/ttl/);
    expect(() => CacheKey(42 as never)).toThrow(/key/);
  });

  it('@CacheTTL refuses at declaration what getOrSet refuses, and accepts what it accepts', () => {
    // before, 1e17 passed here and at bootstrap, then every GET of the route answered 500
    expect(() => CacheTTL(1e17)).toThrow(InvalidOptionsError);
    expect(() => CacheTTL(1e17)).toThrow(
      /@CacheTTL: ttl must be at most 3153600000000 ms \(100 years\), got 100000000000000000/,
    );
    for (const bad of [0, -1, Number.NaN, '5' as never]) {
      expect(() => CacheTTL(bad)).toThrow(/@CacheTTL: ttl must be a positive number of milliseconds/);
    }
    expect(() => CacheTTL(Number.POSITIVE_INFINITY)).toThrow(/@CacheTTL: ttl must be at most/);
    for (const good of [0.5, 1_500.5, 3_153_600_000_000, () => 1e17]) expect(() => CacheTTL(good)).not.toThrow();
  });
});

const fractionCalls = { n: 0 };

@Controller('fraction')
@UseInterceptors(HttpCacheInterceptor)
class FractionController {
  @Get()
  @CacheTTL(60_000.5)
  get(): { n: number } {
    return { n: ++fractionCalls.n };
  }
}

describe.each(PLATFORMS)('@CacheTTL with a fraction of a ms on %s', (platform) => {
  it('is rounded up as getOrSet rounds it: MISS, then HIT, fresh for a minute', async () => {
    fractionCalls.n = 0;
    const keyPrefix = `rtk-h${randomBytes(4).toString('hex')}:`;
    const app = await createToolkitApp({
      keyPrefix,
      cache: { beta: 0 },
      controllers: [FractionController],
      http: true,
      platform,
    });
    const server = app.app.getHttpServer();
    expect((await request(server).get('/fraction').expect(200)).headers['x-cache']).toBe('MISS');
    const hit = await request(server).get('/fraction').expect(200);
    expect([hit.headers['x-cache'], hit.body, fractionCalls.n]).toEqual(['HIT', { n: 1 }, 1]);
    expect(await app.get(CacheService).ttl('http:/fraction')).toBeGreaterThan(55_000);
  });
});
