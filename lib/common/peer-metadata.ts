/**
 * What the start-up checks of a half-done migration share (rate-limit.peer-metadata.ts, cache.peer-metadata.ts):
 * which guards or interceptors run on a handler, whether one of them is a peer package's (@nestjs/throttler's
 * ThrottlerGuard, @nestjs/cache-manager's CacheInterceptor), and the peer's decorator metadata a handler or class
 * carries. The peers are never imported (they are not dependencies of this package): their classes are known by name
 * and by the token they inject, their metadata by the string values of its keys (Reflect.getMetadataKeys).
 */
import type { Logger } from '@nestjs/common';
import type { ApplicationConfig, ModuleRef } from '@nestjs/core';
import { InvalidOptionsError } from './errors.js';

/** Where @UseGuards / @UseInterceptors keep their lists (GUARDS_METADATA, INTERCEPTORS_METADATA of @nestjs/common). */
const ENHANCER_METADATA = { guards: '__guards__', interceptors: '__interceptors__' } as const;
/** Where @Inject keeps a constructor's injected tokens (SELF_DECLARED_DEPS_METADATA of @nestjs/common). */
const SELF_DECLARED_DEPS = 'self:paramtypes';
/**
 * The method metadata that makes a handler Nest calls through its guards and interceptors: an HTTP route's path
 * (PATH_METADATA of @nestjs/common: @Get, @Post...), @nestjs/graphql's @Query / @Mutation / @Subscription /
 * @ResolveField / @ResolveReference, @nestjs/websockets' @SubscribeMessage, @nestjs/microservices' @MessagePattern /
 * @EventPattern. Read by name: the optional packages are not imported.
 */
const HANDLER_METADATA = [
  ['http', ['path']],
  ['graphql', ['graphql:resolver_type', 'graphql:resolve_property', 'graphql:resolve_reference']],
  ['ws', ['websockets:message_mapping']],
  ['rpc', ['microservices:pattern']],
] as const;
export type HandlerKind = (typeof HANDLER_METADATA)[number][0];

/** @nestjs/throttler 6's metadata keys, each followed by a throttler name (`THROTTLER:LIMITlogin`). */
export const THROTTLER_METADATA = {
  limit: 'THROTTLER:LIMIT',
  ttl: 'THROTTLER:TTL',
  blockDuration: 'THROTTLER:BLOCK_DURATION',
  getTracker: 'THROTTLER:TRACKER',
  generateKey: 'THROTTLER:KEY_GENERATOR',
  skip: 'THROTTLER:SKIP',
} as const;
export const THROTTLER_METADATA_PREFIXES: readonly string[] = Object.values(THROTTLER_METADATA);

export type EnhancerKind = keyof typeof ENHANCER_METADATA;
/** How an enhancer came to run on a handler, as a message names it. */
export type EnhancerScope = 'global' | 'controller' | 'handler';

export interface AppliedEnhancer {
  /** A class (@UseGuards(Class), APP_GUARD of a request-scoped class) or an instance (APP_GUARD, useGlobalGuards). */
  readonly enhancer: unknown;
  readonly scope: EnhancerScope;
}

/** A class of a peer package, known without importing it. */
export interface PeerClass {
  /** Its class name (`ThrottlerGuard`), on it or on a class it extends. */
  readonly name: string;
  /** A token its constructor injects (`THROTTLER:MODULE_OPTIONS`): found on a subclass that renames nothing else. */
  readonly injects: string;
}

/**
 * The guards or interceptors Nest runs on a handler, in Nest's order: the global ones (APP_GUARD / APP_INTERCEPTOR and
 * app.useGlobalGuards / useGlobalInterceptors; the request-scoped ones by their class), the controller's, the
 * handler's. `config` is read once every global enhancer is applied (from onModuleInit on).
 */
export function enhancersOf(
  config: ApplicationConfig | undefined,
  kind: EnhancerKind,
  cls: object,
  handler: object,
): AppliedEnhancer[] {
  const global: unknown[] =
    kind === 'guards'
      ? [...(config?.getGlobalGuards() ?? []), ...(config?.getGlobalRequestGuards() ?? []).map((w) => w.metatype)]
      : [
          ...(config?.getGlobalInterceptors() ?? []),
          ...(config?.getGlobalRequestInterceptors() ?? []).map((w) => w.metatype),
        ];
  const of = (target: object): unknown[] =>
    (Reflect.getMetadata(ENHANCER_METADATA[kind], target) as unknown[] | undefined) ?? [];
  return [
    ...global.map((enhancer) => ({ enhancer, scope: 'global' as const })),
    ...of(cls).map((enhancer) => ({ enhancer, scope: 'controller' as const })),
    ...of(handler).map((enhancer) => ({ enhancer, scope: 'handler' as const })),
  ];
}

/** The class of an enhancer as @UseGuards / APP_GUARD give it: the class itself, or an instance's. */
function classOf(enhancer: unknown): unknown {
  if (typeof enhancer === 'function') return enhancer;
  if (typeof enhancer !== 'object' || enhancer === null) return undefined;
  return (Object.getPrototypeOf(enhancer) as { constructor?: unknown } | null)?.constructor;
}

/** Whether an enhancer (class or instance) is `type` or extends it. */
export function isEnhancerOf(enhancer: unknown, type: abstract new (...args: never[]) => unknown): boolean {
  const cls = classOf(enhancer);
  return cls === type || (typeof cls === 'function' && cls.prototype instanceof type);
}

/** Whether an enhancer (class or instance) is a peer's class or extends it. */
export function isPeerEnhancer(enhancer: unknown, peer: PeerClass): boolean {
  for (let cls = classOf(enhancer); typeof cls === 'function' && cls !== Function.prototype; ) {
    if (cls.name === peer.name) return true;
    const deps = Reflect.getOwnMetadata(SELF_DECLARED_DEPS, cls) as { param?: unknown }[] | undefined;
    if (deps?.some((d) => d?.param === peer.injects)) return true;
    cls = Object.getPrototypeOf(cls) as unknown;
  }
  return false;
}

/** How the first enhancer of a scope that matches is named in a message: `APP_GUARD`, `@UseGuards on the class`... */
export function scopeText(kind: EnhancerKind, scope: EnhancerScope): string {
  const use = kind === 'guards' ? '@UseGuards' : '@UseInterceptors';
  if (scope === 'global')
    return kind === 'guards' ? 'APP_GUARD / useGlobalGuards' : 'APP_INTERCEPTOR / useGlobalInterceptors';
  return scope === 'controller' ? `${use} on the class` : `${use} on the handler`;
}

/** The metadata keys of `target` (its own and inherited) that start with one of `prefixes`. */
export function peerMetadataKeys(target: object, prefixes: readonly string[]): string[] {
  return Reflect.getMetadataKeys(target).filter(
    (key): key is string => typeof key === 'string' && prefixes.some((p) => key.startsWith(p)),
  );
}

/** What a method is a handler of (an HTTP route, a resolver's, a gateway's, a message pattern's); else undefined. */
export function handlerKindOf(method: object): HandlerKind | undefined {
  for (const [kind, keys] of HANDLER_METADATA) {
    if (keys.some((key) => Reflect.getMetadata(key, method) !== undefined)) return kind;
  }
  return undefined;
}

/** A value of a peer's metadata as a message writes it: a number as it is, a function as `(a function)`. */
export function peerValueText(value: unknown): string {
  if (typeof value === 'function') return '(a function)';
  if (typeof value === 'string') return JSON.stringify(value);
  return String(value);
}

/**
 * The end of a start-up check of a half-done migration, given its `lines` (none: nothing to say). Where the peer's
 * module is not in the app (its options token, `peerToken`, cannot be resolved) nothing can read the peer's decorators:
 * the start fails (InvalidOptionsError, after closing the toolkit's connections: Nest calls no shutdown hook when init
 * fails). Where it is, the peer's guard or interceptor may still run on those handlers in a way the check cannot see
 * (called from inside a guard of the app's own): a warning with the same text, not a failed start.
 */
export async function reportPeerLeftovers(
  lines: readonly string[],
  message: string,
  peer: { token: string; moduleRef: ModuleRef; logger: Logger; closeConnections?: () => Promise<void> },
): Promise<void> {
  if (lines.length === 0) return;
  const text = `${message}:\n${lines.map((l) => `  - ${l}`).join('\n')}`;
  let peerLoaded = true;
  try {
    peer.moduleRef.get(peer.token, { strict: false });
  } catch {
    peerLoaded = false;
  }
  if (peerLoaded) {
    peer.logger.warn(
      `${text}\n(a warning, not an error: ${peer.token} is provided, so the peer's own guard or interceptor may run ` +
        'on these handlers from inside one of yours, which this check cannot see)',
    );
    return;
  }
  await peer.closeConnections?.().catch(() => undefined);
  throw new InvalidOptionsError(text);
}
