// The ES module gate of `nestjs-redis-toolkit/testing` (package.json exports "default"; its types are index.ts's):
// MissingPeerError when @nestjs/testing is not installed, then index.ts, by a dynamic import
// so that its static import of the peer cannot fail first (common/optional-peers.ts). Its names are index.ts's, one by
// one (test/package/run.mjs compares them). entry.cts is the gate for require().
import { checkPeers } from '../common/optional-peers.js';

checkPeers('nestjs-redis-toolkit/testing', ['@nestjs/testing']);

const testing = await import('./index.js');

export const {
  startRedisServer,
  getFreePort,
  sweepStaleServers,
  startRedisCluster,
  RedisServerNotFoundError,
  RedisServerPermissionError,
  RedisServerStartError,
  RedisServerStateError,
  RedisServerTooOldError,
  createRedisTestingModule,
  testConnection,
} = testing;
