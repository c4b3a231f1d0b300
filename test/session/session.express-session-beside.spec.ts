/**
 * express-session beside the toolkit in one Express app, the two ways middleware-stack.hostile.spec.ts found broken:
 * - express-session mounted after SessionMiddleware (`consumer.apply(SessionMiddleware, session(...))`, or a legacy
 *   module's middleware registered after the toolkit's): SessionMiddleware copied the toolkit's session onto
 *   `req.session`, express-session skips itself whenever `req.session` is set, and for every user logged in with the
 *   toolkit it never loaded nor saved its session, silently (the legacy counter answered 1, 1, 1, no connect.sid
 *   cookie). Now `req.session` is left to the middleware after SessionMiddleware and filled with the toolkit's session
 *   for the route (guards, interceptors, the handler), unless some middleware (express-session) put its own there.
 * - a global HttpCacheInterceptor in an express-session app (no Passport, the handler reads `req.session.user`): the
 *   credentials check skipped another library's session object, so a logged-in user's GET was answered from and stored
 *   under the URL (the anonymous `{ user: null }` served as a HIT to alice and bob, nothing logged). Now a session of
 *   another library holding data besides its cookie keeps the request out of the shared key (BYPASS, the warning once);
 *   a fresh anonymous one holds only its cookie and is cached. SessionGuard and @CurrentSession still take no such
 *   session (session.contexts.spec.ts, nest-stack.hostile.spec.ts): the cache errs on "someone is logged in", the
 *   guard on "no one is".
 */
import 'reflect-metadata';
import type { Server } from 'node:http';
import {
  Body,
  Controller,
  Get,
  Inject,
  type MiddlewareConsumer,
  Module,
  type NestModule,
  Post,
  Req,
  UseGuards,
} from '@nestjs/common';
import { APP_INTERCEPTOR } from '@nestjs/core';
import session from 'express-session';
import request from 'supertest';
import {
  CurrentSession,
  REDIS_CLIENT,
  RedisSessionStore,
  type Session,
  SessionGuard,
  SessionMiddleware,
} from '../../lib/index.js';
import { generateSessionId, HttpCacheInterceptor, type RedisSessionStoreOptions } from '../../lib/advanced.js';
import { recordingLogger } from '../support/recording-logger.js';
import {
  cookiePair,
  loginController,
  newSessionPrefix,
  sessionHttpApp,
  setCookieLines,
} from '../support/session-http-app.js';
import { closeToolkitApps, createToolkitApp } from '../support/toolkit-app.js';

afterEach(closeToolkitApps);

type RedisClient = RedisSessionStoreOptions['client'];

const SECRET = 'toolkit-secret-of-at-least-32-characters';
const LEGACY_SECRET = 'express-session-secret-of-32-characters';

interface LegacyRequest {
  session?: { views?: number; user?: string } | Session | null;
}

/** What the request's `req.session` is, as a route or a middleware sees it. */
function kindOf(value: unknown): string {
  if (value === undefined) return 'unset';
  if (value === null) return 'null';
  const proto: unknown = Object.getPrototypeOf(value);
  if (proto !== Object.prototype) return 'express-session';
  return `toolkit:${(value as Session).userId}`;
}

/** Runs after SessionMiddleware: what middleware mounted there sees of `req.session`. */
function seenInMiddleware(req: LegacyRequest & { seen?: string }, _res: unknown, next: () => void): void {
  req.seen = kindOf(req.session);
  next();
}

@Controller('legacy')
class LegacyController {
  /** express-session's own example: a counter on `req.session`. */
  @Get('views')
  views(@Req() req: LegacyRequest, @CurrentSession() current: Session | null) {
    const s = req.session as { views?: number };
    s.views = (s.views ?? 0) + 1;
    return { views: s.views, toolkitUser: current?.userId ?? null };
  }

  @Get('guarded')
  @UseGuards(SessionGuard)
  guarded(@CurrentSession('userId') userId: string) {
    return { userId };
  }

  /** What the route and the middleware after SessionMiddleware saw of `req.session`. */
  @Get('seen')
  seen(@Req() req: LegacyRequest & { seen?: string }) {
    return { middleware: req.seen, route: kindOf(req.session) };
  }
}

@Controller('es')
class ExpressSessionController {
  @Post('login')
  login(@Req() req: { session: { user?: string; userId?: string } }, @Body() body: { user: string }) {
    req.session.user = body.user;
    // a field of the toolkit's Session's name: still not a toolkit session to the guard
    req.session.userId = body.user;
    return { ok: true };
  }

  /** A legacy route that reads its user from express-session's session, as express-session's README does. */
  @Get('profile')
  profile(@Req() req: { session: { user?: string } }) {
    return { user: req.session.user ?? null };
  }

  @Get('guarded')
  @UseGuards(SessionGuard)
  guarded(@CurrentSession('userId') userId: string) {
    return { userId };
  }

  @Get('current')
  current(@CurrentSession() current: Session | null) {
    return { current: current === null ? null : current.userId };
  }
}

/** express-session on the toolkit's Redis (RedisSessionStore, the coexistence docs/session.md describes). */
function legacySession(client: RedisClient, prefix: string) {
  return session({
    store: new RedisSessionStore({ client, prefix }),
    secret: LEGACY_SECRET,
    resave: false,
    saveUninitialized: false,
    genid: () => generateSessionId(),
  });
}

/** SessionMiddleware, then what `middlewareAfter` gives (express-session, a middleware of the app's), on every route. */
async function afterApp(
  middlewareAfter: (client: RedisClient, prefix: string) => unknown[],
  logger?: ReturnType<typeof recordingLogger>['logger'],
) {
  const prefix = newSessionPrefix();
  @Module({ controllers: [LegacyController] })
  class OrderModule implements NestModule {
    constructor(@Inject(REDIS_CLIENT) private readonly client: RedisClient) {}

    configure(consumer: MiddlewareConsumer): void {
      consumer.apply(SessionMiddleware, ...(middlewareAfter(this.client, prefix) as never[])).forRoutes('*');
    }
  }
  const app = await createToolkitApp({
    platform: 'express',
    http: true,
    keyPrefix: prefix,
    session: { cookie: { secret: SECRET } },
    imports: [OrderModule],
    controllers: [loginController()],
    ...(logger && { logger }),
  });
  return request(app.app.getHttpServer() as Server);
}

type Http = Awaited<ReturnType<typeof afterApp>>;

/** Three requests to the legacy counter with `toolkit`'s cookie (if any) and express-session's once it is set. */
async function countThree(http: Http, toolkit: string | undefined) {
  let legacy: string | undefined;
  const answers: unknown[] = [];
  for (let i = 0; i < 3; i++) {
    const cookie = [legacy, toolkit].filter((c) => c !== undefined).join('; ');
    const res = await http.get('/legacy/views').set('Cookie', cookie).timeout(5_000);
    expect(res.status).toBe(200);
    const line = setCookieLines(res.headers['set-cookie'], 'connect.sid')[0];
    if (line !== undefined) legacy = line.split(';')[0];
    answers.push(res.body);
  }
  return { answers, legacy };
}

describe('express-session mounted after SessionMiddleware (Express)', () => {
  it('the legacy session counts for a user logged in with the toolkit, and the toolkit user is still seen', async () => {
    const http = await afterApp((client, prefix) => [legacySession(client, prefix)]);
    const login = await http.post('/login').send({ user: 'dave' }).expect(201);
    const toolkit = cookiePair(login.headers['set-cookie']);
    const { answers, legacy } = await countThree(http, toolkit);
    // before: views 1, 1, 1 and no connect.sid cookie (express-session skipped itself)
    expect(answers).toEqual([
      { views: 1, toolkitUser: 'dave' },
      { views: 2, toolkitUser: 'dave' },
      { views: 3, toolkitUser: 'dave' },
    ]);
    expect(legacy).toBeDefined();
    const guarded = await http.get('/legacy/guarded').set('Cookie', `${legacy}; ${toolkit}`).timeout(5_000);
    expect([guarded.status, guarded.body]).toEqual([200, { userId: 'dave' }]);
    // the route sees express-session's session on req.session, as when express-session comes first
    const seen = await http.get('/legacy/seen').set('Cookie', `${legacy}; ${toolkit}`).timeout(5_000);
    expect(seen.body).toEqual({ route: 'express-session' });
  });

  it('an anonymous user: the legacy session counts, and SessionGuard refuses', async () => {
    const http = await afterApp((client, prefix) => [legacySession(client, prefix)]);
    const { answers, legacy } = await countThree(http, undefined);
    expect(answers).toEqual([
      { views: 1, toolkitUser: null },
      { views: 2, toolkitUser: null },
      { views: 3, toolkitUser: null },
    ]);
    expect(
      (
        await http
          .get('/legacy/guarded')
          .set('Cookie', legacy as string)
          .timeout(5_000)
      ).status,
    ).toBe(401);
  });
});

describe('req.session without express-session (Express): filled for the route', () => {
  it('middleware after SessionMiddleware finds it unset; the route finds the toolkit session', async () => {
    const http = await afterApp(() => [seenInMiddleware]);
    const login = await http.post('/login').send({ user: 'erin' }).expect(201);
    const toolkit = cookiePair(login.headers['set-cookie']);
    const seen = await http.get('/legacy/seen').set('Cookie', toolkit).timeout(5_000);
    // before: the middleware saw toolkit:erin (which is what hid the session of an express-session mounted there)
    expect(seen.body).toEqual({ middleware: 'unset', route: 'toolkit:erin' });
    const anonymous = await http.get('/legacy/seen').timeout(5_000);
    expect(anonymous.body).toEqual({ middleware: 'unset', route: 'null' });
  });

  it('middleware after SessionMiddleware that reads req.session of a logged-in request is told once per app', async () => {
    const recording = recordingLogger();
    const http = await afterApp(() => [seenInMiddleware], recording.logger);
    await http.get('/legacy/seen').timeout(5_000);
    // an anonymous request: nothing was hidden from the middleware, nothing said
    expect(recording.warnings.filter((w) => w.includes('read before the route'))).toEqual([]);
    const login = await http.post('/login').send({ user: 'gus' }).expect(201);
    const toolkit = cookiePair(login.headers['set-cookie']);
    for (let i = 0; i < 3; i++) await http.get('/legacy/seen').set('Cookie', toolkit).timeout(5_000);
    // before (2b087a1 alone): no word, while the middleware took every user for anonymous
    const told = recording.warnings.filter((w) => w.includes('req.session was read before the route'));
    expect(told).toHaveLength(1);
    expect(told[0]).toContain('@CurrentSession()');
  });

  it('a session the app assigns in middleware after SessionMiddleware stays; @CurrentSession() is the toolkit’s', async () => {
    const assign = (req: LegacyRequest, _res: unknown, next: () => void) => {
      req.session = { views: 41 };
      next();
    };
    const http = await afterApp(() => [assign]);
    const login = await http.post('/login').send({ user: 'fay' }).expect(201);
    const toolkit = cookiePair(login.headers['set-cookie']);
    const res = await http.get('/legacy/views').set('Cookie', toolkit).timeout(5_000);
    expect([res.status, res.body]).toEqual([200, { views: 42, toolkitUser: 'fay' }]);
  });
});

/** express-session (app.use, before Nest's middleware) and a global HttpCacheInterceptor; SessionMiddleware optional. */
async function cachedApp(withToolkitMiddleware: boolean) {
  const recording = recordingLogger();
  const prefix = newSessionPrefix();
  const { http } = await sessionHttpApp({
    platform: 'express',
    keyPrefix: prefix,
    secret: SECRET,
    cache: { defaultTtl: 60_000, beta: 0 },
    logger: recording.logger,
    providers: [{ provide: APP_INTERCEPTOR, useClass: HttpCacheInterceptor }],
    ...(withToolkitMiddleware
      ? { withMiddleware: [ExpressSessionController], middlewareOn: 'es/(.*)' }
      : { controllers: [ExpressSessionController] }),
    beforeInit: (nest) => {
      nest.use(legacySession(nest.get(REDIS_CLIENT), prefix));
    },
  });
  const loginAs = async (user: string) => {
    const login = await http.post('/es/login').send({ user }).timeout(5_000).expect(201);
    return cookiePair(login.headers['set-cookie'], { name: 'connect.sid' });
  };
  return { http, loginAs, warnings: recording.warnings };
}

describe('HttpCacheInterceptor in an express-session app (Express, no Passport)', () => {
  for (const withToolkitMiddleware of [false, true]) {
    const where = withToolkitMiddleware ? 'SessionMiddleware on the routes too' : 'express-session alone';
    it(`${where}: a logged-in user is never answered from the URL entry; anonymous requests are cached`, async () => {
      const { http, loginAs, warnings } = await cachedApp(withToolkitMiddleware);
      const anonymous = [await http.get('/es/profile').timeout(5_000), await http.get('/es/profile').timeout(5_000)];
      expect(anonymous.map((r) => [r.status, r.headers['x-cache'], r.body])).toEqual([
        [200, 'MISS', { user: null }],
        [200, 'HIT', { user: null }],
      ]);
      const alice = await http
        .get('/es/profile')
        .set('Cookie', await loginAs('alice'))
        .timeout(5_000);
      const bob = await http
        .get('/es/profile')
        .set('Cookie', await loginAs('bob'))
        .timeout(5_000);
      // before: ['HIT', { user: null }] for both, and no warning
      expect([alice.headers['x-cache'], alice.body, bob.headers['x-cache'], bob.body]).toEqual([
        'BYPASS',
        { user: 'alice' },
        'BYPASS',
        { user: 'bob' },
      ]);
      const credentialWarnings = warnings.filter((w) => w.includes('carries credentials'));
      expect(credentialWarnings).toHaveLength(1);
      expect(credentialWarnings[0]).toContain("another library's session, e.g. express-session's");
      // the anonymous entry is still served to anonymous requests
      expect((await http.get('/es/profile').timeout(5_000)).headers['x-cache']).toBe('HIT');
    });
  }

  it('an express-session session holding data is still no session to SessionGuard nor @CurrentSession()', async () => {
    const { http, loginAs } = await cachedApp(true);
    const cookie = await loginAs('admin');
    const guarded = await http.get('/es/guarded').set('Cookie', cookie).timeout(5_000);
    expect(guarded.status).toBe(401);
    const current = await http.get('/es/current').set('Cookie', cookie).timeout(5_000);
    expect([current.status, current.headers['x-cache'], current.body]).toEqual([200, 'BYPASS', { current: null }]);
  });
});
