import type { Logger } from '@nestjs/common';
import { RedisUnavailableError } from '../common/errors.js';
import type { FailurePolicy } from '../common/failure-policy.js';
import type { Serializer } from '../common/serializer.js';
import { ThrottledWarning } from '../common/throttled-logger.js';
import { diagnose, traceObserved, traced } from '../common/diagnostics.js';
import { TurnMemo } from '../common/turn-memo.js';
import { entryOf, sameCall, type ResolvedCall } from './cache.call-options.js';
import { encodeEntry, type CacheEntry } from './cache.entry.js';
import type { CacheEntryStore } from './cache.entry-store.js';
import type { CacheL1 } from './cache.l1.js';
import type { InflightLoad, InflightLoads } from './cache.inflight-loads.js';
import { boundedLoad, LoadTimers, within } from './cache.loader.js';
import type { CacheLoadLock } from './cache.load-lock.js';
import type { ResolvedCacheOptions } from './cache.options.js';
import type { CacheCounters } from './cache.stats.js';
import type { CacheResult, CacheTags } from './cache.types.js';
import type { CacheValueBound } from './cache.value-bound.js';
import { makeRoom } from '../common/bounded-map.js';
import type { RedisClock } from '../common/redis-clock.js';

export type Loader<T> = () => T | Promise<T>;

/** A running load or refresh of one key, shared by the callers that may join it. */
interface Shared<R> {
  load: InflightLoad;
  result: Promise<R>;
}

/** The error of the store step of a load (its starter's options, or the encoding), kept for that caller alone. */
interface StoreFailure {
  failed: boolean;
  error: unknown;
}

/** Most keys whose next loader try (while served from grace) is remembered; the oldest is dropped past it. */
const GRACE_RETRY_MEMO = 10_000;

/**
 * The read flow of getOrSet once the L1 has been asked: the Redis read, single-flight of concurrent misses in this
 * process, the cross-process load lock, stale-while-revalidate (with the soft timeout), XFetch early refresh and
 * the background refresh, and the loader call itself (bounded by the hard timeout).
 */
export class CacheReadPath {
  private readonly refreshWarning: ThrottledWarning;
  /** The load each key's misses share, while an invalidation has not overtaken it (cache.inflight-loads). */
  private readonly inflight = new Map<string, Shared<CacheResult<unknown>>>();
  /**
   * The fetches started in this turn and not yet settled, by key: a call of the same key with the same options in
   * the same turn shares one (its read, its decision and, on a miss, its load; one promise for all): 1,000 callers
   * of one cold key with a 50 ms loader were all answered in 52.7-52.9 ms instead of 53.8 (medians of 45 bursts).
   */
  private readonly thisTurn = new TurnMemo<
    string,
    { call: ResolvedCall<unknown>; result: Promise<CacheResult<unknown>> }
  >();
  private readonly refreshing = new Map<string, Shared<{ value: unknown } | undefined>>();
  /** Keys served from grace: epoch ms before which their loader is not tried again (graceBackoff). */
  private readonly graceRetryAt = new Map<string, number>();
  /** Errors thrown by loaders (incl. their hard timeout): only those let a value be served from grace. */
  private readonly loaderErrors = new WeakSet<object>();
  private readonly graceWarning: ThrottledWarning;
  private closed = false;
  private readonly loadTimers = new LoadTimers();

  constructor(
    logger: Logger,
    private readonly options: ResolvedCacheOptions,
    private readonly featurePrefix: string,
    private readonly serializer: Serializer,
    private readonly store: CacheEntryStore,
    private readonly lock: CacheLoadLock,
    private readonly l1: CacheL1 | undefined,
    private readonly failures: FailurePolicy,
    private readonly counters: CacheCounters,
    /** Every time compared with an entry's header, or written into one, is Redis's (see cache.entry.ts). */
    private readonly clock: RedisClock,
    /** This process's loads as its invalidations see them: one overtaken is neither joined nor stored. */
    private readonly loads: InflightLoads,
    /** A loaded value whose entry is past it is returned to its callers, not stored (counted and warned). */
    private readonly bound: CacheValueBound,
  ) {
    this.refreshWarning = new ThrottledWarning(logger, undefined, () => 'failed cache refreshes');
    this.graceWarning = new ThrottledWarning(logger, undefined, () => 'cache values served from grace');
  }

  /**
   * No background refresh starts after this (the module is shutting down), and the counts of the warnings not logged
   * yet are logged now (ThrottledWarning.close: a timer left would log through whichever logger Nest has then).
   */
  close(): void {
    this.closed = true;
    this.loadTimers.close();
    this.lock.close();
    this.refreshWarning.close();
    this.graceWarning.close();
  }

  /** CacheService.get: the fresh value (from L1, else Redis), or undefined (missing, stale, Redis unreachable). */
  async fresh<T>(redisKey: string): Promise<T | undefined> {
    const local = this.l1?.get(redisKey);
    if (local && this.clock.now() < local.freshUntil) {
      this.counters.hits++;
      return local.value as T;
    }
    let entry: CacheEntry<T> | undefined;
    const version = this.l1?.version ?? 0;
    try {
      entry = await this.store.read<T>(redisKey);
    } catch (err) {
      this.failures.unavailable(err);
      this.counters.misses++;
      this.counters.failedOpen++;
      return undefined;
    }
    if (entry && this.clock.now() < entry.freshUntil) {
      this.counters.hits++;
      this.l1?.remember(redisKey, entry, version);
      return entry.value;
    }
    this.counters.misses++;
    return undefined;
  }

  /** The getOrSet flow past the L1; shared by the calls of one key with the same options in one turn (thisTurn). */
  fetch<T>(redisKey: string, loader: Loader<T>, call: ResolvedCall<T>): Promise<CacheResult<T>> {
    const shared = this.thisTurn.get(redisKey);
    if (shared !== undefined && sameCall(shared.call, call)) return shared.result as Promise<CacheResult<T>>;
    const result = this.fetchAlone(redisKey, loader, call);
    this.thisTurn.setWhilePending(redisKey, { call: call as ResolvedCall<unknown>, result }, result);
    return result;
  }

  private async fetchAlone<T>(redisKey: string, loader: Loader<T>, call: ResolvedCall<T>): Promise<CacheResult<T>> {
    let entry: CacheEntry<T> | undefined;
    const version = this.l1?.version ?? 0;
    try {
      entry = await this.store.read<T>(redisKey);
    } catch (err) {
      this.failures.unavailable(err);
      return this.singleFlight(redisKey, call, async () => ({
        value: (await this.load(redisKey, loader, call.hardTimeout)).value,
        status: 'miss',
        degraded: 'fail-open',
      }));
    }
    const now = this.clock.now();
    if (entry) {
      if (now < entry.freshUntil) {
        this.l1?.remember(redisKey, entry, version);
        if (this.refreshEarly(entry, now)) this.refreshInBackground(redisKey, loader, call);
        return { value: entry.value, status: 'hit' };
      }
      if (now < entry.staleUntil) {
        const refresh = this.refreshInBackground(redisKey, loader, call);
        // softTimeout: wait that long for the refresh, then serve the stale value while it goes on
        const fresh =
          call.softTimeout > 0 && refresh ? await within(refresh, call.softTimeout, this.loadTimers) : undefined;
        return fresh ? { value: fresh.value, status: 'miss' } : { value: entry.value, status: 'stale' };
      }
    }
    // Past the stale horizon but within grace: the value is kept for when the loader fails.
    const graced = entry && call.grace > 0 && now < entry.staleUntil + call.grace ? entry : undefined;
    if (graced && now < (this.graceRetryAt.get(redisKey) ?? 0)) return { value: graced.value, status: 'grace' };
    // Set only when this call runs the load (the callers that join it share its value, not its store step).
    const own: StoreFailure = { failed: false, error: undefined };
    const loading = this.singleFlight(redisKey, call, (load) =>
      this.lock.loadOnce<T>(redisKey, {
        load: () => this.load(redisKey, loader, call.hardTimeout),
        loadAndStore: () => this.loadAndStore(redisKey, loader, call, load, own),
      }),
    );
    const result = await (graced
      ? loading.catch((err: unknown) => this.serveGrace(redisKey, graced, call, err))
      : loading);
    if (own.failed) throw own.error;
    return result;
  }

  /**
   * The loader failed while a value within its grace period is stored: that value is served (status 'grace') and
   * the loader is not tried again for this key before `graceBackoff` ms. Any other failure is the caller's.
   */
  private serveGrace<T>(redisKey: string, entry: CacheEntry<T>, call: ResolvedCall<T>, err: unknown): CacheResult<T> {
    if (typeof err === 'object' && err !== null && !this.loaderErrors.has(err)) throw err;
    const now = this.clock.now();
    if (!this.graceRetryAt.has(redisKey)) makeRoom(this.graceRetryAt, GRACE_RETRY_MEMO);
    this.graceRetryAt.set(redisKey, now + call.graceBackoff);
    this.graceWarning.warn(
      `cache loader of ${redisKey} failed, serving its value from grace (expired ${now - entry.staleUntil} ms ago), ` +
        `next try in ${call.graceBackoff} ms: ${err instanceof Error ? err.message : String(err)}`,
    );
    return { value: entry.value, status: 'grace' };
  }

  /** XFetch (Vattani et al.): refresh early with a probability that grows as expiry nears, scaled by δ·β. */
  refreshEarly(entry: CacheEntry, now: number): boolean {
    const beta = this.options.beta;
    if (beta <= 0 || entry.delta <= 0) return false;
    return now - entry.delta * beta * Math.log(Math.random()) >= entry.freshUntil;
  }

  /**
   * At most one refresh per key per process, and (through the lock) across processes; failures keep the stale value.
   * Resolves to the refreshed value (undefined when another process refreshes or it failed); never rejects.
   */
  refreshInBackground<T>(
    redisKey: string,
    loader: Loader<T>,
    call: ResolvedCall<T>,
  ): Promise<{ value: T } | undefined> | undefined {
    if (this.closed) return undefined;
    // one that an invalidation overtook is left to end on its own (its value is not stored): a new one is tried
    return this.share(this.refreshing, redisKey, call.tags, (load) =>
      this.refresh(redisKey, loader, call, load),
    ) as Promise<{ value: T } | undefined>;
  }

  /** A background refresh under the load lock (not waited for; never rejects): see refreshInBackground. */
  private async refresh<T>(
    redisKey: string,
    loader: Loader<T>,
    call: ResolvedCall<T>,
    load: InflightLoad,
  ): Promise<{ value: T } | undefined> {
    try {
      const lockKey = this.lock.lockKey(redisKey);
      const token = this.lock.token();
      if (!(await this.lock.tryLock(lockKey, token))) {
        diagnose('cacheRefresh', () => ({ feature: 'cache', operation: 'refresh', outcome: 'skipped' }));
        return undefined;
      }
      try {
        const { value } = await this.loadAndStore(redisKey, loader, call, load);
        diagnose('cacheRefresh', () => ({ feature: 'cache', operation: 'refresh', outcome: 'refreshed' }));
        return { value };
      } finally {
        void this.lock.unlock(lockKey, token);
      }
    } catch (err) {
      // never thrown from here (nobody awaits a background refresh): counted and logged, the stale value stays
      diagnose('cacheRefresh', () => ({ feature: 'cache', operation: 'refresh', outcome: 'failed' }));
      if (err instanceof RedisUnavailableError) this.failures.unavailable(err, true, 'the stale value stays');
      else {
        this.refreshWarning.warn(
          `cache refresh of ${redisKey} failed, the stale value stays: ` +
            `${err instanceof Error ? err.message : String(err)}`,
        );
      }
      return undefined;
    }
  }

  /**
   * Concurrent misses of one key in this process share one load: its value, or the loader's error (an error of the
   * store step stays with the caller who started the load: see loadAndStore). Not one that an invalidation of the
   * key made after it started overtook: a caller after the invalidation starts its own.
   */
  private singleFlight<T>(
    redisKey: string,
    call: ResolvedCall<T>,
    run: (load: InflightLoad) => Promise<CacheResult<T>>,
  ): Promise<CacheResult<T>> {
    return this.share(this.inflight, redisKey, call.tags, run) as Promise<CacheResult<T>>;
  }

  /**
   * The load of `redisKey` in `running` (misses' loads, or background refreshes) while it is joinable, else `run` as a
   * new one, registered there (and with the invalidations' InflightLoads) until it settles.
   */
  private share<R, T>(
    running: Map<string, Shared<R>>,
    redisKey: string,
    tags: CacheTags<T> | undefined,
    run: (load: InflightLoad) => Promise<R>,
  ): Promise<R> {
    const shared = running.get(redisKey);
    if (shared?.load.joinable) return shared.result;
    const load = this.loads.start(redisKey, tags);
    const ended = () => {
      this.loads.end(load);
      if (running.get(redisKey)?.load === load) running.delete(redisKey);
    };
    // then, not finally: the callers get the result two microtask turns sooner
    const result = run(load).then(
      (value) => (ended(), value),
      (err: unknown) => {
        ended();
        throw err;
      },
    );
    running.set(redisKey, { load, result });
    return result;
  }

  /**
   * Loads and stores the value under `call`'s options. Those (ttl and tags functions, shouldCache) and the encoding
   * are the caller's who started the load: with `own` given, their error goes there (that caller's getOrSet rejects
   * with it, nothing is stored) and the value is still returned to every caller sharing the load. Without it (a
   * background refresh) it is thrown. A store Redis could not take (failOpen) is a miss marked `degraded`. Nothing is
   * stored once an invalidation has overtaken `load` (checked as the SET is sent: see CacheEntryStore.write), nor an
   * entry past the size bound (a miss, counted and warned: CacheValueBound.admits).
   */
  private async loadAndStore<T>(
    redisKey: string,
    loader: Loader<T>,
    call: ResolvedCall<T>,
    load: InflightLoad,
    own?: StoreFailure,
  ): Promise<CacheResult<T>> {
    const { value, delta, startedAt } = await this.load(redisKey, loader, call.hardTimeout);
    this.graceRetryAt.delete(redisKey);
    if (value === undefined) return { value, status: 'miss' }; // undefined means "no value": returned, never cached
    let entry: CacheEntry<T>;
    let raw: string;
    try {
      if (call.shouldCache !== undefined && !call.shouldCache(value)) return { value, status: 'miss' };
      entry = entryOf(call, value, delta, this.clock.now());
      raw = encodeEntry(entry, this.serializer);
    } catch (err) {
      if (own === undefined) throw err;
      own.failed = true;
      own.error = err;
      return { value, status: 'miss' };
    }
    // past the size bound: a read of it would make Redis close the connection (cache.value-bound.ts)
    if (!this.bound.admits(redisKey, raw)) return { value, status: 'miss' };
    const { tags } = entry;
    try {
      await this.store.write(redisKey, entry, raw, startedAt, entry.staleUntil + call.grace, () => load.storable(tags));
    } catch (err) {
      this.failures.unavailable(err);
      return { value, status: 'miss', degraded: 'fail-open' };
    }
    return { value, status: 'miss' };
  }

  private async load<T>(
    redisKey: string,
    loader: Loader<T>,
    hardTimeout: number,
  ): Promise<{ value: T; delta: number; startedAt: number }> {
    this.counters.loads++;
    // compared with the tags' invalidation marks (CacheTagIndex.mark), on the same clock
    const startedAt = this.clock.now();
    const started = performance.now();
    const option = hardTimeout === this.options.loadTimeout ? 'cache.loadTimeout' : 'hardTimeout';
    let outcome = 'failed';
    try {
      const run = () =>
        boundedLoad(loader, hardTimeout, redisKey.slice(this.featurePrefix.length), option, this.loadTimers);
      const loading = () => ({ feature: 'cache' as const, operation: 'load' });
      const value = await (traceObserved('cacheLoad') ? traced('cacheLoad', loading, run, loaded) : run());
      outcome = 'loaded';
      return { value, delta: performance.now() - started, startedAt };
    } catch (err) {
      if (typeof err === 'object' && err !== null) this.loaderErrors.add(err);
      throw err;
    } finally {
      const durationMs = performance.now() - started;
      diagnose('cacheLoad', () => ({ feature: 'cache', operation: 'load', outcome, durationMs }));
    }
  }
}

const loaded = () => ({ outcome: 'loaded' });
