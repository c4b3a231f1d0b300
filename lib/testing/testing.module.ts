import type { ModuleMetadata } from '@nestjs/common';
import { Test, type TestingModuleBuilder } from '@nestjs/testing';
import { InvalidOptionsError } from '../common/errors.js';
import { kindOf, refuseUnknown } from '../common/option-checks.js';
import type { RedisConnectionOptions } from '../connection/connection.options.js';
import { RedisToolkitModule } from '../redis-toolkit.module.js';
import { TOOLKIT_OPTION_KEYS } from '../redis-toolkit.option-keys.js';
import type { RedisToolkitOptions } from '../redis-toolkit.options.js';
import type { RedisClusterHandle } from './testing.redis-cluster.js';
import type { RedisServerHandle } from './testing.redis-server.js';

export interface RedisTestingModuleOptions extends ModuleMetadata {
  /**
   * Where the toolkit connects: a server or cluster from `startRedisServer()` / `startRedisCluster()`, or any
   * `connection`.
   */
  redis: RedisServerHandle | RedisClusterHandle | RedisConnectionOptions;
  /** Every other toolkit option (`keyPrefix`, `cache`, `session`, ...), as given to `RedisToolkitModule.forRoot`. */
  toolkit?: Omit<RedisToolkitOptions, 'connection'>;
}

/**
 * The `connection` option for a test server or cluster handle (other objects pass through, checked at start as
 * `connection`); InvalidOptionsError naming `redis` for anything else (a url string, nothing).
 */
export function testConnection(redis: RedisTestingModuleOptions['redis']): RedisConnectionOptions {
  if (redis === null || typeof redis !== 'object' || Array.isArray(redis)) {
    // a url may hold a password: only what the value is is shown
    const hint = typeof redis === 'string' ? ' (a url goes in { url })' : '';
    throw new InvalidOptionsError(
      'redis must be a server or cluster from startRedisServer() / startRedisCluster(), or connection options ' +
        `({ url }, { host, port }, { cluster }, { client }), got ${kindOf(redis)}${hint}`,
    );
  }
  if ('startupNodes' in redis && 'masters' in redis) return { cluster: redis.startupNodes };
  if ('url' in redis && 'restart' in redis) return { url: redis.url };
  return redis as RedisConnectionOptions;
}

/**
 * Its own keys and the module metadata Nest's `@Module()` takes. Any other key went to `Test.createTestingModule`,
 * whose plain Error ("Invalid property 'provders' passed into the @Module() decorator") named no nearer key, or, for
 * `redsi`, left `redis` undefined.
 */
const TESTING_MODULE_OPTIONS = new Set(['redis', 'toolkit', 'imports', 'controllers', 'providers', 'exports']);
const WHERE_TO_CONNECT =
  'redis says where to connect (a handle from startRedisServer() / startRedisCluster(), or connection options)';

/** InvalidOptionsError for a key it does not know, and for a toolkit option beside redis (it goes under toolkit). */
function refuseUnknownKeys(options: object): void {
  for (const key of Object.keys(options)) {
    if (TESTING_MODULE_OPTIONS.has(key) || !Object.hasOwn(TOOLKIT_OPTION_KEYS, key)) continue;
    if (key === 'connection')
      throw new InvalidOptionsError(`createRedisTestingModule: connection is not an option here: ${WHERE_TO_CONNECT}`);
    throw new InvalidOptionsError(
      `createRedisTestingModule: ${key} is a toolkit option: give it under toolkit ({ redis, toolkit: { ${key} } })`,
    );
  }
  refuseUnknown(options, TESTING_MODULE_OPTIONS, 'createRedisTestingModule');
}

/**
 * `Test.createTestingModule` with `RedisToolkitModule.forRoot` pointed at a test server, beside your own imports,
 * controllers and providers. Returns the builder, so `overrideProvider(...)` still works before `compile()`.
 */
export function createRedisTestingModule(options: RedisTestingModuleOptions): TestingModuleBuilder {
  if (options === null || typeof options !== 'object')
    throw new InvalidOptionsError(`createRedisTestingModule needs { redis, ... }, got ${kindOf(options)}`);
  refuseUnknownKeys(options);
  const { redis, toolkit, imports = [], ...metadata } = options;
  if (toolkit !== undefined && (toolkit === null || typeof toolkit !== 'object' || Array.isArray(toolkit)))
    throw new InvalidOptionsError(`createRedisTestingModule: toolkit must be an object, got ${kindOf(toolkit)}`);
  // forRoot({ ...toolkit, connection }) would drop it for `redis` without a word
  if (toolkit !== undefined && 'connection' in toolkit)
    throw new InvalidOptionsError(
      `createRedisTestingModule: toolkit.connection is not an option here: ${WHERE_TO_CONNECT}`,
    );
  const toolkitModule = RedisToolkitModule.forRoot({ ...toolkit, connection: testConnection(redis) });
  return Test.createTestingModule({ ...metadata, imports: [toolkitModule, ...imports] });
}
