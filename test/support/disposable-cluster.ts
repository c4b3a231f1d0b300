/**
 * A private 3-master cluster for one describe block, for tests that kill a master (the shared harness cluster must
 * stay whole): started before the block's tests, stopped after them with the block's apps.
 */
import type { Cluster } from 'ioredis';
import { hashSlot } from '../../lib/common/bulk-keys.js';
import { startRedisCluster, type RedisClusterHandle } from './redis-cluster.js';
import { rawCommand } from './resp.js';
import { closeToolkitApps } from './toolkit-app.js';

/** Call in a describe block; the returned function gives the block's cluster inside its tests. */
export function useDisposableCluster(): () => RedisClusterHandle {
  let handle: RedisClusterHandle | undefined;
  beforeAll(async () => {
    handle = await startRedisCluster();
  }, 30_000);
  afterAll(async () => {
    await closeToolkitApps();
    await handle?.stop();
  });
  return () => {
    if (!handle) throw new Error('the disposable cluster is not started (call inside a test)');
    return handle;
  };
}

/** For each Redis key, whether its slot belongs to `master` (from CLUSTER SLOTS, asked of that master). */
export async function ownedBy(master: { port: number }, keys: string[]): Promise<boolean[]> {
  const slots = (await rawCommand(master.port, ['CLUSTER', 'SLOTS'])) as [number, number, [string, number]][];
  return keys.map((key) => {
    const slot = hashSlot(key);
    return slots.some(([from, to, [, port]]) => port === master.port && slot >= from && slot <= to);
  });
}

/**
 * Ends the cluster client's own connection to the master on `port`, as a command timeout or a reset does: ioredis
 * leaves that master out of its pool (and of `nodes('master')`) until it fetches the slots again, while the slot table
 * still names it. Resolves once the connection has ended.
 */
export async function dropPoolConnection(cluster: Cluster, port: number): Promise<void> {
  const node = cluster.nodes('master').find((n) => Number(n.options.port) === port);
  if (!node) throw new Error(`no pool connection to the master on port ${port}`);
  const ended = new Promise((resolve) => node.once('end', resolve));
  node.disconnect();
  await ended;
}
