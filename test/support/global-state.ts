/**
 * Types shared by global-setup.ts and global-teardown.ts (type-only: both files are loaded by jest outside the
 * test sandbox, where relative `.js` imports need special handling — see global-setup.ts).
 */
import type { RedisClusterHandle } from './redis-cluster.js';
import type { RedisServerHandle } from './redis-server.js';

export interface GlobalTestServers {
  single: RedisServerHandle;
  cluster: RedisClusterHandle;
  quorum: RedisServerHandle[];
}

declare global {
  // Set by globalSetup, read by globalTeardown (both run in the jest parent process, sharing its globalThis).
  var __RTK_TEST_SERVERS__: GlobalTestServers | undefined;
}
