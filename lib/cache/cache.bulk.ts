import { scanKeys, unlinkMany } from '../common/bulk-keys.js';
import type { RedisConnection } from '../connection/redis-connection.js';
import type { CacheL1 } from './cache.l1.js';

/**
 * SCAN (every master of a cluster) for `match` and UNLINK in bounded batches, evicting each batch from this L1 and
 * every other instance's. `spare` keeps keys out (pattern invalidation spares the internal tag/lock keys).
 * Never KEYS, never FLUSHALL.
 */
export async function unlinkMatching(
  connection: RedisConnection,
  match: string,
  l1: CacheL1 | undefined,
  spare?: (redisKey: string) => boolean,
): Promise<number> {
  let total = 0;
  for await (const page of scanKeys(connection.client, match)) {
    const doomed = spare ? page.filter((k) => !spare(k)) : page;
    if (doomed.length === 0) continue;
    for (const k of doomed) l1?.delete(k);
    total += await unlinkMany(connection.client, doomed);
    l1?.broadcast({ keys: doomed });
  }
  return total;
}
