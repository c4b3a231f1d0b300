import type { LoggerService } from '@nestjs/common';
import { RedisClock } from '../common/redis-clock.js';
import type { RedisConnection } from '../connection/redis-connection.js';

/**
 * The clock of every time in a cache entry's header and every comparison with one (fresh-until, stale horizon, grace,
 * the tags' invalidation marks and index scores): Redis's, estimated from TIME on the cache's connection (RedisClock),
 * so that an entry written by an instance whose clock runs ahead or behind is fresh for its ttl on every instance.
 * Each instance compared the writer's `Date.now() + ttl` with its own `Date.now()` until 2026-12-05: an entry written
 * by an instance an hour ahead was a fresh hit on the others until Redis dropped the key.
 */
export function cacheClock(connection: RedisConnection, logger: LoggerService): RedisClock {
  return new RedisClock(connection.client, connection.commandTimeout, (problem) =>
    logger.warn(
      `cache: ${problem}; an entry written by an instance whose clock differs from the one judging it by X ms is ` +
        'fresh X ms longer or shorter than its ttl there. Grant the ACL user +time',
    ),
  );
}
