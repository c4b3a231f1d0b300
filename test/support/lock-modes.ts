/** Lock services on each topology the lock tests cover: one server, the cluster, and a 3-node quorum. */
import { randomUUID } from 'node:crypto';
import { LockService, type RedisToolkitOptions } from '../../lib/index.js';
import { RedisConnection } from '../../lib/advanced.js';
import { KeyBuilder } from '../../lib/common/keys.js';
import type { RedisClient } from '../../lib/common/lua-script.js';
import { sharedServers } from './shared-servers.js';
import { createToolkitApp, type RedisTarget } from './toolkit-app.js';

export type LockMode = 'single' | 'cluster' | 'quorum';
export const LOCK_MODES = ['single', 'cluster', 'quorum'] as const;

/** The lock key the service writes for `resource` (prefix `rtk:`, hash tag around the escaped resource). */
export const lockKey = (resource: string): string => new KeyBuilder('rtk:').tagged('lock', resource);

export const unique = (name: string): string => `${name}:${randomUUID()}`;

export function lockAppOptions(
  mode: LockMode,
  lock: RedisToolkitOptions['lock'] = {},
): { target: RedisTarget; lock: RedisToolkitOptions['lock'] } {
  if (mode === 'quorum') {
    return {
      target: 'single',
      lock: { ...lock, quorum: { nodes: sharedServers().quorum.map((q) => ({ url: q.url })) } },
    };
  }
  return { target: mode, lock };
}

export async function lockService(
  mode: LockMode,
  lock: RedisToolkitOptions['lock'] = {},
): Promise<{ locks: LockService; connection: RedisConnection }> {
  const app = await createToolkitApp(lockAppOptions(mode, lock));
  return { locks: app.get(LockService), connection: app.get(RedisConnection) };
}

/** The clients that hold lock keys in this mode (the main client, or every quorum node). */
export function lockClients(mode: LockMode, connection: RedisConnection, locks: LockService): RedisClient[] {
  return mode === 'quorum' ? quorumNodeClients(locks) : [connection.client];
}

/** A quorum LockService's node clients, in the order of `lock.quorum.nodes`. */
export function quorumNodeClients(locks: LockService): RedisClient[] {
  return (locks as unknown as { quorumClients: { client: RedisClient }[] }).quorumClients.map((c) => c.client);
}
