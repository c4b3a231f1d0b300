import { Cluster, type Redis } from 'ioredis';
import { UnsafeEvictionPolicyError } from '../common/errors.js';
import { mastersOf, nodeKey } from '../common/cluster-masters.js';
import { evictionPolicyOf, NO_POLICY_IN_INFO } from '../connection/eviction-policy-check.js';
import type { RedisConnection } from '../connection/redis-connection.js';
import { verifyPermissions } from '../connection/redis-permissions.js';
import { nodeCheckOf, type ServerChecks } from './lock.node-check.js';
import { checkDistinctNodes, checkQuorumNodeServers, connectQuorum } from './lock.quorum-nodes.js';

/** What to do at start when a lock server may evict lock keys: log a warning (default) or refuse to start. */
export type OnUnsafeEviction = 'warn' | 'refuse';

/** A server the locks live on, and how to name it in a message. */
export interface EvictionTarget {
  client: Redis | Cluster;
  description: string;
}

/**
 * Reads `maxmemory` and `maxmemory_policy` of every server the locks use (every master of a cluster) from `INFO
 * memory`, as the cache's, rate limiter's and sessions' checks do: INFO is in the documented ACL line, CONFIG GET is
 * not (with CONFIG GET, `refuse` could not refuse an allkeys-lru server for that user: it only warned). With a memory
 * limit, `allkeys-*` may evict a held lock (a second holder is then granted it) and the fence counter (tokens stay
 * increasing only through the clock floor); `volatile-*` may evict held locks (they carry a TTL). The first is
 * refused with `refuse`, otherwise both are warnings; a server whose INFO memory cannot be read (ACL, renamed, a
 * proxy that leaves the fields out) is named in a warning.
 */
export async function checkEvictionPolicy(
  targets: EvictionTarget[],
  onUnsafe: OnUnsafeEviction,
  warn: (message: string) => void,
): Promise<void> {
  // On a cluster every master of the slot table (mastersOf: one that ioredis dropped from its pool is connected again,
  // not skipped).
  const servers: { node: Redis; name: string }[] = [];
  for (const { client, description } of targets) {
    for (const node of await mastersOf(client))
      servers.push({ node, name: client instanceof Cluster ? `${description} ${nodeKey(node)}` : description });
  }
  const unsafe: string[] = [];
  for (const { node, name } of servers) {
    let policy: string;
    let maxmemory: number;
    try {
      const memory = evictionPolicyOf(String(await node.info('memory')));
      if (memory === undefined) throw new Error(NO_POLICY_IN_INFO);
      ({ policy, maxmemory } = memory);
    } catch (err) {
      warn(
        `locks: could not read the eviction policy of ${name} (INFO memory: ` +
          `${err instanceof Error ? err.message : String(err)}). ` +
          'If its maxmemory-policy is allkeys-* or volatile-*, held locks can be evicted and granted twice: ' +
          'use noeviction for the lock data, or grant +info so this check can run.',
      );
      continue;
    }
    if (maxmemory === 0 || policy === 'noeviction') continue;
    if (policy.startsWith('allkeys-')) unsafe.push(`${name} (maxmemory-policy ${policy})`);
    else if (policy.startsWith('volatile-')) {
      warn(
        `locks: ${name} has maxmemory-policy ${policy}: under memory pressure a held lock (a key with a TTL) can be ` +
          'evicted and granted to a second holder (fencing tokens still increase). Use noeviction for lock data.',
      );
    }
  }
  if (unsafe.length === 0) return;
  const message =
    `locks: ${unsafe.join(', ')} may evict any key: a held lock can vanish and be granted to a second holder, and ` +
    'the fence counter can be lost (tokens still increase through the Redis clock floor). Use maxmemory-policy ' +
    "noeviction (or a separate Redis for locks); lock.onUnsafeEviction: 'refuse' makes this a start-up error.";
  if (onUnsafe === 'refuse') throw new UnsafeEvictionPolicyError(message);
  warn(message);
}

/**
 * Start-up of the lock servers (LockService.onModuleInit): connects the quorum nodes (a majority must answer), refuses
 * one that is a replica or lacks its db (as the main connection's server is refused), then checks each server's
 * eviction policy and each quorum node's ACL permissions for the lock's commands (the toolkit's own connection is
 * checked by RedisPermissionsCheck). A quorum node the start could not check (down, or no answer to the check) is
 * checked on its first `ready` by its NodeCheck (lock.node-check.ts, made by quorumOf), with these same checks (a
 * refusal leaves it out instead), as every node is under lazyConnect, where nothing is asked at start (documented in
 * docs/lock.md): the quorum nodes then start connecting in the background, as the main connection does. A failed
 * check calls `closeAll` (every connection of the toolkit, not only the lock's: the app is not going to start, and
 * Nest calls no shutdown hook after a failed init).
 */
export async function startLockServers(
  connection: RedisConnection,
  quorumClients: { client: Redis; description: string }[],
  keyPrefix: string,
  onUnsafeEviction: 'warn' | 'refuse',
  warn: (message: string) => void,
  closeAll: () => Promise<void>,
): Promise<void> {
  const checks = quorumClients.map(({ client }) => nodeCheckOf(client));
  // What a NodeCheck asks past the node's replica, db and run_id: the start's checks below, for that one node
  const serverChecks: ServerChecks = async ({ client, description }, note) => {
    const where = ` on the lock quorum node ${description}`;
    await verifyPermissions({ client, keyPrefix, cluster: false, sharded: false, features: ['lock'], where }, note);
    const target = { client, description: `lock quorum node ${description}` };
    await checkEvictionPolicy([target], onUnsafeEviction, note);
  };
  for (const check of checks) check?.configure(serverChecks);
  if (connection.lazyConnect) {
    for (const { client } of quorumClients) if (client.status === 'wait') client.connect().catch(() => undefined);
    return;
  }
  try {
    if (quorumClients.length > 0) await connectQuorum(connection, quorumClients, warn);
    const ready = quorumClients.filter((c) => c.client.status === 'ready');
    const targets = quorumClients.length > 0 ? ready : [{ client: connection.client, description: 'the Redis server' }];
    const runIds = await checkDistinctNodes(ready, warn);
    const unanswered = await checkQuorumNodeServers(ready, connection.commandTimeout, warn);
    await checkEvictionPolicy(targets, onUnsafeEviction, warn);
    // A quorum node whose ACL user lacks one of the lock's commands would fail every lock call it takes part in.
    for (const { client, description } of ready) {
      const where = ` on the lock quorum node ${description}`;
      await verifyPermissions({ client, keyPrefix, cluster: false, sharded: false, features: ['lock'], where }, warn);
    }
    // Checked: it takes part. Not (down, or no answer): checked on its next ready, before a lock call reaches it.
    quorumClients.forEach(({ client }, i) => {
      if (ready.some((node) => node.client === client) && !unanswered.has(client))
        checks[i]?.passed(runIds.get(client));
      else checks[i]?.arm();
    });
  } catch (err) {
    // Nothing may keep retrying (or the process alive).
    await closeAll();
    throw err;
  }
}
