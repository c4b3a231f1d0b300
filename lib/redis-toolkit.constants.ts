/** The raw ioredis client (Redis or Cluster) the toolkit uses; inject it to run your own commands. */
export const REDIS_CLIENT = Symbol('REDIS_CLIENT');
/** The validated options with defaults filled in (ResolvedRedisToolkitOptions). */
export const REDIS_TOOLKIT_OPTIONS = Symbol('REDIS_TOOLKIT_OPTIONS');

/**
 * The injection token of the raw ioredis client of a named connection (`connections` of forRoot):
 * `@Inject(getRedisClientToken('sessions')) sessions: Redis`. `REDIS_CLIENT` for `default`. With forRootAsync the
 * names are not known until the factory runs: list them in its `connectionNames`.
 */
export function getRedisClientToken(name = 'default'): string | symbol {
  return name === 'default' ? REDIS_CLIENT : `RedisToolkit:client:${name}`;
}
