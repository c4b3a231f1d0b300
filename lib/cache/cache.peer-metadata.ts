/**
 * A migration from @nestjs/cache-manager left half done: a handler that HttpCacheInterceptor intercepts still carries
 * cache-manager's `@CacheKey('k')` / `@CacheTTL(5_000)` (the interceptor was replaced, the imports were not).
 * HttpCacheInterceptor does not read cache-manager's metadata, so the route was cached under its URL for
 * `cache.defaultTtl` (a 5 s answer kept for 60 s), without a word. The start fails instead (InvalidOptionsError),
 * naming each handler, cache-manager's decorators as written and ours to write.
 *
 * Where the peer's module is in the app but its guard / interceptor is not seen on a handler (it may run from inside
 * one of the app's own), the same text is a warning instead (reportPeerLeftovers).
 *
 * Silent where cache-manager's own CacheInterceptor (or a subclass, by name or by the CACHE_MANAGER token it injects)
 * runs on the handler too (both side by side is a step of a migration: cache-manager reads its decorators), and where
 * HttpCacheInterceptor does not run (ours under CacheInterceptor alone are that interceptor's business: it ignores
 * them, as this one ignores its decorators).
 *
 * HttpCacheInterceptor's own checks are made per route, on its first request (routeOf, NonHttpHandlers): too late
 * for this one, which scans the controllers and providers once, at onModuleInit (APP_INTERCEPTOR and
 * app.useGlobalInterceptors are applied by then). A module loaded later with LazyModuleLoader can declare no
 * controller, resolver or gateway (Nest refuses them there), so it has no handler to check.
 */
import { Inject, Injectable, Logger, type OnModuleInit, Optional } from '@nestjs/common';
import { ApplicationConfig, DiscoveryService, MetadataScanner, ModuleRef } from '@nestjs/core';
import { CLOSE_CONNECTIONS } from '../common/method-interception.js';
import {
  enhancersOf,
  handlerKindOf,
  isEnhancerOf,
  isPeerEnhancer,
  type PeerClass,
  peerValueText,
  reportPeerLeftovers,
  scopeText,
} from '../common/peer-metadata.js';
import { HttpCacheInterceptor } from './cache.http-interceptor.js';

/** @nestjs/cache-manager's metadata keys (CACHE_KEY_METADATA, CACHE_TTL_METADATA) and the decorators writing them. */
const CACHE_MANAGER_METADATA = [
  ['cache_module:cache_key', '@CacheKey'],
  ['cache_module:cache_ttl', '@CacheTTL'],
] as const;
/** @nestjs/cache-manager's interceptor: its class name, and the token its constructor injects. */
const CACHE_INTERCEPTOR: PeerClass = { name: 'CacheInterceptor', injects: 'CACHE_MANAGER' };
const logger = new Logger('RedisToolkit:Cache');

/** cache-manager's decorators on a target, as written (`@CacheKey("k")`, `@CacheTTL(5000)`); [] for none. */
function cacheManagerDecorators(target: object): string[] {
  return CACHE_MANAGER_METADATA.filter(([key]) => Reflect.getMetadataKeys(target).includes(key)).map(
    ([key, decorator]) => `${decorator}(${peerValueText(Reflect.getMetadata(key, target))})`,
  );
}

/** The lines of the error for one class: its handlers (and the class) with cache-manager's decorators. */
function classLeftovers(
  cls: { readonly name: string; readonly prototype: unknown },
  scanner: MetadataScanner,
  config: ApplicationConfig | undefined,
): string[] {
  const lines: string[] = [];
  const onClass = cacheManagerDecorators(cls);
  const classHandlers: string[] = [];
  let classScope = '';
  const prototype = cls.prototype;
  if (prototype === null || typeof prototype !== 'object') return lines;
  for (const name of scanner.getAllMethodNames(prototype)) {
    const method: unknown = (prototype as Record<string, unknown>)[name];
    if (typeof method !== 'function') continue;
    const kind = handlerKindOf(method);
    if (kind === undefined) continue;
    const onMethod = cacheManagerDecorators(method);
    if (onMethod.length === 0 && onClass.length === 0) continue;
    const interceptors = enhancersOf(config, 'interceptors', cls, method);
    const ours = interceptors.find((i) => isEnhancerOf(i.enhancer, HttpCacheInterceptor));
    if (ours === undefined || interceptors.some((i) => isPeerEnhancer(i.enhancer, CACHE_INTERCEPTOR))) continue;
    const scope = `HttpCacheInterceptor through ${scopeText('interceptors', ours.scope)}`;
    if (onMethod.length > 0) lines.push(line(`${cls.name}.${name}`, scope, onMethod, kind));
    if (onClass.length > 0) {
      classHandlers.push(name);
      classScope = scope;
    }
  }
  if (classHandlers.length > 0) {
    lines.push(line(`${cls.name} (on the class, for ${classHandlers.join(', ')})`, classScope, onClass, 'http'));
  }
  return lines;
}

function line(where: string, scope: string, theirs: string[], kind: string): string {
  const head = `${where} (${scope}): ${theirs.join(' ')} from @nestjs/cache-manager; `;
  if (kind !== 'http') {
    // HttpCacheInterceptor passes such a handler through (NonHttpHandlers): ours would do nothing there either
    return (
      `${head}HttpCacheInterceptor caches HTTP GET routes only and passes this "${kind}" handler through: cache what ` +
      'it returns with @Cacheable on the service method it calls, or CacheService.getOrSet'
    );
  }
  return (
    `${head}write ${theirs.join(' ')} imported from 'nestjs-redis-toolkit/advanced' (a @CacheKey function takes ` +
    '(request, context) here, a @CacheTTL function (context, body))'
  );
}

/**
 * Fails the start when a handler HttpCacheInterceptor intercepts carries @nestjs/cache-manager's decorators and
 * cache-manager's CacheInterceptor does not run there (see the top of this file).
 */
@Injectable()
export class CachePeerCheck implements OnModuleInit {
  constructor(
    private readonly discovery: DiscoveryService,
    private readonly scanner: MetadataScanner,
    private readonly moduleRef: ModuleRef,
    @Optional() private readonly config?: ApplicationConfig,
    @Optional() @Inject(CLOSE_CONNECTIONS) private readonly closeConnections?: () => Promise<void>,
  ) {}

  async onModuleInit(): Promise<void> {
    const lines: string[] = [];
    const seen = new Set<unknown>();
    for (const wrapper of [...this.discovery.getControllers(), ...this.discovery.getProviders()]) {
      const type: unknown = wrapper.metatype;
      if (typeof type !== 'function' || seen.has(type)) continue;
      seen.add(type);
      lines.push(...classLeftovers(type as { name: string; prototype: unknown }, this.scanner, this.config));
    }
    await reportPeerLeftovers(
      lines,
      "@nestjs/cache-manager's decorators on handlers that HttpCacheInterceptor intercepts without " +
        "@nestjs/cache-manager's CacheInterceptor: HttpCacheInterceptor does not read them, so each of these routes " +
        'would be cached under its URL for cache.defaultTtl (or its nestjs-redis-toolkit @CacheKey / @CacheTTL) in ' +
        "their place. Import CacheKey / CacheTTL from 'nestjs-redis-toolkit/advanced' (docs/migrating.md), or keep " +
        'CacheInterceptor on these handlers while migrating',
      {
        token: CACHE_INTERCEPTOR.injects,
        moduleRef: this.moduleRef,
        logger: logger,
        closeConnections: this.closeConnections,
      },
    );
  }
}
