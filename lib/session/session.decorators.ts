import { createParamDecorator, type ExecutionContext } from '@nestjs/common';
import { InvalidOptionsError } from '../common/errors.js';
import { nearest, shownValue } from '../common/option-checks.js';
import { attachedSession, sessionSource, socketSession } from './session.http.js';
import type { Session } from './session.types.js';

/** The properties of a Session (session.types.ts): what `@CurrentSession(property)` may name. */
const SESSION_PROPERTIES: readonly (keyof Session)[] = [
  'id',
  'userId',
  'data',
  'createdAt',
  'lastAccessedAt',
  'expiresAt',
];

const currentSession = createParamDecorator(
  (property: keyof Session | undefined, context: ExecutionContext): unknown => {
    const source = sessionSource(context, '@CurrentSession()');
    const session = (source.type === 'ws' ? socketSession(source.socket) : attachedSession(source.req)) ?? null;
    return property === undefined || session === null ? session : session[property];
  },
);

/**
 * The current session, or null. `@CurrentSession('userId')` gives one property of it.
 * - HTTP (Express and Fastify): the session SessionMiddleware or SessionGuard attached to the request (on Fastify it
 *   is kept on the Node request, `req.raw`).
 * - A Socket.IO gateway's message handler: the session SessionGuard read from the handshake cookie for this
 *   socket's message (null on a handler without the guard until a guarded one ran on the socket).
 * - Any other context (rpc, a custom transport, GraphQL): UnsupportedContextError, never a session read out of a
 *   message payload.
 *
 * A property a session does not have (`'userID'`: undefined on every request) is refused where the decorator is
 * written, with InvalidOptionsError naming the nearest one. Pipes (an object or a class) go to Nest as given.
 */
export const CurrentSession = (...dataOrPipes: Parameters<typeof currentSession>): ParameterDecorator => {
  const [property] = dataOrPipes as unknown[];
  if (property !== undefined && property !== null && typeof property !== 'object' && typeof property !== 'function') {
    if (!SESSION_PROPERTIES.includes(property as keyof Session)) {
      const near = typeof property === 'string' ? nearest(property, [...SESSION_PROPERTIES]) : undefined;
      throw new InvalidOptionsError(
        `@CurrentSession(${shownValue(property)}): ${String(property)} is not a property of a session` +
          `${near ? ` (did you mean ${near}?)` : ''}; properties: ${SESSION_PROPERTIES.join(', ')}`,
      );
    }
  }
  return currentSession(...dataOrPipes);
};
