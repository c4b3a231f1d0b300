/**
 * Security checks of the features driven by request data, through HTTP (supertest on a small Nest app) and a
 * private Redis whose every key can be listed: X-Forwarded-For spoofing against the rate limiter, pattern
 * invalidation confined under the prefix, and hostile keys (braces, globs, 10 KB, unicode) used as a cache key,
 * a rate-limit key and a lock resource — answered 2xx/4xx, never 500, and never writing outside the prefix.
 */
import 'reflect-metadata';
import {
  type ArgumentsHost,
  Body,
  Catch,
  Controller,
  type ExceptionFilter,
  Get,
  HttpCode,
  Post,
  UseGuards,
  type ExecutionContext,
} from '@nestjs/common';
import { APP_FILTER, HttpAdapterHost } from '@nestjs/core';
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import request from 'supertest';
import {
  CacheService,
  InvalidKeyError,
  LockService,
  RateLimitGuard,
  RateLimitService,
  SessionService,
  Throttle,
  type RateLimitOptions,
} from '../../lib/index.js';
import { trackForCleanup } from '../support/private-servers.js';
import { startRedisServer, type RedisServerHandle } from '../support/redis-server.js';
import { PLATFORMS, closeToolkitApps, createToolkitApp, type Platform } from '../support/toolkit-app.js';
import { scanAll } from '../support/scan.js';

afterEach(closeToolkitApps);

const uid = (): string => randomBytes(4).toString('hex');

async function privateServer(): Promise<{ server: RedisServerHandle; admin: Redis }> {
  const server = trackForCleanup(await startRedisServer());
  const admin = trackForCleanup(new Redis(server.url));
  return { server, admin };
}

// ---------------------------------------------------------------------------------------------------------------
// X-Forwarded-For
// ---------------------------------------------------------------------------------------------------------------

@Controller('xff')
@UseGuards(RateLimitGuard)
class XffController {
  @Get()
  @Throttle({ limit: 3, ttl: 60_000 })
  get(): { ok: true } {
    return { ok: true };
  }
}

async function xffApp(platform: Platform, rateLimit: RateLimitOptions) {
  const { server, admin } = await privateServer();
  const keyPrefix = `rtk-secx-${uid()}:`;
  const app = await createToolkitApp({
    target: { url: server.url },
    http: true,
    platform,
    keyPrefix,
    rateLimit,
    controllers: [XffController],
  });
  const counters = async () => (await scanAll(admin, `${keyPrefix}rl:*`)).length;
  return { http: request(app.app.getHttpServer()), counters };
}

describe.each(PLATFORMS)('X-Forwarded-For spoofing on %s', (platform) => {
  it('without trustProxy, forged headers from one client share one counter: the 4th request (limit 3) is 429', async () => {
    const { http, counters } = await xffApp(platform, {});
    const forged = [
      '203.0.113.1',
      '198.51.100.7, 203.0.113.2',
      '10.0.0.1',
      '::1',
      '2001:db8::1',
      'not-an-ip',
      `${'1.2.3.4, '.repeat(500)}5.6.7.8`,
    ];
    for (const [i, xff] of forged.slice(0, 3).entries()) {
      const res = await http.get('/xff').set('X-Forwarded-For', xff).expect(200);
      expect(res.headers['ratelimit']).toBe(`"default";r=${2 - i};t=60`);
    }
    for (const xff of forged.slice(3)) {
      const denied = await http.get('/xff').set('X-Forwarded-For', xff);
      expect({ xff: xff.slice(0, 30), status: denied.status }).toEqual({ xff: xff.slice(0, 30), status: 429 });
    }
    await http.get('/xff').expect(429); // and without the header: the same client
    await http.get('/xff').set('X-Real-IP', '203.0.113.50').set('Forwarded', 'for=203.0.113.51').expect(429);
    expect(await counters()).toBe(1);
  });

  it('with trustProxy: 1, the right-most hop is the client; entries left of it are ignored', async () => {
    const { http, counters } = await xffApp(platform, { trustProxy: 1 });
    // client 203.0.113.7 behind our one proxy (the test client, 127.0.0.1); the left entries are forged
    for (let i = 0; i < 3; i++) await http.get('/xff').set('X-Forwarded-For', `6.6.6.${i}, 203.0.113.7`).expect(200);
    await http.get('/xff').set('X-Forwarded-For', '1.1.1.1, 2.2.2.2, 203.0.113.7').expect(429);
    await http.get('/xff').set('X-Forwarded-For', '203.0.113.7').expect(429);
    // another right-most address is another client with its own quota
    const other = await http.get('/xff').set('X-Forwarded-For', '203.0.113.7, 203.0.113.8').expect(200);
    expect(other.headers['ratelimit']).toBe('"default";r=2;t=60');
    // only one hop is trusted: a private address as the right-most hop is the client, not skipped as a proxy
    const privateHop = await http.get('/xff').set('X-Forwarded-For', '203.0.113.7, 10.0.0.3').expect(200);
    expect(privateHop.headers['ratelimit']).toBe('"default";r=2;t=60');
    // the forged left-most entries never got a counter of their own: 203.0.113.7, .8 and 10.0.0.3
    expect(await counters()).toBe(3);
    await http.get('/xff').set('X-Forwarded-For', '6.6.6.0').expect(200); // a fresh right-most client
    expect(await counters()).toBe(4);
  });
});

// ---------------------------------------------------------------------------------------------------------------
// invalidatePattern stays under the prefix
// ---------------------------------------------------------------------------------------------------------------

describe('CacheService.invalidatePattern', () => {
  it("'*' and other hostile globs never delete a key outside the cache's own prefix", async () => {
    const { server, admin } = await privateServer();
    // A prefix with glob characters: unescaped, `rtk[1]*:cache:*` would also match `rtk1-other:cache:x`.
    const keyPrefix = 'rtk[1]*?:';
    const app = await createToolkitApp({
      target: { url: server.url },
      keyPrefix,
      session: { cookie: { secret: 's' } },
    });
    const cache = app.get(CacheService);
    const session = await app.get(SessionService).create('u');
    await app.get(RateLimitService).consume('client', { limit: 5, ttl: 60_000 });
    const foreign = [
      'foreign',
      'foreign:cache:x',
      'cache:x',
      '*',
      'rtk:cache:x',
      'rtk1-other:cache:x',
      'rtk[1]*?-other:cache:x',
      'rtkX:cache:x',
      `${keyPrefix}cachex`,
      `${keyPrefix}cach:x`,
      `${keyPrefix}other:cache:x`,
      `x${keyPrefix}cache:x`,
    ];
    for (const key of foreign) await admin.set(key, 'foreign');
    const ours = ['a', 'b:c', '{tag}', '*', '../x', '😀'];
    for (const key of ours) await cache.set(key, key);
    const before = new Set(await scanAll(admin));
    const entries = [...before].filter((k) => k.startsWith(`${keyPrefix}cache:`));
    expect(entries).toHaveLength(ours.length);

    // hostile globs first (they may delete some of our entries, never anything else), then '*' for the rest
    let deleted = 0;
    for (const pattern of ['**', '?*', '[a-z]*', '[^a]*', '\\*', '*:*', '../*', '}*{', '*]', '[', '%*', '*']) {
      deleted += await cache.invalidatePattern(pattern);
    }
    expect(deleted).toBe(ours.length);
    const after = new Set(await scanAll(admin));
    // every cache entry is gone, everything else is still there
    for (const key of ours) expect(await cache.get(key)).toBeUndefined();
    expect([...after].filter((k) => k.startsWith(`${keyPrefix}cache:`))).toEqual([]);
    expect([...after].sort()).toEqual([...before].filter((k) => !entries.includes(k)).sort());
    for (const key of foreign) expect({ key, value: await admin.get(key) }).toEqual({ key, value: 'foreign' });
    expect(await app.get(SessionService).get(session.id)).not.toBeNull();
    expect(await cache.invalidatePattern('*')).toBe(0);
  });
});

// ---------------------------------------------------------------------------------------------------------------
// Hostile keys from requests
// ---------------------------------------------------------------------------------------------------------------

/** How an app maps the toolkit's InvalidKeyError: 400 with its code (through the HTTP adapter: any platform). */
@Catch(InvalidKeyError)
class InvalidKeyFilter implements ExceptionFilter {
  constructor(private readonly adapterHost: HttpAdapterHost) {}

  catch(err: InvalidKeyError, host: ArgumentsHost): void {
    const body = { statusCode: 400, code: err.code, message: err.message };
    this.adapterHost.httpAdapter.reply(host.switchToHttp().getResponse(), body, 400);
  }
}

const bodyKey = (ctx: ExecutionContext): string =>
  String(ctx.switchToHttp().getRequest<{ body: { key?: unknown } }>().body?.key);

@Controller('hostile')
class HostileController {
  constructor(
    private readonly cache: CacheService,
    private readonly rateLimit: RateLimitService,
    private readonly locks: LockService,
  ) {}

  @Post('cache')
  @HttpCode(200)
  async cached(@Body() body: { key: string }) {
    const r = await this.cache.getOrSetWithStatus(body.key, () => `value of ${body.key.length}`, { ttl: 60_000 });
    return { status: r.status, value: r.value };
  }

  @Post('consume')
  @HttpCode(200)
  async consume(@Body() body: { key: string }) {
    const r = await this.rateLimit.consume(body.key, { limit: 2, ttl: 60_000 });
    return { allowed: r.allowed, remaining: r.remaining };
  }

  @Post('throttled')
  @HttpCode(200)
  @UseGuards(RateLimitGuard)
  @Throttle({ limit: 2, ttl: 60_000, key: bodyKey })
  throttled() {
    return { ok: true };
  }

  @Post('lock')
  @HttpCode(200)
  async lock(@Body() body: { key: string }) {
    const lock = await this.locks.tryAcquire(body.key, { ttl: 5_000 });
    if (!lock) return { acquired: false };
    const again = await this.locks.tryAcquire(body.key, { ttl: 5_000 });
    await lock.release();
    return { acquired: true, exclusive: again === null, fencingToken: lock.fencingToken };
  }
}

const HOSTILE: [string, string][] = [
  ['open brace', '{'],
  ['close brace', '}'],
  ['hash tag', '{user:1}'],
  ['inverted braces', '}{'],
  ['braces around a prefix', '{rtk}:cache:x'],
  ['star', '*'],
  ['question mark', '?'],
  ['character class', '[a-z]'],
  ['negated class', '[^a]*'],
  ['backslash', '\\'],
  ['escaped star', '\\*'],
  ['percent escapes', '%7B%7D%3A'],
  ['colons', 'a:b:c'],
  ['path traversal', '../../etc/passwd'],
  ['RESP-looking, no newline', '*3 $3 SET $1 x $1 y'],
  ['unicode', 'héllo 日本 😀'],
  ['RTL override', 'abc\u202Edef'],
  ['zero-width', 'a\u200Bb'],
  ['lone surrogate', 'x\uD800y'],
  ['1 KiB exactly', 'k'.repeat(1024)],
  ['1 KiB + 1', 'k'.repeat(1025)],
  ['1 KiB of emoji (2 KiB of UTF-8)', '😀'.repeat(256)],
  ['10 KB of braces', '{'.repeat(10 * 1024)],
  ['10 KB of globs', '*?['.repeat(3413)],
  ['10 KB mixed', `{${'x*'.repeat(5 * 1024)}}`],
  ['empty', ''],
];

/** KeyBuilder's rule: non-empty, at most 1 KiB of UTF-8, no lone surrogate (it would become U+FFFD in Redis). */
function acceptedByKeyBuilder(key: string): boolean {
  const loneSurrogate = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/.test(key);
  return key.length > 0 && Buffer.byteLength(key) <= 1024 && !loneSurrogate;
}

describe.each(PLATFORMS)('hostile keys from requests on %s', (platform) => {
  it(`${HOSTILE.length} hostile keys as cache key, rate-limit key and lock resource: 2xx/4xx, never 500, nothing outside the prefix`, async () => {
    const { server, admin } = await privateServer();
    const keyPrefix = `rtk-sech-${uid()}:`;
    const app = await createToolkitApp({
      target: { url: server.url },
      http: true,
      platform,
      keyPrefix,
      controllers: [HostileController],
      providers: [{ provide: APP_FILTER, useClass: InvalidKeyFilter }],
    });
    const http = request(app.app.getHttpServer());
    const seen: Record<string, number[]> = {};
    const note = (route: string, status: number) => (seen[route] ??= []).push(status);

    for (const [what, key] of HOSTILE) {
      const valid = acceptedByKeyBuilder(key);

      // cache key: accepted keys are stored and read back as a hit; others are InvalidKeyError → 400
      const first = await http.post('/hostile/cache').send({ key });
      note('cache', first.status);
      if (valid) {
        expect({ what, status: first.status, body: first.body }).toEqual({
          what,
          status: 200,
          body: { status: 'miss', value: `value of ${key.length}` },
        });
        const second = await http.post('/hostile/cache').send({ key });
        expect({ what, status: second.status, cache: second.body.status }).toEqual({ what, status: 200, cache: 'hit' });
      } else {
        expect({ what, status: first.status, code: first.body.code }).toEqual({
          what,
          status: 400,
          code: 'E_INVALID_KEY',
        });
      }

      // rate-limit key through the service: hashed, so any string is one counter of its own (limit 2)
      // (an empty key is InvalidKeyError → 400)
      const consumed: (boolean | number)[] = [];
      for (let i = 0; i < 3; i++) {
        const res = await http.post('/hostile/consume').send({ key });
        note('consume', res.status);
        consumed.push(res.status === 200 ? (res.body.allowed as boolean) : res.status);
      }
      expect({ what, consumed }).toEqual({ what, consumed: key === '' ? [400, 400, 400] : [true, true, false] });

      // rate-limit key through the guard (@Throttle key from the body)
      const throttled: number[] = [];
      for (let i = 0; i < 3; i++) {
        const res = await http.post('/hostile/throttled').send({ key });
        note('throttled', res.status);
        throttled.push(res.status);
      }
      expect({ what, throttled }).toEqual({ what, throttled: key === '' ? [400, 400, 400] : [200, 200, 429] });

      // lock resource
      const locked = await http.post('/hostile/lock').send({ key });
      note('lock', locked.status);
      if (valid) {
        expect({ what, status: locked.status, body: locked.body }).toEqual({
          what,
          status: 200,
          body: { acquired: true, exclusive: true, fencingToken: expect.any(Number) },
        });
      } else {
        expect({ what, status: locked.status, code: locked.body.code }).toEqual({
          what,
          status: 400,
          code: 'E_INVALID_KEY',
        });
      }
    }

    // never a 5xx, on any route
    for (const [route, statuses] of Object.entries(seen))
      expect({ route, fivexx: statuses.filter((s) => s >= 500) }).toEqual({ route, fivexx: [] });

    // every key on the server is under the prefix, and under a feature we used
    const all = await scanAll(admin);
    expect(all.length).toBeGreaterThan(0);
    expect(all.filter((k) => !k.startsWith(keyPrefix))).toEqual([]);
    expect(all.filter((k) => !/^(cache|rl|lock):/.test(k.slice(keyPrefix.length)))).toEqual([]);
    // caller braces never form a hash tag: the only `{` in a key is one the toolkit placed right after the feature
    for (const key of all) {
      const rest = key.slice(keyPrefix.length);
      const feature = rest.slice(0, rest.indexOf(':') + 1);
      expect({ key: key.slice(0, 80), braces: (rest.slice(feature.length).match(/[{}]/g) ?? []).length }).toEqual({
        key: key.slice(0, 80),
        braces: rest.slice(feature.length).startsWith('{') ? 2 : 0,
      });
      expect(Buffer.byteLength(key)).toBeLessThan(4 * 1024); // no 10 KB key was stored
    }
    // one cache entry per accepted key (distinct inputs, distinct keys) and one counter per distinct key
    const accepted = HOSTILE.filter(([, k]) => acceptedByKeyBuilder(k));
    expect(all.filter((k) => k.startsWith(`${keyPrefix}cache:`) && !k.endsWith(':lock'))).toHaveLength(accepted.length);
  });
});

describe('distinct request keys never share state', () => {
  // Redis keys are UTF-8 bytes, where every lone surrogate becomes U+FFFD: 'x\uD800y', 'x\uDBFFy' and 'x\uFFFDy'
  // would be one key. KeyBuilder refuses lone surrogates, and identifiers that are hashed (rate-limit keys) are hashed
  // as UTF-16, so they stay apart.
  it('lone surrogates: refused as cache keys, and kept apart as rate-limit keys', async () => {
    const app = await createToolkitApp({ keyPrefix: `rtk-secs-${uid()}:` });
    const cache = app.get(CacheService);
    await expect(cache.set('x\uD800y', 'first')).rejects.toBeInstanceOf(InvalidKeyError);
    await expect(cache.get('x\uDBFFy')).rejects.toBeInstanceOf(InvalidKeyError);
    await cache.set('x\uFFFDy', 'replacement character');
    expect(await cache.get('x\uFFFDy')).toBe('replacement character');
    const limits = app.get(RateLimitService);
    const policy = { limit: 1, ttl: 60_000 };
    expect((await limits.consume('x\uD800y', policy)).allowed).toBe(true);
    expect((await limits.consume('x\uDBFFy', policy)).allowed).toBe(true);
    expect((await limits.consume('x\uFFFDy', policy)).allowed).toBe(true);
    expect((await limits.consume('x\uD800y', policy)).allowed).toBe(false);
  });
});
