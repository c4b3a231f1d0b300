/** Tags of an entry: a list, or (getOrSet) computed from the loaded value. */
export type CacheTags<T = unknown> = readonly string[] | ((value: T) => readonly string[]);

export interface CacheSetOptions {
  /** ms the value stays fresh. Default: `cache.defaultTtl`. */
  ttl?: number;
  /** ms after `ttl` during which the value is served stale while one refresh runs. Default: `cache.staleTtl`. */
  staleTtl?: number;
  tags?: readonly string[];
}

export interface CacheGetOrSetOptions<T = unknown> {
  ttl?: number;
  staleTtl?: number;
  tags?: CacheTags<T>;
  /**
   * ms a caller with a stale value waits for the refresh before getting the stale value. Default `cache.softTimeout`.
   */
  softTimeout?: number;
  /** ms after which this call's loader fails its callers with CacheLoadTimeoutError. Default `cache.loadTimeout`. */
  hardTimeout?: number;
}

export interface InvalidateTagsOptions {
  /** Mark the entries stale (served while one refresh runs) instead of deleting them. */
  soft?: boolean;
}

/** Where a getOrSet value came from. */
export type CacheStatus = 'hit' | 'stale' | 'miss';

export interface CacheResult<T> {
  value: T;
  status: CacheStatus;
}

export interface CacheStats {
  hits: number;
  misses: number;
  staleHits: number;
  /** Loader calls, including background refreshes. */
  loads: number;
  /** Redis failures (down, timed out) met by this instance's cache. */
  errors: number;
  /** (hits + staleHits) / (hits + staleHits + misses); 0 before the first read. */
  hitRatio: number;
}
