import type { Lock } from './lock.js';
import type { LockShutdown } from './lock.shutdown.js';

/**
 * Callers of this process waiting for a resource, keyed by lock key, oldest first. A release by another caller of
 * this process hands the lock straight to the oldest (one script call, FIFO, the lock never free in between) on a
 * single server, or wakes it to try at once on a quorum. Also which resources an `acquire` of this process is asking
 * Redis for right now: its other callers of that resource wait for the outcome instead of asking too.
 */
export class LocalWaiters {
  private readonly byKey = new Map<string, WaiterQueue>();
  /** How many waiters have joined a queue: among equal tickets the first to join is the oldest. */
  private joins = 0;
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
      let queue = this.byKey.get(lockKey);
      if (!queue) {
        queue = new WaiterQueue();
        this.byKey.set(lockKey, queue);
      }
      const waiters = queue;
      const leave = (): void => {
        offClose?.();
        waiters.delete(waiter);
        if (waiters.size === 0 && this.byKey.get(lockKey) === waiters) this.byKey.delete(lockKey);
      };
      const waiter: Queued = {
        ttl,
        ticket,
        joined: this.joins++,
        at: -1,
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
    for (const queue of this.byKey.values()) n += queue.size;
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

  /**
   * The oldest waiter for `lockKey`: the one with the lowest ticket (the first to begin waiting; among equal tickets
   * the first to join). O(1): the top of the key's queue.
   */
  first(lockKey: string): Waiter | undefined {
    return this.byKey.get(lockKey)?.first;
  }
}

/** A waiter in its key's queue: `joined` orders equal tickets, `at` is its place in the heap (-1 once it left). */
interface Queued extends Waiter {
  readonly joined: number;
  at: number;
}

/** Whether `a` is older than `b`: a lower ticket, or the same ticket and joined first. */
const older = (a: Queued, b: Queued): boolean => a.ticket < b.ticket || (a.ticket === b.ticket && a.joined < b.joined);

/**
 * One key's waiters, the oldest on top: a binary min-heap in which each waiter knows its place, so the oldest is read
 * in O(1) and a waiter joins or leaves (its timer, a hand-over, the shutdown) in O(log n). A waiter that comes back
 * after its retry pause keeps its ticket and so goes back ahead of those that began waiting after it (FIFO by ticket,
 * not by the time it joined). first() scanned a Set for the lowest ticket: O(n) for each release, wake and check.
 */
class WaiterQueue {
  private readonly heap: Queued[] = [];

  get size(): number {
    return this.heap.length;
  }

  get first(): Waiter | undefined {
    return this.heap[0];
  }

  add(waiter: Queued): void {
    waiter.at = this.heap.length;
    this.heap.push(waiter);
    this.up(waiter.at);
  }

  /** Takes `waiter` out; nothing when it already left (a wake after a claim, the shutdown after its timer). */
  delete(waiter: Queued): void {
    const i = waiter.at;
    if (i < 0 || this.heap[i] !== waiter) return;
    waiter.at = -1;
    const last = this.heap.pop() as Queued;
    if (i === this.heap.length) return;
    this.heap[i] = last;
    last.at = i;
    this.up(i);
    this.down(last.at);
  }

  private up(i: number): void {
    const { heap } = this;
    const item = heap[i];
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!older(item, heap[parent])) break;
      this.place(heap[parent], i);
      i = parent;
    }
    this.place(item, i);
  }

  private down(i: number): void {
    const { heap } = this;
    const item = heap[i];
    for (;;) {
      let child = 2 * i + 1;
      if (child >= heap.length) break;
      if (child + 1 < heap.length && older(heap[child + 1], heap[child])) child++;
      if (!older(heap[child], item)) break;
      this.place(heap[child], i);
      i = child;
    }
    this.place(item, i);
  }

  private place(waiter: Queued, i: number): void {
    this.heap[i] = waiter;
    waiter.at = i;
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
