import { Cluster, Command } from 'ioredis';
import { CLUSTER_SLICE, perNodeSender } from './cluster-batch.js';
import type { RedisClient } from './lua-script.js';
import { TickBatcher } from './tick-batcher.js';

/**
 * The GETs of one turn as one command: an MGET of up to `perCall` keys on a single server (a key asked twice is sent
 * once), one pipeline of GETs per master on a cluster, where an MGET must stay in one slot (see cluster-batch.ts: a
 * node that fails fails only the reads of its own keys). MGET answers nil for a key holding another type, where a GET
 * answers WRONGTYPE. Used by the cache's reads and the sessions' plain reads.
 */
export function getBatcher(client: RedisClient, perCall: number): TickBatcher<string, string | null> {
  const one = (key: string) => client.get(key);
  if (client instanceof Cluster)
    return new TickBatcher(
      perNodeSender<string, string | null>(client, {
        keyOf: (key) => key,
        command: (key) => new Command('get', [key], { replyEncoding: 'utf8' }),
        reply: (raw) => raw as string | null,
        one,
      }),
      perCall * CLUSTER_SLICE,
    );
  return new TickBatcher(
    {
      one,
      many: async (keys) => {
        const unique = [...new Set(keys)];
        const values = await client.mget(...unique);
        const byKey = new Map(unique.map((k, i) => [k, values[i]]));
        return keys.map((k) => byKey.get(k) ?? null);
      },
    },
    perCall,
  );
}
