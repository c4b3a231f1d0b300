import 'reflect-metadata';
import { Controller, Get, Post, Req, Res, UseGuards } from '@nestjs/common';
import { sign as cookieSignatureSign, unsign as cookieSignatureUnsign } from 'cookie-signature';
import type { Request, Response } from 'express';
import type { FastifyReply, FastifyRequest } from 'fastify';
import {
  CurrentSession,
  SessionGuard,
  SessionMiddleware,
  SessionService,
  type Session,
  type CookieResponse,
  type SessionRequest,
} from '../../lib/index.js';
import {
  RedisConnection,
  generateSessionId,
  readSessionIdFromCookieHeader,
  signCookieValue,
  unsignCookieValue,
} from '../../lib/advanced.js';
import { startRedisServer } from '../support/redis-server.js';
import { trackForCleanup } from '../support/private-servers.js';
import { cookieLine, loginController, sessionHttpApp, userIdController } from '../support/session-http-app.js';
import {
  PLATFORMS,
  closeToolkitApps,
  createToolkitApp,
  type Platform,
  type RedisTarget,
  PLATFORMS_AND_TARGETS,
} from '../support/toolkit-app.js';

afterEach(closeToolkitApps);

@Controller()
class TestAuthController {
  constructor(private readonly sessions: SessionService) {}

  @Get('open')
  open(@CurrentSession() session: Session | null, @Req() req: SessionRequest) {
    // req.session too: Express's request, or Fastify's (a getter for the Node request's, where the middleware put it)
    return { session: session ? session.userId : null, reqSession: req.session ? req.session.userId : null };
  }

  /** Code that clears `req.session` itself (on Fastify through the request.session setter). */
  @Get('forget')
  forget(@Req() req: SessionRequest) {
    const before = req.session ? req.session.userId : null;
    req.session = null;
    return { before, after: req.session };
  }

  /** A cookie of the app's own, set the platform's way, beside the middleware's rolling refresh. */
  @Get('other-cookie')
  otherCookie(@Res({ passthrough: true }) res: Response | FastifyReply) {
    if ('cookie' in res) res.cookie('other', '1');
    else res.header('set-cookie', 'other=1');
    return { ok: true };
  }

  /** docs/session.md's logout: no guard, @CurrentSession() from SessionMiddleware. */
  @Post('doc/logout')
  async docLogout(
    @CurrentSession() s: Session | null,
    @Req() req: SessionRequest,
    @Res({ passthrough: true }) res: CookieResponse,
  ) {
    const destroyed = s ? await this.sessions.destroy(s.id) : false;
    this.sessions.clearCookie(res, req);
    return { destroyed };
  }

  @Get('me')
  @UseGuards(SessionGuard)
  me(@CurrentSession() session: Session, @CurrentSession('userId') userId: string) {
    return { userId, data: session.data, same: session.userId === userId };
  }

  @Post('logout')
  @UseGuards(SessionGuard)
  async logout(
    @CurrentSession('id') id: string,
    @Req() req: SessionRequest,
    @Res({ passthrough: true }) res: CookieResponse,
  ) {
    await this.sessions.destroy(id);
    this.sessions.clearCookie(res, req);
    return { ok: true };
  }
}

/**
 * The routes behind SessionMiddleware: a login (answers { userId }), docs/session.md's login (no guard; the session the
 * browser came with is destroyed first) and TestAuthController's.
 */
const AUTH_ROUTES = [
  loginController({ data: { hello: 'world' } }),
  loginController({
    path: 'doc/login',
    replaceCurrent: true,
    answer: (_session, destroyedPrevious) => ({ destroyedPrevious }),
  }),
  TestAuthController,
];

const GuardOnlyController = userIdController('g/me');

/** The cookie helpers typed with Express's own types. */
@Controller('typed')
class ExpressTypedController {
  constructor(private readonly sessions: SessionService) {}

  @Post('login')
  async login(@Req() req: Request, @Res({ passthrough: true }) res: Response) {
    this.sessions.writeCookie(res, await this.sessions.create('typed'), req);
    return { ok: true };
  }

  @Post('logout')
  logout(@Req() req: Request, @Res({ passthrough: true }) res: Response) {
    this.sessions.clearCookie(res, req);
    return { ok: true };
  }
}

/** The cookie helpers typed with Fastify's own types (issue 12: `writeCookie(reply, …)` did not type-check). */
@Controller('typed')
class FastifyTypedController {
  constructor(private readonly sessions: SessionService) {}

  @Post('login')
  async login(@Req() req: FastifyRequest, @Res({ passthrough: true }) reply: FastifyReply) {
    this.sessions.writeCookie(reply, await this.sessions.create('typed'), req);
    return { ok: true };
  }

  @Post('logout')
  logout(@Req() req: FastifyRequest, @Res({ passthrough: true }) reply: FastifyReply) {
    this.sessions.clearCookie(reply, req);
    return { ok: true };
  }
}

const SECRET = 'test-secret';

function httpApp(target: RedisTarget, extra: { commandTimeout?: number; platform?: Platform } = {}) {
  return sessionHttpApp({
    target,
    platform: extra.platform,
    commandTimeout: extra.commandTimeout,
    secret: [SECRET, 'old-secret'],
    withMiddleware: AUTH_ROUTES,
    controllers: [GuardOnlyController, extra.platform === 'fastify' ? FastifyTypedController : ExpressTypedController],
  });
}

describe('cookie signing', () => {
  it('is compatible with cookie-signature (express-session, cookie-parser) and rejects tampering', () => {
    const id = generateSessionId();
    const signed = signCookieValue(id, SECRET);
    expect(signed).toBe(`s:${cookieSignatureSign(id, SECRET)}`);
    expect(cookieSignatureUnsign(signed.slice(2), SECRET)).toBe(id);
    expect(unsignCookieValue(signed, [SECRET])).toBe(id);
    expect(unsignCookieValue(signed, ['other', SECRET])).toBe(id);
    expect(unsignCookieValue(signed, ['other'])).toBeNull();
    expect(unsignCookieValue(id, [SECRET])).toBeNull();
    expect(unsignCookieValue(signed.replace(id[0], id[0] === 'A' ? 'B' : 'A'), [SECRET])).toBeNull();
    expect(unsignCookieValue(`${signed}x`, [SECRET])).toBeNull();
    expect(
      readSessionIdFromCookieHeader(`a=1; rtk.sid=${encodeURIComponent(signed)}; b=2`, {
        name: 'rtk.sid',
        secrets: [SECRET],
      }),
    ).toBe(id);
    expect(readSessionIdFromCookieHeader(undefined, { name: 'rtk.sid', secrets: [SECRET] })).toBeNull();
    // an array of headers (as some socket.io / raw Node handshakes give), and a wrong cookie name first
    expect(
      readSessionIdFromCookieHeader(['x=1', `rtk.sid2=zz; rtk.sid=${encodeURIComponent(signed)}`], {
        name: 'rtk.sid',
        secrets: [SECRET],
      }),
    ).toBe(id);
    // a validly signed value that is not a session id is rejected too
    expect(
      readSessionIdFromCookieHeader(`rtk.sid=${encodeURIComponent(signCookieValue('../x', SECRET))}`, {
        name: 'rtk.sid',
        secrets: [SECRET],
      }),
    ).toBeNull();
  });
});

describe.each(PLATFORMS_AND_TARGETS)(
  'SessionMiddleware, SessionGuard and @CurrentSession on %s, %s',
  (platform, target) => {
    it('login sets a signed httpOnly cookie; the session is on the request; logout destroys it', async () => {
      const { http, sessions } = await httpApp(target, { platform });
      const login = await http.post('/login').send({ user: 'alice' }).expect(201);
      const cookie = cookieLine(login.headers['set-cookie']);
      expect(cookie).toMatch(/; Path=\/; Expires=[^;]+; HttpOnly; SameSite=Lax$/);
      expect(cookie).not.toContain('Secure');
      const pair = cookie.split(';')[0];
      const id = sessions.idFromCookieHeader(pair);
      expect(id).not.toBeNull();

      const me = await http.get('/me').set('Cookie', pair).expect(200);
      expect(me.body).toEqual({ userId: 'alice', data: { hello: 'world' }, same: true });
      // rolling: the cookie is re-sent with the session's new expiry
      expect(cookieLine(me.headers['set-cookie'])).toContain('Expires=');
      expect((await http.get('/open').set('Cookie', pair).expect(200)).body).toEqual({
        session: 'alice',
        reqSession: 'alice',
      });
      // the guard also works without the middleware
      expect((await http.get('/g/me').set('Cookie', pair).expect(200)).body).toEqual({ userId: 'alice' });

      const logout = await http.post('/logout').set('Cookie', pair).expect(201);
      expect(cookieLine(logout.headers['set-cookie'])).toMatch(/^rtk\.sid=; .*Expires=Thu, 01 Jan 1970/);
      await http.get('/me').set('Cookie', pair).expect(401);
      expect(await sessions.get(id)).toBeNull();
    });

    it('the documented logout (no SessionGuard) destroys the session: the old cookie then gets 401', async () => {
      const { http, sessions } = await httpApp(target, { platform });
      const pair = cookieLine((await http.post('/login').send({ user: 'carol' }).expect(201)).headers['set-cookie']);
      const cookie = pair.split(';')[0];
      const id = sessions.idFromCookieHeader(cookie) as string;
      await http.get('/me').set('Cookie', cookie).expect(200);
      const logout = await http.post('/doc/logout').set('Cookie', cookie).expect(201);
      expect(logout.body).toEqual({ destroyed: true });
      expect(cookieLine(logout.headers['set-cookie'])).toMatch(/^rtk\.sid=; .*Expires=Thu, 01 Jan 1970/);
      await http.get('/me').set('Cookie', cookie).expect(401);
      expect(await sessions.get(id)).toBeNull();
    });

    it('the documented login destroys the session the browser came with', async () => {
      const { http, sessions } = await httpApp(target, { platform });
      const first = cookieLine((await http.post('/doc/login').send({ user: 'dan' }).expect(201)).headers['set-cookie']);
      const firstPair = first.split(';')[0];
      const again = await http.post('/doc/login').set('Cookie', firstPair).send({ user: 'dan' }).expect(201);
      expect(again.body).toEqual({ destroyedPrevious: true });
      // one session cookie in the response (the middleware's rolling refresh of the old one is replaced), the new id
      const cookies = (again.headers['set-cookie'] as unknown as string[]).filter((c) => c.startsWith('rtk.sid='));
      expect(cookies).toHaveLength(1);
      const secondPair = cookies[0].split(';')[0];
      expect(secondPair).not.toBe(firstPair);
      await http.get('/me').set('Cookie', firstPair).expect(401);
      await http.get('/me').set('Cookie', secondPair).expect(200);
      expect(await sessions.get(sessions.idFromCookieHeader(firstPair) as string)).toBeNull();
    });

    it('req.session can be assigned as well as read', async () => {
      const { http } = await httpApp(target, { platform });
      const pair = cookieLine((await http.post('/login').send({ user: 'gus' }).expect(201)).headers['set-cookie']);
      expect((await http.get('/forget').set('Cookie', pair.split(';')[0]).expect(200)).body).toEqual({
        before: 'gus',
        after: null,
      });
    });

    it("the app's own cookies and the middleware's rolling refresh are both sent", async () => {
      const { http } = await httpApp(target, { platform });
      const pair = cookieLine((await http.post('/login').send({ user: 'erin' }).expect(201)).headers['set-cookie']);
      const res = await http.get('/other-cookie').set('Cookie', pair.split(';')[0]).expect(200);
      const cookies = res.headers['set-cookie'] as unknown as string[];
      expect(cookies.filter((c) => c.startsWith('other=1'))).toHaveLength(1);
      expect(cookieLine(cookies)).toContain('Expires=');
    });

    it(`the cookie helpers typed with ${platform}'s own request and response types`, async () => {
      const { http } = await httpApp(target, { platform });
      const login = await http.post('/typed/login').expect(201);
      const pair = cookieLine(login.headers['set-cookie']).split(';')[0];
      expect((await http.get('/me').set('Cookie', pair).expect(200)).body.userId).toBe('typed');
      const logout = await http.post('/typed/logout').set('Cookie', pair).expect(201);
      expect(cookieLine(logout.headers['set-cookie'])).toMatch(/^rtk\.sid=; /);
    });

    it('ignores unsigned, tampered and foreign-secret cookies; SessionGuard answers 401', async () => {
      const { http, sessions } = await httpApp(target, { platform });
      const s = await sessions.create('mallory-target');
      const good = encodeURIComponent(signCookieValue(s.id, SECRET));
      await http.get('/me').set('Cookie', `rtk.sid=${good}`).expect(200);
      // rotation: a cookie signed with the second secret is still accepted
      await http
        .get('/me')
        .set('Cookie', `rtk.sid=${encodeURIComponent(signCookieValue(s.id, 'old-secret'))}`)
        .expect(200);
      const bad = [
        `rtk.sid=${s.id}`,
        `rtk.sid=s%3A${s.id}`,
        `rtk.sid=${encodeURIComponent(signCookieValue(s.id, 'attacker'))}`,
        `rtk.sid=${encodeURIComponent(signCookieValue(s.id, SECRET).slice(0, -2))}`,
        `rtk.sid=${encodeURIComponent(signCookieValue(generateSessionId(), SECRET))}`,
        'rtk.sid=',
        '',
      ];
      for (const cookie of bad) {
        const res = await http.get('/me').set('Cookie', cookie);
        expect(res.status).toBe(401);
        expect(res.body.message).toBe('A valid session is required');
        expect((await http.get('/open').set('Cookie', cookie).expect(200)).body).toEqual({
          session: null,
          reqSession: null,
        });
      }
    });

    it('an expired session is treated as none and its cookie is cleared', async () => {
      const { http, sessions } = await httpApp(target, { platform });
      const s = await sessions.create('bob', {}, { ttl: 100 });
      await new Promise((r) => setTimeout(r, 250));
      const res = await http
        .get('/me')
        .set('Cookie', `rtk.sid=${encodeURIComponent(signCookieValue(s.id, SECRET))}`)
        .expect(401);
      expect(cookieLine(res.headers['set-cookie'])).toMatch(/^rtk\.sid=;/);
    });
  },
);

describe('Fastify: another plugin owns request.session', () => {
  it('leaves it alone, warns at start, and @CurrentSession() and SessionGuard still see the toolkit session', async () => {
    const warnings: string[] = [];
    const logger = {
      log: () => undefined,
      error: () => undefined,
      warn: (message: unknown) => warnings.push(String(message)),
    };
    const { http, sessions } = await sessionHttpApp({
      platform: 'fastify',
      logger,
      secret: SECRET,
      withMiddleware: AUTH_ROUTES,
      // what @fastify/session and @fastify/secure-session do
      beforeInit: (a) => {
        const fastify = a.getHttpAdapter().getInstance() as { decorateRequest(name: string, value: unknown): void };
        fastify.decorateRequest('session', null);
      },
    });
    expect(warnings.filter((w) => w.includes('request.session is already decorated'))).toHaveLength(1);
    const s = await sessions.create('frank');
    const pair = `rtk.sid=${encodeURIComponent(signCookieValue(s.id, SECRET))}`;
    expect((await http.get('/open').set('Cookie', pair).expect(200)).body).toEqual({
      session: 'frank',
      reqSession: null, // the other plugin's
    });
    expect((await http.get('/me').set('Cookie', pair).expect(200)).body.userId).toBe('frank');
  });
});

describe.each(PLATFORMS)('cookie options on %s', (platform) => {
  it('uses name, path, sameSite, secure and a fixed maxAge from the options', async () => {
    const { http } = await sessionHttpApp({
      platform,
      secret: SECRET,
      session: {
        cookie: {
          name: 'sid',
          path: '/',
          sameSite: 'strict',
          secure: true,
          maxAge: 3_600_000,
          domain: 'example.test',
        },
      },
      controllers: AUTH_ROUTES,
    });
    const res = await http.post('/login').send({ user: 'x' }).expect(201);
    const cookie = (res.headers['set-cookie'] as unknown as string[])[0];
    expect(cookie).toMatch(
      /^sid=s%3A[A-Za-z0-9_-]{43}\.[^;]+; Path=\/; Domain=example\.test; Max-Age=3600; Expires=[^;]+; HttpOnly; Secure; SameSite=Strict$/,
    );
  });
});

describe('cookie options', () => {
  it("secure: 'auto' follows the request protocol", async () => {
    const app = await createToolkitApp({
      keyPrefix: 'rtk-sess-auto:',
      session: { cookie: { secret: SECRET, secure: 'auto' } },
    });
    const sessions = app.get(SessionService);
    const headers = new Map<string, unknown>();
    const res = { getHeader: (n: string) => headers.get(n), setHeader: (n: string, v: unknown) => headers.set(n, v) };
    const s = await sessions.create('x');
    sessions.writeCookie(res, s, { secure: false });
    expect(String(headers.get('Set-Cookie'))).not.toContain('Secure');
    sessions.writeCookie(res, s, { secure: true });
    expect(headers.get('Set-Cookie')).toHaveLength(1);
    expect(String(headers.get('Set-Cookie'))).toContain('; Secure');
    // Fastify's request (and the Node request @fastify/middie gives Nest middleware) says it with `protocol`
    sessions.writeCookie(res, s, { protocol: 'http' });
    expect(String(headers.get('Set-Cookie'))).not.toContain('Secure');
    sessions.writeCookie(res, s, { protocol: 'https' });
    expect(String(headers.get('Set-Cookie'))).toContain('; Secure');
  });

  it('SessionMiddleware refuses to start without a secret', async () => {
    const app = await createToolkitApp({ keyPrefix: 'rtk-sess-nosecret:' });
    const sessions = app.get(SessionService);
    expect(() => new SessionMiddleware(sessions)).toThrow(/session\.cookie\.secret is required/);
    const res = { getHeader: () => undefined, setHeader: () => undefined };
    expect(() => sessions.writeCookie(res, { id: generateSessionId(), expiresAt: Date.now() })).toThrow(
      /secret is required/,
    );
    // without a secret nothing verifies: no cookie is ever accepted
    expect(
      sessions.idFromCookieHeader(`rtk.sid=${encodeURIComponent(signCookieValue(generateSessionId(), 'x'))}`),
    ).toBeNull();
  });
});

describe.each(PLATFORMS)('Redis down → 503 on %s', (platform) => {
  it('answers 503 with a clear body, never an anonymous pass, and recovers', async () => {
    const server = trackForCleanup(await startRedisServer());
    const { http, sessions, app } = await httpApp({ url: server.url }, { commandTimeout: 300, platform });
    const s = await sessions.create('alice');
    const pair = `rtk.sid=${encodeURIComponent(signCookieValue(s.id, SECRET))}`;
    await http.get('/me').set('Cookie', pair).expect(200);
    await server.kill();
    for (const path of ['/me', '/open', '/g/me']) {
      const res = await http.get(path).set('Cookie', pair);
      expect(res.status).toBe(503);
      expect(res.body).toMatchObject({ statusCode: 503, error: 'Service Unavailable', code: 'E_REDIS_UNAVAILABLE' });
      expect(res.body.message).toMatch(/Sessions are temporarily unavailable/);
      expect(JSON.stringify(res.body)).not.toContain(s.id);
    }
    // without a cookie there is no session to load: anonymous routes still work, guarded ones say 401
    await http.get('/open').expect(200, { session: null, reqSession: null });
    await http.get('/me').expect(401);
    await server.restart();
    const connection = app.get(RedisConnection);
    const deadline = Date.now() + 10_000;
    while (connection.status !== 'ready' && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    // the data died with the server (no persistence): the old cookie is now simply no session
    await http.get('/me').set('Cookie', pair).expect(401);
  });
});
