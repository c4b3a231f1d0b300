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

/** How long a slot answered ASK counts as migrating after the last ASK (ms): a reshard's page takes far less. */
const ASKED_FOR_MS = 30_000;

/** Per cluster, the slots answered ASK lately: the node (`host:port`) the ASK named, and until when it counts. */
const asked = new WeakMap<Cluster, Map<number, { node: string; until: number }>>();

/**
 * A node answered ASK for `slot` (`ASK <slot> <host:port>`): the slot migrates, and its keys already moved are read
 * from `node` while the slot table still names the source (ioredis updates it only at the MOVED after the move).
 */
export function noteAsk(cluster: Cluster, reply: string): void {
  const [, slot, node] = reply.split(' ', 3);
  if (node === undefined || !/^\d+$/.test(slot)) return;
  let slots = asked.get(cluster);
  if (slots === undefined) asked.set(cluster, (slots = new Map()));
  slots.set(Number(slot), { node, until: Date.now() + ASKED_FOR_MS });
}

/**
 * The node a migrating `slot`'s moved keys are on (from the last ASK for it), while that differs from the owner in
 * the slot table; undefined when the slot is not known to migrate. A read of such a slot may be answered by either
 * node: the reply budget (budgeted-reads.ts) reserves on both.
 */
export function migratingTo(cluster: Cluster, slot: number): string | undefined {
  const record = asked.get(cluster)?.get(slot);
  if (record === undefined) return undefined;
  if (record.until < Date.now() || cluster.slots[slot]?.[0] === record.node) {
    asked.get(cluster)?.delete(slot); // moved (MOVED updated the table), or no ASK for a while
    return undefined;
  }
  return record.node;
}
