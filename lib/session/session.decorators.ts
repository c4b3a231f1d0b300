import { createParamDecorator, type ExecutionContext } from '@nestjs/common';
import { requestSession, type SessionRequest } from './session.http.js';
import type { Session } from './session.types.js';

/**
 * The current request's session (set by SessionMiddleware or SessionGuard), or null. `@CurrentSession('userId')`
 * gives one property of it. Express and Fastify alike (on Fastify the session is kept on the Node request, `req.raw`).
 */
export const CurrentSession = createParamDecorator(
  (property: keyof Session | undefined, context: ExecutionContext): unknown => {
    const session = requestSession(context.switchToHttp().getRequest<SessionRequest>()) ?? null;
    return property === undefined || session === null ? session : session[property];
  },
);
