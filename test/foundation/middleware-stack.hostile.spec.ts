/**
 * Adversarial review: a team adopts the toolkit into an app that already has the usual middleware — CORS (`cors`,
 * `@fastify/cors` through `app.enableCors`), cookie-parser with a secret, express-session, body-parser limits, multer
 * uploads, `trust proxy`, a global prefix with an exclude list, global guards, exception filters and interceptors of
 * its own. Each case boots a real app on the shared Redis, on Express and Fastify where the platform has the
 * middleware. What behaved right is a plain test; the sure bugs were pinned as `it.failing` (c9a2356) and are fixed
 * (470aa94: the URL cache; 2b087a1: express-session), each comment saying what happened before the fix.
 *
 * Were pinned: the URL cache's raw JSON text skips what the platform does to a body after Nest (a Fastify
 * preSerialization hook, a Fastify response schema — a field the schema leaves out is sent —, Express middleware that
 * wraps res.json); a class instance behind an outer serializer interceptor (ClassSerializerInterceptor) is sent with
 * its excluded fields; a user logged in through express-session is answered from the shared URL entry; express-session
 * mounted after SessionMiddleware silently skips itself for users logged in with the toolkit.
 *
 * Not here: compression, helmet, Fastify's cookie and multipart (middleware-stack-2.hostile.spec.ts); what the cache,
 * session and rate-limit specs already cover (CORS with reflected origins keyed by Origin: cache.http-vary.spec.ts;
 * HEAD passing through uncached: cache.hostile.spec.ts; express-session mounted before SessionMiddleware:
 * session.beside-express-session.spec.ts; proxy-header warnings: security/proxy-headers.spec.ts).
 */
import 'reflect-metadata';
import type { Server } from 'node:http';
import {
  type ArgumentsHost,
  Body,
  type CallHandler,
  type CanActivate,
  Catch,
  Controller,
  type ExceptionFilter,
  type ExecutionContext,
  Get,
  HttpException,
  Injectable,
  type INestApplication,
  type NestInterceptor,
  Post,
  Req,
  Res,
  type Type,
  UnauthorizedException,
  UploadedFile,
  UseGuards,
  UseInterceptors,
} from '@nestjs/common';
import { APP_GUARD, APP_INTERCEPTOR } from '@nestjs/core';
import { FileInterceptor } from '@nestjs/platform-express';
import { RouteSchema } from '@nestjs/platform-fastify';
import bodyParser from 'body-parser';
import cookieParser from 'cookie-parser';
import cors from 'cors';
import session from 'express-session';
import { Redis } from 'ioredis';
import { map, type Observable } from 'rxjs';
import request from 'supertest';
import {
  CurrentSession,
  RateLimitGuard,
  type Session,
  SessionGuard,
  SessionMiddleware,
  Throttle,
} from '../../lib/index.js';
import { HttpCacheInterceptor, KeyBuilder } from '../../lib/advanced.js';
import { trackForCleanup } from '../support/private-servers.js';
import { recordingLogger } from '../support/recording-logger.js';
import {
  closeMiddlewareApps,
  handlerRuns,
  listenMiddlewareApp,
  type MiddlewareAppOptions,
} from '../support/middleware-app.js';
import { cookiePair, loginController, setCookieLines } from '../support/session-http-app.js';
import { sharedServers } from '../support/shared-servers.js';
import { PLATFORMS } from '../support/toolkit-app.js';

const SECRET = 'toolkit-session-secret-of-32-characters!';

/** Handler runs, by a name the test makes unique. */
const { runs, bump, ran } = handlerRuns();

// ---------------------------------------------------------------------------------------------------------------
// An app of the test's own: adapter options (Fastify trustProxy, bodyLimit), Nest options (bodyParser), middleware.
// ---------------------------------------------------------------------------------------------------------------

type BootOptions = Omit<MiddlewareAppOptions, 'imports'> & { controllers: Type<unknown>[] };

interface Booted {
  app: INestApplication;
  http: ReturnType<typeof request>;
  prefix: string;
}

afterEach(closeMiddlewareApps);

async function boot(options: BootOptions): Promise<Booted> {
  const { app, prefix } = await listenMiddlewareApp('rtk-mw', options);
  return { app, http: request(app.getHttpServer() as Server), prefix };
}

/** A client of the shared Redis, to look at what the cache stored. */
const redis = (): Redis => trackForCleanup(new Redis(sharedServers().single.url));

/** The raw Redis value of a cache entry (`<prefix>cache:<escaped key>`), null when there is none. */
const entry = (prefix: string, key: string): Promise<string | null> =>
  redis().get(`${prefix}cache:${KeyBuilder.escape(key)}`);

/** Express's `res` and Fastify's `reply`, as a handler or filter writes to them. */
interface AnyResponse {
  status(code: number): AnyResponse;
  json?(body: unknown): unknown;
  send(body: unknown): unknown;
  header?(name: string, value: string): unknown;
  cookie?(name: string, value: string, options: Record<string, unknown>): unknown;
}

// ---------------------------------------------------------------------------------------------------------------
// CORS
// ---------------------------------------------------------------------------------------------------------------

@Controller('cors')
@UseGuards(RateLimitGuard)
class CorsController {
  @Get('limited')
  @Throttle({ limit: 2, ttl: 60_000 })
  limited() {
    return { n: bump('cors-limited') };
  }

  @Get('cached')
  @UseInterceptors(HttpCacheInterceptor)
  @Throttle({ limit: 1_000, ttl: 60_000 })
  cached() {
    return { n: bump('cors-cached') };
  }
}

const preflight = (http: Booted['http'], path: string, origin: string) =>
  http.options(path).set('Origin', origin).set('Access-Control-Request-Method', 'GET');

describe.each(PLATFORMS)('CORS in front of the toolkit on %s', (platform) => {
  beforeEach(() => runs.clear());

  it('preflights use up no rate limit and are never cached; the 429 carries CORS headers and Retry-After a browser may read', async () => {
    const { http } = await boot({
      platform,
      toolkit: { rateLimit: { headers: 'legacy' } },
      controllers: [CorsController],
      before: (app) => app.enableCors({ origin: 'https://app.example', exposedHeaders: ['Retry-After'] }),
    });
    const origin = 'https://app.example';
    for (let i = 0; i < 5; i++) {
      const pre = await preflight(http, '/cors/limited', origin);
      expect([pre.status, pre.headers['access-control-allow-origin'], pre.headers['x-ratelimit-remaining']]).toEqual([
        204,
        origin,
        undefined,
      ]);
      const cachedPre = await preflight(http, '/cors/cached', origin);
      expect([cachedPre.status, cachedPre.headers['x-cache']]).toEqual([204, undefined]);
    }
    expect([ran('cors-limited'), ran('cors-cached')]).toEqual([0, 0]);
    const answers = [];
    for (let i = 0; i < 3; i++) answers.push(await http.get('/cors/limited').set('Origin', origin));
    expect(answers.map((r) => [r.status, r.headers['x-ratelimit-remaining']])).toEqual([
      [200, '1'],
      [200, '0'],
      [429, '0'],
    ]);
    const refused = answers[2];
    expect(refused.headers['access-control-allow-origin']).toBe(origin);
    expect(Number(refused.headers['retry-after'])).toBeGreaterThanOrEqual(1);
    expect(String(refused.headers['access-control-expose-headers']).toLowerCase()).toContain('retry-after');
    expect(refused.body).toMatchObject({ statusCode: 429, message: 'Too Many Requests' });
  });

  it('a HIT carries the CORS headers of its own request: an origin not allowed never gets the allowed one’s ACAO', async () => {
    const { http } = await boot({
      platform,
      controllers: [CorsController],
      before: (app) => app.enableCors({ origin: ['https://a.example'] }),
    });
    const ask = (origin: string) => http.get('/cors/cached').set('Origin', origin).expect(200);
    const answers = [
      await ask('https://a.example'),
      await ask('https://evil.example'),
      await ask('https://a.example'),
      await ask('https://evil.example'),
    ];
    expect(answers.map((r) => [r.headers['x-cache'], r.headers['access-control-allow-origin'], r.body])).toEqual([
      ['MISS', 'https://a.example', { n: 1 }],
      ['MISS', undefined, { n: 2 }],
      ['HIT', 'https://a.example', { n: 1 }],
      ['HIT', undefined, { n: 2 }],
    ]);
    expect(answers.every((r) => /origin/i.test(String(r.headers.vary)))).toBe(true);
  });

  it('enableCors() with the default origin (*): one entry for every origin, each HIT with ACAO *', async () => {
    const { http } = await boot({ platform, controllers: [CorsController], before: (app) => app.enableCors() });
    const answers = [
      await http.get('/cors/cached').set('Origin', 'https://a.example').expect(200),
      await http.get('/cors/cached').set('Origin', 'https://b.example').expect(200),
      await http.get('/cors/cached').expect(200),
    ];
    expect(answers.map((r) => [r.headers['x-cache'], r.headers['access-control-allow-origin'], r.body.n])).toEqual([
      ['MISS', '*', 1],
      ['HIT', '*', 1],
      ['HIT', '*', 1],
    ]);
  });
});

describe('CORS as Express middleware (app.use(cors())) with preflightContinue', () => {
  beforeEach(() => runs.clear());

  it('a preflight passed on to the router still charges no route limit', async () => {
    const { http } = await boot({
      platform: 'express',
      toolkit: { rateLimit: { headers: 'legacy' } },
      controllers: [CorsController],
      before: (app) => {
        app.use(cors({ origin: true, preflightContinue: true }));
      },
    });
    for (let i = 0; i < 4; i++) await preflight(http, '/cors/limited', 'https://a.example');
    expect(ran('cors-limited')).toBe(0);
    const first = await http.get('/cors/limited').set('Origin', 'https://a.example').expect(200);
    expect(first.headers['x-ratelimit-remaining']).toBe('1');
  });
});

// ---------------------------------------------------------------------------------------------------------------
// HEAD on a cached GET route
// ---------------------------------------------------------------------------------------------------------------

const PAGE = { text: 'héllo wörld ✓ — ünïcode', list: [1, 2, 3] };

@Controller('head')
@UseInterceptors(HttpCacheInterceptor)
class HeadController {
  @Get('page')
  page() {
    bump('head-page');
    return PAGE;
  }
}

describe.each(PLATFORMS)('HEAD on a cached GET route on %s', (platform) => {
  beforeEach(() => runs.clear());

  it('HEAD before and after the entry: no body, the Content-Length and Content-Type of the GET, nothing stored from HEAD', async () => {
    const { http, prefix } = await boot({ platform, controllers: [HeadController] });
    const headFirst = await http.head('/head/page').expect(200);
    const keys = await redis().keys(`${prefix}cache:*`);
    expect(keys).toEqual([]);
    const miss = await http.get('/head/page').expect(200);
    const hit = await http.get('/head/page').expect(200);
    const headAfter = await http.head('/head/page').expect(200);
    const bytes = String(Buffer.byteLength(JSON.stringify(PAGE)));
    expect([miss.headers['x-cache'], hit.headers['x-cache']]).toEqual(['MISS', 'HIT']);
    expect([miss.body, hit.body]).toEqual([PAGE, PAGE]);
    for (const r of [headFirst, miss, hit, headAfter]) {
      expect(r.headers['content-length']).toBe(bytes);
      expect(String(r.headers['content-type'])).toMatch(/^application\/json/);
    }
    expect([headFirst.text ?? '', headAfter.text ?? '']).toEqual(['', '']);
    // HEAD passes through (docs/cache.md: only GET is cached): the handler ran for each HEAD and the one MISS
    expect(ran('head-page')).toBe(3);
  });
});

// ---------------------------------------------------------------------------------------------------------------
// trust proxy
// ---------------------------------------------------------------------------------------------------------------

@Controller('proxy')
@UseGuards(RateLimitGuard)
class ProxyController {
  @Get('one')
  @Throttle({ limit: 1, ttl: 60_000 })
  one() {
    return { ok: true };
  }
}

describe.each(PLATFORMS)("the platform's trust proxy and the rate limiter on %s", (platform) => {
  const platformTrust = (app: INestApplication) => {
    if (platform === 'express') (app as unknown as { set(k: string, v: unknown): void }).set('trust proxy', true);
  };
  const fastify = platform === 'fastify' ? { trustProxy: true } : undefined;

  it("the platform's setting alone is not read (documented): clients share the proxy's counter, and the warning names rateLimit.trustProxy", async () => {
    const { warnings, logger } = recordingLogger();
    const { http } = await boot({ platform, controllers: [ProxyController], fastify, before: platformTrust, logger });
    const a = await http.get('/proxy/one').set('X-Forwarded-For', '192.0.2.1');
    const b = await http.get('/proxy/one').set('X-Forwarded-For', '192.0.2.2');
    expect([a.status, b.status]).toEqual([200, 429]);
    expect(warnings.filter((w) => w.includes('rateLimit.trustProxy'))).toHaveLength(1);
  });

  it('with rateLimit.trustProxy the clients behind the proxy are apart', async () => {
    const { http } = await boot({
      platform,
      toolkit: { rateLimit: { trustProxy: true } },
      controllers: [ProxyController],
      fastify,
      before: platformTrust,
    });
    const a = await http.get('/proxy/one').set('X-Forwarded-For', '192.0.2.1');
    const b = await http.get('/proxy/one').set('X-Forwarded-For', '192.0.2.2');
    const a2 = await http.get('/proxy/one').set('X-Forwarded-For', '192.0.2.1');
    expect([a.status, b.status, a2.status]).toEqual([200, 200, 429]);
  });

  it("session secure: 'auto' follows the platform's trust proxy: login and the middleware's rolling refresh", async () => {
    const { http } = await boot({
      platform,
      toolkit: { session: { cookie: { secret: SECRET, secure: 'auto' } } },
      controllers: [loginController(), MeController],
      fastify,
      before: platformTrust,
      configure: (c) => c.apply(SessionMiddleware).forRoutes('*'),
    });
    const login = await http.post('/login').set('X-Forwarded-Proto', 'https').send({ user: 'alice' }).expect(201);
    const line = setCookieLines(login.headers['set-cookie'], 'rtk.sid')[0];
    expect(line).toContain('; Secure');
    const pair = cookiePair(login.headers['set-cookie']);
    const me = await http.get('/me').set('Cookie', pair).set('X-Forwarded-Proto', 'https').expect(200);
    expect(me.body).toEqual({ userId: 'alice' });
    expect(setCookieLines(me.headers['set-cookie'], 'rtk.sid')[0]).toContain('; Secure');
    const plain = await http.get('/me').set('Cookie', pair).expect(200);
    expect(setCookieLines(plain.headers['set-cookie'], 'rtk.sid')[0]).not.toContain('; Secure');
  });
});

@Controller()
class MeController {
  @Get('me')
  @UseGuards(SessionGuard)
  me(@CurrentSession('userId') userId: string) {
    return { userId };
  }
}

// ---------------------------------------------------------------------------------------------------------------
// A global prefix with an exclude list
// ---------------------------------------------------------------------------------------------------------------

@Controller()
@UseInterceptors(HttpCacheInterceptor)
class PrefixController {
  @Get('items')
  items() {
    return { n: bump('prefix-items') };
  }

  @Get('health')
  health(@CurrentSession('userId') userId: string | undefined) {
    return { n: bump('prefix-health'), userId: userId ?? null };
  }

  @Get('status')
  @UseGuards(SessionGuard)
  status(@CurrentSession('userId') userId: string) {
    return { userId };
  }
}

describe.each(PLATFORMS)('setGlobalPrefix with exclude on %s', (platform) => {
  beforeEach(() => runs.clear());

  it('prefixed and excluded routes keyed by the URL they answer; the session is seen on both (no shared HIT for a logged-in user)', async () => {
    const { http, prefix } = await boot({
      platform,
      toolkit: { session: { cookie: { secret: SECRET } } },
      controllers: [PrefixController, loginController({ path: 'login' })],
      configure: (c) => c.apply(SessionMiddleware).forRoutes('*'),
      before: (app) => app.setGlobalPrefix('api', { exclude: ['health', 'status', 'login'] }),
    });
    expect((await http.get('/api/items').expect(200)).headers['x-cache']).toBe('MISS');
    expect((await http.get('/api/items').expect(200)).headers['x-cache']).toBe('HIT');
    expect((await http.get('/health').expect(200)).body).toEqual({ n: 1, userId: null });
    expect((await http.get('/health').expect(200)).headers['x-cache']).toBe('HIT');
    expect(await entry(prefix, 'http:/api/items')).toMatch(/\{"n":1\}$/);
    expect(await entry(prefix, 'http:/health')).toMatch(/\{"n":1,"userId":null\}$/);
    expect(await entry(prefix, 'http:/items')).toBeNull();
    const login = await http.post('/login').send({ user: 'bob' }).expect(201);
    const pair = cookiePair(login.headers['set-cookie']);
    // the excluded route: SessionMiddleware ran, so a logged-in user is not answered from the shared entry
    const mine = await http.get('/health').set('Cookie', pair).expect(200);
    expect([mine.headers['x-cache'], mine.body]).toEqual(['BYPASS', { n: 2, userId: 'bob' }]);
    expect((await http.get('/status').set('Cookie', pair).expect(200)).body).toEqual({ userId: 'bob' });
    expect((await http.get('/status').expect(401)).status).toBe(401);
  });
});

// ---------------------------------------------------------------------------------------------------------------
// Global guards and exception filters of the app
// ---------------------------------------------------------------------------------------------------------------

/** The app's own auth guard: 401 without `X-Auth: yes`. */
class HeaderAuthGuard implements CanActivate {
  canActivate(context: ExecutionContext): boolean {
    const req = context.switchToHttp().getRequest<{ headers: Record<string, string | undefined> }>();
    if (req.headers['x-auth'] !== 'yes') throw new UnauthorizedException();
    return true;
  }
}

/** An app filter that rewrites every HttpException's body into the app's own error shape. */
@Catch(HttpException)
class RewriteFilter implements ExceptionFilter {
  catch(exception: HttpException, host: ArgumentsHost): void {
    const res = host.switchToHttp().getResponse<AnyResponse>();
    const status = exception.getStatus();
    const body = { error: { status, text: exception.message } };
    // Express: res.status().json(); Fastify: reply.status().send()
    const sent = res.status(status);
    if (typeof sent.json === 'function') sent.json(body);
    else sent.send(body);
  }
}

@Controller('guarded')
class GuardedController {
  @Get('refunded')
  @Throttle({ limit: 2, ttl: 60_000, skipFailedRequests: true })
  refunded() {
    return { ok: bump('guarded-refunded') };
  }

  @Get('plain')
  @Throttle({ limit: 1, ttl: 60_000 })
  plain() {
    return { ok: true };
  }
}

describe.each(PLATFORMS)("the app's global guards and exception filters on %s", (platform) => {
  beforeEach(() => runs.clear());

  it('RateLimitGuard (APP_GUARD) beside a global guard that throws 401: skipFailedRequests gives the 401s back', async () => {
    const { http } = await boot({
      platform,
      toolkit: { rateLimit: { headers: 'legacy' } },
      controllers: [GuardedController],
      providers: [{ provide: APP_GUARD, useClass: RateLimitGuard }],
      before: (app) => app.useGlobalGuards(new HeaderAuthGuard()),
    });
    for (let i = 0; i < 4; i++) expect((await http.get('/guarded/refunded')).status).toBe(401);
    const ok = [];
    for (let i = 0; i < 3; i++) ok.push(await http.get('/guarded/refunded').set('X-Auth', 'yes'));
    expect(ok.map((r) => r.status)).toEqual([200, 200, 429]);
    expect(ran('guarded-refunded')).toBe(2);
  });

  it('a global filter that rewrites the 429 body keeps Retry-After and the rate-limit headers', async () => {
    const { http } = await boot({
      platform,
      toolkit: { rateLimit: { headers: 'legacy' } },
      controllers: [GuardedController],
      providers: [{ provide: APP_GUARD, useClass: RateLimitGuard }],
      before: (app) => app.useGlobalFilters(new RewriteFilter()),
    });
    await http.get('/guarded/plain').expect(200);
    const refused = await http.get('/guarded/plain');
    expect(refused.status).toBe(429);
    expect(refused.body).toEqual({ error: { status: 429, text: 'Too Many Requests' } });
    expect(Number(refused.headers['retry-after'])).toBeGreaterThanOrEqual(59);
    expect([refused.headers['x-ratelimit-limit'], refused.headers['x-ratelimit-remaining']]).toEqual(['1', '0']);
  });
});

// ---------------------------------------------------------------------------------------------------------------
// Interceptors of the app around and inside the URL cache
// ---------------------------------------------------------------------------------------------------------------

/** The usual response envelope: `{ data }`. */
@Injectable()
class EnvelopeInterceptor implements NestInterceptor {
  intercept(_context: ExecutionContext, next: CallHandler): Observable<unknown> {
    return next.handle().pipe(map((data: unknown) => ({ data })));
  }
}

/** Fields a class hides from its JSON, by class (what class-transformer's @Exclude records). */
const HIDDEN = new WeakMap<object, string[]>();

/**
 * What ClassSerializerInterceptor does (class-transformer is not installed): a class instance is turned into a plain
 * object without the fields its class excludes; a plain object is left as it is (class-transformer has no metadata for
 * it).
 */
@Injectable()
class SerializerInterceptor implements NestInterceptor {
  intercept(_context: ExecutionContext, next: CallHandler): Observable<unknown> {
    return next.handle().pipe(
      map((value: unknown) => {
        if (typeof value !== 'object' || value === null) return value;
        const hidden = HIDDEN.get(Object.getPrototypeOf(value).constructor) ?? [];
        return Object.fromEntries(Object.entries(value).filter(([k]) => !hidden.includes(k)));
      }),
    );
  }
}

class Account {
  constructor(
    readonly id: string,
    readonly email: string,
    readonly passwordHash: string,
  ) {}
}
HIDDEN.set(Account, ['passwordHash']);

@Controller('outer')
@UseInterceptors(HttpCacheInterceptor)
class InnerCacheController {
  @Get('page')
  page() {
    return { n: bump('outer-page') };
  }

  @Get('account')
  account() {
    bump('outer-account');
    return new Account('a1', 'a@example.com', '$argon2id$secret-hash');
  }
}

@Controller('inner')
@UseInterceptors(EnvelopeInterceptor)
class InnerEnvelopeController {
  @Get('page')
  page() {
    return { n: bump('inner-page') };
  }
}

describe.each(PLATFORMS)('interceptors of the app and HttpCacheInterceptor on %s', (platform) => {
  beforeEach(() => runs.clear());

  it('an app interceptor outside the cache maps the MISS and the HIT alike; the entry holds what the handler returned', async () => {
    const { http, prefix } = await boot({
      platform,
      controllers: [InnerCacheController],
      before: (app) => app.useGlobalInterceptors(new EnvelopeInterceptor()),
    });
    const miss = await http.get('/outer/page').expect(200);
    const hit = await http.get('/outer/page').expect(200);
    expect([miss.headers['x-cache'], miss.body, hit.headers['x-cache'], hit.body]).toEqual([
      'MISS',
      { data: { n: 1 } },
      'HIT',
      { data: { n: 1 } },
    ]);
    const stored = await entry(prefix, 'http:/outer/page');
    expect(stored?.endsWith('{"n":1}')).toBe(true);
    expect(ran('outer-page')).toBe(1);
  });

  it('an app interceptor inside the cache (APP_INTERCEPTOR cache, @UseInterceptors envelope): the mapped value, on the MISS and the HIT', async () => {
    const { http, prefix } = await boot({
      platform,
      controllers: [InnerEnvelopeController],
      providers: [{ provide: APP_INTERCEPTOR, useClass: HttpCacheInterceptor }],
    });
    const miss = await http.get('/inner/page').expect(200);
    const hit = await http.get('/inner/page').expect(200);
    expect([miss.headers['x-cache'], miss.body, hit.headers['x-cache'], hit.body]).toEqual([
      'MISS',
      { data: { n: 1 } },
      'HIT',
      { data: { n: 1 } },
    ]);
    const stored = await entry(prefix, 'http:/inner/page');
    expect(stored?.endsWith('{"data":{"n":1}}')).toBe(true);
  });

  it('without the cache, the serializer interceptor hides the excluded field (the baseline of the next case)', async () => {
    @Controller('plain')
    class PlainController {
      @Get('account')
      account() {
        return new Account('a1', 'a@example.com', '$argon2id$secret-hash');
      }
    }
    const { http } = await boot({
      platform,
      controllers: [PlainController],
      before: (app) => app.useGlobalInterceptors(new SerializerInterceptor()),
    });
    expect((await http.get('/plain/account').expect(200)).body).toEqual({ id: 'a1', email: 'a@example.com' });
  });

  // BUG. ClassSerializerInterceptor registered globally (Nest's documented serialization,
  // `app.useGlobalInterceptors(new ClassSerializerInterceptor(reflector))`) and HttpCacheInterceptor on a controller
  // (docs/cache.md's own example, `@UseInterceptors(HttpCacheInterceptor)`): the cache is inside the serializer. It
  // stores JSON.stringify of the handler's class instance, the excluded field included, in Redis, and hands the
  // serializer JSON.parse of that text (docs/cache.md: "that interceptor gets a plain value") on the MISS as well as on
  // every HIT: a plain object has no class metadata, so nothing is excluded. Before 470aa94, both the MISS and the HIT
  // send `passwordHash` (emulated here with an interceptor that works as ClassSerializerInterceptor does;
  // class-transformer is not installed), and the hash sits in Redis. Turning the cache on leaks a field the app
  // excluded. Expected: the client never gets the excluded field (e.g. the MISS hands the outer interceptors the
  // handler's value and the route is not stored, or a class instance behind an outer interceptor is refused for storing
  // with a warning naming the class and the remedy: put HttpCacheInterceptor outside the serializer, APP_INTERCEPTOR).
  // Fix: lib/cache/cache.http-interceptor.ts (toStored / answer for a non-raw route; raw() already knows the cache is
  // not the first interceptor).
  it('a class instance behind an outer serializer interceptor: the excluded field never reaches the client', async () => {
    const { http } = await boot({
      platform,
      controllers: [InnerCacheController],
      before: (app) => app.useGlobalInterceptors(new SerializerInterceptor()),
    });
    const miss = await http.get('/outer/account').expect(200);
    const hit = await http.get('/outer/account').expect(200);
    expect(miss.body).toEqual({ id: 'a1', email: 'a@example.com' });
    expect(hit.body).toEqual({ id: 'a1', email: 'a@example.com' });
  });
});

// ---------------------------------------------------------------------------------------------------------------
// What the platform does to a body after Nest: Fastify's preSerialization hooks and response schemas, Express's
// res.json wrapped by middleware. The cache sends its stored JSON text as a string (docs/cache.md: "an object or array
// body is sent as that stored text"), which none of them sees.
// ---------------------------------------------------------------------------------------------------------------

const ACCOUNT = { id: 'a1', email: 'a@example.com', passwordHash: '$argon2id$secret-hash' };

function serializedController(cached: boolean): Type<unknown> {
  @Controller('ser')
  class SerializedController {
    @Get('page')
    page() {
      return { n: bump(`ser-page-${cached}`) };
    }

    @Get('account')
    @RouteSchema({
      response: { 200: { type: 'object', properties: { id: { type: 'string' }, email: { type: 'string' } } } },
    })
    account() {
      bump(`ser-account-${cached}`);
      return { ...ACCOUNT };
    }
  }
  if (cached) UseInterceptors(HttpCacheInterceptor)(SerializedController);
  return SerializedController;
}

interface FastifyLike {
  addHook(
    name: 'preSerialization',
    hook: (req: unknown, reply: unknown, payload: unknown, done: (err: null, value: unknown) => void) => void,
  ): unknown;
}

/** The app's envelope as a Fastify preSerialization hook (its docs' own example of the hook). */
const envelopeHook = (app: INestApplication): void => {
  (app.getHttpAdapter().getInstance() as FastifyLike).addHook('preSerialization', (_req, _reply, payload, done) =>
    done(null, { data: payload }),
  );
};

/** The app's envelope as Express middleware wrapping res.json (express-mung and hand-written response loggers). */
const envelopeMiddleware = (app: INestApplication): void => {
  app.use((_req: unknown, res: { json(body: unknown): unknown }, next: () => void) => {
    const json = res.json.bind(res);
    res.json = (body: unknown) => json({ data: body });
    next();
  });
};

describe('what the platform does to a body after Nest, with the URL cache in front', () => {
  beforeEach(() => runs.clear());

  it('without the cache: the preSerialization envelope, the response schema and the res.json wrapper all apply (the baseline)', async () => {
    const hook = await boot({ platform: 'fastify', controllers: [serializedController(false)], before: envelopeHook });
    expect((await hook.http.get('/ser/page').expect(200)).body).toEqual({ data: { n: 1 } });
    const schema = await boot({ platform: 'fastify', controllers: [serializedController(false)] });
    expect((await schema.http.get('/ser/account').expect(200)).body).toEqual({ id: 'a1', email: 'a@example.com' });
    const wrapped = await boot({
      platform: 'express',
      controllers: [serializedController(false)],
      before: envelopeMiddleware,
    });
    expect((await wrapped.http.get('/ser/page').expect(200)).body).toEqual({ data: { n: 2 } });
  });

  // BUG. A Fastify app's preSerialization hook (Fastify's documented place for a response envelope) never sees a body
  // of a route under HttpCacheInterceptor: where the cache is the route's first interceptor it hands Nest the stored
  // JSON text as a string (raw mode), and Fastify runs preSerialization only for payloads that are not strings. Before
  // 470aa94, the MISS and every HIT answer {"n":1}, without the app's {"data": …}: turning the cache on changes the
  // API's shape. Expected: the body the app sends without the cache, on the MISS and the HIT. Fix:
  // lib/cache/cache.http-response.ts hasFastifySerializer / cache.http-interceptor.ts raw(): a route whose Fastify
  // context has preSerialization hooks is not raw (parse the stored text and hand Nest the value), as for
  // setReplySerializer.
  it('Fastify: a preSerialization hook still shapes the MISS and the HIT', async () => {
    const { http } = await boot({
      platform: 'fastify',
      controllers: [serializedController(true)],
      before: envelopeHook,
    });
    const miss = await http.get('/ser/page').expect(200);
    const hit = await http.get('/ser/page').expect(200);
    expect([miss.headers['x-cache'], miss.body, hit.headers['x-cache'], hit.body]).toEqual([
      'MISS',
      { data: { n: 1 } },
      'HIT',
      { data: { n: 1 } },
    ]);
  });

  // BUG, a leak. A Fastify route with a response schema (@RouteSchema of @nestjs/platform-fastify, or a schema from a
  // plugin): Fastify serialises the body with fast-json-stringify, which sends only the properties the schema lists —
  // the usual way a Fastify app keeps a password hash or an internal field out of its answers. Under
  // HttpCacheInterceptor (raw mode, the string payload is sent as it is) the schema is skipped: before 470aa94 the MISS
  // and every HIT send `passwordHash`, which the same route without the cache never sends, and it is stored in Redis.
  // Expected: the schema's body on the MISS and the HIT. Fix: as above (raw() / hasFastifySerializer: a route with a
  // response schema is not raw; better, store the text the platform would send).
  it('Fastify: a response schema still filters the MISS and the HIT (no field the schema leaves out)', async () => {
    const { http } = await boot({ platform: 'fastify', controllers: [serializedController(true)] });
    const miss = await http.get('/ser/account').expect(200);
    const hit = await http.get('/ser/account').expect(200);
    expect([miss.headers['x-cache'], miss.body, hit.headers['x-cache'], hit.body]).toEqual([
      'MISS',
      { id: 'a1', email: 'a@example.com' },
      'HIT',
      { id: 'a1', email: 'a@example.com' },
    ]);
  });

  // BUG. Express middleware that wraps res.json (an envelope, express-mung, a response logger that records bodies):
  // Nest answers an object with res.json and a string with res.send; in raw mode the cache hands Nest the JSON text, so
  // res.json is never called. Before 470aa94, the MISS and every HIT answer {"n":1} without the app's envelope (and a
  // body logger sees nothing). docs/cache.md names the Express settings that switch a route to parsing (json spaces,
  // replacer, escape), not this. Expected: the body the app sends without the cache. Fix: cache.http-interceptor.ts
  // raw(): a response whose `json` is not Express's own (res.json !== the app's response prototype's) is not raw.
  it('Express: middleware that wraps res.json still shapes the MISS and the HIT', async () => {
    const { http } = await boot({
      platform: 'express',
      controllers: [serializedController(true)],
      before: envelopeMiddleware,
    });
    const miss = await http.get('/ser/page').expect(200);
    const hit = await http.get('/ser/page').expect(200);
    expect([miss.headers['x-cache'], miss.body, hit.headers['x-cache'], hit.body]).toEqual([
      'MISS',
      { data: { n: 1 } },
      'HIT',
      { data: { n: 1 } },
    ]);
  });
});

// ---------------------------------------------------------------------------------------------------------------
// cookie-parser and express-session beside SessionMiddleware (Express)
// ---------------------------------------------------------------------------------------------------------------

interface ParsedRequest {
  cookies?: Record<string, string>;
  signedCookies?: Record<string, string | false>;
  session?: { views?: number } | null;
}

@Controller('cp')
class CookieParserController {
  @Get('pref')
  pref(@Res({ passthrough: true }) res: AnyResponse) {
    res.cookie?.('pref', 'dark', { signed: true, httpOnly: true });
    return { ok: true };
  }

  @Get('whoami')
  @UseGuards(SessionGuard)
  whoami(@CurrentSession() current: Session, @Req() req: ParsedRequest) {
    return { userId: current.userId, pref: req.signedCookies?.pref ?? null };
  }
}

@Controller('legacy')
class LegacyController {
  @Get('views')
  views(@Req() req: ParsedRequest, @CurrentSession() current: Session | null) {
    const s = req.session as { views?: number };
    s.views = (s.views ?? 0) + 1;
    return { views: s.views, toolkitUser: current?.userId ?? null };
  }
}

@Controller('es')
class ExpressSessionController {
  @Post('login')
  login(@Req() req: { session: { user?: string } }, @Body() body: { user: string }) {
    req.session.user = body.user;
    return { ok: true };
  }

  /** A legacy route that reads its user from express-session's session, as express-session's own examples do. */
  @Get('profile')
  profile(@Req() req: { session: { user?: string } }) {
    return { user: req.session.user ?? null, n: bump('es-profile') };
  }
}

describe('cookie-parser with a secret of the app, and express-session, beside SessionMiddleware (Express)', () => {
  for (const appSecret of ['the-apps-own-cookie-parser-secret-32c', SECRET]) {
    const which = appSecret === SECRET ? 'the same secret as the toolkit' : 'a secret of its own';
    it(`cookie-parser with ${which}: the session, the app's signed cookie and the rolling refresh all survive`, async () => {
      const { http } = await boot({
        platform: 'express',
        toolkit: { session: { cookie: { secret: SECRET } } },
        controllers: [CookieParserController, loginController()],
        before: (app) => {
          app.use(cookieParser(appSecret));
        },
        configure: (c) => c.apply(SessionMiddleware).forRoutes('*'),
      });
      const login = await http.post('/login').send({ user: 'carol' }).expect(201);
      const session = cookiePair(login.headers['set-cookie']);
      const pref = await http.get('/cp/pref').set('Cookie', session).expect(200);
      // the app's signed cookie and the middleware's rolling refresh, both sent
      expect(setCookieLines(pref.headers['set-cookie'], 'pref')).toHaveLength(1);
      expect(setCookieLines(pref.headers['set-cookie'], 'rtk.sid')).toHaveLength(1);
      const prefPair = cookiePair(pref.headers['set-cookie'], { name: 'pref' });
      const me = await http.get('/cp/whoami').set('Cookie', `${prefPair}; ${session}`).expect(200);
      expect(me.body).toEqual({ userId: 'carol', pref: 'dark' });
    });
  }

  // BUG, a leak between users. An app with express-session (no Passport: the handler reads `req.session.user`, as
  // express-session's README does) adopts HttpCacheInterceptor globally (APP_INTERCEPTOR, docs/cache.md). The
  // credentials check (lib/cache/cache.http-sharing.ts credentialsOf, through requestSession in
  // lib/session/session.http.ts) skips another library's session object on purpose — express-session puts one on every
  // request, anonymous ones too — so a logged-in user's GET is answered from and stored under the URL. Before 2b087a1:
  // the anonymous answer {user: null} is served as a HIT to alice and to bob, and nothing is logged. docs/cache.md says
  // "a cookie that identifies a user reaches the handler through a guard or middleware that sets req.user or the
  // toolkit's session, and that is what is seen": express-session is such middleware and sets neither. Expected: a
  // request whose express-session session holds data (a session loaded from the store: own properties besides `cookie`)
  // is BYPASS, as a toolkit session is, with the once-per-route warning; anonymous requests (a fresh session holding
  // only its cookie) are still cached. Fix: requestSession / credentialsOf.
  it('express-session: a logged-in user under a global HttpCacheInterceptor never gets a shared entry', async () => {
    const { http } = await boot({
      platform: 'express',
      controllers: [ExpressSessionController],
      providers: [{ provide: APP_INTERCEPTOR, useClass: HttpCacheInterceptor }],
      before: (app) =>
        app.use(session({ secret: 'express-session-secret-32-characters!', resave: false, saveUninitialized: false })),
    });
    const anonymous = [await http.get('/es/profile').expect(200), await http.get('/es/profile').expect(200)];
    expect(anonymous.map((r) => [r.headers['x-cache'], r.body])).toEqual([
      ['MISS', { user: null, n: 1 }],
      ['HIT', { user: null, n: 1 }],
    ]);
    const cookieOf = async (user: string) => {
      const login = await http.post('/es/login').send({ user }).expect(201);
      return cookiePair(login.headers['set-cookie'], { name: 'connect.sid' });
    };
    const alice = await http
      .get('/es/profile')
      .set('Cookie', await cookieOf('alice'))
      .expect(200);
    const bob = await http
      .get('/es/profile')
      .set('Cookie', await cookieOf('bob'))
      .expect(200);
    expect([alice.body.user, bob.body.user]).toEqual(['alice', 'bob']);
    expect([alice.headers['x-cache'], bob.headers['x-cache']]).toEqual(['BYPASS', 'BYPASS']);
  });

  it('express-session mounted as Nest middleware before SessionMiddleware: both sessions live', async () => {
    const { http } = await boot({
      platform: 'express',
      toolkit: { session: { cookie: { secret: SECRET } } },
      controllers: [LegacyController, loginController()],
      configure: (c) =>
        c
          .apply(
            session({ secret: 'express-session-secret-32-characters!', resave: false, saveUninitialized: false }),
            SessionMiddleware,
          )
          .forRoutes('*'),
    });
    await expectBothSessions(http);
  });

  // BUG. express-session applied after SessionMiddleware (`consumer.apply(SessionMiddleware, session(...))`, or the
  // legacy module's middleware registered after the toolkit's): SessionMiddleware copies the toolkit's session onto
  // `req.session` (lib/session/session.http.ts setRequestSession), and express-session skips itself whenever
  // `req.session` is already truthy ("self-awareness", express-session index.js). Before 2b087a1, for every user logged
  // in with the toolkit, express-session never loads nor saves its session: the legacy route writes `views` onto the
  // toolkit's Session object, which is thrown away, and answers views 1, 1, 1 with no connect.sid cookie — silently
  // (for an anonymous user the toolkit sets `req.session = null`, and express-session works). Expected: the legacy
  // session counts 1, 2, 3 (coexistence as docs/session.md describes for the other order), or a clear error at
  // start/first request that the order breaks express-session. Fix: lib/session/session.http.ts (setRequestSession's
  // copy to `req.session`) / session.middleware.ts.
  it('express-session mounted after SessionMiddleware: the legacy session still counts for a logged-in user', async () => {
    const { http } = await boot({
      platform: 'express',
      toolkit: { session: { cookie: { secret: SECRET } } },
      controllers: [LegacyController, loginController()],
      configure: (c) =>
        c
          .apply(
            SessionMiddleware,
            session({ secret: 'express-session-secret-32-characters!', resave: false, saveUninitialized: false }),
          )
          .forRoutes('*'),
    });
    await expectBothSessions(http);
  });
});

/** Logged in on the toolkit, three requests to the express-session route: 1, 2, 3 views, the toolkit user seen. */
async function expectBothSessions(http: Booted['http']): Promise<void> {
  const login = await http.post('/login').send({ user: 'dave' }).expect(201);
  const toolkit = cookiePair(login.headers['set-cookie']);
  let legacy = '';
  const seen = [];
  for (let i = 0; i < 3; i++) {
    const res = await http
      .get('/legacy/views')
      .set('Cookie', legacy === '' ? toolkit : `${legacy}; ${toolkit}`)
      .timeout(5_000);
    expect(res.status).toBe(200);
    const line = setCookieLines(res.headers['set-cookie'], 'connect.sid')[0];
    if (line !== undefined) legacy = line.split(';')[0];
    seen.push(res.body);
  }
  expect(seen).toEqual([
    { views: 1, toolkitUser: 'dave' },
    { views: 2, toolkitUser: 'dave' },
    { views: 3, toolkitUser: 'dave' },
  ]);
}

// ---------------------------------------------------------------------------------------------------------------
// Body parser limits and multer uploads
// ---------------------------------------------------------------------------------------------------------------

@Controller('body')
@UseGuards(RateLimitGuard)
class BodyController {
  @Post('echo')
  @Throttle({ limit: 2, ttl: 60_000 })
  echo(@Body() body: { text?: string }) {
    bump('body-echo');
    return { length: body.text?.length ?? 0 };
  }
}

describe.each(PLATFORMS)('a body the parser refuses (413) on %s', (platform) => {
  beforeEach(() => runs.clear());

  it('never reaches the guard: not charged, the handler never runs; the limit still holds for bodies that pass', async () => {
    const { http } = await boot({
      platform,
      toolkit: { rateLimit: { headers: 'legacy' } },
      controllers: [BodyController],
      bodyParser: platform === 'fastify',
      fastify: { bodyLimit: 1_024 },
      before: (app) => {
        if (platform === 'express') app.use(bodyParser.json({ limit: '1kb' }));
      },
    });
    const big = { text: 'x'.repeat(4_096) };
    for (let i = 0; i < 3; i++) {
      const refused = await http.post('/body/echo').send(big);
      expect([refused.status, refused.headers['x-ratelimit-remaining']]).toEqual([413, undefined]);
    }
    const answers = [];
    for (let i = 0; i < 3; i++) answers.push(await http.post('/body/echo').send({ text: 'hi' }));
    expect(answers.map((r) => [r.status, r.headers['x-ratelimit-remaining']])).toEqual([
      [201, '1'],
      [201, '0'],
      [429, '0'],
    ]);
    expect(ran('body-echo')).toBe(2);
  });
});

/** A multer storage engine that counts the files it was handed and drains them. */
const stored: { files: number; bytes: number } = { files: 0, bytes: 0 };
const countingStorage = {
  _handleFile(
    _req: unknown,
    file: { stream: NodeJS.ReadableStream },
    cb: (err: Error | null, info?: { size: number }) => void,
  ) {
    let size = 0;
    file.stream.on('data', (chunk: Buffer) => {
      size += chunk.length;
    });
    file.stream.on('end', () => {
      stored.files++;
      stored.bytes += size;
      cb(null, { size });
    });
    file.stream.on('error', (err: Error) => cb(err));
  },
  _removeFile(_req: unknown, _file: unknown, cb: (err: Error | null) => void) {
    cb(null);
  },
};

@Controller('files')
@UseGuards(SessionGuard, RateLimitGuard)
class UploadController {
  @Post('upload')
  @Throttle({ limit: 2, ttl: 60_000 })
  @UseInterceptors(FileInterceptor('file', { storage: countingStorage }))
  upload(@UploadedFile() file: { size: number; originalname: string }, @CurrentSession('userId') userId: string) {
    return { userId, name: file.originalname, size: file.size };
  }
}

describe('multer on a rate-limited, session-guarded route (Express)', () => {
  beforeEach(() => {
    stored.files = 0;
    stored.bytes = 0;
  });

  it('an anonymous or refused upload is never parsed nor stored; the admitted ones are, and counted', async () => {
    const { http } = await boot({
      platform: 'express',
      toolkit: { session: { cookie: { secret: SECRET } }, rateLimit: { headers: 'legacy' } },
      controllers: [UploadController, loginController()],
      configure: (c) => c.apply(SessionMiddleware).forRoutes('*'),
    });
    const file = Buffer.alloc(20_000, 7);
    const anonymous = await http.post('/files/upload').attach('file', file, 'a.bin');
    expect([anonymous.status, anonymous.headers['x-ratelimit-remaining']]).toEqual([401, undefined]);
    expect(stored.files).toBe(0);
    const login = await http.post('/login').send({ user: 'erin' }).expect(201);
    const pair = cookiePair(login.headers['set-cookie']);
    const answers = [];
    for (let i = 0; i < 3; i++) {
      answers.push(await http.post('/files/upload').set('Cookie', pair).attach('file', file, `f${i}.bin`));
    }
    expect(answers.map((r) => [r.status, r.headers['x-ratelimit-remaining']])).toEqual([
      [201, '1'],
      [201, '0'],
      [429, '0'],
    ]);
    expect(answers[0].body).toEqual({ userId: 'erin', name: 'f0.bin', size: 20_000 });
    expect(Number(answers[2].headers['retry-after'])).toBeGreaterThanOrEqual(1);
    expect([stored.files, stored.bytes]).toEqual([2, 40_000]);
  });
});
