// The decorators of HttpCacheInterceptor's routes: @CacheKey, @CacheTTL, @CacheIf (@CacheShared is in
// cache.http-sharing.ts).
import { type ExecutionContext, SetMetadata } from '@nestjs/common';
import { InvalidOptionsError } from '../common/errors.js';
import { KeyBuilder, MAX_KEY_BYTES } from '../common/keys.js';
import { durationProblem, isDuration } from '../common/option-checks.js';
import { HTTP_CACHE_IF_METADATA, HTTP_CACHE_KEY_METADATA, HTTP_CACHE_TTL_METADATA } from './cache.constants.js';
import { checkKeyOptions, type HttpCacheKeyOptions } from './cache.http-query.js';

export type { HttpCacheKeyOptions } from './cache.http-query.js';

/** A key computed from the request (Express or Fastify request object) and the execution context. */
export type HttpCacheKeyFn = (request: never, context: ExecutionContext) => string;

/**
 * The cache key of a route answered through HttpCacheInterceptor: a fixed string, or a function of the request (for
 * per-user caching, e.g. `@CacheKey((req: Request) => \`me:${req.user.id}\`)`). Without it the key is the URL (path and
 * query; a hash of it for a URL past 1 KiB or with a `#`: see urlKey; with the route's version under header, media-type
 * or custom versioning: see versionTag), the same for every user: a request with credentials then bypasses the cache
 * (see @CacheShared). A function key is taken as the request's own. A string is checked here as a key (not '').
 * `{ query: ['page', 'sort'] }` keeps that URL key with only those query parameters (cache.http-query.ts): any other
 * parameter (`?x=<random>`) no longer makes an entry of its own.
 */
export function CacheKey(key: string | HttpCacheKeyFn | HttpCacheKeyOptions): MethodDecorator & ClassDecorator {
  if (typeof key === 'object' && key !== null) return SetMetadata(HTTP_CACHE_KEY_METADATA, checkKeyOptions(key));
  if (typeof key !== 'string' && typeof key !== 'function') {
    throw new InvalidOptionsError(
      '@CacheKey: key must be a string or a function of the request, or { query: [...] } (the query parameters kept)',
    );
  }
  if (typeof key === 'string' && Buffer.byteLength(key) <= MAX_KEY_BYTES) {
    try {
      KeyBuilder.validate(key, '@CacheKey: key');
    } catch (err) {
      throw new InvalidOptionsError((err as Error).message);
    }
  }
  return SetMetadata(HTTP_CACHE_KEY_METADATA, key);
}

/**
 * The ttl of a response computed when it is loaded: from the execution context (as @nestjs/cache-manager's factory)
 * and the response body. Synchronous: it must return a positive number of ms.
 */
export type HttpCacheTtlFn = (context: ExecutionContext, body: never) => number;

/** Whether a response body is stored (false: sent, uncached, `X-Cache: MISS`). */
export type HttpCacheIfFn = (body: never, context: ExecutionContext) => boolean;

/**
 * ms a response of this route (or of every route of the controller) stays fresh, or a function of the execution
 * context and the response body returning it. Default: `cache.defaultTtl`. A number is checked here as getOrSet
 * checks its ttl (more than 0, at most 100 years; a fraction of a ms is rounded up).
 */
export function CacheTTL(ttl: number | HttpCacheTtlFn): MethodDecorator & ClassDecorator {
  if (typeof ttl !== 'function' && !isDuration(ttl)) {
    throw new InvalidOptionsError(`@CacheTTL: ttl ${durationProblem(ttl)} (or a function of the context and body)`);
  }
  return SetMetadata(HTTP_CACHE_TTL_METADATA, ttl);
}

/**
 * Stores a 2xx response of this route (or controller) only when `predicate(body, context)` is true, e.g.
 * `@CacheIf((body: Page) => body.items.length > 0)`. Without it every cacheable response is stored.
 */
export function CacheIf(predicate: HttpCacheIfFn): MethodDecorator & ClassDecorator {
  if (typeof predicate !== 'function') throw new InvalidOptionsError('@CacheIf: predicate must be a function');
  return SetMetadata(HTTP_CACHE_IF_METADATA, predicate);
}
