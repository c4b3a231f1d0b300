import { createParamDecorator, type ExecutionContext } from '@nestjs/common';
import type { SessionRequest } from './session.http.js';
import type { Session } from './session.types.js';

/**
 * The current request's session (set by SessionMiddleware or SessionGuard), or null. `@CurrentSession('userId')`
 * gives one property of it.
 */
export const CurrentSession = createParamDecorator(
  (property: keyof Session | undefined, context: ExecutionContext): unknown => {
    const session = context.switchToHttp().getRequest<SessionRequest>().session ?? null;
    return property === undefined || session === null ? session : session[property];
  },
);
