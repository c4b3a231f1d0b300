import 'reflect-metadata';
import {
  Body,
  Controller,
  Get,
  type MiddlewareConsumer,
  Module,
  type NestModule,
  Post,
  Req,
  Res,
  UseGuards,
} from '@nestjs/common';
import { sign as cookieSignatureSign, unsign as cookieSignatureUnsign } from 'cookie-signature';
import request from 'supertest';
import {
  CurrentSession,
  RedisConnection,
  SessionGuard,
  SessionMiddleware,
  SessionService,
  generateSessionId,
  readSessionIdFromCookieHeader,
  signCookieValue,
  unsignCookieValue,
  type CookieResponse,
  type Session,
  type SessionRequest,
} from '../../lib/index.js';
import { startRedisServer } from '../support/redis-server.js';
import { trackForCleanup } from '../support/private-servers.js';
import { closeToolkitApps, createToolkitApp, type RedisTarget } from '../support/toolkit-app.js';

afterEach(closeToolkitApps);

@Controller()
class TestAuthController {
  constructor(private readonly sessions: SessionService) {}

  @Post('login')
  async login(
    @Body() body: { user: string },
    @Req() req: SessionRequest,
    @Res({ passthrough: true }) res: CookieResponse,
  ) {
    const session = await this.sessions.create(body.user, { hello: 'world' });
    this.sessions.writeCookie(res, session, req);
    return { userId: session.userId };
  }

  @Get('open')
  open(@CurrentSession() session: Session | null) {
    return { session: session ? session.userId : null };
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

@Module({ controllers: [TestAuthController] })
class WithMiddlewareModule implements NestModule {
  configure(consumer: MiddlewareConsumer): void {
    consumer.apply(SessionMiddleware).forRoutes('*');
  }
}

@Controller('g')
class GuardOnlyController {
  @Get('me')
  @UseGuards(SessionGuard)
  me(@CurrentSession('userId') userId: string) {
    return { userId };
  }
}

const SECRET = 'test-secret';

async function httpApp(
  target: RedisTarget,
  extra: { session?: Record<string, unknown>; commandTimeout?: number } = {},
) {
  const app = await createToolkitApp({
    target,
    http: true,
    keyPrefix: `rtk-sess-http-${Math.random().toString(36).slice(2, 8)}:`,
    commandTimeout: extra.commandTimeout,
    session: { cookie: { secret: [SECRET, 'old-secret'] }, ...extra.session },
    imports: [WithMiddlewareModule],
    controllers: [GuardOnlyController],
  });
  return { app, http: request(app.app.getHttpServer()), sessions: app.get(SessionService) };
}

function sessionCookie(setCookie: string[] | string | undefined): string {
  const list = Array.isArray(setCookie) ? setCookie : setCookie ? [setCookie] : [];
  const found = list.find((c) => c.startsWith('rtk.sid='));
  if (!found) throw new Error(`no session cookie in ${JSON.stringify(list)}`);
  return found;
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

describe.each(['single', 'cluster'] as const)('SessionMiddleware, SessionGuard and @CurrentSession on %s', (target) => {
  it('login sets a signed httpOnly cookie; the session is on the request; logout destroys it', async () => {
    const { http, sessions } = await httpApp(target);
    const login = await http.post('/login').send({ user: 'alice' }).expect(201);
    const cookie = sessionCookie(login.headers['set-cookie']);
    expect(cookie).toMatch(/; Path=\/; Expires=[^;]+; HttpOnly; SameSite=Lax$/);
    expect(cookie).not.toContain('Secure');
    const pair = cookie.split(';')[0];
    const id = sessions.idFromCookieHeader(pair);
    expect(id).not.toBeNull();

    const me = await http.get('/me').set('Cookie', pair).expect(200);
    expect(me.body).toEqual({ userId: 'alice', data: { hello: 'world' }, same: true });
    // rolling: the cookie is re-sent with the session's new expiry
    expect(sessionCookie(me.headers['set-cookie'])).toContain('Expires=');
    expect((await http.get('/open').set('Cookie', pair).expect(200)).body).toEqual({ session: 'alice' });
    // the guard also works without the middleware
    expect((await http.get('/g/me').set('Cookie', pair).expect(200)).body).toEqual({ userId: 'alice' });

    const logout = await http.post('/logout').set('Cookie', pair).expect(201);
    expect(sessionCookie(logout.headers['set-cookie'])).toMatch(/^rtk\.sid=; .*Expires=Thu, 01 Jan 1970/);
    await http.get('/me').set('Cookie', pair).expect(401);
    expect(await sessions.get(id)).toBeNull();
  });

  it('ignores unsigned, tampered and foreign-secret cookies; SessionGuard answers 401', async () => {
    const { http, sessions } = await httpApp(target);
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
      expect((await http.get('/open').set('Cookie', cookie).expect(200)).body).toEqual({ session: null });
    }
  });

  it('an expired session is treated as none and its cookie is cleared', async () => {
    const { http, sessions } = await httpApp(target);
    const s = await sessions.create('bob', {}, { ttl: 100 });
    await new Promise((r) => setTimeout(r, 250));
    const res = await http
      .get('/me')
      .set('Cookie', `rtk.sid=${encodeURIComponent(signCookieValue(s.id, SECRET))}`)
      .expect(401);
    expect(sessionCookie(res.headers['set-cookie'])).toMatch(/^rtk\.sid=;/);
  });
});

describe('cookie options', () => {
  it('uses name, path, sameSite, secure and a fixed maxAge from the options', async () => {
    const app = await createToolkitApp({
      http: true,
      keyPrefix: 'rtk-sess-opts:',
      session: {
        cookie: {
          secret: SECRET,
          name: 'sid',
          path: '/',
          sameSite: 'strict',
          secure: true,
          maxAge: 3_600_000,
          domain: 'example.test',
        },
      },
      controllers: [TestAuthController],
    });
    const res = await request(app.app.getHttpServer()).post('/login').send({ user: 'x' }).expect(201);
    const cookie = (res.headers['set-cookie'] as unknown as string[])[0];
    expect(cookie).toMatch(
      /^sid=s%3A[A-Za-z0-9_-]{43}\.[^;]+; Path=\/; Domain=example\.test; Max-Age=3600; Expires=[^;]+; HttpOnly; Secure; SameSite=Strict$/,
    );
  });

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

describe('Redis down → 503', () => {
  it('answers 503 with a clear body, never an anonymous pass, and recovers', async () => {
    const server = trackForCleanup(await startRedisServer());
    const { http, sessions, app } = await httpApp({ url: server.url }, { commandTimeout: 300 });
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
    await http.get('/open').expect(200, { session: null });
    await http.get('/me').expect(401);
    await server.restart();
    const connection = app.get(RedisConnection);
    const deadline = Date.now() + 10_000;
    while (connection.status !== 'ready' && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    // the data died with the server (no persistence): the old cookie is now simply no session
    await http.get('/me').set('Cookie', pair).expect(401);
  });
});
