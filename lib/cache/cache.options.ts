import type { OptionProblems } from '../common/option-checks.js';

/** Injection token of the cache's ResolvedCacheOptions (`cache` of forRoot, defaults filled in). */
export const CACHE_OPTIONS = Symbol('CACHE_OPTIONS');

/**
 * The largest `cache.l1.max`. lru-cache allocates its slot arrays for `max` entries up front (about 32 bytes a slot
 * with a ttl: 320 MB and 2 s at this bound, measured with lru-cache 11 on Node 20); far past it the allocation throws
 * a RangeError or exhausts the heap at startup.
 */
export const CACHE_L1_MAX_LIMIT = 10_000_000;

export interface CacheL1Options {
  /** Most entries kept in the in-process LRU: a whole number from 1 to 10_000_000 (its slots are made at start). */
  max: number;
  /**
   * Longest ms an entry stays in L1 (it is never served past its own fresh-until either); a fraction is rounded up to a
   * whole ms.
   */
  ttl: number;
  /**
   * Most bytes the L1's entries take together (lru-cache's and bentocache's `maxSize`), each counted as its key and
   * its entry as stored in Redis (the value serialised, with its header), in UTF-8 bytes: the least recently used
   * leave first, and an entry larger than the whole bound is never kept in L1 (each read of it goes to Redis). A whole
   * number from 1. Default: none, only `max` bounds L1 (up to `max` × your largest value). See docs/cache.md.
   */
  maxBytes?: number;
  /**
   * How an entry is dropped when its key changes elsewhere. `tracking`: Redis reports every write of a cache key by
   * any client (CLIENT TRACKING BCAST; Redis >= 6, ACL `+client|tracking +client|id &__redis__:invalidate`, checked
   * at startup). `bus`: the toolkit's instances publish their own invalidations (writes by other clients unseen).
   * `auto` (default): tracking when the server allows it, else the bus with a warning. See docs/cache.md.
   */
  invalidation?: CacheL1Invalidation;
}

export type CacheL1Invalidation = 'auto' | 'tracking' | 'bus';
const L1_INVALIDATIONS: readonly CacheL1Invalidation[] = ['auto', 'tracking', 'bus'];

export type ResolvedCacheL1Options = Required<Omit<CacheL1Options, 'maxBytes'>> & {
  /** undefined: no byte bound. */
  maxBytes: number | undefined;
};

export interface CacheOptions {
  /**
   * ms a value stays fresh when a call gives no ttl. Default 60_000. This, staleTtl, grace and lockTtl become Redis
   * expiries: a fraction is rounded up to a whole ms.
   */
  defaultTtl?: number;
  /** ms after expiry during which the stale value is still served while one refresh runs. Default 0 (off). */
  staleTtl?: number;
  /**
   * In-process LRU in front of Redis, kept coherent across instances (CLIENT TRACKING or pub/sub). Off unless given.
   */
  l1?: CacheL1Options;
  /** Redis down: call the loader and serve uncached (true, default) or throw RedisUnavailableError (false). */
  failOpen?: boolean;
  /** ms the cross-process stampede lock lives (one loader runs while it is held). Default 10_000. */
  lockTtl?: number;
  /** Longest ms a process waits for another process's loader before loading itself. Default 5_000. */
  lockWait?: number;
  /**
   * Longest ms a loader may run. A loader that has not settled by then fails every caller sharing it with
   * CacheLoadTimeoutError and frees its key (the next call loads again), so a loader that never settles cannot hang
   * its key for the life of the process. Default: `lockTtl` (past it, another process may load anyway).
   */
  loadTimeout?: number;
  /**
   * ms a caller holding a stale value waits for its refresh before being served the stale value (the refresh goes
   * on in the background). Default 0: the stale value is served at once. A call's `softTimeout` overrides it.
   */
  softTimeout?: number;
  /**
   * ms past `ttl + staleTtl` during which, when the loader fails, the last value is served instead of the error
   * (bentocache's grace). The entry's Redis key lives `ttl + staleTtl + grace`: that much longer in memory. Default 0.
   */
  grace?: number;
  /** ms between two loader tries while a value is served from grace. Default 10_000. */
  graceBackoff?: number;
  /** XFetch β: > 1 refreshes earlier, < 1 later, 0 turns probabilistic early refresh off. Default 1. */
  beta?: number;
  /**
   * Largest entry stored, in bytes as sent to Redis (the value serialised, with its header): a larger one is refused
   * by `set` / `mset` (CacheValueTooLargeError) and returned uncached by getOrSet, @Cacheable and the HTTP cache.
   * Default: from the server's `client-output-buffer-limit normal` hard limit, read at start (4/5 of it less 128
   * bytes: a GET reply past the limit makes Redis close the connection); none when that limit is 0 (Redis's default)
   * or cannot be read. A positive whole number. See docs/cache.md, "Size of a value".
   */
  maxValueBytes?: number;
}

export interface ResolvedCacheOptions {
  defaultTtl: number;
  staleTtl: number;
  l1: ResolvedCacheL1Options | undefined;
  failOpen: boolean;
  lockTtl: number;
  lockWait: number;
  loadTimeout: number;
  softTimeout: number;
  grace: number;
  graceBackoff: number;
  beta: number;
  /** undefined: taken from the server at start (cache.value-bound.ts). */
  maxValueBytes: number | undefined;
}

/**
 * A duration rounded up to whole ms, as the session options do: Redis refuses a fraction in PX (a lockTtl of 1500.5
 * failed every getOrSet miss, and invalidateTags, with `ERR value is not an integer`), lru-cache a fractional l1.ttl.
 * Applied to the durations that reach Redis (entry and lock expiries) or the LRU; the others only arm timers. A value
 * that is not a number is left for the option check to name.
 */
function wholeMs<T>(value: T): T {
  return (typeof value === 'number' ? Math.ceil(value) : value) as T;
}

export function resolveCacheOptions(raw: CacheOptions | undefined, problems: OptionProblems): ResolvedCacheOptions {
  const o = raw ?? {};
  if (problems.object('cache', raw)) {
    problems.duration('cache.defaultTtl', o.defaultTtl);
    problems.duration('cache.staleTtl', o.staleTtl, { allowZero: true });
    problems.boolean('cache.failOpen', o.failOpen);
    problems.duration('cache.lockTtl', o.lockTtl);
    problems.duration('cache.lockWait', o.lockWait, { allowZero: true });
    problems.duration('cache.loadTimeout', o.loadTimeout);
    problems.duration('cache.softTimeout', o.softTimeout, { allowZero: true });
    problems.duration('cache.grace', o.grace, { allowZero: true });
    problems.duration('cache.graceBackoff', o.graceBackoff);
    problems.number('cache.beta', o.beta, 0, 100);
    problems.integer('cache.maxValueBytes', o.maxValueBytes, 1);
    if (problems.object('cache.l1', o.l1) && o.l1) {
      problems.integer('cache.l1.max', o.l1.max, 1, CACHE_L1_MAX_LIMIT);
      if (o.l1.max === undefined) problems.add('cache.l1.max', 'is required');
      problems.duration('cache.l1.ttl', o.l1.ttl);
      if (o.l1.ttl === undefined) problems.add('cache.l1.ttl', 'is required');
      problems.integer('cache.l1.maxBytes', o.l1.maxBytes, 1);
      if (o.l1.invalidation !== undefined && !L1_INVALIDATIONS.includes(o.l1.invalidation)) {
        problems.add('cache.l1.invalidation', `must be one of ${L1_INVALIDATIONS.map((v) => `'${v}'`).join(', ')}`);
      }
    }
  }
  const lockTtl = wholeMs(o.lockTtl ?? 10_000);
  return {
    defaultTtl: wholeMs(o.defaultTtl ?? 60_000),
    staleTtl: wholeMs(o.staleTtl ?? 0),
    // lru-cache takes a whole-ms ttl only (a fraction threw its TypeError at startup)
    l1: o.l1
      ? {
          max: o.l1.max,
          ttl: wholeMs(o.l1.ttl),
          maxBytes: o.l1.maxBytes,
          invalidation: o.l1.invalidation ?? 'auto',
        }
      : undefined,
    failOpen: o.failOpen ?? true,
    lockTtl,
    lockWait: o.lockWait ?? 5_000,
    loadTimeout: o.loadTimeout ?? lockTtl,
    softTimeout: o.softTimeout ?? 0,
    grace: wholeMs(o.grace ?? 0),
    graceBackoff: o.graceBackoff ?? 10_000,
    beta: o.beta ?? 1,
    maxValueBytes: o.maxValueBytes,
  };
}
