import 'reflect-metadata';
import { Controller, Get, Req, UseGuards } from '@nestjs/common';
import type { Request } from 'express';
import session from 'express-session';
import { CurrentSession, REDIS_CLIENT, RedisSessionStore, type Session, SessionGuard } from '../../lib/index.js';
import { generateSessionId } from '../../lib/advanced.js';
import {
  cookiePair,
  loginController,
  newSessionPrefix,
  sessionHttpApp,
  userIdController,
} from '../support/session-http-app.js';
import { closeToolkitApps } from '../support/toolkit-app.js';

/**
 * express-session mounted in the same Express app as the toolkit's sessions (legacy routes on express-session with
 * RedisSessionStore, which docs/session.md says shares the toolkit's keys, new ones on SessionService): express-session
 * owns `req.session` and puts a Session object there on every request, logged in or not. Before, SessionGuard took
 * that object for the toolkit's session and let anonymous requests through, @CurrentSession() gave it, and
 * SessionMiddleware wrote over it, after which express-session threw in `res.end` (`req.session.touch is not a
 * function`) and the request never got an answer. Express only: on Fastify the toolkit's session is kept on the Node
 * request, which @fastify/session does not touch (session.http.spec.ts, 'another plugin owns request.session').
 */
afterEach(closeToolkitApps);

@Controller()
class MixedController {
  /** No SessionMiddleware here: the guard reads the cookie itself. */
  @Get('guarded')
  @UseGuards(SessionGuard)
  guarded(@CurrentSession() current: Session) {
    return { userId: current.userId, data: current.data };
  }

  /** A legacy route on express-session. */
  @Get('legacy')
  legacy(@Req() req: Request) {
    const s = req.session as unknown as { views?: number };
    s.views = (s.views ?? 0) + 1;
    return { views: s.views };
  }

  @Get('m/open')
  open(@CurrentSession() current: Session | null) {
    return { userId: current === null ? null : current.userId };
  }

  /** express-session's own session on a route SessionMiddleware also serves. */
  @Get('m/legacy')
  middlewareLegacy(@Req() req: Request) {
    const s = req.session as unknown as { views?: number };
    s.views = (s.views ?? 0) + 1;
    return { views: s.views };
  }
}

/** SessionMiddleware on m/… only; POST /login (alice, { plan: 'pro' }) answers { id }. */
const MIXED_ROUTES = [
  loginController({ user: 'alice', data: { plan: 'pro' }, answer: (s) => ({ id: s.id }) }),
  MixedController,
  userIdController('m/guarded'),
];

async function mixedApp(target: 'single' | 'cluster') {
  const prefix = newSessionPrefix();
  const { http } = await sessionHttpApp({
    target,
    platform: 'express',
    keyPrefix: prefix,
    secret: 'toolkit-secret-of-at-least-32-characters',
    withMiddleware: MIXED_ROUTES,
    middlewareOn: 'm/(.*)',
    beforeInit: (nest) => {
      nest.use(
        session({
          store: new RedisSessionStore({ client: nest.get(REDIS_CLIENT), prefix }),
          secret: 'express-session-secret-of-32-characters',
          resave: false,
          saveUninitialized: false,
          genid: () => generateSessionId(),
        }),
      );
    },
  });
  return http;
}

const pairOf = (setCookie: unknown, name: string): string => cookiePair(setCookie, { name });

describe.each(['single', 'cluster'] as const)('express-session in the same app (%s)', (target) => {
  it('SessionGuard refuses a request without a toolkit session, and sees the toolkit session, not express-session’s', async () => {
    const http = await mixedApp(target);
    const anonymous = await http.get('/guarded').timeout(5_000);
    expect(anonymous.status).toBe(401);
    // logged in on express-session only: still no toolkit session
    const legacy = await http.get('/legacy').timeout(5_000).expect(200);
    const legacyPair = pairOf(legacy.headers['set-cookie'], 'connect.sid');
    expect((await http.get('/guarded').set('Cookie', legacyPair).timeout(5_000)).status).toBe(401);
    const login = await http.post('/login').timeout(5_000).expect(201);
    const pair = pairOf(login.headers['set-cookie'], 'rtk.sid');
    const me = await http.get('/guarded').set('Cookie', `${legacyPair}; ${pair}`).timeout(5_000);
    expect(me.status).toBe(200);
    expect(me.body).toEqual({ userId: 'alice', data: { plan: 'pro' } });
  });

  it('SessionMiddleware leaves express-session’s req.session alone: both answer, and @CurrentSession() gives the toolkit’s', async () => {
    const http = await mixedApp(target);
    const login = await http.post('/login').timeout(5_000).expect(201);
    const pair = pairOf(login.headers['set-cookie'], 'rtk.sid');
    expect((await http.get('/m/open').timeout(5_000)).body).toEqual({ userId: null });
    expect((await http.get('/m/guarded').timeout(5_000)).status).toBe(401);
    const open = await http.get('/m/open').set('Cookie', pair).timeout(5_000);
    expect([open.status, open.body]).toEqual([200, { userId: 'alice' }]);
    const guarded = await http.get('/m/guarded').set('Cookie', pair).timeout(5_000);
    expect([guarded.status, guarded.body]).toEqual([200, { userId: 'alice' }]);
    // express-session keeps counting on a route the middleware serves, with the toolkit's cookie beside its own
    const first = await http.get('/m/legacy').set('Cookie', pair).timeout(5_000);
    expect([first.status, first.body]).toEqual([200, { views: 1 }]);
    const legacyPair = pairOf(first.headers['set-cookie'], 'connect.sid');
    const second = await http.get('/m/legacy').set('Cookie', `${pair}; ${legacyPair}`).timeout(5_000);
    expect([second.status, second.body]).toEqual([200, { views: 2 }]);
  });
});
