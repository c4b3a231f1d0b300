// The public API of nestjs-redis-toolkit, and nothing else.
export { RedisToolkitModule } from './redis-toolkit.module.js';
export { REDIS_CLIENT, REDIS_TOOLKIT_OPTIONS } from './redis-toolkit.constants.js';
export type { RedisToolkitOptions } from './redis-toolkit.options.js';
export type { ResolvedRedisToolkitOptions } from './redis-toolkit.options-resolver.js';
export type {
  RedisConnectionOptions,
  RedisStandaloneConnection,
  RedisSentinelConnection,
  RedisClusterConnection,
  RedisExistingClientConnection,
  RedisNodeAddress,
} from './connection/connection.options.js';
export { RedisConnection } from './connection/redis-connection.js';
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
export { JsonSerializer, type Serializer } from './common/serializer.js';
export { KeyBuilder } from './common/keys.js';
export * from './cache/index.js';
export * from './rate-limit/index.js';
export * from './session/index.js';
export * from './lock/index.js';
export * from './pubsub/index.js';
