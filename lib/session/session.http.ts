import { type ExecutionContext, Logger, ServiceUnavailableException } from '@nestjs/common';
import { RedisUnavailableError, UnsupportedContextError } from '../common/errors.js';
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
  /**
   * The session, or null when there is none (on Fastify: a getter for `raw.session`). On Express, unset to the
   * middleware mounted after SessionMiddleware, filled for the route (setRequestSession).
   */
  session?: Session | null;
  /** Fastify: the Node request, which is where the session is kept (Nest middleware on Fastify sees only it). */
  raw?: { session?: Session | null };
}

/** What setRequestSession reads of an Express request: `app` (the application, a function), `route` (once matched). */
interface ExpressRequestLike {
  app?: unknown;
  route?: unknown;
}

/**
 * Where the toolkit keeps the session it attached to a request (or a Socket.IO socket): a symbol no payload can carry
 * (JSON, a form, a message of any transport only make string keys), set by setRequestSession and nothing else. It is
 * what attachedSession trusts; `req.session` is only a copy for the app's code, and another library may own it
 * (express-session puts its own Session object there on every request, possibly after SessionMiddleware ran).
 */
const TOOLKIT_SESSION = Symbol('rtk.session');

interface SessionHolder {
  session?: unknown;
  [TOOLKIT_SESSION]?: Session | null;
}

/**
 * Whether `req.session` holds another library's session: an instance of a class (express-session's, cookie-session's
 * Session), which setRequestSession leaves in place.
 */
function isForeignSession(value: unknown): boolean {
  if (typeof value !== 'object' || value === null) return false;
  const proto: unknown = Object.getPrototypeOf(value);
  return proto !== Object.prototype && proto !== null;
}

/**
 * Whether `req.session` (Express's or Fastify's request) or the Node request's holds another library's session with
 * something in it besides its cookie: express-session's Session of a logged-in user (a session loaded from its store,
 * or one the handler filled). express-session keeps its own `id` and `req` as properties that do not enumerate, so a
 * fresh session of an anonymous request lists only `cookie`. For the HTTP cache's credentials check, which errs on the
 * side of "someone is logged in": it proves nothing (never for authentication).
 */
export function foreignSessionHoldsData(req: SessionRequest | undefined): boolean {
  if (typeof req !== 'object' || req === null) return false;
  return holdsData((req as SessionHolder).session) || holdsData(req.raw?.session);
}

function holdsData(value: unknown): boolean {
  if (!isForeignSession(value)) return false;
  // for…in rather than Object.keys: an anonymous request's check allocates nothing
  for (const key in value as object) if (key !== 'cookie' && Object.hasOwn(value as object, key)) return true;
  return false;
}

/**
 * The session SessionMiddleware or SessionGuard attached to this request: a Session, null (looked, none), or undefined
 * (the toolkit has not looked). What SessionGuard and @CurrentSession trust. On Fastify it lives on the Node request
 * (`req.raw`), the one object that Nest middleware and guards both see. Only what setRequestSession attached counts:
 * a plain object on `req.session` that the toolkit did not put there is not a session (an RPC handler's "request" is
 * the message payload, and a payload `{ "session": { "userId": "admin" } }` passed SessionGuard), nor is another
 * library's (express-session's object let SessionGuard pass every request, logged in or not). The app's code may
 * still clear it: `req.session = null` after the toolkit attached one reads as null (it can only refuse more).
 */
export function attachedSession(req: SessionRequest | undefined): Session | null | undefined {
  if (typeof req !== 'object' || req === null) return undefined;
  const holder = (req.raw ?? req) as SessionHolder;
  if (!Object.hasOwn(holder, TOOLKIT_SESSION)) return undefined;
  return holder.session === null ? null : holder[TOOLKIT_SESSION];
}

/**
 * Whatever may be a session on this request, for a caller that must err on the side of "someone is logged in" (the
 * HTTP cache's credentials check, which then keeps the response out of the key every user shares): the one the toolkit
 * attached, else a plain object on `req.session` (an app's own middleware may put its session there). Never for
 * authentication: a plain object proves nothing (use attachedSession).
 */
export function requestSession(req: SessionRequest | undefined): Session | null | undefined {
  const attached = attachedSession(req);
  if (attached || typeof req !== 'object' || req === null) return attached;
  const value = ((req.raw ?? req) as SessionHolder).session;
  return typeof value === 'object' && value !== null && !isForeignSession(value) ? (value as Session) : attached;
}

/**
 * Attaches the session to the request where attachedSession reads it, and copies it to `req.session` for the app's
 * code, unless another library's session is there (express-session throws in `res.end` when its own is replaced,
 * and the request is never answered). On Express before a route matched (SessionMiddleware), the copy is left for the
 * route: `req.session` reads undefined to the middleware after it (express-session skips itself whenever `req.session`
 * is set, so mounted after SessionMiddleware it never loaded nor saved a logged-in user's session, silently), and the
 * toolkit's session from the route on (guards, interceptors, pipes, the handler), unless some middleware assigned its
 * own meanwhile (express-session's Session), which then stays.
 */
export function setRequestSession(req: SessionRequest, session: Session | null): void {
  const holder = (req.raw ?? req) as SessionHolder;
  holder[TOOLKIT_SESSION] = session;
  if (isForeignSession(holder.session)) return;
  const express = holder as ExpressRequestLike;
  if (typeof express.app === 'function' && express.route === undefined) {
    Object.defineProperty(holder, 'session', FOR_THE_ROUTE);
  } else {
    holder.session = session;
  }
}

/**
 * `req.session` on an Express request that no route has matched yet (Express's router sets `req.route` when one
 * does): undefined until then, the toolkit's session after; an assignment (express-session's, the app's) makes it a
 * plain property holding what was assigned. One descriptor for every request.
 */
const FOR_THE_ROUTE: PropertyDescriptor = {
  configurable: true,
  enumerable: true,
  get(this: SessionHolder & ExpressRequestLike) {
    if (this.route !== undefined) return this[TOOLKIT_SESSION];
    if (this[TOOLKIT_SESSION]) warnReadBeforeRoute(this.app);
    return undefined;
  },
  set(this: object, value: unknown) {
    Object.defineProperty(this, 'session', { value, writable: true, configurable: true, enumerable: true });
  },
};

const HTTP_LOGGER = new Logger('RedisToolkit:Session');

/** Express apps already told that middleware read `req.session` before the route (once per app). */
const toldBeforeRoute = new WeakSet<object>();

/**
 * Middleware mounted after SessionMiddleware read `req.session` of a request that has a session, and got undefined:
 * one warning per app, so that a middleware of the app's that relied on it (it used to get the toolkit's session) is
 * not left to treat every user as anonymous without a word. express-session mounted there reads it too (that is why
 * it reads undefined), so the warning says when nothing is wrong.
 */
function warnReadBeforeRoute(app: unknown): void {
  if (typeof app !== 'function' || toldBeforeRoute.has(app)) return;
  toldBeforeRoute.add(app);
  HTTP_LOGGER.warn(
    'req.session was read before the route by middleware mounted after SessionMiddleware, on a request that has a ' +
      'session: it reads undefined there, so that express-session mounted after SessionMiddleware still loads its ' +
      "own; the toolkit's session is on req.session from the route on (guards, interceptors, the handler). If that " +
      'middleware is your own and needs the session, read it in a guard or an interceptor, or with @CurrentSession() ' +
      '(docs/session.md, "express-session in the same app"); if it is express-session, nothing is wrong. Said ' +
      'once per app.',
  );
}

/** What SessionGuard reads of a Socket.IO socket (the client of a gateway's message handler). */
export interface SessionSocket {
  /** The connection's handshake: its headers are the HTTP upgrade request's (the browser's cookies among them). */
  handshake?: { headers?: Record<string, string | string[] | undefined> };
}

/**
 * The session SessionGuard attached to this socket for its latest guarded message, null (none), or undefined (no
 * guarded message yet). Kept on the socket under the same symbol (never `socket.session`, which is the app's), since
 * Nest hands a guard and a parameter decorator no shared per-message object.
 */
export function socketSession(socket: SessionSocket | undefined): Session | null | undefined {
  if (typeof socket !== 'object' || socket === null) return undefined;
  return (socket as SessionHolder)[TOOLKIT_SESSION];
}

export function setSocketSession(socket: SessionSocket, session: Session | null): void {
  (socket as SessionHolder)[TOOLKIT_SESSION] = session;
}

/** Where a handler's session comes from: an HTTP request, or a Socket.IO socket's handshake. */
export type SessionSource = { type: 'http'; req: SessionRequest } | { type: 'ws'; socket: SessionSocket };

/**
 * The request (HTTP) or socket (Socket.IO) of `context` that SessionGuard and @CurrentSession read. Any other context
 * (rpc, a custom transport, GraphQL) is refused with UnsupportedContextError naming the handler and the remedy: its
 * "request" is whatever the transport hands the handler (an RPC message's payload), which carries no verified
 * cookie, and a session must never be read out of it.
 */
export function sessionSource(context: ExecutionContext, who: string): SessionSource {
  const type = context.getType<string>();
  const handler = `${context.getClass()?.name}.${context.getHandler()?.name}`;
  if (type === 'http') return { type, req: context.switchToHttp().getRequest<SessionRequest>() };
  if (type === 'ws') {
    const socket = context.switchToWs().getClient<SessionSocket | undefined>();
    if (typeof socket?.handshake?.headers === 'object') return { type, socket };
    throw new UnsupportedContextError(
      `${who} found no Socket.IO handshake on the WebSocket client of ${handler}: it reads the session cookie of ` +
        "a Socket.IO connection's handshake (@nestjs/platform-socket.io); with another WebSocket adapter " +
        'authenticate the connection in a guard of your own',
    );
  }
  throw new UnsupportedContextError(
    `${who} cannot read a "${type}" execution context (${handler}): it reads the session cookie of an HTTP ` +
      'request or a Socket.IO handshake, and a message of this transport carries none (its payload is never taken ' +
      'for a session); authenticate this transport in a guard of your own',
  );
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
