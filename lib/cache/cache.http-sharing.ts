import { type ExecutionContext, Logger, SetMetadata, StreamableFile } from '@nestjs/common';
import type { Reflector } from '@nestjs/core';
import { InvalidOptionsError } from '../common/errors.js';
import { foreignSessionHoldsData, requestSession, type SessionRequest } from '../session/session.http.js';
import { HTTP_CACHE_SHARED_METADATA } from './cache.constants.js';

/**
 * Whether HttpCacheInterceptor may answer a request with credentials and store its response under this route's
 * shared key (its URL, or a `@CacheKey` string), as it does for anonymous requests: `@CacheShared()` on a route (or on
 * every route of a controller) whose response is the same for every user, e.g. a catalogue behind a login. Without it
 * (or a `@CacheKey` function, which keys each request itself), a request with an Authorization header, `req.user`, a
 * toolkit session or another library's session holding data (express-session's of a logged-in user) goes to the
 * handler uncached (`X-Cache: BYPASS`). `@CacheShared(false)` on a route undoes it for that route.
 */
export function CacheShared(shared = true): MethodDecorator & ClassDecorator {
  if (typeof shared !== 'boolean') throw new InvalidOptionsError('@CacheShared: shared must be true or false');
  return SetMetadata(HTTP_CACHE_SHARED_METADATA, shared);
}

/** What HttpCacheInterceptor reads of a request to tell whether it identifies a user: Express's or Fastify's. */
export interface CredentialRequest {
  headers?: { authorization?: unknown };
  /** Set by a guard (@nestjs/passport's AuthGuard and most hand-written ones) or middleware (Passport's session). */
  user?: unknown;
  /** Fastify: the Node request, where a middleware (Express-style, through @fastify/middie) puts `user`. */
  raw?: { user?: unknown };
}

/**
 * What in this request identifies a user, as the warning names it, or undefined for an anonymous request: an
 * `Authorization` header (RFC 9111 §3.5: a shared cache does not answer such a request from a stored response),
 * `req.user` (set by a guard, which runs before any interceptor, or by middleware), a session of the toolkit's
 * SessionMiddleware / SessionGuard (or a plain object some middleware put on `req.session`), or another library's
 * session holding data besides its cookie (express-session's of a logged-in user; a fresh anonymous one holds only its
 * cookie and stays cacheable). A cookie alone is not: most are not credentials (analytics, consent, an anonymous
 * session), and one that is reaches the handler through a guard or middleware that sets one of these.
 */
function credentialsOf(request: CredentialRequest): string | undefined {
  if (request.headers?.authorization !== undefined) return 'an Authorization header';
  if (request.user || request.raw?.user) return 'req.user (set by a guard or middleware)';
  if (requestSession(request as SessionRequest)) return 'a session (SessionMiddleware / SessionGuard)';
  if (foreignSessionHoldsData(request as SessionRequest)) {
    return "req.session holding data (another library's session, e.g. express-session's)";
  }
  return undefined;
}

/**
 * Why a response must not be stored: `Cache-Control: no-store` (under any key), `Cache-Control: private` (meant for
 * one user: not under a key every user shares; under a @CacheKey function's key, which the app made per request, it
 * is), a `Set-Cookie` (a stored copy would be served without it, and its body may be that client's alone).
 */
export type Refusal = 'no-store' | 'private' | 'cookie';

const NO_STORE = /(?:^|,)\s*no-store\s*(?:,|$)/i;
/** `private`, also in its field-qualified form (`private="Set-Cookie"`): taken as a whole. */
const PRIVATE = /(?:^|,)\s*private\s*(?:[=,]|$)/i;

/** The refusal that these Cache-Control and Set-Cookie header values call for, if any. */
function refusalOf(cacheControl: unknown, setCookie: unknown, ownKey: boolean): Refusal | undefined {
  if (cacheControl !== undefined) {
    const value = Array.isArray(cacheControl) ? cacheControl.join(',') : String(cacheControl);
    if (NO_STORE.test(value)) return 'no-store';
    if (!ownKey && PRIVATE.test(value)) return 'private';
  }
  if (setCookie !== undefined && !(Array.isArray(setCookie) && setCookie.length === 0)) return 'cookie';
  return undefined;
}

/** Express's `res` or Fastify's `reply`. */
interface HeaderSource {
  getHeader?(name: string): unknown;
}

/** The refusal of a response as the handler (or middleware) left it: Express's `res`, Fastify's `reply`. */
function responseRefusal(response: HeaderSource, ownKey: boolean): Refusal | undefined {
  if (typeof response.getHeader !== 'function') return undefined;
  const refusal = refusalOf(response.getHeader('cache-control'), response.getHeader('set-cookie'), ownKey);
  return refusal ?? (pendingCookies(response) ? 'cookie' : undefined);
}

/** Where @fastify/cookie keeps what `reply.setCookie` set (its `kReplySetCookies`), once a reply showed it. */
let pendingCookiesKey: symbol | undefined;

/**
 * Whether a Fastify reply holds cookies that @fastify/cookie's `reply.setCookie` set and has not written yet: the
 * plugin keeps them in a Map on the reply and writes the Set-Cookie header in its onSend hook, after the handler's
 * response was stored. Until 2026-12-06 such a response was stored and served to every client without its cookie.
 * Express's `res.cookie` sets the header at once. (A reply is Fastify's when it has a `raw` Node response.)
 */
function pendingCookies(response: object): boolean {
  if (typeof (response as { raw?: unknown }).raw !== 'object') return false;
  let key = pendingCookiesKey;
  // the plugin decorates the reply prototype with the key: `in` fails only for a reply of another copy of it
  if (key === undefined || !(key in response)) {
    key = Object.getOwnPropertySymbols(response).find((s) => s.description === 'fastify.reply.setCookies');
    if (key === undefined) return false;
    pendingCookiesKey = key;
  }
  const cookies = (response as Record<symbol, unknown>)[key];
  return cookies instanceof Map && cookies.size > 0;
}

/** A nonce source of a Content-Security-Policy, as helmet writes one per response: `'nonce-<base64>'`. */
const NONCE = /'nonce-([A-Za-z0-9+/_=-]+)'/g;

/**
 * Whether `text`, the body about to be stored, holds a nonce of the response's Content-Security-Policy: helmet's
 * per-response nonce (`res.locals.cspNonce` read by a CSP directive, @fastify/helmet's `enableCSPNonces`) put on the
 * page's inline scripts or styles. A hit would send it under the next response's policy, whose nonce differs, and the
 * browser would refuse those scripts. Then the response is not stored nor handed to requests that joined its load
 * (each has its own nonce), and a warning says so once per route. Until 2026-12-06 it was stored, and every hit was
 * a page whose scripts the browser blocked, without a word on the server. One header read per response stored.
 */
export function carriesNonce(route: RouteSharing, response: HeaderSource, text: string): boolean {
  if (typeof response.getHeader !== 'function') return false;
  const csp =
    response.getHeader('content-security-policy') ?? response.getHeader('content-security-policy-report-only');
  if (csp === undefined) return false;
  const policy = Array.isArray(csp) ? csp.join(';') : String(csp);
  if (!policy.includes("'nonce-")) return false;
  for (const [, nonce] of policy.matchAll(NONCE)) {
    if (!text.includes(nonce)) continue;
    if (once(route, 'nonce')) {
      logger.warn(
        `HttpCacheInterceptor: a response of GET ${route.name} was sent without being stored (X-Cache: MISS): its ` +
          "body holds the nonce of its Content-Security-Policy ('nonce-…', e.g. helmet's per-response nonce), and a " +
          "hit would send it under the next response's policy, whose nonce differs, so the browser would refuse its " +
          'scripts or styles. Render such a page per request (no HttpCacheInterceptor on the route), or cache the ' +
          'data it is made of (@Cacheable, CacheService.getOrSet) and add the nonce per response. (Logged once per ' +
          'route.)',
      );
    }
    return true;
  }
  return false;
}

/** Where @Header keeps its list (HEADERS_METADATA of @nestjs/common, not exported at its root). */
const HEADERS_METADATA = '__headers__';

/**
 * The value the route's own `@Header(name, …)` gives a header (`name` lower-case; a function value is called), which
 * Nest sets on every response of the route (before the interceptors run, in Nest 12); undefined without one. Read once
 * per route.
 */
export function declaredHeader(handler: object, name: string): unknown {
  const headers = Reflect.getMetadata(HEADERS_METADATA, handler) as { name: string; value: unknown }[] | undefined;
  let found: unknown;
  for (const header of headers ?? []) {
    if (String(header.name).toLowerCase() !== name) continue;
    found = typeof header.value === 'function' ? (header.value as () => unknown)() : header.value;
  }
  return found;
}

/**
 * The refusal of the route's own `@Header('Cache-Control' | 'Set-Cookie', …)`: such a route is known from its first
 * request and never looked up nor stored (`X-Cache: BYPASS`, no Redis read).
 */
function declaredRefusal(handler: object, ownKey: boolean): Refusal | undefined {
  return refusalOf(declaredHeader(handler, 'cache-control'), declaredHeader(handler, 'set-cookie'), ownKey);
}

/** Where Nest keeps a handler's parameter decorators and `@Res({ passthrough: true })` (@nestjs/common constants). */
const ROUTE_ARGS_METADATA = '__routeArguments__';
const PASSTHROUGH_METADATA = '__responsePassthrough__';
/** RouteParamtypes.RESPONSE and RouteParamtypes.NEXT of @nestjs/common (keys `<type>:<index>`). */
const RESPONSE_PARAM = /^[12]:/;

/**
 * Whether the route answers its requests itself, through `@Res()` or `@Next()` without passthrough: Nest sends nothing
 * of what the interceptors return for it (as it decides, isResponseHandled), so it is never answered from the cache.
 */
function writesItself(cls: object, name: string): boolean {
  const params = Reflect.getMetadata(ROUTE_ARGS_METADATA, cls, name) as object | undefined;
  if (params === undefined || !Object.keys(params).some((key) => RESPONSE_PARAM.test(key))) return false;
  return Reflect.getMetadata(PASSTHROUGH_METADATA, cls, name) !== true;
}

/** The remedy the warnings name: a key of the request's own. */
const PER_USER = "@CacheKey((req) => 'orders:' + req.user.id)";

/** The warning of a request with credentials on a route keyed for every user (logged once per route). */
function credentialsWarning(route: string, credentials: string, key: 'url' | 'string'): string {
  const shared = key === 'url' ? 'its URL' : 'its @CacheKey string';
  return (
    `HttpCacheInterceptor: GET ${route} was answered without the cache (X-Cache: BYPASS): the request carries ` +
    `credentials (${credentials}) and the route's cache key (${shared}) is the same for every user, so one ` +
    `user's response would be served to others. Key it per user (${PER_USER}), or mark it @CacheShared() if its ` +
    'response is the same for every user. (Logged once per route.)'
  );
}

/** The warning of a response not stored for being meant for one user or client (logged once per route and reason). */
function refusalWarning(route: string, refusal: 'private' | 'cookie'): string {
  const why =
    refusal === 'private'
      ? "it is marked Cache-Control: private (for one user) and the route's key is the same for every user; to " +
        `cache it per user, key the route per user (${PER_USER})`
      : 'it sets a cookie (Set-Cookie), which a stored copy would be served without, and its body may be meant ' +
        "for that client alone; the route's responses without a cookie are stored";
  return (
    `HttpCacheInterceptor: a response of GET ${route} was sent without being stored (X-Cache: MISS): ${why}. ` +
    '(Logged once per route.)'
  );
}

/** A route's sharing, read with its other decorators on its first request (HttpCacheInterceptor's routeOf). */
export interface RouteSharing {
  /** Whether a request with credentials uses the cache: the key is a @CacheKey function (its own) or @CacheShared. */
  anyone: boolean;
  /** The key every user shares otherwise, for the warning: the URL or a @CacheKey string. */
  sharedKey: 'url' | 'string';
  /** Whether the key is a @CacheKey function: a `private` response may be stored under it. */
  ownKey: boolean;
  /**
   * Why the route never uses the cache: its own @Header says no-store, private (shared key) or Set-Cookie, or it
   * answers through @Res() / @Next() itself (`writes`).
   */
  declined: Refusal | 'writes' | undefined;
  /** `Class.method`, for the warnings, each logged once per route (`warned`). */
  name: string;
  warned: Set<string>;
}

export function routeSharing(reflector: Reflector, context: ExecutionContext, key: unknown): RouteSharing {
  const cls = context.getClass();
  const handler = context.getHandler();
  const ownKey = typeof key === 'function';
  const shared = reflector.getAllAndOverride<boolean | undefined>(HTTP_CACHE_SHARED_METADATA, [handler, cls]);
  return {
    anyone: ownKey || shared === true,
    sharedKey: key === undefined ? 'url' : 'string',
    ownKey,
    declined: writesItself(cls, handler.name) ? 'writes' : declaredRefusal(handler, ownKey),
    name: `${cls.name}.${handler.name}`,
    warned: new Set(),
  };
}

const logger = new Logger('RedisToolkit:Cache');

/** Whether `kind` of warning is still to be logged for this route (true once). */
function once(route: RouteSharing, kind: string): boolean {
  if (route.warned.has(kind)) return false;
  route.warned.add(kind);
  return true;
}

/**
 * Whether this request goes to the handler without the cache: the route declined it (its @Header, or it answers
 * through @Res() itself), or the request has credentials and the route's key is shared (then a warning, once per
 * route). An anonymous request: a few property reads.
 */
export function bypasses(route: RouteSharing, request: CredentialRequest): boolean {
  if (route.declined !== undefined) return true;
  if (route.anyone) return false;
  const credentials = credentialsOf(request);
  if (credentials === undefined) return false;
  if (once(route, 'credentials')) logger.warn(credentialsWarning(route.name, credentials, route.sharedKey));
  return true;
}

/**
 * Whether the handler's response must not be stored (see Refusal); a warning once per route for `private` and a
 * cookie, which the app may not have meant for this cache (a no-store is plainly meant).
 */
export function refuses(route: RouteSharing, response: HeaderSource): boolean {
  const refusal = responseRefusal(response, route.ownKey);
  if (refusal === undefined) return false;
  if (refusal !== 'no-store' && once(route, refusal)) logger.warn(refusalWarning(route.name, refusal));
  return true;
}

/**
 * Whether a response that is not stored is its own request's alone, not to be handed to the requests that joined its
 * load (each runs its own handler): meant for one user or client (`refuses`), already sent by the handler, a stream
 * (read once: a second reader would get what is left, or break the first one's), or a status other than 2xx that the
 * handler set on its response — `before` is the one Nest gave it first, the route's (@HttpCode), which the joiners'
 * responses have too. A status, a refused or undefined body sent on each request's own response the same way are
 * shared, as a thrown error is (each request's exception filter answers it).
 */
export function ownResponse(
  route: RouteSharing,
  response: SentResponse,
  body: unknown,
  before?: number,
  /**
   * The request was answered from the cache before this load's handler returned (the load is its background
   * refresh): the response was sent by the cache, which says nothing of the handler. Until 2026-12-06 that sent
   * response made every refresh "sent by the handler": never stored, the entry served STALE until its horizon.
   */
  answered = false,
): boolean {
  if (refuses(route, response)) return true;
  if (!answered && (response.headersSent === true || response.sent === true)) return true;
  if (isStream(body)) return true;
  const status = response.statusCode ?? 200;
  return (status < 200 || status >= 300) && status !== before;
}

/** Express's `res` or Fastify's `reply`, as ownResponse reads it. */
interface SentResponse extends HeaderSource {
  statusCode?: number;
  headersSent?: boolean;
  sent?: boolean;
}

/**
 * Whether a body is sent as a stream (never stored): a StreamableFile, a Node stream, or what Nest streams as well —
 * an async iterable (an async generator, a web ReadableStream) that is not a promise, a web Response.
 */
function isStream(value: unknown): boolean {
  if (typeof value !== 'object' || value === null) return false;
  if (value instanceof StreamableFile || (typeof Response === 'function' && value instanceof Response)) return true;
  const v = value as { pipe?: unknown; then?: unknown; [Symbol.asyncIterator]?: unknown };
  return (
    typeof v.pipe === 'function' || (typeof v[Symbol.asyncIterator] === 'function' && typeof v.then !== 'function')
  );
}
