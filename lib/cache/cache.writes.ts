import type { FailurePolicy } from '../common/failure-policy.js';
import type { RedisClock } from '../common/redis-clock.js';
import type { Serializer } from '../common/serializer.js';
import { entryList, entryOf, resolveCall } from './cache.call-options.js';
import { encodeEntry, type CacheEntry } from './cache.entry.js';
import type { CacheEntryStore } from './cache.entry-store.js';
import type { CacheL1 } from './cache.l1.js';
import type { ResolvedCacheOptions } from './cache.options.js';
import type { CacheSetOptions } from './cache.types.js';
import type { CacheValueBound } from './cache.value-bound.js';

/** One set, checked and encoded (CacheWrites.prepareSet), ready to write. */
interface PreparedSet {
  redisKey: string;
  entry: CacheEntry;
  raw: string;
  keepUntil: number;
}

/**
 * The explicit writes of CacheService (`set`, `mset`): each entry checked and encoded first, then written, so that
 * mset can refuse a bad entry before it writes any.
 */
export class CacheWrites {
  constructor(
    private readonly options: ResolvedCacheOptions,
    private readonly serializer: Serializer,
    private readonly clock: RedisClock,
    private readonly l1: CacheL1 | undefined,
    private readonly store: CacheEntryStore,
    private readonly failures: FailurePolicy,
    /** An entry past it is refused before anything is written (CacheValueTooLargeError). */
    private readonly bound: CacheValueBound,
    /** CacheService's validated, memoized entry key of a user key. */
    private readonly entryKey: (key: string) => string,
  ) {}

  /** CacheService.set. */
  async set<T>(key: string, value: T, options: CacheSetOptions = {}): Promise<void> {
    await this.write(this.prepareSet(key, value, options));
  }

  /**
   * CacheService.mset: every entry checked and encoded before any is written (its size too: one past the bound
   * rejects the call with CacheValueTooLargeError naming its key, and nothing is stored).
   */
  async mset<T>(entries: readonly { key: string; value: T; options?: CacheSetOptions }[]): Promise<void> {
    const prepared = entryList<T>(entries).map((e) => this.prepareSet(e.key, e.value, e.options, 'mset'));
    await Promise.all(prepared.map((p) => this.write(p)));
  }

  /** A set's key, options and value checked and encoded, nothing written yet (mset checks every entry first). */
  private prepareSet<T>(key: string, value: T, options: CacheSetOptions = {}, method = 'set'): PreparedSet {
    const redisKey = this.entryKey(key);
    const call = resolveCall<T>(options, 'set', this.options);
    const entry = entryOf(call, value, 0, this.clock.now());
    const raw = encodeEntry(entry, this.serializer);
    this.bound.check(key, raw, method);
    return { redisKey, entry, raw, keepUntil: entry.staleUntil + call.grace };
  }

  private async write({ redisKey, entry, raw, keepUntil }: PreparedSet): Promise<void> {
    this.l1?.delete(redisKey);
    try {
      // An explicit set is stored whatever was invalidated before it (only loads are checked against invalidations).
      await this.store.write(redisKey, entry, raw, Number.MAX_SAFE_INTEGER, keepUntil);
    } catch (err) {
      this.failures.unavailable(err);
    }
    this.l1?.broadcast({ keys: [redisKey] });
  }
}
