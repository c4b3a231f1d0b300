import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import {
  type CanActivate,
  Controller,
  type ExecutionContext,
  Get,
  Header,
  Injectable,
  Req,
  Res,
  UnauthorizedException,
  UseGuards,
} from '@nestjs/common';
import { APP_INTERCEPTOR } from '@nestjs/core';
import request from 'supertest';
import { CurrentSession, InvalidOptionsError, SessionGuard, SessionService } from '../../lib/index.js';
import {
  CacheKey,
  CacheShared,
  HttpCacheInterceptor,
  KeyBuilder,
  RedisConnection,
  signCookieValue,
} from '../../lib/advanced.js';
import type { RedisClient } from '../../lib/common/lua-script.js';
import { recordingLogger } from '../support/recording-logger.js';
import { PLATFORMS, type Platform, closeToolkitApps, createToolkitApp } from '../support/toolkit-app.js';
import { waitFor } from '../support/wait.js';

/**
 * HttpCacheInterceptor as a shared cache (RFC 9111 §3.5): a request that carries credentials is neither answered from
 * nor stored under a key every user shares, unless the route says its response is the same for everyone; a response
 * meant for one user or client (Cache-Control: private / no-store, Set-Cookie) is never stored nor handed to another
 * request. Installed globally (APP_INTERCEPTOR), as docs/cache.md offers.
 */

afterEach(closeToolkitApps);

interface AuthedRequest {
  headers: Record<string, string | undefined>;
  user?: { id: string };
}
/** Express's `res` and Fastify's `reply` both have `header(name, value)`. */
interface HeaderResponse {
  header(name: string, value: string): unknown;
}

const calls = {
  me: 0,
  keyed: 0,
  keyedPrivate: 0,
  catalog: 0,
  fixed: 0,
  cookieMe: 0,
  sessionMe: 0,
  open: 0,
  private: 0,
  noStore: 0,
  cookie: 0,
  declared: 0,
  slowCookie: 0,
  products: 0,
  basket: 0,
};

/** What @nestjs/passport's AuthGuard('jwt') leaves behind: `req.user` from `Authorization: Bearer <name>`. */
@Injectable()
class BearerGuard implements CanActivate {
  canActivate(context: ExecutionContext): boolean {
    const req = context.switchToHttp().getRequest<AuthedRequest>();
    const match = /^Bearer (\w+)$/.exec(req.headers.authorization ?? '');
    if (!match) throw new UnauthorizedException();
    req.user = { id: match[1] };
    return true;
  }
}

/** A guard that finds the user in a cookie of its own app (`uid=<name>`): no Authorization header, only `req.user`. */
@Injectable()
class CookieUserGuard implements CanActivate {
  canActivate(context: ExecutionContext): boolean {
    const req = context.switchToHttp().getRequest<AuthedRequest>();
    const match = /(?:^|; )uid=(\w+)/.exec(req.headers.cookie ?? '');
    if (!match) throw new UnauthorizedException();
    req.user = { id: match[1] };
    return true;
  }
}

@Controller('account')
@UseGuards(BearerGuard)
class AccountController {
  @Get('me')
  me(@Req() req: AuthedRequest): { user: string; n: number } {
    return { user: req.user?.id ?? '?', n: ++calls.me };
  }

  @Get('keyed')
  @CacheKey((req: AuthedRequest) => `me:${req.user?.id}`)
  keyed(@Req() req: AuthedRequest): { user: string; n: number } {
    return { user: req.user?.id ?? '?', n: ++calls.keyed };
  }

  /** Per-user key and `private` for the browser and CDNs: this cache keys it per user, so it is stored. */
  @Get('keyed-private')
  @CacheKey((req: AuthedRequest) => `me-private:${req.user?.id}`)
  @Header('Cache-Control', 'private, max-age=60')
  keyedPrivate(@Req() req: AuthedRequest): { user: string; n: number } {
    return { user: req.user?.id ?? '?', n: ++calls.keyedPrivate };
  }

  @Get('catalog')
  @CacheShared()
  catalog(): { items: string[]; n: number } {
    return { items: ['tea', 'cake'], n: ++calls.catalog };
  }

  /** A fixed key is one entry for every user, as the URL is: it does not make the route per user. */
  @Get('fixed')
  @CacheKey('account-fixed')
  fixed(@Req() req: AuthedRequest): { user: string; n: number } {
    return { user: req.user?.id ?? '?', n: ++calls.fixed };
  }
}

/** @CacheShared on the controller, undone on one route. */
@Controller('shop')
@UseGuards(BearerGuard)
@CacheShared()
class ShopController {
  @Get('products')
  products(): { n: number } {
    return { n: ++calls.products };
  }

  @Get('basket')
  @CacheShared(false)
  basket(@Req() req: AuthedRequest): { user: string; n: number } {
    return { user: req.user?.id ?? '?', n: ++calls.basket };
  }
}

@Controller('cookie-account')
@UseGuards(CookieUserGuard)
class CookieAccountController {
  @Get('me')
  me(@Req() req: AuthedRequest): { user: string; n: number } {
    return { user: req.user?.id ?? '?', n: ++calls.cookieMe };
  }
}

@Controller('session-account')
@UseGuards(SessionGuard)
class SessionAccountController {
  @Get('me')
  me(@CurrentSession('userId') userId: string): { user: string; n: number } {
    return { user: userId, n: ++calls.sessionMe };
  }
}

/** Released by the slow-cookie test once both of its requests are in the interceptor. */
let release: () => void = () => undefined;
const arrived = { slowCookie: 0 };

/** Counts the requests of the slow-cookie route that got as far as its guards (which run before interceptors). */
@Injectable()
class ArrivalGuard implements CanActivate {
  canActivate(): boolean {
    arrived.slowCookie++;
    return true;
  }
}

@Controller('pages')
class PagesController {
  @Get('open')
  open(): { n: number } {
    return { n: ++calls.open };
  }

  @Get('private')
  private(@Res({ passthrough: true }) res: HeaderResponse): { n: number } {
    res.header('Cache-Control', 'private, max-age=60');
    return { n: ++calls.private };
  }

  @Get('no-store')
  noStore(@Res({ passthrough: true }) res: HeaderResponse): { n: number } {
    res.header('Cache-Control', 'no-store');
    return { n: ++calls.noStore };
  }

  @Get('cookie')
  cookie(@Res({ passthrough: true }) res: HeaderResponse): { token: number } {
    const token = ++calls.cookie;
    res.header('Set-Cookie', `visitor=${token}; Path=/; HttpOnly`);
    return { token };
  }

  @Get('declared')
  @Header('Cache-Control', 'private')
  declared(): { n: number } {
    return { n: ++calls.declared };
  }

  @Get('slow-cookie')
  @UseGuards(ArrivalGuard)
  async slowCookie(@Res({ passthrough: true }) res: HeaderResponse): Promise<{ token: number }> {
    const token = ++calls.slowCookie;
    if (token === 1) await new Promise<void>((r) => (release = r));
    res.header('Set-Cookie', `csrf=${token}; Path=/; HttpOnly`);
    return { token };
  }
}

const SECRET = 'sharing-secret';

async function sharingApp(platform: Platform) {
  const keyPrefix = `rtk-hs${randomBytes(4).toString('hex')}:`;
  const logs = recordingLogger();
  const app = await createToolkitApp({
    keyPrefix,
    cache: { defaultTtl: 60_000, beta: 0 },
    session: { cookie: { secret: SECRET } },
    controllers: [
      AccountController,
      ShopController,
      CookieAccountController,
      SessionAccountController,
      PagesController,
    ],
    providers: [{ provide: APP_INTERCEPTOR, useClass: HttpCacheInterceptor }],
    http: true,
    platform,
    logger: logs.logger,
  });
  const client = app.get(RedisConnection).client as RedisClient;
  const keys = new KeyBuilder(keyPrefix);
  return {
    app,
    http: request(app.app.getHttpServer()),
    warnings: logs.warnings,
    /** Whether the cache holds an entry under `key` (an interceptor key: `http:/path` or a @CacheKey). */
    stored: async (key: string) => (await client.exists(keys.key('cache', key))) === 1,
  };
}

/** [X-Cache, body] of a response. */
const seen = (res: request.Response) => [res.headers['x-cache'], res.body];
const bearer = (user: string) => `Bearer ${user}`;
const warningsAbout = (warnings: string[], route: string) => warnings.filter((w) => w.includes(`GET ${route} `));

describe('@CacheShared', () => {
  it('refuses a value that is not true or false at declaration', () => {
    expect(() => CacheShared('yes' as never)).toThrow(InvalidOptionsError);
    expect(() => CacheShared('yes' as never)).toThrow('@CacheShared: shared must be true or false');
    expect(() => CacheShared(false)).not.toThrow();
  });
});

describe.each(PLATFORMS)('HttpCacheInterceptor and credentials on %s', (platform) => {
  beforeEach(() => {
    for (const k of Object.keys(calls) as (keyof typeof calls)[]) calls[k] = 0;
    arrived.slowCookie = 0;
  });

  it("never serves one user's response to another: a request with an Authorization header bypasses the URL key", async () => {
    const { http, warnings, stored } = await sharingApp(platform);
    const ann = await http.get('/account/me').set('Authorization', bearer('ann')).expect(200);
    const bob = await http.get('/account/me').set('Authorization', bearer('bob')).expect(200);
    const annAgain = await http.get('/account/me').set('Authorization', bearer('ann')).expect(200);
    // before: bob got ['HIT', { user: 'ann', n: 1 }], ann's own answer, and the handler ran once
    expect([seen(ann), seen(bob), seen(annAgain)]).toEqual([
      ['BYPASS', { user: 'ann', n: 1 }],
      ['BYPASS', { user: 'bob', n: 2 }],
      ['BYPASS', { user: 'ann', n: 3 }],
    ]);
    expect(calls.me).toBe(3);
    expect(await stored('http:/account/me')).toBe(false);
    // one warning for the route, naming what was seen and both remedies
    const warned = warningsAbout(warnings, 'AccountController.me');
    expect(warned).toHaveLength(1);
    expect(warned[0]).toContain('an Authorization header');
    expect(warned[0]).toContain("@CacheKey((req) => 'orders:' + req.user.id)");
    expect(warned[0]).toContain('@CacheShared()');
  });

  it('bypasses on req.user set by a guard without an Authorization header, and on a toolkit session', async () => {
    const { app, http, warnings, stored } = await sharingApp(platform);
    const ann = await http.get('/cookie-account/me').set('Cookie', 'uid=ann').expect(200);
    const bob = await http.get('/cookie-account/me').set('Cookie', 'uid=bob').expect(200);
    expect([seen(ann), seen(bob)]).toEqual([
      ['BYPASS', { user: 'ann', n: 1 }],
      ['BYPASS', { user: 'bob', n: 2 }],
    ]);

    const sessions = app.get(SessionService);
    const cookieOf = async (user: string) =>
      `rtk.sid=${encodeURIComponent(signCookieValue((await sessions.create(user)).id, SECRET))}`;
    const [annCookie, bobCookie] = [await cookieOf('ann'), await cookieOf('bob')];
    const annSession = await http.get('/session-account/me').set('Cookie', annCookie).expect(200);
    const bobSession = await http.get('/session-account/me').set('Cookie', bobCookie).expect(200);
    expect([seen(annSession), seen(bobSession)]).toEqual([
      ['BYPASS', { user: 'ann', n: 1 }],
      ['BYPASS', { user: 'bob', n: 2 }],
    ]);
    expect([calls.cookieMe, calls.sessionMe]).toEqual([2, 2]);
    expect([await stored('http:/cookie-account/me'), await stored('http:/session-account/me')]).toEqual([false, false]);
    const cookieWarnings = warningsAbout(warnings, 'CookieAccountController.me');
    const sessionWarnings = warningsAbout(warnings, 'SessionAccountController.me');
    expect([cookieWarnings.length, sessionWarnings.length]).toEqual([1, 1]);
    expect(cookieWarnings[0]).toContain('req.user');
    expect(sessionWarnings[0]).toContain('a session (SessionMiddleware / SessionGuard)');
  });

  it('caches what the route opts in: a @CacheKey function per user, @CacheShared for everyone; not a fixed key', async () => {
    const { http, warnings, stored } = await sharingApp(platform);
    const as = (path: string, user: string) => http.get(path).set('Authorization', bearer(user)).expect(200);

    // per-user key: one entry per user, each user's own body
    const keyed = [
      await as('/account/keyed', 'ann'),
      await as('/account/keyed', 'bob'),
      await as('/account/keyed', 'ann'),
    ];
    expect(keyed.map(seen)).toEqual([
      ['MISS', { user: 'ann', n: 1 }],
      ['MISS', { user: 'bob', n: 2 }],
      ['HIT', { user: 'ann', n: 1 }],
    ]);
    expect(calls.keyed).toBe(2);
    expect([await stored('me:ann'), await stored('me:bob')]).toEqual([true, true]);

    // per-user key with Cache-Control: private (for browsers and CDNs): stored, since the key is the user's own
    const own = [await as('/account/keyed-private', 'ann'), await as('/account/keyed-private', 'ann')];
    expect(own.map(seen)).toEqual([
      ['MISS', { user: 'ann', n: 1 }],
      ['HIT', { user: 'ann', n: 1 }],
    ]);
    expect(own[1].headers['cache-control']).toBe('private, max-age=60');

    // @CacheShared: the same entry for every user, under the URL
    const catalog = [await as('/account/catalog', 'ann'), await as('/account/catalog', 'bob')];
    expect(catalog.map(seen)).toEqual([
      ['MISS', { items: ['tea', 'cake'], n: 1 }],
      ['HIT', { items: ['tea', 'cake'], n: 1 }],
    ]);
    expect(calls.catalog).toBe(1);
    expect(await stored('http:/account/catalog')).toBe(true);

    // a fixed @CacheKey string is one entry for everyone: bypassed like the URL, with its own warning
    const fixed = [await as('/account/fixed', 'ann'), await as('/account/fixed', 'bob')];
    expect(fixed.map(seen)).toEqual([
      ['BYPASS', { user: 'ann', n: 1 }],
      ['BYPASS', { user: 'bob', n: 2 }],
    ]);
    expect(await stored('account-fixed')).toBe(false);

    // @CacheShared on a controller, @CacheShared(false) on one of its routes
    const shop = [
      await as('/shop/products', 'ann'),
      await as('/shop/products', 'bob'),
      await as('/shop/basket', 'ann'),
      await as('/shop/basket', 'bob'),
    ];
    expect(shop.map(seen)).toEqual([
      ['MISS', { n: 1 }],
      ['HIT', { n: 1 }],
      ['BYPASS', { user: 'ann', n: 1 }],
      ['BYPASS', { user: 'bob', n: 2 }],
    ]);

    const cacheWarnings = warnings.filter((w) => w.includes('HttpCacheInterceptor'));
    expect(cacheWarnings).toHaveLength(2);
    expect(warningsAbout(warnings, 'AccountController.fixed')[0]).toContain('its @CacheKey string');
    expect(warningsAbout(warnings, 'ShopController.basket')[0]).toContain('its URL');
  });

  it('anonymous requests are cached as before: MISS, then HIT, one handler call, no warning', async () => {
    const { http, warnings, stored } = await sharingApp(platform);
    const answers = [
      await http.get('/pages/open').expect(200),
      await http.get('/pages/open').expect(200),
      await http.get('/pages/open').set('Cookie', 'consent=yes').expect(200),
    ];
    expect(answers.map(seen)).toEqual([
      ['MISS', { n: 1 }],
      ['HIT', { n: 1 }],
      ['HIT', { n: 1 }],
    ]);
    expect(calls.open).toBe(1);
    expect(await stored('http:/pages/open')).toBe(true);
    expect(warnings.filter((w) => w.includes('HttpCacheInterceptor'))).toEqual([]);
  });

  it('never stores a response marked private or no-store, or setting a cookie; a declared private is bypassed', async () => {
    const { http, warnings, stored } = await sharingApp(platform);
    for (const path of ['/pages/private', '/pages/no-store', '/pages/cookie', '/pages/declared']) {
      await http.get(path).expect(200);
      await http.get(path).expect(200);
    }
    const last = {
      private: await http.get('/pages/private').expect(200),
      noStore: await http.get('/pages/no-store').expect(200),
      cookie: await http.get('/pages/cookie').expect(200),
      declared: await http.get('/pages/declared').expect(200),
    };
    // before: the second request of each was a HIT of the first one's body, and each handler ran once
    expect([seen(last.private), seen(last.noStore), seen(last.cookie), seen(last.declared)]).toEqual([
      ['MISS', { n: 3 }],
      ['MISS', { n: 3 }],
      ['MISS', { token: 3 }],
      ['BYPASS', { n: 3 }],
    ]);
    expect(last.private.headers['cache-control']).toBe('private, max-age=60');
    expect(last.declared.headers['cache-control']).toBe('private');
    // each client gets its own cookie with its own body
    expect(last.cookie.headers['set-cookie']).toEqual(['visitor=3; Path=/; HttpOnly']);
    expect(calls).toMatchObject({ private: 3, noStore: 3, cookie: 3, declared: 3 });
    const paths = ['/pages/private', '/pages/no-store', '/pages/cookie', '/pages/declared'];
    expect(await Promise.all(paths.map((p) => stored(`http:${p}`)))).toEqual([false, false, false, false]);
    // a warning once per route where the app may not know why (private, a cookie); none for what it declared
    const counts = ['private', 'noStore', 'cookie', 'declared'].map(
      (m) => warningsAbout(warnings, `PagesController.${m}`).length,
    );
    expect(counts).toEqual([1, 0, 1, 0]);
    expect(warningsAbout(warnings, 'PagesController.private')[0]).toContain('Cache-Control: private');
    expect(warningsAbout(warnings, 'PagesController.cookie')[0]).toContain('Set-Cookie');
  });

  it("a request that joined another's load never gets that other's cookie response: it runs its own handler", async () => {
    const { http } = await sharingApp(platform);
    const first = http.get('/pages/slow-cookie').then((r) => r);
    // the first request is in its handler (which waits), the second past its guards and into the interceptor
    expect(await waitFor(() => calls.slowCookie === 1, 5_000)).toBe(true);
    const second = http.get('/pages/slow-cookie').then((r) => r);
    expect(await waitFor(() => arrived.slowCookie === 2, 5_000)).toBe(true);
    // past the interceptor's Redis read (a miss): the second request now waits on the first one's load
    await new Promise((r) => setTimeout(r, 50));
    release();
    const [a, b] = [await first, await second];
    // before: b got a's body { token: 1 } (a's csrf token) without any cookie, and the handler ran once
    expect([seen(a), seen(b)]).toEqual([
      ['MISS', { token: 1 }],
      ['MISS', { token: 2 }],
    ]);
    expect([a.headers['set-cookie'], b.headers['set-cookie']]).toEqual([
      ['csrf=1; Path=/; HttpOnly'],
      ['csrf=2; Path=/; HttpOnly'],
    ]);
    expect(calls.slowCookie).toBe(2);
  });
});
