import type { Lock } from './lock.js';

/** Past this many, the permits no longer held (expired without a release, or lost) are forgotten at the next add. */
const PRUNE_AT = 10_000;

/**
 * The permits of one Semaphore held by callers of this process, by token: while `limit` of them are held, a caller
 * here waits for one of their releases instead of asking Redis. A permit leaves at its release, at its hand-over to a
 * local waiter and when it is found lost; one left to expire leaves once PRUNE_AT are kept (or at the next check
 * of `allHeld`). Until 2026-12-06 a released permit stayed until `limit` permits were kept: with a large limit every
 * permit ever taken was kept (100,000 after 100,000 acquire/release cycles, test/lock/lock.churn.spec.ts).
 */
export class HeldPermits {
  private readonly byToken = new Map<string, Lock>();

  get size(): number {
    return this.byToken.size;
  }

  add(permit: Lock): void {
    if (this.byToken.size >= PRUNE_AT) this.prune();
    this.byToken.set(permit.token, permit);
  }

  /** The permit of `token` was released, handed over or lost. */
  delete(token: string): void {
    this.byToken.delete(token);
  }

  /** Whether callers here hold `limit` permits still valid (the others are forgotten first). */
  allHeld(limit: number): boolean {
    if (this.byToken.size < limit) return false;
    this.prune();
    return this.byToken.size >= limit;
  }

  private prune(): void {
    for (const [token, permit] of this.byToken) if (!permit.isHeld) this.byToken.delete(token);
  }
}
