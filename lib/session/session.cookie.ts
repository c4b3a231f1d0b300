import { createHmac, timingSafeEqual } from 'node:crypto';
import { InvalidOptionsError } from '../common/errors.js';
import { kindOf, shownValue } from '../common/option-checks.js';
import { isValidSessionId } from './session.id.js';
import type { ResolvedSessionCookieOptions } from './session.options.js';

/**
 * Signed cookie values, in the format of `cookie-signature` / `cookie-parser` / express-session: `s:<value>.<sig>`,
 * where sig is HMAC-SHA256(value, secret) in base64 without padding. Implemented here (node:crypto) so the library
 * has no runtime dependency for it.
 */
export function signCookieValue(value: string, secret: string): string {
  return `s:${value}.${hmac(value, secret)}`;
}

/**
 * The value of a signed cookie when one of `secrets` signed it; null when unsigned, tampered or malformed, or not a
 * string at all (undefined, a number, a parsed object: a TypeError before 2026-12-05).
 */
export function unsignCookieValue(signed: string, secrets: readonly string[]): string | null {
  if (typeof signed !== 'string' || !signed.startsWith('s:')) return null;
  const body = signed.slice(2);
  const dot = body.lastIndexOf('.');
  if (dot <= 0) return null;
  const value = body.slice(0, dot);
  const given = Buffer.from(body.slice(dot + 1));
  for (const secret of secrets) {
    const expected = Buffer.from(hmac(value, secret));
    if (expected.length === given.length && timingSafeEqual(expected, given)) return value;
  }
  return null;
}

function hmac(value: string, secret: string): string {
  return createHmac('sha256', secret).update(value).digest('base64').replace(/=+$/, '');
}

/**
 * The values of every cookie `name` in a `Cookie` request header, in header order, URI-decoded (at most `max`).
 * Several cookies of one name are normal: a sibling subdomain (`Domain=example.com`) or a response over plain HTTP
 * can set one beside the app's own, and the browser sends both, the one with the longer `Path` first.
 */
function readCookieValues(header: string | string[] | undefined, name: string, max: number): string[] {
  const text = headerText(header);
  if (text === undefined) return [];
  if (text.length > 16_384) return []; // no browser sends that much; don't parse attacker-sized headers
  const values: string[] = [];
  for (const part of text.split(';')) {
    const eq = part.indexOf('=');
    if (eq === -1) continue;
    if (part.slice(0, eq).trim() !== name) continue;
    let value = part.slice(eq + 1).trim();
    if (value.startsWith('"') && value.endsWith('"') && value.length >= 2) value = value.slice(1, -1);
    try {
      values.push(decodeURIComponent(value));
    } catch {
      values.push(value);
    }
    if (values.length === max) break;
  }
  return values;
}

/**
 * The header as one string: a string, or an array of strings joined as Node joins repeated headers; anything else
 * (undefined, null from `headers.cookie ?? null`, a number, a parsed cookie object, an array holding a non-string) is
 * no cookie, where it threw a TypeError from the parser (before 2026-12-05).
 */
function headerText(header: unknown): string | undefined {
  if (typeof header === 'string') return header;
  if (!Array.isArray(header)) return undefined;
  for (const part of header) if (typeof part !== 'string') return undefined;
  return header.join('; ');
}

export interface SessionCookieSource {
  /** Cookie name. */
  name: string;
  /** Secrets that may have signed the cookie (the first one signs new cookies). */
  secrets: readonly string[];
}

/**
 * How many cookies of the session's name one request may make the toolkit look at: each is verified (an HMAC per
 * secret: 32 cost 0.1-0.2 ms of CPU, however large the header) and SessionMiddleware / SessionGuard read the distinct
 * verified ids among them concurrently, as one batched Redis call (32 dead ids: ~0.12 ms, one after the other 1.4 ms).
 * A sibling subdomain can plant cookies of the name that the browser sends before the app's own (one or more per path
 * prefix of the request): dead ones planted so should not use up the bound.
 */
export const MAX_SESSION_COOKIES = 32;

/**
 * Reads and verifies the session cookie in a raw `Cookie` header (an HTTP request, a WebSocket handshake) and returns
 * the session id, or null when the cookie is absent, unsigned, signed with another secret, or not a well-formed id.
 * With several cookies of the name, the first that verifies: one that does not (set by a sibling subdomain, say) is
 * ignored and cannot hide the app's own. Does not touch Redis: pass the id to `SessionService.get(id)` to load (and
 * touch) the session.
 */
export function readSessionIdFromCookieHeader(
  header: string | string[] | undefined,
  source: SessionCookieSource,
): string | null {
  return readSessionIdsFromCookieHeader(header, source, 1)[0] ?? null;
}

/**
 * The distinct verified, well-formed session ids of the cookies of the source's name, in header order, at most `max`,
 * among the first MAX_SESSION_COOKIES cookies of the name.
 */
export function readSessionIdsFromCookieHeader(
  header: string | string[] | undefined,
  source: SessionCookieSource,
  max: number,
): string[] {
  const ids: string[] = [];
  // Bounded: each value that does not verify costs an HMAC per secret.
  for (const raw of readCookieValues(header, source.name, MAX_SESSION_COOKIES)) {
    const id = unsignCookieValue(raw, source.secrets);
    if (!isValidSessionId(id) || ids.includes(id)) continue;
    ids.push(id);
    if (ids.length === max) break;
  }
  return ids;
}

export interface CookieWriteOptions {
  /** Absolute expiry (epoch ms); ignored when maxAge is set. */
  expires?: number;
  secure: boolean;
}

/** A `Set-Cookie` header value for `value` with the configured attributes. */
export function serializeSetCookie(
  name: string,
  value: string,
  options: ResolvedSessionCookieOptions,
  write: CookieWriteOptions,
): string {
  const parts = [`${name}=${encodeURIComponent(value)}`, `Path=${options.path}`];
  if (options.domain) parts.push(`Domain=${options.domain}`);
  if (options.maxAge !== undefined) {
    parts.push(`Max-Age=${Math.floor(options.maxAge / 1000)}`);
    parts.push(`Expires=${new Date(Date.now() + options.maxAge).toUTCString()}`);
  } else if (write.expires !== undefined) {
    parts.push(`Expires=${cookieExpiry(write.expires).toUTCString()}`);
  }
  if (options.httpOnly) parts.push('HttpOnly');
  if (write.secure) parts.push('Secure');
  parts.push(`SameSite=${options.sameSite === 'lax' ? 'Lax' : options.sameSite === 'strict' ? 'Strict' : 'None'}`);
  return parts.join('; ');
}

/**
 * An absolute expiry (epoch ms) as a Date; InvalidOptionsError for one that is no date (undefined, NaN, 'x', Infinity,
 * past the Date range), which was written as `Expires=Invalid Date` (before 2026-12-05): a browser keeps such a
 * cookie as a session cookie.
 */
export function cookieExpiry(expires: unknown): Date {
  const date = new Date(typeof expires === 'number' ? expires : Number.NaN);
  if (Number.isNaN(date.getTime())) {
    throw new InvalidOptionsError(
      `session cookie: expiresAt must be a time in epoch milliseconds (a finite number), got ${shownValue(expires)}`,
    );
  }
  return date;
}

/** Express's `Response` and Node's `ServerResponse` (what a Nest middleware gets on Fastify too). */
export interface NodeCookieResponse {
  getHeader(name: string): unknown;
  setHeader(name: string, value: string | string[]): unknown;
}

/** Fastify's `FastifyReply` (which has no `setHeader`; its `raw` is the Node response). */
export interface FastifyCookieReply {
  raw: NodeCookieResponse & { removeHeader(name: string): unknown };
  getHeader(name: string): unknown;
  header(name: string, value: string[]): unknown;
  removeHeader(name: string): unknown;
}

/** Where the cookie helpers write: an Express/Node response or a Fastify reply; both types satisfy it as they are. */
export type CookieResponse = NodeCookieResponse | FastifyCookieReply;

/**
 * Appends a Set-Cookie header without dropping ones already set (by other middleware or an earlier write). A later
 * write for the same cookie replaces an earlier one in this response (e.g. login after a rolling refresh).
 */
export function appendSetCookie(res: CookieResponse, cookie: string, name: string): void {
  checkCookieResponse(res);
  if ('setHeader' in res && typeof res.setHeader === 'function') {
    res.setHeader('Set-Cookie', [...withoutCookie(res.getHeader('Set-Cookie'), name), cookie]);
    return;
  }
  // Fastify: headers set on the reply are written with `writeHead`, which wins over the same header set on the Node
  // response (where Nest middleware, e.g. SessionMiddleware's rolling refresh, writes), so both lists are merged here
  // and kept on the reply only. `reply.header('set-cookie', …)` appends, hence the remove first.
  const reply = res as FastifyCookieReply;
  const list = [
    ...withoutCookie(reply.raw.getHeader('Set-Cookie'), name),
    ...withoutCookie(replyOwnCookies(reply), name),
    cookie,
  ];
  reply.raw.removeHeader('Set-Cookie');
  reply.removeHeader('Set-Cookie');
  reply.header('Set-Cookie', [...new Set(list)]);
}

/**
 * `res` is a Node/Express response (`getHeader`, `setHeader`) or a Fastify reply (`getHeader`, `header`,
 * `removeHeader`, and a Node response as `raw`): else InvalidOptionsError naming the argument, where undefined, a
 * string or `{}` were a TypeError from inside (before 2026-12-05).
 */
function checkCookieResponse(res: unknown): asserts res is CookieResponse {
  if (isNodeResponse(res) || isFastifyReply(res)) return;
  throw new InvalidOptionsError(
    'session cookie: the response (res) must be an Express or Node response (getHeader, setHeader) or a Fastify ' +
      `reply, got ${kindOf(res)}`,
  );
}

function isNodeResponse(value: unknown): boolean {
  if (value === null || typeof value !== 'object') return false;
  const res = value as Partial<Record<keyof NodeCookieResponse, unknown>>;
  return typeof res.getHeader === 'function' && typeof res.setHeader === 'function';
}

function isFastifyReply(value: unknown): boolean {
  if (value === null || typeof value !== 'object') return false;
  const reply = value as Partial<Record<keyof FastifyCookieReply, unknown>>;
  return (
    typeof reply.getHeader === 'function' &&
    typeof reply.header === 'function' &&
    typeof reply.removeHeader === 'function' &&
    isNodeResponse(reply.raw) &&
    typeof (reply.raw as { removeHeader?: unknown }).removeHeader === 'function'
  );
}

/** The reply's own Set-Cookie (Fastify's `getHeader` falls back to the Node response's, which is read separately). */
function replyOwnCookies(reply: FastifyCookieReply): unknown {
  const own = reply.getHeader('Set-Cookie');
  const raw = reply.raw.getHeader('Set-Cookie');
  return own === raw ? undefined : own;
}

function withoutCookie(header: unknown, name: string): string[] {
  const list = header === undefined ? [] : Array.isArray(header) ? header.map(String) : [String(header)];
  return list.filter((c) => !c.startsWith(`${name}=`));
}
