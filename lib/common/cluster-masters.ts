import { Cluster, type Redis } from 'ioredis';
import { RedisUnavailableError } from './errors.js';
import type { RedisClient } from './lua-script.js';

export interface NodeAddress {
  host: string;
  port: number;
}

/** ioredis's key of a node connection, as in `cluster.slots`: `host:port`. */
export const nodeKey = (node: Redis): string => `${node.options.host}:${node.options.port}`;

/** The node key (`host:port`) of every master that owns slots, from the cluster's slot table. */
function slotMasterKeys(cluster: Cluster): Set<string> {
  return new Set(cluster.slots.map((nodes) => nodes?.[0]).filter((key) => key !== undefined));
}

/** Every master that owns slots, from the cluster's slot table. */
export function slotMasters(cluster: Cluster): NodeAddress[] {
  return [...slotMasterKeys(cluster)].map((key) => {
    const colon = key.lastIndexOf(':'); // an IPv6 host has colons of its own
    return { host: key.slice(0, colon), port: Number(key.slice(colon + 1)) };
  });
}

/**
 * The connection to every master (one for a single server): SCAN must visit each master of a cluster, health must
 * ask each. A master whose connection ended (a timeout dropped it, a reset) is out of ioredis's pool, and of
 * `nodes('master')`, until the slots are fetched again: a SCAN without it would miss its keys without a word. So when
 * the slot table names a master the pool lacks, the slots are fetched again (ioredis opens a new connection), and a
 * master still missing is a RedisUnavailableError.
 */
export async function mastersOf(client: RedisClient): Promise<Redis[]> {
  if (!(client instanceof Cluster)) return [client];
  const missing = (nodes: Redis[]) => {
    const have = new Set(nodes.map(nodeKey));
    return [...slotMasterKeys(client)].filter((key) => !have.has(key));
  };
  let nodes = client.nodes('master');
  if (missing(nodes).length > 0) {
    await new Promise<void>((resolve) => client.refreshSlotsCache(() => resolve()));
    nodes = client.nodes('master');
  }
  const gone = missing(nodes);
  if (gone.length > 0) throw new RedisUnavailableError(`no connection to the cluster master(s) ${gone.join(', ')}`);
  return nodes;
}
