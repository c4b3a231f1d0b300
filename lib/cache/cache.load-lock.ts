import { randomBytes } from 'node:crypto';
import { FEATURES, type KeyBuilder } from '../common/keys.js';
import { RELEASE_LOCK } from '../common/release-lock.js';
import type { RedisConnection } from '../connection/redis-connection.js';
import type { CacheEntry } from './cache.entry.js';
import type { CacheEntryStore } from './cache.entry-store.js';
import type { FailurePolicy } from '../common/failure-policy.js';
import type { CacheL1 } from './cache.l1.js';
import type { CacheResult } from './cache.types.js';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** How a miss produces its value: CacheService's loader call, with or without storing the result. */
export interface MissLoaders<T> {
  /** Runs the loader and stores nothing (Redis cannot be reached). */
  load: () => Promise<{ value: T }>;
  /** Runs the loader and stores its value. */
  loadAndStore: () => Promise<T>;
}

/**
 * The cross-process stampede guard: a short SET NX PX lock per entry key, held by the one process that runs the
 * loader and released (only with its holder's token) when the load is done, while the others wait for its value.
 */
export class CacheLoadLock {
  constructor(
    private readonly connection: RedisConnection,
    private readonly keys: KeyBuilder,
    private readonly lockTtl: number,
    private readonly lockWait: number,
    private readonly store: CacheEntryStore,
    private readonly l1: CacheL1 | undefined,
    private readonly failures: FailurePolicy,
  ) {}

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
      let acquired: boolean;
      try {
        acquired = await this.tryLock(lockKey, token);
      } catch (err) {
        this.failures.unavailable(err);
        return { value: (await loaders.load()).value, status: 'miss' };
      }
      if (acquired) {
        try {
          // Double-checked: another process may have stored the value between our GET and our lock.
          const stored = await this.store
            .read<T>(redisKey)
            .catch((err: unknown) => void this.failures.unavailable(err));
          if (stored && Date.now() < stored.freshUntil) {
            this.l1?.remember(redisKey, stored);
            return { value: stored.value, status: 'hit' };
          }
          return { value: await loaders.loadAndStore(), status: 'miss' };
        } finally {
          void this.unlock(lockKey, token);
        }
      }
      if (Date.now() >= deadline) break;
      await sleep(pause);
      pause = Math.min(pause * 2, 50);
      let entry: CacheEntry<T> | undefined;
      try {
        entry = await this.store.read<T>(redisKey);
      } catch (err) {
        this.failures.unavailable(err);
        break;
      }
      if (entry) {
        const now = Date.now();
        if (now < entry.freshUntil) {
          this.l1?.remember(redisKey, entry);
          return { value: entry.value, status: 'hit' };
        }
        if (now < entry.staleUntil) return { value: entry.value, status: 'stale' };
      }
    }
    // Waited long enough for another process: load (and store) ourselves rather than fail.
    return { value: await loaders.loadAndStore(), status: 'miss' };
  }

  lockKey(redisKey: string): string {
    return this.keys.companion(FEATURES.cache, redisKey, ':lock');
  }

  /** A fresh holder token for one attempt. */
  token(): string {
    return randomBytes(12).toString('base64url');
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
