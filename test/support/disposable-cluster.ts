/**
 * A private 3-master cluster for one describe block, for tests that kill a master (the shared harness cluster must
 * stay whole): started before the block's tests, stopped after them with the block's apps.
 */
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
