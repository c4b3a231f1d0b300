/** Lock services on each topology the lock tests cover: one server, the cluster, and a 3-node quorum. */
import { randomUUID } from 'node:crypto';
import { Cluster, type Redis } from 'ioredis';
import { LockService, type RedisToolkitOptions } from '../../lib/index.js';
import { RedisConnection } from '../../lib/advanced.js';
import { KeyBuilder } from '../../lib/common/keys.js';
import type { RedisClient } from '../../lib/common/lua-script.js';
import type { LockWakeups } from '../../lib/lock/lock.wake.js';
import { sharedServers } from './shared-servers.js';
import { createToolkitApp, type RedisTarget } from './toolkit-app.js';
import { bootToolkitApp } from './toolkit-boot.js';
import { waitFor } from './wait.js';

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

/** The pace of the specs that pause or kill private servers: a call fails after 300 ms, a reconnect every 100 ms. */
export const FAILURE_PACE = { commandTimeout: 300, maxReconnectDelay: 100 } as const;

/** A LockService on one private server (FAILURE_PACE), and the app's main client (it reconnects after a pause). */
export async function privateServerLocks(server: { url: string }): Promise<{ locks: LockService; client: Redis }> {
  const app = await bootToolkitApp({ target: { url: server.url }, ...FAILURE_PACE });
  return { locks: app.get(LockService), client: app.get(RedisConnection).client as Redis };
}

/** A LockService in Redlock mode over private `servers` (FAILURE_PACE); its main connection is the shared server. */
export async function privateQuorumLocks(servers: { url: string }[]): Promise<LockService> {
  const app = await bootToolkitApp({
    target: 'single',
    ...FAILURE_PACE,
    lock: { quorum: { nodes: servers.map((s) => ({ url: s.url })) } },
  });
  return app.get(LockService);
}

/** The clients that hold lock keys in this mode (the main client, or every quorum node). */
export function lockClients(mode: LockMode, connection: RedisConnection, locks: LockService): RedisClient[] {
  return mode === 'quorum' ? quorumNodeClients(locks) : [connection.client];
}

/** A quorum LockService's node clients, in the order of `lock.quorum.nodes`. */
export function quorumNodeClients(locks: LockService): RedisClient[] {
  return (locks as unknown as { quorumClients: { client: RedisClient }[] }).quorumClients.map((c) => c.client);
}

/** A LockService's wake-on-release state: its id, its channels, the wakes and grants it received. */
export const wakeupsOf = (locks: LockService): LockWakeups => (locks as unknown as { wakeups: LockWakeups }).wakeups;

/** The entries of `locks`'s service among the waiters of `resource`: its id, or with grants 'id token ttl', oldest first. */
export async function waitingEntriesOf(server: RedisClient, resource: string, locks: LockService): Promise<string[]> {
  const { id } = wakeupsOf(locks);
  const members = await server.zrange(`${lockKey(resource)}:waiters`, '0', '-1');
  return members.filter((m) => m === id || m.startsWith(`${id} `));
}

/**
 * Within 10 s, every lock server has `locks`'s service among the waiters of `resource`, and its channels have a
 * subscriber (wake and grant channels are subscribed by one SUBSCRIBE). A service starts listening on its first wait,
 * on a connection of its own: a release before that finds nobody listening and passes the service over, as documented,
 * leaving it to its poll. Whether a release serves a waiter can only be asserted once this holds.
 */
export async function waitingAndListening(
  servers: RedisClient[],
  resource: string,
  locks: LockService,
): Promise<boolean> {
  const { channel } = wakeupsOf(locks);
  return waitFor(async () => {
    for (const server of servers) {
      if ((await waitingEntriesOf(server, resource, locks)).length === 0) return false;
      // on a cluster, NUMSUB counts one node's subscribers: add up every master's (PUBLISH reaches them all)
      let subscribers = 0;
      for (const node of server instanceof Cluster ? server.nodes('master') : [server as Redis]) {
        subscribers += ((await node.pubsub('NUMSUB', channel)) as [string, number])[1];
      }
      if (subscribers < 1) return false;
    }
    return true;
  }, 10_000);
}
