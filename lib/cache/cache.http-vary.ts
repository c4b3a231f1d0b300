import { Logger } from '@nestjs/common';
import { KeyBuilder, MAX_KEY_BYTES } from '../common/keys.js';

/**
 * `Vary` for HttpCacheInterceptor (RFC 9111 §4.1): a response that varies by request headers (`Vary:
 * Accept-Language`) is stored under its URL (or @CacheKey) plus the values of those headers in the request it answered,
 * and served only to requests that send the same values. `Vary: *` (varies by anything) is never stored.
 *
 * Three places say what a route varies by:
 * - its own `@Header('Vary', …)`, read once per route (Nest sets it on every response of the route);
 * - a `Vary` already on the response when the interceptor runs, set by middleware or the platform's CORS (reflected
 *   origins: `Vary: Origin`), read on each request;
 * - a `Vary` its handler sets on its own response: seen only after the handler ran, so that response is not stored
 *   (nor handed to requests that joined its load), and the route keys its next requests by it in this process (and
 *   says it on its hits, which the handler does not run for).
 */

/** Lower-case header names, or '*' (by anything). */
export type VaryNames = readonly string[] | '*';

/** What a route varies by, as HttpCacheInterceptor keeps it per route. */
export interface RouteVary {
  /** From the route's `@Header('Vary', …)`. */
  readonly declared: VaryNames;
  /** Names its handler's responses added (lower-case), in this process; '*' once one said `Vary: *`. */
  learned: VaryNames;
  /** The learned names as the handler wrote them, for the `Vary` header of a hit (undefined: none learned). */
  learnedHeader: string | undefined;
}

/** At most this many names are kept per route (a Vary header is a handful; more is not a list of request headers). */
const MAX_NAMES = 16;

/** The names a Vary header value lists (a string, or the array a platform keeps for a repeated header). */
function varyNames(value: unknown): VaryNames {
  if (value === undefined || value === null) return [];
  const text = Array.isArray(value) ? value.join(',') : String(value);
  const names: string[] = [];
  for (const part of text.split(',')) {
    const name = part.trim().toLowerCase();
    if (name === '*') return '*';
    if (name !== '' && !names.includes(name)) names.push(name);
  }
  return names.length > MAX_NAMES ? '*' : names;
}

/** The union of two lists of names ('*' wins), sorted (one set of names, one key); `a` itself when `b` adds none. */
function union(a: VaryNames, b: VaryNames): VaryNames {
  if (a === '*' || b === '*') return '*';
  // most routes: nothing learned, on every request (no filter's array)
  if (b.length === 0) return a;
  const added = b.filter((name) => !a.includes(name));
  if (added.length === 0) return a;
  const all = [...a, ...added].sort();
  return all.length > MAX_NAMES ? '*' : all;
}

/** A route's Vary, from the value of its own `@Header('Vary', …)` (undefined: none). */
export function routeVary(declaredValue: unknown): RouteVary {
  return { declared: union([], varyNames(declaredValue)), learned: [], learnedHeader: undefined };
}

/** Express's `res` or Fastify's `reply`. */
interface VaryResponse {
  getHeader?(name: string): unknown;
}

/**
 * The names a request of this route is keyed by: the route's declared and learned ones and a Vary already on its
 * response (middleware, CORS), sorted; [] for most routes (one header read, no allocation).
 */
export function requestVary(route: RouteVary, response: VaryResponse): VaryNames {
  const early = typeof response.getHeader === 'function' ? response.getHeader('vary') : undefined;
  const known = union(route.declared, route.learned);
  return early === undefined ? known : union(known, varyNames(early));
}

/** What the key of a varying response adds after the route's key: `#vary:` and a hash (22 characters). */
const VARY_SUFFIX_LENGTH = 28;

/**
 * `key`, with room left for a suffix of `suffixBytes` bytes: a key near the limit (a long URL not hashed, a long
 * @CacheKey) is shortened as urlKey shortens a long URL. (`key.length * 3` first: no UTF-8 byte count for short keys.)
 */
export function roomFor(key: string, suffixBytes: number): string {
  return key.length * 3 + suffixBytes > MAX_KEY_BYTES && Buffer.byteLength(key) + suffixBytes > MAX_KEY_BYTES
    ? KeyBuilder.headAndHash(key.slice(0, 256), key)
    : key;
}

/**
 * The key of a request whose route varies by `names`: the route's key + `#vary:` + a hash of each name with the
 * request's value of it (an absent header apart from an empty one). The hash keeps every value out of the key's length
 * and out of patterns: `invalidatePattern('http:/products*')` still reaches every variant.
 */
export function variantKey(
  key: string,
  names: readonly string[],
  headers: Record<string, unknown> | undefined,
): string {
  const base = roomFor(key, VARY_SUFFIX_LENGTH);
  let text = '';
  for (const name of names) {
    const value = headers?.[name];
    text += value === undefined ? `${name}!\n` : `${name}=${Array.isArray(value) ? value.join('\n') : String(value)}\n`;
  }
  return `${base}#vary:${KeyBuilder.hash(text)}`;
}

const logger = new Logger('RedisToolkit:Cache');

/**
 * Whether the handler's response varies by a header its key did not account for (its `Vary` names one that `keyed`
 * lacks, or `*`): then it is not stored, the route learns the names (its next requests are keyed by them), and the
 * cache's logger says so once per route.
 */
export function variesBeyond(route: RouteVary, keyed: VaryNames, response: VaryResponse, name: string): boolean {
  if (keyed === '*' || typeof response.getHeader !== 'function') return false;
  const value = response.getHeader('vary');
  if (value === undefined) return false;
  const names = varyNames(value);
  if (names !== '*' && names.every((n) => keyed.includes(n))) return false;
  const before = route.learned;
  route.learned = union(before, names);
  if (route.learned !== '*') {
    const written = (Array.isArray(value) ? value.join(',') : String(value)).split(',').map((n) => n.trim());
    const header = route.learnedHeader === undefined ? [] : route.learnedHeader.split(', ');
    for (const n of written) if (n !== '' && !header.some((h) => h.toLowerCase() === n.toLowerCase())) header.push(n);
    route.learnedHeader = header.join(', ');
  }
  if (before.length === 0) {
    logger.log(
      `HttpCacheInterceptor: GET ${name} answered with Vary: ${String(value)}, which its cache key did not include; ` +
        'that response was not stored, and the route is keyed by those request headers from now on in this process. ' +
        "Declaring it on the route (@Header('Vary', …)) keys its first responses too. (Logged once per route.)",
    );
  }
  return true;
}

/**
 * The `Vary` header of a response answered from the cache, for a route that learned names: what is on the response
 * (middleware, @Header) with the learned names added; undefined when nothing needs to change.
 */
export function hitVary(route: RouteVary, response: VaryResponse): string | undefined {
  const learned = route.learnedHeader;
  if (learned === undefined) return undefined;
  const current = typeof response.getHeader === 'function' ? response.getHeader('vary') : undefined;
  if (current === undefined) return learned;
  const names = varyNames(current);
  if (names === '*') return undefined;
  const missing = learned.split(', ').filter((n) => !names.includes(n.toLowerCase()));
  return missing.length === 0 ? undefined : `${String(current)}, ${missing.join(', ')}`;
}
