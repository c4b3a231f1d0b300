import { Injectable, type NestMiddleware } from '@nestjs/common';
import { InvalidOptionsError } from '../common/errors.js';
import type { CookieResponse } from './session.cookie.js';
import { SessionService } from './session.service.js';
import { cookieSession, setRequestSession, toHttpError, type SessionRequest } from './session.http.js';
import type { Session } from './session.types.js';

/**
 * Reads the signed session cookie, loads the session (touching it: rolling expiry, one round trip) and attaches it to
 * the request, where `@CurrentSession()` and SessionGuard read it (null without a valid session); `req.session` gives
 * it to the route (on Express from the route's guards on, so that session middleware mounted after this one, such as
 * express-session, still finds `req.session` free: setRequestSession). An unsigned, tampered or malformed cookie is
 * ignored without a Redis command. With `rolling` and no fixed `cookie.maxAge`, the cookie is re-sent so its expiry
 * follows the session's; a cookie for a session that no longer exists is cleared. Redis unreachable → 503, never an
 * anonymous pass.
 * Works on Express and on Fastify (where Nest middleware gets Node's request and response; `@CurrentSession()`,
 * SessionGuard and Fastify's `request.session` read the session from there).
 *
 * ```ts
 * export class AppModule implements NestModule {
 *   configure(consumer: MiddlewareConsumer) { consumer.apply(SessionMiddleware).forRoutes('*'); }
 * }
 * ```
 */
@Injectable()
export class SessionMiddleware implements NestMiddleware {
  constructor(private readonly sessions: SessionService) {
    if (sessions.options.cookie.secrets.length === 0) {
      throw new InvalidOptionsError(
        'session.cookie.secret is required to use SessionMiddleware (RedisToolkitModule options)',
      );
    }
  }

  async use(req: SessionRequest, res: CookieResponse, next: (error?: unknown) => void): Promise<void> {
    const ids = this.sessions.idsFromCookieHeader(req.headers.cookie);
    if (ids.length === 0) {
      setRequestSession(req, null);
      next();
      return;
    }
    let session: Session | null;
    try {
      session = await cookieSession(this.sessions, ids);
    } catch (err) {
      throw toHttpError(err);
    }
    setRequestSession(req, session);
    const { rolling, cookie } = this.sessions.options;
    if (session === null) this.sessions.clearCookie(res, req);
    else if (rolling && cookie.maxAge === undefined) this.sessions.writeCookie(res, session, req);
    next();
  }
}
