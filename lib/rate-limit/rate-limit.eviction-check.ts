import type { LoggerService } from '@nestjs/common';
import { EvictionPolicyCheck } from '../connection/eviction-policy-check.js';
import type { RedisConnection } from '../connection/redis-connection.js';

/**
 * Whether the rate limiter's server(s) may evict counters: checked once, at the first decision this RateLimitService
 * sends (on a ready connection). A process that limits nothing sends nothing.
 */
export function rateLimitEvictionCheck(connection: RedisConnection, logger: LoggerService): EvictionPolicyCheck {
  return new EvictionPolicyCheck(connection, logger, {
    feature: 'rate limiting',
    risk:
      'a counter can be evicted (every counter has a TTL, so volatile-* policies too; volatile-ttl picks the keys ' +
      'nearest their expiry, which counters usually are): that client then starts over with a full limit, and a ' +
      'blockDuration or block() ends early, without an error',
    remedy:
      'Keep rate limiting on a Redis that does not evict (e.g. rateLimit on a named connection whose server has ' +
      'maxmemory-policy noeviction), or size maxmemory so it never evicts',
  });
}
