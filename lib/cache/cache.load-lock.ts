import { randomBytes } from 'node:crypto';
import { Cluster, Command, type Redis } from 'ioredis';
import { sendCorked } from '../common/cluster-batch.js';
import { FEATURES, type KeyBuilder } from '../common/keys.js';
import type { RedisClock } from '../common/redis-clock.js';
import { RELEASE_LOCK } from '../common/release-lock.js';
import type { RedisConnection } from '../connection/redis-connection.js';
import type { CacheEntry } from './cache.entry.js';
import type { CacheEntryStore } from './cache.entry-store.js';
import type { FailurePolicy } from '../common/failure-policy.js';
import type { CacheL1 } from './cache.l1.js';
import type { CacheResult } from './cache.types.js';
import { setImmediate } from '../common/real-timers.js';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** The lock tried, and the entry re-read once it is ours. */
interface Locked<T> {
  acquired: boolean;
  stored: CacheEntry<T> | undefined;
  /** The re-read failed (the lock is ours all the same). */
  readError?: unknown;
}

const NOT_ACQUIRED: Locked<never> = { acquired: false, stored: undefined };
const ignore = () => undefined;

/**
 * Holder tokens: a random part drawn once per process, then a counter. A token only has to differ from every other
 * holder's (the release deletes the lock only if it still holds ours), and a cold miss waited for 12 random bytes per
 * attempt before its lock went out (randomBytes: 50-70 µs of the 1.5 ms before the loader starts, measured on
 * 1,000 callers of one cold key).
 */
const TOKEN_PREFIX = randomBytes(12).toString('base64url');
let tokens = 0;

/** How a miss produces its value: CacheService's loader call, with or without storing the result. */
export interface MissLoaders<T> {
  /** Runs the loader and stores nothing (Redis cannot be reached). */
  load: () => Promise<{ value: T }>;
  /** Runs the loader and stores its value: a miss (`degraded` when Redis did not take the store). */
  loadAndStore: () => Promise<CacheResult<T>>;
}

/** A miss whose read failed open (counted and logged): the loader's value, marked. */
const failedOpen = <T>(result: CacheResult<T>): CacheResult<T> =>
  result.degraded === undefined ? { ...result, degraded: 'fail-open' } : result;

/**
 * The cross-process stampede guard: a short SET NX PX lock per entry key, held by the one process that runs the
 * loader and released (only with its holder's token) when the load is done, while the others wait for its value.
 */
export class CacheLoadLock {
  private closed = false;

  constructor(
    private readonly connection: RedisConnection,
    private readonly keys: KeyBuilder,
    private readonly lockTtl: number,
    private readonly lockWait: number,
    private readonly store: CacheEntryStore,
    private readonly l1: CacheL1 | undefined,
    private readonly failures: FailurePolicy,
    /** An entry's header times are Redis's (cache.entry.ts); `lockWait` is a wait of this process's. */
    private readonly clock: RedisClock,
  ) {}

  /** The module is shutting down: a miss waiting for another process's value stops waiting (see loadOnce). */
  close(): void {
    this.closed = true;
  }

  /**
   * A miss: one process (holder of a short SET NX PX lock) runs the loader; the others poll for its value for at
   * most `lockWait` ms, and load themselves if it does not come (or the holder failed and released the lock).
   */
  async loadOnce<T>(redisKey: string, loaders: MissLoaders<T>): Promise<CacheResult<T>> {
    const lockKey = this.lockKey(redisKey);
    const deadline = Date.now() + this.lockWait;
    let pause = 5;
    for (;;) {
      const token = this.token();
      let version = this.l1?.version ?? 0;
      let locked: Locked<T>;
      try {
        locked = await this.lockAndReread<T>(lockKey, token, redisKey);
      } catch (err) {
        this.failures.unavailable(err);
        return { value: (await loaders.load()).value, status: 'miss', degraded: 'fail-open' };
      }
      if (locked.acquired) {
        try {
          // a failed re-read is a miss (counted and logged), or the caller's error when the cache fails closed
          if (locked.readError !== undefined) {
            this.failures.unavailable(locked.readError);
            return failedOpen(await loaders.loadAndStore());
          }
          const { stored } = locked;
          if (stored && this.clock.now() < stored.freshUntil) {
            this.l1?.remember(redisKey, stored, version);
            return { value: stored.value, status: 'hit' };
          }
          return await loaders.loadAndStore();
        } finally {
          // On the next turn: the callers sharing this load resolve first, before the release is written (1,000
          // callers of one key: 2.83 -> 2.48 ms from the loader's end to the last answer, median of 20 bursts).
          setImmediate(() => void this.unlock(lockKey, token));
        }
      }
      if (Date.now() >= deadline) break;
      await sleep(pause);
      // Closed: on a { client } the user gave (still open) it went on polling the entry, and then loaded and stored,
      // for up to lockWait after app.close() (connection-leaks.spec.ts). Loaded without Redis, as after an outage.
      if (this.closed) return { value: (await loaders.load()).value, status: 'miss', degraded: 'fail-open' };
      pause = Math.min(pause * 2, 50);
      let entry: CacheEntry<T> | undefined;
      version = this.l1?.version ?? 0;
      try {
        entry = await this.store.read<T>(redisKey);
      } catch (err) {
        // waited for another process and cannot see its value: load (and try to store) ourselves
        this.failures.unavailable(err);
        return failedOpen(await loaders.loadAndStore());
      }
      if (entry) {
        const now = this.clock.now();
        if (now < entry.freshUntil) {
          this.l1?.remember(redisKey, entry, version);
          return { value: entry.value, status: 'hit' };
        }
        if (now < entry.staleUntil) return { value: entry.value, status: 'stale' };
      }
    }
    // Waited long enough for another process: load (and store) ourselves rather than fail.
    return loaders.loadAndStore();
  }

  /**
   * Takes the lock and, when it is ours, reads the entry once more: another process may have stored it between our
   * GET and our lock (its holder writes the value before it releases). On one server both go in one pipeline, one
   * round trip: Redis runs the GET after the SET NX on the one connection, so it sees whatever the previous holder
   * stored. On a cluster the lock and the entry live in different slots (maybe nodes, with no order between them):
   * the re-read waits for the lock's reply. Rejects (typed) only when the lock cannot be tried; a failed re-read is a
   * miss (see readError).
   */
  private async lockAndReread<T>(lockKey: string, token: string, redisKey: string): Promise<Locked<T>> {
    const client = this.connection.client;
    if (client instanceof Cluster) {
      if (!(await this.tryLock(lockKey, token))) return NOT_ACQUIRED;
      return this.store.read<T>(redisKey).then(
        (stored) => ({ acquired: true, stored }),
        (readError: unknown) => ({ acquired: true, stored: undefined, readError }),
      );
    }
    this.failures.assertReady('lock');
    const [lock, reread] = this.sendBoth(client, lockKey, token, redisKey);
    let lockReply: unknown;
    try {
      lockReply = await lock;
    } catch (err) {
      throw this.failures.classify(err, 'lock');
    }
    if (lockReply !== 'OK') return NOT_ACQUIRED;
    let raw: unknown;
    try {
      raw = await reread;
    } catch (readErr) {
      try {
        return { acquired: true, stored: this.store.readFailed(redisKey, readErr) };
      } catch (readError) {
        return { acquired: true, stored: undefined, readError };
      }
    }
    return { acquired: true, stored: this.store.decode<T>(redisKey, raw as string | null) };
  }

  /**
   * The SET NX and the GET in one socket write (sendCorked), in that order on the one connection. An ioredis pipeline
   * wrote the same bytes but took 0.1-0.2 ms more to build and send, on a cold miss's path before the loader starts.
   */
  private sendBoth(
    client: Redis,
    lockKey: string,
    token: string,
    redisKey: string,
  ): [Promise<unknown>, Promise<unknown>] {
    const lock = new Command('set', [lockKey, token, 'PX', this.lockTtl, 'NX'], { replyEncoding: 'utf8' });
    const read = new Command('get', [redisKey], { replyEncoding: 'utf8' });
    const [locked, reread] = sendCorked(client, [lock, read]);
    // the read's failure is looked at only when the lock is ours; it must not go unhandled otherwise
    reread.catch(ignore);
    return [locked, reread];
  }

  lockKey(redisKey: string): string {
    return this.keys.companion(FEATURES.cache, redisKey, ':lock');
  }

  /** A fresh holder token for one attempt (unique: see TOKEN_PREFIX). */
  token(): string {
    return TOKEN_PREFIX + (tokens++).toString(36);
  }

  async tryLock(lockKey: string, token: string): Promise<boolean> {
    const reply = await this.failures.run('lock', () =>
      this.connection.client.set(lockKey, token, 'PX', this.lockTtl, 'NX'),
    );
    return reply === 'OK';
  }

  async unlock(lockKey: string, token: string): Promise<void> {
    try {
      await this.failures.run('unlock', () => RELEASE_LOCK.run(this.connection.client, [lockKey], [token]));
    } catch {
      // The lock expires by itself within lockTtl.
    }
  }
}
