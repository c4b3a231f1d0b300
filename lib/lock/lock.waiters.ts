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
  /** The last place given (ticket): a caller's place in the queue, kept across its retry pauses. */
  private tickets = 0;

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
   * A caller's place among the waiters of this process: take one per `acquire` call and pass it to each of its
   * `pause`s. A pause that ends (its retry timer) takes the caller out of the queue, and the next one puts it back: by
   * insertion order it then went behind every caller that began waiting later, so with jittered retry pauses a holder
   * that kept the lock for a few pauses handed it over in no particular order (docs/lock.md promises FIFO).
   */
  ticket(): number {
    return ++this.tickets;
  }

  /**
   * Sleeps up to `ms`, or less when a caller of this process releases the same resource; resolves with the lock when
   * that caller handed it over. Resolves null at once when the service shut down (its caller checks before asking).
   * `ticket`: the caller's place (see `ticket()`); the oldest ticket is woken or handed the lock first.
   */
  pause(lockKey: string, ms: number, ttl: number, ticket = this.ticket()): Promise<Lock | null> {
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
        ticket,
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
    const first = this.first(lockKey);
    if (!first) return false;
    first.wake();
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

  /** The oldest waiter for `lockKey`: the one with the lowest ticket (the first to begin waiting). */
  first(lockKey: string): Waiter | undefined {
    let oldest: Waiter | undefined;
    for (const waiter of this.byKey.get(lockKey) ?? []) if (!oldest || waiter.ticket < oldest.ticket) oldest = waiter;
    return oldest;
  }
}

export interface Waiter {
  readonly ttl: number;
  /** Its caller's place (LocalWaiters.ticket): lower is older. */
  readonly ticket: number;
  /** Resolve the wait now (the caller tries Redis itself). */
  wake(): void;
  /** Take it out of the queue for a hand-over; call the result with the lock, or null when the hand-over failed. */
  claim(): (lock: Lock | null) => void;
}
