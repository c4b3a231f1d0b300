/** Tags of an entry: a list, or (getOrSet) computed from the loaded value. */
export type CacheTags<T = unknown> = readonly string[] | ((value: T) => readonly string[]);

/** ms a value stays fresh: a number, or (getOrSet, @Cacheable) computed from the loaded value. */
export type CacheTtl<T = unknown> = number | ((value: T) => number);

export interface CacheSetOptions {
  /** ms the value stays fresh. Default: `cache.defaultTtl`. */
  ttl?: number;
  /** ms after `ttl` during which the value is served stale while one refresh runs. Default: `cache.staleTtl`. */
  staleTtl?: number;
  /** ms after `ttl + staleTtl` the value is kept to be served when its loader fails. Default: `cache.grace`. */
  grace?: number;
  tags?: readonly string[];
}

export interface CacheGetOrSetOptions<T = unknown> {
  /** ms the value stays fresh, or a function of the loaded value returning it. Default: `cache.defaultTtl`. */
  ttl?: CacheTtl<T>;
  staleTtl?: number;
  tags?: CacheTags<T>;
  /**
   * Whether the loaded value is stored: false returns it to the callers without caching it (the next call loads
   * again). Default: every value except undefined is stored.
   */
  shouldCache?: (value: T) => boolean;
  /**
   * ms past `ttl + staleTtl` during which, when the loader fails, the last value is served (status 'grace') instead
   * of the error. Default `cache.grace` (0: off).
   */
  grace?: number;
  /** ms between two loader tries while a value is served from grace. Default `cache.graceBackoff`. */
  graceBackoff?: number;
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

/**
 * Where a getOrSet value came from: 'hit' (fresh), 'stale' (within staleTtl, served while a refresh runs), 'grace'
 * (past staleTtl, served because the loader failed), 'miss' (loaded).
 */
export type CacheStatus = 'hit' | 'stale' | 'grace' | 'miss';

export interface CacheResult<T> {
  value: T;
  status: CacheStatus;
  /**
   * 'fail-open' (always with status 'miss'): Redis could not be reached for this read (its GET, the load lock, or
   * the store of the loaded value failed) and, under `failOpen`, the loader's value was served without the cache.
   * Absent when the cache worked.
   */
  degraded?: 'fail-open';
}

export interface CacheStats {
  hits: number;
  misses: number;
  staleHits: number;
  /** Values served from grace because their loader failed (or a try waits for graceBackoff). */
  graceHits: number;
  /** Loader calls, including background refreshes. */
  loads: number;
  /** Redis failures (down, timed out) met by this instance's cache. */
  errors: number;
  /**
   * Reads (`get`, `getOrSet`) that failed open: Redis could not be reached and the read went on without the cache
   * (`get`: undefined; `getOrSet`: the loader's value, result `degraded: 'fail-open'`). Also counted in `misses`.
   */
  failedOpen: number;
  /**
   * Values not stored because their entry was over the size bound (`cache.maxValueBytes`, or the server's
   * `client-output-buffer-limit normal`): refused by `set` / `mset` (CacheValueTooLargeError), or loaded by getOrSet,
   * @Cacheable or the HTTP cache and returned uncached.
   */
  tooLarge: number;
  /** (hits + staleHits + graceHits) / (hits + staleHits + graceHits + misses); 0 before the first read. */
  hitRatio: number;
}
