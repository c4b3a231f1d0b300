// The public API of nestjs-redis-toolkit: what an application imports (the module, services, guards, decorators,
// errors, option and result types). Plumbing for extending or testing the toolkit is on
// `nestjs-redis-toolkit/advanced`, the Socket.IO gateway on `nestjs-redis-toolkit/notifications`.
// test/foundation/public-api.spec.ts lists every name. Every type a root service's method returns is here too: an app
// compiled with `declaration: true` (the Nest CLI's tsconfig) must name it when a handler returns that result as it is
// (test/package/app/results.ts).
export { RedisToolkitModule } from './redis-toolkit.module.js';
export { REDIS_CLIENT } from './redis-toolkit.constants.js';
export type { RedisToolkitOptions } from './redis-toolkit.options.js';
export { RedisToolkitHealth, type RedisToolkitHealthResult } from './connection/redis-toolkit.health.js';
export {
  RedisToolkitError,
  InvalidOptionsError,
  InvalidKeyError,
  SerializationError,
  RedisUnavailableError,
  RedisReplyError,
  RedisPermissionError,
  LockNotAcquiredError,
  LockLostError,
  LockHoldTimeoutError,
  RateLimitExceededError,
  UnsupportedContextError,
  SessionNotFoundError,
  SessionTooLargeError,
  CacheLoadTimeoutError,
} from './common/errors.js';
export type { Serializer } from './common/serializer.js';
export { CacheService } from './cache/cache.service.js';
export type { CacheResult, CacheStats } from './cache/cache.types.js';
export { Cacheable, CachePut, CacheEvict } from './cache/cache.decorators.js';
export type { CacheOptions } from './cache/cache.options.js';
export {
  RateLimitService,
  type RateLimitDecision,
  type RateLimitResult,
  type RateLimitStats,
} from './rate-limit/rate-limit.service.js';
export { RateLimitGuard } from './rate-limit/rate-limit.guard.js';
export { Throttle, SkipThrottle } from './rate-limit/rate-limit.decorators.js';
export type { RateLimitOptions, RateLimitPolicy, ThrottleOptions } from './rate-limit/rate-limit.options.js';
export { SessionService } from './session/session.service.js';
export { SessionMiddleware } from './session/session.middleware.js';
export { SessionGuard } from './session/session.guard.js';
export { CurrentSession } from './session/session.decorators.js';
export { RedisSessionStore } from './session/session.store.js';
export type { Session, SessionData } from './session/session.types.js';
export type { SessionRequest } from './session/session.http.js';
export type { CookieResponse } from './session/session.cookie.js';
export type { SessionOptions } from './session/session.options.js';
export { LockService } from './lock/lock.service.js';
export { Lock } from './lock/lock.js';
export type { LockEventInfo } from './lock/lock.events.js';
export { WithLock } from './lock/lock.decorators.js';
export { Semaphore } from './lock/lock.semaphore.js';
export { MultiLock } from './lock/lock.multi.js';
export type { LockOptions } from './lock/lock.options.js';
export { PubSubService } from './pubsub/pubsub.service.js';
export type { PubSubOptions } from './pubsub/pubsub.options.js';
export type { Unsubscribe } from './pubsub/pubsub.types.js';
