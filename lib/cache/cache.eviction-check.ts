import type { LoggerService } from '@nestjs/common';
import { EvictionPolicyCheck } from '../connection/eviction-policy-check.js';
import type { RedisConnection } from '../connection/redis-connection.js';

/**
 * Whether the cache's server(s) may evict a tag index: checked once, the first time this CacheService uses tags (a
 * tagged write or an invalidateTags). A process that uses no tags sends nothing.
 */
export function cacheEvictionCheck(connection: RedisConnection, logger: LoggerService): EvictionPolicyCheck {
  return new EvictionPolicyCheck(connection, logger, {
    feature: 'cache',
    risk:
      'a tag index can be evicted while its entries stay (an index is touched only on writes, entries on every ' +
      'read, so LRU and LFU pick indexes first), and invalidateTags then misses those entries, without an error, ' +
      'until their TTL ends',
    remedy:
      'Keep tagged entries on a Redis that does not evict (e.g. the cache on a named connection whose server has ' +
      'maxmemory-policy noeviction), or size maxmemory so it never evicts',
  });
}
