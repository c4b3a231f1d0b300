import { Cluster, Redis } from 'ioredis';
import type { RedisClient } from '../../lib/common/lua-script.js';
import { trackForCleanup } from './private-servers.js';
import { rawCommand } from './resp.js';
import { sharedServers } from './shared-servers.js';
import type { RedisTarget } from './toolkit-app.js';

/** Clients connected to the server on `port` now, besides the one asking (INFO clients `connected_clients`). */
export async function othersConnected(port: number): Promise<number> {
  const info = String(await rawCommand(port, ['INFO', 'clients']));
  return Number(/connected_clients:(\d+)/.exec(info)?.[1]) - 1;
}

/**
 * A client of the shared single server or cluster (`target`), closed after the file (trackForCleanup); on the cluster
 * a command is not retried (maxRetriesPerRequest 0), so a test sees a failure at once.
 */
export function clientFor(target: RedisTarget): RedisClient {
  const client =
    target === 'single'
      ? new Redis(sharedServers().single.url)
      : new Cluster(sharedServers().cluster, { redisOptions: { maxRetriesPerRequest: 0 } });
  return trackForCleanup(client);
}
