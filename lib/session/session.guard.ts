import { Injectable, UnauthorizedException, type CanActivate, type ExecutionContext } from '@nestjs/common';
import { RedisUnavailableError } from '../common/errors.js';
import { wsException } from '../common/optional-peers.js';
import { originAllowed } from '../notifications/notifications.origin-check.js';
import { SessionService } from './session.service.js';
import {
  cookieSession,
  attachedSession,
  SESSION_UNAVAILABLE_MESSAGE,
  sessionSource,
  setRequestSession,
  setSocketSession,
  toHttpError,
  type SessionSocket,
} from './session.http.js';
import type { Session } from './session.types.js';

/**
 * Lets a call through only with a valid session.
 * - HTTP (Express and Fastify): 401 without one, 503 when Redis cannot be reached. Uses the session SessionMiddleware
 *   attached to the request; without the middleware it reads the cookie itself (and attaches it, `req.session`).
 * - A Socket.IO gateway's message handler: the session of the connection's handshake cookie, read again for every
 *   message (a session destroyed since the connection stops passing), the way the notifications gateway authenticates
 *   a connection; @CurrentSession on the handler gives it. Refusals are WsExceptions the client receives as its
 *   `exception` event: `{ statusCode: 401 }` without a valid session, 403 for a cookie sent from another origin, 503
 *   when Redis cannot be reached.
 * - Any other context (rpc, a custom transport, GraphQL): UnsupportedContextError; a message payload is never taken
 *   for a session.
 */
@Injectable()
export class SessionGuard implements CanActivate {
  constructor(private readonly sessions: SessionService) {}

  async canActivate(context: ExecutionContext): Promise<boolean> {
    const source = sessionSource(context, 'SessionGuard');
    if (source.type === 'ws') return this.activateSocket(context, source.socket);
    const req = source.req;
    let session = attachedSession(req);
    if (session === undefined) {
      try {
        session = await this.cookieSession(req.headers?.cookie);
      } catch (err) {
        throw toHttpError(err);
      }
      setRequestSession(req, session);
    }
    if (!session) throw new UnauthorizedException('A valid session is required');
    return true;
  }

  /**
   * The origins whose pages may use the session cookie over a WebSocket: a browser sends the site's cookies with a
   * WebSocket handshake whatever page opened it (cross-site WebSocket hijacking), and Socket.IO's `cors` option does
   * not apply to the WebSocket transport. Default (undefined): the same origin only (the Origin's host is the
   * handshake's Host), as the notifications gateway's default `allowedOrigins`; a handshake without an Origin header
   * (not a browser page) passes. Override to list your origins (`['https://app.example.com']`), or `'*'`.
   */
  protected allowedOrigins(_context: ExecutionContext): readonly string[] | '*' | undefined {
    return undefined;
  }

  /**
   * A message on a Socket.IO connection: the handshake's session cookie, checked against the Origin before any lookup
   * (a cross-site page must not learn whether the cookie is valid) and read for every message. Refused with a
   * WsException: Nest's WebSocket filter answers an HttpException (UnauthorizedException) with "Internal server
   * error" and logs nothing.
   */
  private async activateSocket(context: ExecutionContext, socket: SessionSocket): Promise<boolean> {
    const headers = socket.handshake?.headers ?? {};
    const handshake = { headers, auth: {}, query: {}, address: '' };
    if (headers.cookie !== undefined && !originAllowed(handshake, this.allowedOrigins(context))) {
      throw await wsException({
        statusCode: 403,
        message: 'This origin may not use the session cookie over a WebSocket (SessionGuard.allowedOrigins)',
      });
    }
    let session: Session | null;
    try {
      session = await this.cookieSession(headers.cookie);
    } catch (err) {
      if (!(err instanceof RedisUnavailableError)) throw err;
      throw await wsException({
        statusCode: 503,
        code: RedisUnavailableError.code,
        message: SESSION_UNAVAILABLE_MESSAGE,
      });
    }
    // Kept on the socket for @CurrentSession (Nest gives the guard and the decorator no shared per-message object);
    // null once the session is gone, so no later handler of this socket reads the one that was.
    setSocketSession(socket, session);
    if (!session) throw await wsException({ statusCode: 401, message: 'A valid session is required' });
    return true;
  }

  /** The first live session of the header's verified session cookies (no Redis call without one), or null. */
  private cookieSession(header: string | string[] | undefined): Promise<Session | null> {
    const ids = this.sessions.idsFromCookieHeader(header);
    return ids.length === 0 ? Promise.resolve(null) : cookieSession(this.sessions, ids);
  }
}
