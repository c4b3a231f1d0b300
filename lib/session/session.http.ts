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
 * Where the toolkit's session is also kept on the request, for when another library owns `req.session`: express-session
 * puts its own Session object there on every request, logged in or not (and may do so after SessionMiddleware ran).
 */
const TOOLKIT_SESSION = Symbol('rtk.session');

interface SessionHolder {
  session?: unknown;
  [TOOLKIT_SESSION]?: Session | null;
}

/**
 * Whether `req.session` holds another library's session: an instance of a class (express-session's, cookie-session's
 * Session). The toolkit's Session is a plain object, as is anything code assigns to mean "this session" or "none".
 */
function isForeignSession(value: unknown): boolean {
  if (typeof value !== 'object' || value === null) return false;
  const proto: unknown = Object.getPrototypeOf(value);
  return proto !== Object.prototype && proto !== null;
}

/**
 * The session SessionMiddleware or SessionGuard put on this request: a Session, null (looked, none), or undefined
 * (nobody looked yet). On Fastify it lives on the Node request (`req.raw`), the one object that Nest middleware and
 * guards both see. When another library's session is on `req.session` (express-session in the same app), the
 * toolkit's is read from where setRequestSession kept it: taking express-session's for ours let SessionGuard pass
 * every request, logged in or not.
 */
export function requestSession(req: SessionRequest): Session | null | undefined {
  const holder = (req.raw ?? req) as SessionHolder;
  const value = holder.session;
  return isForeignSession(value) ? holder[TOOLKIT_SESSION] : (value as Session | null | undefined);
}

/**
 * Puts the session on the request: on `req.session`, unless another library's session is there (express-session
 * throws in `res.end` when its own is replaced, and the request is never answered), and always beside it, where
 * requestSession finds it should another library put its own on `req.session` later.
 */
export function setRequestSession(req: SessionRequest, session: Session | null): void {
  const holder = (req.raw ?? req) as SessionHolder;
  holder[TOOLKIT_SESSION] = session;
  if (!isForeignSession(holder.session)) holder.session = session;
}

/**
 * The first live session of `ids` (SessionService.idsFromCookieHeader: the request's verified session cookies) in
 * their order, or null. Trying the others matters when there are several: a dead one sent first (the signed cookie of
 * an attacker's own logged-out session, set from a sibling subdomain) must neither hide the live session nor get its
 * cookie cleared. A live one planted so still wins: a `__Host-` cookie name prevents that (docs/session.md). Rejects
 * with the read's error (RedisUnavailableError: the caller answers 503). Used by SessionMiddleware, SessionGuard and
 * the notifications gateway's default authenticate.
 */
export function cookieSession<S>(sessions: { get(id: string): Promise<S | null> }, ids: readonly string[]) {
  // one cookie, the usual case: the read itself, no extra async step
  return ids.length === 1 ? sessions.get(ids[0]) : firstLive(sessions, ids);
}

/**
 * Several ids: all read at once, so the reads share one batched Redis call (one script call on a single server, one
 * pipeline per master on a cluster: session.batchers.ts) instead of a round trip each. Each read touches its session
 * (rolling), the live ones that are not taken too: a session whose cookie the browser still sends stays alive, as it
 * would once that cookie is the one taken. A read's failure counts only when no live session comes before it.
 */
async function firstLive<S>(sessions: { get(id: string): Promise<S | null> }, ids: readonly string[]) {
  const reads = ids.map((id) => sessions.get(id));
  for (const read of reads) read.catch(() => undefined); // a failed read past the one taken is not an error
  for (const read of reads) {
    const session = await read;
    if (session !== null) return session;
  }
  return null;
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
