import { createParamDecorator, type ExecutionContext } from '@nestjs/common';
import { attachedSession, sessionSource, socketSession } from './session.http.js';
import type { Session } from './session.types.js';

/**
 * The current session, or null. `@CurrentSession('userId')` gives one property of it.
 * - HTTP (Express and Fastify): the session SessionMiddleware or SessionGuard attached to the request (on Fastify it
 *   is kept on the Node request, `req.raw`).
 * - A Socket.IO gateway's message handler: the session SessionGuard read from the handshake cookie for this
 *   socket's message (null on a handler without the guard until a guarded one ran on the socket).
 * - Any other context (rpc, a custom transport, GraphQL): UnsupportedContextError, never a session read out of a
 *   message payload.
 */
export const CurrentSession = createParamDecorator(
  (property: keyof Session | undefined, context: ExecutionContext): unknown => {
    const source = sessionSource(context, '@CurrentSession()');
    const session = (source.type === 'ws' ? socketSession(source.socket) : attachedSession(source.req)) ?? null;
    return property === undefined || session === null ? session : session[property];
  },
);
