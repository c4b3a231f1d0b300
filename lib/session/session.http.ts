import { ServiceUnavailableException } from '@nestjs/common';
import { RedisUnavailableError } from '../common/errors.js';
import type { Session } from './session.types.js';

/** What SessionMiddleware and SessionGuard read from and put on a request (Express or any Node request). */
export interface SessionRequest {
  headers: { cookie?: string | string[] | undefined };
  secure?: boolean;
  /** Set by SessionMiddleware: the session, or null when there is none. */
  session?: Session | null;
}

export const SESSION_UNAVAILABLE_MESSAGE =
  'Sessions are temporarily unavailable (the session store cannot be reached); please retry shortly';

/** Redis down → HTTP 503 with a clear body; every other error passes through unchanged. */
export function toHttpError(err: unknown): unknown {
  if (err instanceof RedisUnavailableError) {
    return new ServiceUnavailableException(
      {
        statusCode: 503,
        error: 'Service Unavailable',
        code: RedisUnavailableError.code,
        message: SESSION_UNAVAILABLE_MESSAGE,
      },
      { cause: err },
    );
  }
  return err;
}
