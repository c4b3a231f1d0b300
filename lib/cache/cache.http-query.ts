import { InvalidOptionsError } from '../common/errors.js';
import { refuseUnknown } from '../common/option-checks.js';

/**
 * `@CacheKey({ query: ['page', 'sort'] })`: the route's entries are keyed by its URL's path and those query parameters
 * only; any other parameter is left out of the key. By default the key is the whole URL, so `?x=<random>` on a cached
 * route makes one Redis entry per request (as @nestjs/cache-manager's CacheInterceptor does): a client can fill Redis
 * (and evict what `maxmemory` would keep) at the rate it sends requests. With the list, such requests share the entry
 * of the parameters listed (the values of those still key entries apart). The key stays the route's URL key, the same
 * for every user: a request with credentials bypasses it as it does the URL (see @CacheShared).
 */
export interface HttpCacheKeyOptions {
  /** The query parameters that key the entry (`[]`: none, the path alone); every other one is ignored. */
  query: readonly string[];
}

const KEY_OPTIONS: ReadonlySet<string> = new Set(['query']);

/** Whether a @CacheKey value is the options object (not a key string or function). */
export function isKeyOptions(key: unknown): key is HttpCacheKeyOptions {
  return typeof key === 'object' && key !== null;
}

/** @CacheKey's options checked at declaration: only `query`, an array of non-empty strings. A frozen copy. */
export function checkKeyOptions(options: object): HttpCacheKeyOptions {
  if (Array.isArray(options)) {
    throw new InvalidOptionsError('@CacheKey: give the query parameters as { query: [...] }, not an array');
  }
  refuseUnknown(options, KEY_OPTIONS, '@CacheKey');
  const { query } = options as { query?: unknown };
  if (!Array.isArray(query) || !query.every((name) => typeof name === 'string' && name !== '')) {
    throw new InvalidOptionsError(
      '@CacheKey: query must be an array of query parameter names (non-empty strings), e.g. { query: ["page"] }',
    );
  }
  return Object.freeze({ query: Object.freeze([...new Set(query as string[])]) });
}

/** `[` after a parameter's name: qs's nested and array syntax (`filter[a]=1`, `ids[]=2`), read under that name. */
const BRACKET = 91;

/**
 * `url` with only the query parameters `names` lists: each kept one as `name=value` (decoded, then encoded again, so
 * `a+b`, `a%20b` and `a b` are one value), in the order of `names`, the values of one name in the URL's order; no `?`
 * when none is kept. A parameter is kept when its decoded name is a listed one, or starts with it followed by `[`
 * (qs, Express's extended parser, reads `filter[a]=1` as `filter`). Never coarser than what the handler reads through
 * those names: a parameter it sees under a listed name is in the key.
 */
export function keptQuery(url: string, names: readonly string[]): string {
  const start = url.indexOf('?');
  if (start === -1) return url;
  const params = [...new URLSearchParams(url.slice(start + 1))];
  let kept = '';
  for (const name of names) {
    for (const [key, value] of params) {
      if (key !== name && !(key.startsWith(name) && key.charCodeAt(name.length) === BRACKET)) continue;
      kept += `${kept === '' ? '?' : '&'}${encodeURIComponent(key)}=${encodeURIComponent(value)}`;
    }
  }
  return url.slice(0, start) + kept;
}
