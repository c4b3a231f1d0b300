import { type Cluster, Redis } from 'ioredis';
import type { NodeAddress } from '../common/cluster-masters.js';

/**
 * Runs `use` on a short-lived connection of its own to one node, with the cluster's credentials, TLS and timeouts,
 * and closes it: for the start-up ACL check, which asks again after a timeout. Not on ioredis's pool connection to that
 * node: the toolkit drops a pool connection whose command timed out, but its status says ready until the socket's
 * close is handled, so the ACL check asked again on the pool failed on the closing connection ("Connection is
 * closed", CI 2026-12-01); each attempt here gets a new connection. (mastersOf, in cluster-masters.ts, is enough where
 * nothing is asked again: it only has to find a master that ioredis dropped from its pool.)
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
