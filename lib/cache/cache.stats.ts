import type { CacheStats, CacheStatus } from './cache.types.js';

/** This instance's cache counters (what `CacheService.stats()` reports). */
export class CacheCounters {
  hits = 0;
  misses = 0;
  staleHits = 0;
  loads = 0;
  /** Failures outside the failure policy's count (L1 invalidations that could not be published). */
  errors = 0;

  /** Counts one getOrSet read by where its value came from. */
  record(status: CacheStatus): void {
    if (status === 'hit') this.hits++;
    else if (status === 'stale') this.staleHits++;
    else this.misses++;
  }

  /** `redisErrors`: the failure policy's count of failed Redis calls. */
  snapshot(redisErrors: number): CacheStats {
    const { hits, misses, staleHits, loads } = this;
    const errors = this.errors + redisErrors;
    const reads = hits + staleHits + misses;
    return { hits, misses, staleHits, loads, errors, hitRatio: reads === 0 ? 0 : (hits + staleHits) / reads };
  }
}
