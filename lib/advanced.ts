// `nestjs-redis-toolkit/advanced`: the toolkit's plumbing, for extending it (a RateLimitGuard subclass, a provider
// injecting one option slice, keys of your own under the toolkit's prefix), for tests, and every secondary option,
// call-option and result type. Applications import from the root; nothing here is needed for ordinary use.

// Options: the validated tree and one injection token per slice (each feature injects only its own).
export { REDIS_TOOLKIT_OPTIONS } from './redis-toolkit.constants.js';
export type { ResolvedRedisToolkitOptions } from './redis-toolkit.options-resolver.js';
export {
  CONNECTION_OPTIONS,
  type ResolvedConnectionOptions,
  type RedisConnectionOptions,
  type RedisStandaloneConnection,
  type RedisSentinelConnection,
  type RedisClusterConnection,
  type RedisExistingClientConnection,
  type RedisNodeAddress,
} from './connection/connection.options.js';
export {
  CACHE_OPTIONS,
  type ResolvedCacheOptions,
  type CacheL1Options,
  type CacheL1Invalidation,
} from './cache/cache.options.js';
export {
  RATE_LIMIT_OPTIONS,
  type ResolvedRateLimitOptions,
  type RateLimitAlgorithm,
  type Resolvable,
  type TrustProxy,
  type RateLimitHeaders,
  type RateLimitInsuranceOptions,
} from './rate-limit/rate-limit.options.js';
export {
  SESSION_OPTIONS,
  type ResolvedSessionOptions,
  type SessionCookieOptions,
} from './session/session.options.js';
export { LOCK_OPTIONS, type ResolvedLockOptions, type LockRetryOptions } from './lock/lock.options.js';
export { PUBSUB_OPTIONS, type ResolvedPubSubOptions, type PubSubDurableOptions } from './pubsub/pubsub.options.js';
export type {
  PubSubUser,
  NotificationsGatewayOptions,
  GatewayHandshake,
  GatewayAuthenticate,
  GatewayAuthorize,
  GatewayRateLimiter,
  SlowClientPolicy,
} from './notifications/notifications.options.js';

// Plumbing.
export { RedisConnection } from './connection/redis-connection.js';
// Named connections (`connections` of forRoot): the raw client of one by name, or all of them.
export { RedisConnections } from './connection/redis-connections.js';
export { getRedisClientToken } from './redis-toolkit.constants.js';
export type { FeatureConnectionOption, RedisNamedConnections } from './connection/connection.options.js';
export type { RedisToolkitHealthResult, RedisConnectionHealth } from './connection/redis-toolkit.health.js';
export { KeyBuilder, FEATURES, DEFAULT_KEY_PREFIX } from './common/keys.js';
export { JsonSerializer, SERIALIZER } from './common/serializer.js';
export { CACHE_L1_CHANNEL } from './cache/cache.l1.js';
// HTTP response caching by URL (the root is kept to what every app imports): @UseInterceptors(HttpCacheInterceptor),
// @CacheKey, @CacheTTL, @CacheIf, @CacheShared.
export { HttpCacheInterceptor } from './cache/cache.http-interceptor.js';
export {
  CacheKey,
  CacheTTL,
  CacheIf,
  type HttpCacheKeyFn,
  type HttpCacheKeyOptions,
  type HttpCacheTtlFn,
  type HttpCacheIfFn,
} from './cache/cache.http-decorators.js';
export { CacheShared } from './cache/cache.http-sharing.js';
export { ClientAddressResolver } from './rate-limit/rate-limit.client-address.js';
export { generateSessionId, isValidSessionId } from './session/session.id.js';
export {
  readSessionIdFromCookieHeader,
  signCookieValue,
  unsignCookieValue,
  type SessionCookieSource,
} from './session/session.cookie.js';

// Secondary call-option and result types.
export type {
  CacheStats,
  CacheSetOptions,
  CacheGetOrSetOptions,
  CacheTags,
  CacheTtl,
  CacheResult,
  CacheStatus,
  InvalidateTagsOptions,
} from './cache/cache.service.js';
export type { CacheableOptions, CachePutOptions, CacheEvictOptions } from './cache/cache.decorators.js';
export type {
  RateLimitCheck,
  RateLimitDecision,
  RateLimitStats,
  ConsumeOptions,
  RewardOptions,
} from './rate-limit/rate-limit.service.js';
export {
  RateLimitHttpException,
  type ThrottledRequest,
  type ThrottledResponse,
  type ThrottlingDetail,
} from './rate-limit/rate-limit.guard.js';
export type { NamedThrottleOptions } from './rate-limit/rate-limit.decorators.js';
export type { CookieRequest } from './session/session.service.js';
export type { RedisSessionStoreOptions } from './session/session.store-options.js';
export type { CreateSessionOptions, SessionData } from './session/session.types.js';
export type { AcquireOptions, UsingOptions, TryAcquireOptions, LockedFunction } from './lock/lock.types.js';
export type { WithLockOptions } from './lock/lock.decorators.js';
export type { AutoExtendOptions } from './lock/lock.auto-extend.js';
export type { CurrentLock } from './lock/lock.context.js';
export type {
  LockEvents,
  LockEventMap,
  LockEventName,
  LockEventInfo,
  LockLostEventInfo,
  LockBusyEventInfo,
} from './lock/lock.events.js';
export type { SemaphoreOptions } from './lock/lock.semaphore.js';
export type { LeaseAcquireOptions, LeaseUsingOptions } from './lock/lock.lease.js';
export type { RunHoldingOptions } from './lock/lock.holding.js';
export type { MessageHandler, MessageMeta, ReplayedMessage, Unsubscribe } from './pubsub/pubsub.types.js';

// diagnostics_channel names (docs/observability.md): `diagnostics_channel.subscribe(REDIS_TOOLKIT_CHANNELS.cacheGet,
// fn)`.
// and the TracingChannels of the operations that take time (`tracing:rtk:cache:get:start`, …).
export {
  REDIS_TOOLKIT_CHANNELS,
  REDIS_TOOLKIT_TRACING_CHANNELS,
  type RedisToolkitChannelName,
  type DiagnosticsPayload,
  type TracedOperation,
  type TracingContext,
} from './common/diagnostics.js';

// A start-up refusal only (lock.onUnsafeEviction: 'refuse'): it stops the bootstrap, no request ever sees it; the
// root is kept to what applications catch at run time (test/foundation/public-api.spec.ts lists it).
// MissingPeerError likewise: importing a subpath without its optional peer (`nestjs-redis-toolkit/otel` without
// @opentelemetry/api...) throws it, before the app runs; and UnsupportedRedisVersionError, a server older than a
// feature on it needs, refused at start.
export {
  FakeTimersError,
  MissingPeerError,
  UnsafeEvictionPolicyError,
  UnsupportedRedisVersionError,
  type UnsupportedRedisVersionDetails,
} from './common/errors.js';
// `cache.set` / `mset` of an entry past the size bound (cache.maxValueBytes): caught at run time as the root's
// SerializationError, which it extends (as pub/sub's message past its bound is one); this class for its details.
export { CacheValueTooLargeError } from './common/errors.js';
