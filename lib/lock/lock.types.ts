/** The options of LockService's acquisitions, and the function `using` runs. */
import type { AutoExtendOptions } from './lock.auto-extend.js';
import type { LockRetryOptions } from './lock.options.js';
import type { Lock } from './lock.js';

export interface AcquireOptions {
  /** Time to live in ms (default `lock.ttl`, 10 s). The lock expires by itself after this unless extended. */
  ttl?: number;
  /** Attempts after the first, pause and jitter between them (default `lock.retry`). Ignored when `waitMs` is given. */
  retry?: LockRetryOptions;
  /** Keep retrying for at most this many ms, then throw LockNotAcquiredError. 0: one attempt. */
  waitMs?: number;
  /**
   * `using`: extend when this many ms or fewer are left (default `lock.extensionThreshold`, else 2/3 of the ttl).
   * `acquire`: the same for `autoExtend` (unless it gives its own); ignored without it.
   */
  extensionThreshold?: number;
  /** `acquire`/`tryAcquire`: keep the lock alive until released, as `lock.startAutoExtend(options)` would. */
  autoExtend?: boolean | AutoExtendOptions;
}

/** No `autoExtend`: `using` keeps the lock alive itself (`extensionThreshold` says when). */
export interface UsingOptions extends Omit<AcquireOptions, 'autoExtend'> {
  /** `using` only: longest ms the lock is held (default `lock.maxHoldMs`), then LockHoldTimeoutError. */
  maxHoldMs?: number;
}

export interface TryAcquireOptions {
  ttl?: number;
  autoExtend?: boolean | AutoExtendOptions;
}

export type LockedFunction<T> = (signal: AbortSignal, lock: Lock) => Promise<T> | T;
