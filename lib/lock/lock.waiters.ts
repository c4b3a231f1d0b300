import type { Lock } from './lock.js';
import type { LockShutdown } from './lock.shutdown.js';

/**
 * Callers of this process waiting for a resource, keyed by lock key, oldest first. A release by another caller of
 * this process hands the lock straight to the oldest (one script call, FIFO, the lock never free in between) on a
 * single server, or wakes it to try at once on a quorum. Also which resources an `acquire` of this process is asking
 * Redis for right now: its other callers of that resource wait for the outcome instead of asking too.
 */
export class LocalWaiters {
  private readonly byKey = new Map<string, Set<Waiter>>();
  /** Per lock key, the attempts of `acquire` callers asking Redis for it now (a tryAcquire's are not counted). */
  private readonly asking = new Map<string, number>();

  /** `shutdown`: at app.close() every pause ends at once (its caller then sees the service closed). */
  constructor(private readonly shutdown?: LockShutdown) {}

  /** Runs `attempt`, an attempt of an `acquire` caller for `lockKey`: meanwhile `isAsking(lockKey)` is true. */
  async ask<T>(lockKey: string, attempt: () => Promise<T>): Promise<T> {
    this.asking.set(lockKey, (this.asking.get(lockKey) ?? 0) + 1);
    try {
      return await attempt();
    } finally {
      const left = (this.asking.get(lockKey) ?? 1) - 1;
      if (left > 0) this.asking.set(lockKey, left);
      else this.asking.delete(lockKey);
    }
  }

  /** Whether an `acquire` caller of this process is asking Redis for `lockKey` now (see `ask`). */
  isAsking(lockKey: string): boolean {
    return this.asking.has(lockKey);
  }

  /** How many attempts of `acquire` callers of this process are asking Redis for `lockKey` now. */
  askers(lockKey: string): number {
    return this.asking.get(lockKey) ?? 0;
  }

  /**
   * Sleeps up to `ms`, or less when a caller of this process releases the same resource; resolves with the lock when
   * that caller handed it over. Resolves null at once when the service shut down (its caller checks before asking).
   */
  pause(lockKey: string, ms: number, ttl: number): Promise<Lock | null> {
    return new Promise((resolve) => {
      if (this.shutdown?.closed) {
        resolve(null);
        return;
      }
      let set = this.byKey.get(lockKey);
      if (!set) {
        set = new Set();
        this.byKey.set(lockKey, set);
      }
      const waiters = set;
      const leave = (): void => {
        offClose?.();
        waiters.delete(waiter);
        if (waiters.size === 0 && this.byKey.get(lockKey) === waiters) this.byKey.delete(lockKey);
      };
      const waiter: Waiter = {
        ttl,
        wake: () => {
          clearTimeout(timer);
          leave();
          resolve(null);
        },
        claim: () => {
          // Picked for a hand-over: stop the timer so the caller waits for the outcome (bounded by commandTimeout).
          clearTimeout(timer);
          leave();
          return (lock) => resolve(lock);
        },
      };
      const timer = setTimeout(waiter.wake, ms);
      waiters.add(waiter);
      const offClose = this.shutdown?.onClose(waiter.wake);
    });
  }

  /** Callers waiting now, over every resource (read on demand: nothing is counted on the lock path). */
  get size(): number {
    let n = 0;
    for (const set of this.byKey.values()) n += set.size;
    return n;
  }

  /** Wakes the oldest waiter for `lockKey`: false when none waits. */
  wakeOne(lockKey: string): boolean {
    const first = this.byKey.get(lockKey)?.values().next();
    if (!first || first.done) return false;
    first.value.wake();
    return true;
  }

  /**
   * Hands the lock to the oldest waiter for `lockKey`: `swap` passes it (one script call, the lock never free in
   * between) and gives its Lock for the waiter's ttl. False when none waits; when `swap` fails, the waiter tries again
   * on its own and the error is thrown.
   */
  async handOver(lockKey: string, swap: (ttl: number) => Promise<Lock>): Promise<boolean> {
    const waiter = this.first(lockKey);
    if (!waiter) return false;
    const deliver = waiter.claim();
    try {
      deliver(await swap(waiter.ttl));
      return true;
    } catch (err) {
      deliver(null);
      throw err;
    }
  }

  /** The oldest waiter for `lockKey`. */
  first(lockKey: string): Waiter | undefined {
    const first = this.byKey.get(lockKey)?.values().next();
    return first && !first.done ? first.value : undefined;
  }
}

export interface Waiter {
  readonly ttl: number;
  /** Resolve the wait now (the caller tries Redis itself). */
  wake(): void;
  /** Take it out of the queue for a hand-over; call the result with the lock, or null when the hand-over failed. */
  claim(): (lock: Lock | null) => void;
}
