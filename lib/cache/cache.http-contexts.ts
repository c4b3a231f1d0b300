import { type ExecutionContext, Logger, VERSION_NEUTRAL, type VersioningOptions, VersioningType } from '@nestjs/common';
import type { Reflector } from '@nestjs/core';
import { HTTP_CACHE_IF_METADATA, HTTP_CACHE_KEY_METADATA, HTTP_CACHE_TTL_METADATA } from './cache.constants.js';
import { roomFor } from './cache.http-vary.js';

/**
 * The execution contexts and routes HttpCacheInterceptor does not cache as a GET by URL: handlers that are not HTTP
 * (a warning when the team gave them cache decorators), `@Sse` routes, and the version of a route under header,
 * media-type or custom versioning (the URL does not say it: it goes into the key).
 */

/** Where @Sse marks its handler (SSE_METADATA of @nestjs/common, not exported at its root). */
const SSE_METADATA = '__sse__';
/** Where @Version and @Controller({ version }) keep the version (VERSION_METADATA of @nestjs/common). */
const VERSION_METADATA = '__version__';

const logger = new Logger('RedisToolkit:Cache');

/**
 * An `@Sse` route: its Observable is a stream of events, each written to the client as it comes (a stream may never
 * complete). Cached as a GET, the interceptor waited for the end, stored the last event and answered every client
 * with it; a stream that never completes held every request of the URL (single-flight). Passed through untouched.
 */
export function isSse(handler: object): boolean {
  return Reflect.getMetadata(SSE_METADATA, handler) === true;
}

/**
 * Handlers that are not HTTP (a WebSocket gateway's, a GraphQL resolver's, a microservice's) are passed through: the
 * cache keys responses by URL and sends them with HTTP headers. Nothing said so, even on a handler the team gave
 * @CacheTTL / @CacheKey / @CacheIf; now a warning once per such handler. Handlers without them (every gateway under a
 * global interceptor) stay silent.
 */
export class NonHttpHandlers {
  /** Per class, the handlers already looked at (warned or not). */
  private readonly seen = new WeakMap<object, WeakSet<object>>();

  constructor(private readonly reflector: Reflector) {}

  check(context: ExecutionContext): void {
    const cls = context.getClass();
    const handler = context.getHandler();
    let ofClass = this.seen.get(cls);
    if (ofClass === undefined) this.seen.set(cls, (ofClass = new WeakSet()));
    if (ofClass.has(handler)) return;
    ofClass.add(handler);
    const targets = [handler, cls];
    const given = (
      [
        [HTTP_CACHE_TTL_METADATA, '@CacheTTL'],
        [HTTP_CACHE_KEY_METADATA, '@CacheKey'],
        [HTTP_CACHE_IF_METADATA, '@CacheIf'],
      ] as const
    )
      .filter(([metadata]) => this.reflector.getAllAndOverride<unknown>(metadata, targets) !== undefined)
      .map(([, decorator]) => decorator);
    if (given.length === 0) return;
    logger.warn(
      `HttpCacheInterceptor does not cache ${cls.name}.${handler.name}: it is a "${context.getType<string>()}" ` +
        `handler and the HTTP cache applies to HTTP GET routes only, so its ${given.join(' / ')} ` +
        'do nothing. Cache what it returns with @Cacheable on the service method it calls, or with ' +
        'CacheService.getOrSet.',
    );
  }
}

/**
 * What goes after the URL in the default key of a versioned route whose URL does not carry its version (header,
 * media-type or custom versioning): `#version:` + the version(s) Nest routes to this handler, as Nest resolves them
 * (the handler's @Version, else the controller's, else `defaultVersion`). Two versions of one URL then have entries of
 * their own; before, the first one asked was served to every version. Undefined (the key unchanged) without
 * versioning, with URI versioning (the URL differs already) and for a version-neutral route (one handler answers
 * every version). A `#` never appears in a URL key as it is (urlKey), so no URL can name a versioned entry.
 */
export function versionTag(
  versioning: VersioningOptions | undefined,
  cls: object,
  handler: object,
): string | undefined {
  if (versioning === undefined || versioning.type === VersioningType.URI) return undefined;
  // Nest's own order: the method's version `||` the controller's `??` the default (RouterExplorer, RoutesResolver)
  const version: unknown =
    Reflect.getMetadata(VERSION_METADATA, handler) ||
    (Reflect.getMetadata(VERSION_METADATA, cls) ?? versioning.defaultVersion);
  if (version === undefined || version === VERSION_NEUTRAL) return undefined;
  const versions = Array.isArray(version) ? version : [version];
  return `#version:${versions.map((v) => (v === VERSION_NEUTRAL ? 'neutral' : String(v))).join(',')}`;
}

/** `key` + `tag`, a key near the limit shortened first (roomFor, as variantKey does). */
export function taggedKey(key: string, tag: string): string {
  return `${roomFor(key, Buffer.byteLength(tag))}${tag}`;
}
