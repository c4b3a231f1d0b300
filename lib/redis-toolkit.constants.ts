/** The raw ioredis client (Redis or Cluster) the toolkit uses; inject it to run your own commands. */
export const REDIS_CLIENT = Symbol('REDIS_CLIENT');
/** The validated options with defaults filled in (ResolvedRedisToolkitOptions). */
export const REDIS_TOOLKIT_OPTIONS = Symbol('REDIS_TOOLKIT_OPTIONS');
