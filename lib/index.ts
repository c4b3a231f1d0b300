// The public API of nestjs-redis-toolkit: what an application imports (the module, services, guards, decorators,
// errors, option and result types). Plumbing for extending or testing the toolkit is on
// `nestjs-redis-toolkit/advanced`, the Socket.IO gateway on `nestjs-redis-toolkit/notifications`.
// test/foundation/public-api.spec.ts lists every name.
export { RedisToolkitModule } from './redis-toolkit.module.js';
export { REDIS_CLIENT } from './redis-toolkit.constants.js';
export type { RedisToolkitOptions } from './redis-toolkit.options.js';
export { RedisToolkitHealth } from './connection/redis-toolkit.health.js';
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
export { Cacheable, CachePut, CacheEvict } from './cache/cache.decorators.js';
export type { CacheOptions } from './cache/cache.options.js';
export { RateLimitService, type RateLimitResult } from './rate-limit/rate-limit.service.js';
export { RateLimitGuard } from './rate-limit/rate-limit.guard.js';
export { Throttle, SkipThrottle } from './rate-limit/rate-limit.decorators.js';
export type { RateLimitOptions, RateLimitPolicy, ThrottleOptions } from './rate-limit/rate-limit.options.js';
export { SessionService } from './session/session.service.js';
export { SessionMiddleware } from './session/session.middleware.js';
export { SessionGuard } from './session/session.guard.js';
export { CurrentSession } from './session/session.decorators.js';
export { RedisSessionStore } from './session/session.store.js';
export type { Session } from './session/session.types.js';
export type { SessionRequest } from './session/session.http.js';
export type { CookieResponse } from './session/session.cookie.js';
export type { SessionOptions } from './session/session.options.js';
export { LockService } from './lock/lock.service.js';
export { Lock } from './lock/lock.js';
export { WithLock } from './lock/lock.decorators.js';
export { Semaphore } from './lock/lock.semaphore.js';
export { MultiLock } from './lock/lock.multi.js';
export type { LockOptions } from './lock/lock.options.js';
export { PubSubService } from './pubsub/pubsub.service.js';
export type { PubSubOptions } from './pubsub/pubsub.options.js';
