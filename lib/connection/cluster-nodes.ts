import { type Cluster, Redis } from 'ioredis';
import type { NodeAddress } from '../common/cluster-masters.js';

/**
 * Runs `use` on a short-lived connection of its own to one node, with the cluster's credentials, TLS and timeouts,
 * and closes it: for the start-up checks that must reach every master. Not on ioredis's pool connection to that node:
 * the toolkit drops a pool connection whose command timed out, and ioredis leaves that node out of `nodes('master')`
 * and opens no new connection until it fetches the slots again. The ACL check retried on the pool was sent on the
 * closing connection ("Connection is closed"), then skipped that master (CI, 2026-12-01).
 */
export async function onNodeConnection<T>(
  client: Cluster,
  node: NodeAddress,
  use: (connection: Redis) => Promise<T>,
): Promise<T> {
  const connection = new Redis({
    ...client.options.redisOptions,
    host: node.host,
    port: node.port,
    lazyConnect: true,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
  });
  connection.on('error', () => undefined); // reported through `use`'s commands, or the connect below
  try {
    await connection.connect();
    return await use(connection);
  } finally {
    connection.disconnect();
  }
}
