import type { ModuleMetadata } from '@nestjs/common';
import { Test, type TestingModuleBuilder } from '@nestjs/testing';
import type { RedisConnectionOptions } from '../connection/connection.options.js';
import { RedisToolkitModule } from '../redis-toolkit.module.js';
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

/** The `connection` option for a test server or cluster handle (other values pass through). */
export function testConnection(redis: RedisTestingModuleOptions['redis']): RedisConnectionOptions {
  if ('startupNodes' in redis && 'masters' in redis) return { cluster: redis.startupNodes };
  if ('url' in redis && 'restart' in redis) return { url: redis.url };
  return redis as RedisConnectionOptions;
}

/**
 * `Test.createTestingModule` with `RedisToolkitModule.forRoot` pointed at a test server, beside your own imports,
 * controllers and providers. Returns the builder, so `overrideProvider(...)` still works before `compile()`.
 */
export function createRedisTestingModule(options: RedisTestingModuleOptions): TestingModuleBuilder {
  const { redis, toolkit, imports = [], ...metadata } = options;
  const toolkitModule = RedisToolkitModule.forRoot({ ...toolkit, connection: testConnection(redis) });
  return Test.createTestingModule({ ...metadata, imports: [toolkitModule, ...imports] });
}
