import { replyCodeOf, type FailurePolicy } from '../common/failure-policy.js';
import type { RedisClock } from '../common/redis-clock.js';
import type { Serializer } from '../common/serializer.js';
import type { ThrottledWarning } from '../common/throttled-logger.js';
import type { RedisConnection } from '../connection/redis-connection.js';
import { decodeEntry, payloadOf, type CacheEntry } from './cache.entry.js';
import type { CacheL1 } from './cache.l1.js';
import type { CacheReadBatcher } from './cache.read-batcher.js';
import type { CacheTagIndex } from './cache.tag-index.js';

/** Reads and writes of one entry in Redis (and, once read or stored, in L1). */
export class CacheEntryStore {
  constructor(
    private readonly connection: RedisConnection,
    private readonly reads: CacheReadBatcher,
    private readonly tags: CacheTagIndex,
    private readonly l1: CacheL1 | undefined,
    private readonly failures: FailurePolicy,
    private readonly serializer: Serializer,
    private readonly redisWarning: ThrottledWarning,
    /** `keepUntil` and the tag index's scores are on Redis's clock: so is the `now` they are measured from. */
    private readonly clock: RedisClock,
  ) {}

  read<T>(redisKey: string): Promise<CacheEntry<T> | undefined> {
    try {
      this.failures.assertReady('get');
    } catch (err) {
      return Promise.reject(err);
    }
    // then, not an async function: 1,000 callers of one cold key each pass here (fewer microtask turns per caller)
    return this.reads.get(redisKey).then(
      (raw) => this.decode<T>(redisKey, raw),
      (err: unknown) => this.readFailed(redisKey, err),
    );
  }

  /** CacheService.ttl: ms the entry stays fresh, or undefined (missing, stale, or Redis unreachable with failOpen). */
  async freshFor(redisKey: string): Promise<number | undefined> {
    let entry: CacheEntry | undefined;
    try {
      entry = await this.read(redisKey);
    } catch (err) {
      this.failures.unavailable(err);
      return undefined;
    }
    const left = entry ? entry.freshUntil - this.clock.now() : 0;
    return left > 0 ? left : undefined;
  }

  /** The entry in a raw GET reply; unreadable (another serializer or version): a miss, overwritten by the next load. */
  decode<T>(redisKey: string, raw: string | null): CacheEntry<T> | undefined {
    if (raw === null) return undefined;
    try {
      const entry = decodeEntry<T>(raw, this.serializer);
      if (this.l1?.measures) entry.bytes = Buffer.byteLength(raw);
      return entry;
    } catch (err) {
      this.redisWarning.warn(`cache entry ${redisKey} cannot be read, treated as a miss: ${(err as Error).message}`);
      return undefined;
    }
  }

  /**
   * A GET of the entry failed: a foreign type under our key is a miss (as in a batched MGET, which answers nil for
   * it), overwritten by the next store, like an entry written by another serializer; anything else is thrown typed.
   */
  readFailed(redisKey: string, err: unknown): undefined {
    if (replyCodeOf(err) !== 'WRONGTYPE') throw this.failures.classify(err, 'get');
    this.redisWarning.warn(`cache entry ${redisKey} holds another Redis type, treated as a miss`);
    return undefined;
  }

  /**
   * Tag indexes first, then the entry: an entry is never visible without being reachable from its tags. When one of
   * its tags was invalidated after `startedAt` (the value was loaded before the invalidation), nothing is stored.
   * The key lives until `keepUntil` (the stale horizon plus the grace period). `storable` (a load's: an invalidation
   * in this process may overtake it while it is stored) is asked as the SET is sent: false, nothing is stored.
   * A del sent after that SET runs after it in Redis (one connection per node, in order), so it removes the value.
   */
  write(
    redisKey: string,
    entry: CacheEntry,
    raw: string,
    startedAt: number,
    keepUntil = entry.staleUntil,
    storable?: () => boolean,
  ): Promise<boolean> {
    if (storable !== undefined && !storable()) return Promise.resolve(false);
    return entry.tags.length === 0
      ? this.writeUntagged(redisKey, entry, raw, keepUntil)
      : this.writeTagged(redisKey, entry, raw, startedAt, keepUntil, storable);
  }

  private async writeTagged(
    redisKey: string,
    entry: CacheEntry,
    raw: string,
    startedAt: number,
    keepUntil: number,
    storable: (() => boolean) | undefined,
  ): Promise<boolean> {
    let version = 0;
    const stored = await this.failures.run('set', async () => {
      const now = this.clock.now();
      const added = await Promise.all(entry.tags.map((t) => this.tags.add(t, redisKey, keepUntil, startedAt, now)));
      // overtaken while the indexes were written: the index members left point at no entry (pruned at their horizon)
      if (added.includes(0) || (storable !== undefined && !storable())) return false;
      // Noted as the SET is sent: an invalidation after it (a del, maybe run by Redis after the SET) keeps it out of
      // L1; the writes of one key run in the order sent, and the last one sent fills L1 last.
      version = this.l1?.version ?? 0;
      await this.connection.client.set(redisKey, raw, 'PX', Math.max(1, keepUntil - now));
      return true;
    });
    if (stored && this.l1) {
      const kept = this.asStored(redisKey, entry, raw);
      if (kept) this.l1.remember(redisKey, kept, version);
    }
    return stored;
  }

  /**
   * `write` of an entry without tags: the SET alone, without failures.run's two async frames (a cold miss's store
   * sits between the loader's end and its callers' answers).
   */
  private writeUntagged(redisKey: string, entry: CacheEntry, raw: string, keepUntil: number): Promise<boolean> {
    try {
      this.failures.assertReady('set');
    } catch (err) {
      return Promise.reject(err);
    }
    // Noted as the SET is sent (see write).
    const version = this.l1?.version ?? 0;
    return this.connection.client.set(redisKey, raw, 'PX', Math.max(1, keepUntil - this.clock.now())).then(
      () => {
        const kept = this.l1 && this.asStored(redisKey, entry, raw);
        if (kept) this.l1?.remember(redisKey, kept, version);
        return true;
      },
      (err: unknown) => {
        throw this.failures.classify(err, 'set');
      },
    );
  }

  /**
   * The entry with its value as a read from Redis would give it (decoded from what was written), not the object the
   * caller stored: L1 must answer what Redis answers (JSON turns a Map into {}, NaN into null, a class instance
   * into a plain object), and a caller's later change to its own object must not reach the cache.
   */
  private asStored(redisKey: string, entry: CacheEntry, raw: string): CacheEntry | undefined {
    try {
      const value = payloadOf(raw, this.serializer);
      return { ...entry, value, bytes: this.l1?.measures ? Buffer.byteLength(raw) : undefined };
    } catch (err) {
      // A serializer that cannot read its own output: a read from Redis misses (see decode), so L1 keeps nothing.
      this.redisWarning.warn(`cache entry ${redisKey} cannot be read back, not kept in L1: ${(err as Error).message}`);
      return undefined;
    }
  }
}
