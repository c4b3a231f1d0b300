import { Injectable, UnauthorizedException, type CanActivate, type ExecutionContext } from '@nestjs/common';
import { SessionService } from './session.service.js';
import { cookieSession, requestSession, setRequestSession, toHttpError, type SessionRequest } from './session.http.js';

/**
 * Lets a request through only with a valid session: 401 otherwise, 503 when Redis cannot be reached. Uses the session
 * SessionMiddleware put on the request; without the middleware it reads the cookie itself (and sets `req.session`).
 * Express and Fastify alike.
 */
@Injectable()
export class SessionGuard implements CanActivate {
  constructor(private readonly sessions: SessionService) {}

  async canActivate(context: ExecutionContext): Promise<boolean> {
    const req = context.switchToHttp().getRequest<SessionRequest>();
    let session = requestSession(req);
    if (session === undefined) {
      const ids = this.sessions.idsFromCookieHeader(req.headers?.cookie);
      try {
        session = ids.length === 0 ? null : await cookieSession(this.sessions, ids);
      } catch (err) {
        throw toHttpError(err);
      }
      setRequestSession(req, session);
    }
    if (!session) throw new UnauthorizedException('A valid session is required');
    return true;
  }
}
