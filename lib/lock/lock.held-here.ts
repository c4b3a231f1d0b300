import type { Lock } from './lock.js';

/** Past this many, the locks no longer held (left to expire without a release) are forgotten at the next add. */
const PRUNE_AT = 10_000;

/**
 * The lock a caller of this process holds per lock key (at most one can be valid at a time): while it is held, the
 * service's other callers of that resource wait for its release instead of asking Redis. A lock leaves at its release
 * and when it is found lost; one left to expire leaves once PRUNE_AT are kept, so the map stays small.
 */
export class HeldHere {
  private readonly byKey = new Map<string, Lock>();

  get size(): number {
    return this.byKey.size;
  }

  /** Whether a caller here holds the lock on `lockKey` now. */
  holds(lockKey: string): boolean {
    return this.byKey.get(lockKey)?.isHeld === true;
  }

  /** Locks held now, over every resource (read on demand). */
  get held(): number {
    let held = 0;
    for (const lock of this.byKey.values()) if (lock.isHeld) held++;
    return held;
  }

  add(lockKey: string, lock: Lock): void {
    if (this.byKey.size >= PRUNE_AT) for (const [key, held] of this.byKey) if (!held.isHeld) this.byKey.delete(key);
    this.byKey.set(lockKey, lock);
  }

  /** `lock` was released or found lost: forgotten, unless another lock of the key replaced it (a hand-over). */
  released(lockKey: string, lock: Lock): void {
    if (this.byKey.get(lockKey) === lock) this.byKey.delete(lockKey);
  }

  /** The lock of `token` was found lost (a hand-over of it failed so). */
  lost(lockKey: string, token: string): void {
    if (this.byKey.get(lockKey)?.token === token) this.byKey.delete(lockKey);
  }
}
