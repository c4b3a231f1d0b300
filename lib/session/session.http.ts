import { ServiceUnavailableException } from '@nestjs/common';
import { RedisUnavailableError } from '../common/errors.js';
import type { Session } from './session.types.js';

/**
 * What SessionMiddleware, SessionGuard and @CurrentSession read from and put on a request: Express's request, Node's
 * `IncomingMessage` (what a Nest middleware gets on Fastify) or Fastify's `FastifyRequest` (whose `raw` is the Node
 * request). All three satisfy it.
 */
export interface SessionRequest {
  headers: { cookie?: string | string[] | undefined };
  /** Express: `req.secure` (protocol and `trust proxy`). */
  secure?: boolean;
  /** Fastify (and Express): `'https'` behind TLS, or a trusted proxy that says so. */
  protocol?: string;
  /** The session, or null when there is none (on Fastify: a getter for `raw.session`). */
  session?: Session | null;
  /** Fastify: the Node request, which is where the session is kept (Nest middleware on Fastify sees only it). */
  raw?: { session?: Session | null };
}

/**
 * The session SessionMiddleware or SessionGuard put on this request: a Session, null (looked, none), or undefined
 * (nobody looked yet). On Fastify it lives on the Node request (`req.raw`), the one object that Nest middleware and
 * guards both see.
 */
export function requestSession(req: SessionRequest): Session | null | undefined {
  return (req.raw ?? req).session;
}

export function setRequestSession(req: SessionRequest, session: Session | null): void {
  (req.raw ?? req).session = session;
}

/** `secure: 'auto'`: Express sets `secure`, Fastify (and @fastify/middie, on the Node request) `protocol`. */
export function isSecureRequest(req: { secure?: boolean; protocol?: string } | undefined): boolean {
  return req?.secure === true || req?.protocol === 'https';
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
