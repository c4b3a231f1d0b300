import { RedisToolkitError, RedisUnavailableError, toRedisUnavailable } from '../common/errors.js';
import type { ThrottledWarning } from '../common/throttled-logger.js';
import type { RedisConnection } from '../connection/redis-connection.js';
import type { CacheCounters } from './cache.stats.js';

/**
 * How the cache meets Redis failures: fail fast while disconnected, turn transport errors into RedisUnavailableError,
 * and with failOpen count and log them and carry on without the cache.
 */
export class CacheFailurePolicy {
  constructor(
    private readonly connection: RedisConnection,
    private readonly failOpen: boolean,
    private readonly counters: CacheCounters,
    private readonly redisWarning: ThrottledWarning,
  ) {}

  /** Runs a Redis operation, failing fast while the client is known to be disconnected. */
  async guard<T>(what: string, op: () => Promise<T>): Promise<T> {
    this.assertConnected(what);
    try {
      return await op();
    } catch (err) {
      if (err instanceof RedisToolkitError && !(err instanceof RedisUnavailableError)) throw err;
      throw toRedisUnavailable(err, `cache ${what}`);
    }
  }

  assertConnected(what: string): void {
    const status = this.connection.status;
    if (status !== 'ready' && status !== 'wait') {
      throw new RedisUnavailableError(`cache ${what} failed: Redis connection is ${status}`);
    }
  }

  /** failOpen: count and log a Redis failure and carry on; otherwise rethrow it. Other errors always propagate. */
  failed(err: unknown): void {
    if (!(err instanceof RedisUnavailableError)) throw err;
    this.count(err);
    if (!this.failOpen) throw err;
  }

  count(err: unknown): void {
    if (!(err instanceof RedisUnavailableError)) return;
    this.counters.errors++;
    this.redisWarning.warn(`${err.message}; serving without the cache`);
  }
}
