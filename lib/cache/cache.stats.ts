import type { CacheResult, CacheStats } from './cache.types.js';

/** This instance's cache counters (what `CacheService.stats()` reports). */
export class CacheCounters {
  hits = 0;
  misses = 0;
  staleHits = 0;
  graceHits = 0;
  loads = 0;
  /** Reads that went on without Redis (failOpen): also counted in misses. */
  failedOpen = 0;
  /** Failures outside the failure policy's count (L1 invalidations that could not be published). */
  errors = 0;
  /** Values not stored for being over the size bound (cache.value-bound.ts): refused by set, or loaded and returned. */
  tooLarge = 0;

  /** Counts one getOrSet read by where its value came from (and whether it failed open). */
  record({ status, degraded }: CacheResult<unknown>): void {
    if (degraded !== undefined) this.failedOpen++;
    if (status === 'hit') this.hits++;
    else if (status === 'stale') this.staleHits++;
    else if (status === 'grace') this.graceHits++;
    else this.misses++;
  }

  /** `redisErrors`: the failure policy's count of failed Redis calls. */
  snapshot(redisErrors: number): CacheStats {
    const { hits, misses, staleHits, graceHits, loads, failedOpen, tooLarge } = this;
    const errors = this.errors + redisErrors;
    const served = hits + staleHits + graceHits;
    const reads = served + misses;
    const hitRatio = reads === 0 ? 0 : served / reads;
    return { hits, misses, staleHits, graceHits, loads, errors, failedOpen, tooLarge, hitRatio };
  }
}
