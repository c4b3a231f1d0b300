import { Inject, Injectable, Logger, Optional, type OnModuleDestroy, type OnModuleInit } from '@nestjs/common';
import { unlinkMany } from '../common/bulk-keys.js';
import { InvalidOptionsError } from '../common/errors.js';
import { FailurePolicy } from '../common/failure-policy.js';
import type { RedisClock } from '../common/redis-clock.js';
import { FEATURES, KeyBuilder } from '../common/keys.js';
import { SERIALIZER, type Serializer } from '../common/serializer.js';
import { ThrottledWarning } from '../common/throttled-logger.js';
import type { EvictionPolicyCheck } from '../connection/eviction-policy-check.js';
import { RedisConnection } from '../connection/redis-connection.js';
import { CACHE_L1_PUBSUB } from '../pubsub/pubsub.providers.js';
import { FEATURE_CONNECTION } from '../connection/redis-connections.js';
import { PubSubService } from '../pubsub/pubsub.service.js';
import { defaultCall, foreverOptions, keyList, resolveCall } from './cache.call-options.js';
import type { ResolvedCall } from './cache.call-options.js';
import type { CacheEntry } from './cache.entry.js';
import { CacheEntryStore } from './cache.entry-store.js';
import { cacheClock } from './cache.clock.js';
import { cacheEvictionCheck } from './cache.eviction-check.js';
import { InflightLoads } from './cache.inflight-loads.js';
import { CacheL1 } from './cache.l1.js';
import { CacheLoadLock } from './cache.load-lock.js';
import { CACHE_OPTIONS, type ResolvedCacheOptions } from './cache.options.js';
import { CacheReadBatcher } from './cache.read-batcher.js';
import { CacheReadPath, type Loader } from './cache.read-path.js';
import { CacheInvalidation, tagsAndOptions } from './cache.invalidation.js';
import { CacheCounters } from './cache.stats.js';
import { CacheTagIndex } from './cache.tag-index.js';
import { CacheWrites } from './cache.writes.js';
import { CacheValueBound } from './cache.value-bound.js';
import { diagnose, traceObserved, traced } from '../common/diagnostics.js';
import type {
  CacheTags,
  CacheGetOrSetOptions,
  CacheResult,
  CacheSetOptions,
  CacheStats,
  InvalidateTagsOptions,
} from './cache.types.js';

export { CACHE_L1_CHANNEL } from './cache.l1.js';
/** getOrSet options checked once by CacheService.prepare, for getOrSetPrepared. */
export type PreparedCall<T> = ResolvedCall<T>;
export type { CacheTags, CacheTtl, CacheSetOptions, CacheGetOrSetOptions } from './cache.types.js';
export type { InvalidateTagsOptions, CacheStatus, CacheResult, CacheStats } from './cache.types.js';

const FEATURE = FEATURES.cache;
const resultValue = <T>(result: CacheResult<T>): T => result.value;
const ENTRY_KEY_MEMO = 10_000;

/**
 * Cache-aside on Redis with stampede protection, stale-while-revalidate, stale-if-error, XFetch early refresh, tags,
 * pattern invalidation and an optional L1 kept coherent across instances. See docs/cache.md.
 *
 * The public facade. It builds the units it delegates to: the getOrSet read flow (cache.read-path: single-flight,
 * load lock, stale-while-revalidate, refreshes), entry reads/writes (cache.entry-store, GETs batched by
 * cache.read-batcher), tag, pattern and clear invalidation (cache.invalidation), tag indexes (cache.tag-index),
 * the L1 (cache.l1), failure handling and counters.
 */
@Injectable()
export class CacheService implements OnModuleInit, OnModuleDestroy {
  private readonly logger = new Logger('RedisToolkit:Cache');
  private readonly redisWarning = new ThrottledWarning(this.logger, undefined, () => 'cache Redis warnings');
  private readonly options: ResolvedCacheOptions;
  private readonly serializer: Serializer;
  private readonly l1: CacheL1 | undefined;
  private readonly counters = new CacheCounters();
  private readonly failures: FailurePolicy;
  private readonly store: CacheEntryStore;
  private readonly reads: CacheReadPath;
  private readonly invalidation: CacheInvalidation;
  private readonly writes: CacheWrites;
  /** This process's running loads: an invalidation marks those it covers (cache.inflight-loads). */
  private readonly loads = new InflightLoads();
  private readonly evictionCheck: EvictionPolicyCheck;
  /** The largest entry stored: cache.maxValueBytes, or from the server's client-output-buffer-limit (at start). */
  private readonly valueBound: CacheValueBound;
  private readonly entryKeys = new Map<string, string>();
  private readonly defaultCall: ResolvedCall<unknown>;
  /** Redis's clock: the one every entry header is written and judged with (cache.clock.ts). */
  private readonly clock: RedisClock;

  constructor(
    @Inject(FEATURE_CONNECTION.cache) private readonly connection: RedisConnection,
    private readonly keys: KeyBuilder,
    @Inject(CACHE_OPTIONS) options: ResolvedCacheOptions,
    @Inject(SERIALIZER) serializer: Serializer,
    @Optional() @Inject(CACHE_L1_PUBSUB) pubsub?: PubSubService,
  ) {
    this.options = options;
    this.serializer = serializer;
    this.defaultCall = defaultCall(this.options);
    this.clock = cacheClock(connection, this.logger);
    if (this.options.l1) {
      // The L1 bus (the fallback of CLIENT TRACKING) runs on pub/sub; without L1 the cache needs no PubSubService.
      if (!pubsub) throw new InvalidOptionsError('cache.l1 needs PubSubService (provided by RedisToolkitModule)');
      const prefix = keys.featurePrefix(FEATURE);
      const { counters, redisWarning, clock } = this;
      this.l1 = new CacheL1(this.options.l1, connection, pubsub, counters, redisWarning, prefix, clock);
    }
    this.failures = new FailurePolicy(connection, {
      feature: 'cache',
      logger: this.logger,
      failOpen: this.options.failOpen,
      failOpenMeans: 'serving without the cache',
    });
    // Whether Redis may evict a tag index: asked once, at the first use of tags (cache.eviction-check).
    this.evictionCheck = cacheEvictionCheck(connection, this.logger);
    this.valueBound = new CacheValueBound(connection, options.maxValueBytes, this.logger, this.counters, keys);
    const { lockTtl, lockWait } = this.options;
    const tags = new CacheTagIndex(connection, keys, FEATURE, lockTtl, this.l1, this.evictionCheck, this.clock);
    this.store = new CacheEntryStore(
      connection,
      new CacheReadBatcher(connection),
      tags,
      this.l1,
      this.failures,
      this.serializer,
      this.redisWarning,
      this.clock,
    );
    const lock = new CacheLoadLock(connection, keys, lockTtl, lockWait, this.store, this.l1, this.failures, this.clock);
    this.reads = new CacheReadPath(
      this.logger,
      this.options,
      keys.featurePrefix(FEATURE),
      this.serializer,
      this.store,
      lock,
      this.l1,
      this.failures,
      this.counters,
      this.clock,
      this.loads,
      this.valueBound,
    );
    this.invalidation = new CacheInvalidation(connection, keys, tags, this.l1, this.failures, this.loads);
    const { serializer: codec, clock, l1, store, failures, valueBound } = this;
    this.writes = new CacheWrites(options, codec, clock, l1, store, failures, valueBound, (key) => this.entryKey(key));
  }

  async onModuleInit(): Promise<void> {
    // the clock's first estimate and the server's size limit before the first call (lazyConnect: at its ready)
    await Promise.all([this.clock.start(), this.valueBound.start()]);
    await this.l1?.start();
  }

  async onModuleDestroy(): Promise<void> {
    this.reads.close();
    this.clock.close();
    this.evictionCheck.close();
    this.valueBound.close();
    this.failures.close();
    try {
      await this.l1?.close();
    } finally {
      // after the L1's close (which may warn): the pending count now, through this app's logger
      this.redisWarning.close();
    }
  }

  // ----------------------------------------------------------------------------------------------------------------
  // Public API
  // ----------------------------------------------------------------------------------------------------------------

  /** The fresh value under `key`, or undefined (missing, expired, stale, or Redis unreachable with failOpen). */
  async get<T>(key: string): Promise<T | undefined> {
    return this.reads.fresh<T>(this.entryKey(key));
  }

  /**
   * Stores `value` (null is a value; undefined is refused with SerializationError, as is anything the serializer
   * cannot encode, and nothing is written then). With failOpen (default) a Redis failure is counted and logged.
   */
  async set<T>(key: string, value: T, options: CacheSetOptions = {}): Promise<void> {
    await this.writes.set(key, value, options);
  }

  /**
   * Deletes entries (UNLINK); resolves to how many existed. Throws RedisUnavailableError when Redis cannot be reached.
   * The loads of these keys running in this process are neither joined by a later caller nor stored.
   */
  async del(...keys: string[]): Promise<number> {
    const redisKeys = keys.map((k) => this.entryKey(k));
    if (redisKeys.length === 0) return 0;
    this.loads.overtakeKeys(redisKeys);
    for (const k of redisKeys) this.l1?.delete(k);
    try {
      const n = await this.failures.run('del', () => unlinkMany(this.connection.client, redisKeys));
      return n;
    } catch (err) {
      this.failures.unavailable(err, false);
      throw err;
    } finally {
      this.l1?.broadcast({ keys: redisKeys });
    }
  }

  /**
   * Cache-aside: the cached value, or the loader's (stored, shared by every concurrent caller). Not an async function:
   * a promise's `then` per caller costs less than an async frame's start and resume (1,000 callers of one cold key:
   * about 0.1 ms less between the first call and the first read sent, and between the store and the last answer).
   */
  getOrSet<T>(key: string, loader: Loader<T>, options?: CacheGetOrSetOptions<T>): Promise<T> {
    if (traceObserved('cacheGet')) return this.getOrSetWithStatus(key, loader, options).then(resultValue);
    let started: CacheResult<T> | Promise<CacheResult<T>>;
    try {
      started = this.start(key, loader, options);
    } catch (err) {
      return Promise.reject(err);
    }
    if (started instanceof Promise) return started.then(this.countedValue as (r: CacheResult<T>) => T);
    return Promise.resolve(this.counted(started).value);
  }

  /** counted(result).value, bound once (getOrSet hands it to every caller's `then`). */
  private readonly countedValue = (result: CacheResult<unknown>): unknown => this.counted(result).value;

  /** getOrSet that also says where the value came from: 'hit', 'stale' (served while a refresh runs) or 'miss'. */
  async getOrSetWithStatus<T>(
    key: string,
    loader: Loader<T>,
    options?: CacheGetOrSetOptions<T>,
  ): Promise<CacheResult<T>> {
    return this.withStatus(key, loader, options, undefined);
  }

  /**
   * @internal The options of getOrSet checked and completed with the module defaults once, for a caller that passes
   * the same ones on every call (HttpCacheInterceptor, per route): see getOrSetPrepared.
   */
  prepare<T>(options: CacheGetOrSetOptions<T>): PreparedCall<T> {
    return resolveCall(options, 'getOrSet', this.options);
  }

  /**
   * @internal getOrSetWithStatus with options prepared beforehand by prepare (no per-call option checks); an L1 hit
   * is answered synchronously (no promise to settle and await).
   */
  getOrSetPrepared<T>(key: string, loader: Loader<T>, call: PreparedCall<T>): CacheResult<T> | Promise<CacheResult<T>> {
    if (traceObserved('cacheGet')) return this.withStatus(key, loader, undefined, call);
    const started = this.start(key, loader, undefined, call);
    return started instanceof Promise ? started.then((r) => this.counted(r)) : this.counted(started);
  }

  private async withStatus<T>(
    key: string,
    loader: Loader<T>,
    options: CacheGetOrSetOptions<T> | undefined,
    prepared: ResolvedCall<T> | undefined,
  ): Promise<CacheResult<T>> {
    if (traceObserved('cacheGet')) {
      const get = async () => {
        const started = this.start(key, loader, options, prepared);
        return this.counted(started instanceof Promise ? await started : started);
      };
      return traced(
        'cacheGet',
        () => ({ feature: 'cache', operation: 'get' }),
        get,
        (r) => (r.degraded === undefined ? { outcome: r.status } : { outcome: r.status, degraded: r.degraded }),
      );
    }
    const started = this.start(key, loader, options, prepared);
    return this.counted(started instanceof Promise ? await started : started);
  }

  private counted<T>(result: CacheResult<T>): CacheResult<T> {
    this.counters.record(result);
    diagnose('cacheGet', () =>
      result.degraded === undefined
        ? { feature: 'cache', operation: 'get', outcome: result.status }
        : { feature: 'cache', operation: 'get', outcome: result.status, degraded: result.degraded },
    );
    return result;
  }

  /**
   * An L1 hit synchronously, else a read from Redis (and on a miss, this process's one shared load). The options are
   * checked here (after the key and loader), unless given already prepared.
   */
  private start<T>(
    key: string,
    loader: Loader<T>,
    options: CacheGetOrSetOptions<T> | undefined,
    prepared?: ResolvedCall<T>,
  ): CacheResult<T> | Promise<CacheResult<T>> {
    const redisKey = this.entryKey(key);
    if (typeof loader !== 'function') throw new InvalidOptionsError('cache.getOrSet: loader must be a function');
    const call =
      prepared ??
      (options === undefined ? (this.defaultCall as ResolvedCall<T>) : resolveCall(options, 'getOrSet', this.options));
    if (this.l1) {
      const local = this.l1.get(redisKey) as CacheEntry<T> | undefined;
      const now = this.clock.now();
      if (local && now < local.freshUntil) {
        if (this.reads.refreshEarly(local, now)) this.reads.refreshInBackground(redisKey, loader, call);
        return { value: local.value, status: 'hit' };
      }
    }
    return this.reads.fetch(redisKey, loader, call);
  }

  /**
   * Removes every entry of the tags (or, with a trailing `{ soft: true }`, marks them stale: still served while one
   * refresh runs). Resolves to the number of entries removed or marked. Reaches every instance's L1. Tags are separate
   * arguments (`invalidateTags(...list)` for an array); an array, or a last argument that is neither a tag nor a
   * plain object, rejects with InvalidOptionsError.
   */
  async invalidateTags(...args: string[] | [...tags: string[], options: InvalidateTagsOptions]): Promise<number> {
    const { tags, options } = tagsAndOptions(args);
    return this.invalidation.invalidateTags(tags, options);
  }

  /**
   * Deletes every entry whose key matches the glob (`products:*`), on every master of a cluster, with SCAN and
   * UNLINK in bounded batches. The pattern is confined under our prefix: it can never reach other keys.
   */
  async invalidatePattern(pattern: string): Promise<number> {
    return this.invalidation.invalidatePattern(pattern);
  }

  /** Deletes everything under the cache's namespace (entries, tag indexes, locks), SCAN + UNLINK on every master. */
  async clear(): Promise<number> {
    return this.invalidation.clear();
  }

  /** Whether a fresh value is stored under `key`. */
  async has(key: string): Promise<boolean> {
    return (await this.ttl(key)) !== undefined;
  }

  /** ms the value under `key` stays fresh, or undefined (missing, stale, or Redis unreachable with failOpen). */
  async ttl(key: string): Promise<number | undefined> {
    return this.store.freshFor(this.entryKey(key));
  }

  /** `get` of each key (one MGET per 32 keys on a single server), in order. */
  async mget<T>(keys: readonly string[]): Promise<(T | undefined)[]> {
    return Promise.all(keyList(keys).map((k) => this.get<T>(k)));
  }

  /**
   * `set` of each entry (a ttl goes in its options: `{ key, value, options: { ttl } }`). Every entry's key, options
   * and value are checked before any is written: one refused stores nothing (until 2026-12-06 the entries before it
   * were written and the call rejected).
   */
  async mset<T>(entries: readonly { key: string; value: T; options?: CacheSetOptions }[]): Promise<void> {
    await this.writes.mset(entries);
  }

  /** getOrSet with no expiry in practice (100 years fresh): until deleted or invalidated. Options: `{ tags? }`. */
  async getOrSetForever<T>(key: string, loader: Loader<T>, options: { tags?: CacheTags<T> } = {}): Promise<T> {
    return this.getOrSet(key, loader, foreverOptions<T>(options));
  }

  stats(): CacheStats {
    const { unavailable, replyErrors } = this.failures.counts;
    return this.counters.snapshot(unavailable + replyErrors);
  }

  // ----------------------------------------------------------------------------------------------------------------
  // Keys
  // ----------------------------------------------------------------------------------------------------------------

  /** Validated and escaped once per distinct key (a bounded memo: the hit path of an L1 is mostly this). */
  private entryKey(key: string): string {
    let redisKey = this.entryKeys.get(key);
    if (redisKey === undefined) {
      redisKey = this.keys.key(FEATURE, key);
      if (this.entryKeys.size >= ENTRY_KEY_MEMO) this.entryKeys.clear();
      this.entryKeys.set(key, redisKey);
    }
    return redisKey;
  }
}
