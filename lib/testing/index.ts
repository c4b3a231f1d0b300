// `nestjs-redis-toolkit/testing`: real Redis for the tests of apps that use the toolkit. Never imported by the root
// entry point: it needs redis-server on PATH (and @nestjs/testing for createRedisTestingModule).
export {
  startRedisServer,
  getFreePort,
  sweepStaleServers,
  type RedisServerHandle,
  type RedisServerOptions,
} from './testing.redis-server.js';
export { startRedisCluster, type RedisClusterHandle, type RedisClusterOptions } from './testing.redis-cluster.js';
export {
  RedisServerNotFoundError,
  RedisServerPermissionError,
  RedisServerStartError,
  RedisServerStateError,
  RedisServerTooOldError,
} from './testing.errors.js';
export { createRedisTestingModule, testConnection, type RedisTestingModuleOptions } from './testing.module.js';
