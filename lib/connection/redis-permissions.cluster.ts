import { type Cluster, Redis } from 'ioredis';
import { replyCodeOf } from '../common/failure-policy.js';

/**
 * Why a cluster never became ready, when the reason is the ACL: ioredis's ready check runs CLUSTER INFO and it names
 * each node connection (CLIENT SETNAME); a user without them leaves the cluster closing and retrying with no error
 * event at all, so the start would only say "no answer". Asked on a short-lived connection to the first startup node
 * with the cluster's own credentials; undefined when that node cannot be reached or nothing is denied.
 */
export async function clusterReadyDenied(client: Cluster): Promise<string | undefined> {
  // ioredis keeps the startup nodes on the instance but does not type them (it is the list given to `new Cluster`).
  const first = (client as unknown as { startupNodes?: { host?: string; port?: number }[] }).startupNodes?.[0];
  if (first?.port === undefined) return undefined;
  const denied: string[] = [];
  try {
    await onNodeConnection(client, { host: first.host ?? 'localhost', port: first.port }, async (probe) => {
      for (const [command, args] of [
        ['CLUSTER INFO', ['cluster', 'info']],
        ['CLIENT SETNAME', ['client', 'setname', 'rtk-acl-check']],
      ] as const) {
        await probe.call(args[0], ...args.slice(1)).catch((err: unknown) => {
          if (replyCodeOf(err) === 'NOPERM') denied.push(command);
        });
      }
    });
  } catch {
    return undefined;
  }
  if (denied.length === 0) return undefined;
  return (
    `the ACL user may not run ${denied.join(', ')}, which ioredis needs to connect to a cluster ` +
    `(grant ${denied.map((c) => `+${c.toLowerCase().replace(' ', '|')}`).join(' ')}; docs/security.md has the line)`
  );
}

export interface NodeAddress {
  host: string;
  port: number;
}

/** Every master that owns slots, from the cluster's slot table (ioredis's node keys: `host:port`). */
export function slotMasters(client: Cluster): NodeAddress[] {
  const keys = new Set(client.slots.map((nodes) => nodes?.[0]).filter((key) => key !== undefined));
  return [...keys].map((key) => {
    const colon = key.lastIndexOf(':'); // an IPv6 host has colons of its own
    return { host: key.slice(0, colon), port: Number(key.slice(colon + 1)) };
  });
}

/**
 * Runs `use` on a short-lived connection of its own to one node, with the cluster's credentials, TLS and timeouts,
 * and closes it. Not on ioredis's pool connection to that node: the toolkit drops a pool connection whose command
 * timed out and ioredis opens no new one until it fetches the slots again, so a start-up check retried on the pool
 * was sent on the closing connection ("Connection is closed"), then skipped that master (CI, 2026-12-01).
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
