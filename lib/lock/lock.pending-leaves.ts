/** How many removals are kept for a retry: past this many they are forgotten (see PendingLeaves). */
const MAX_PENDING = 10_000;

/**
 * Best-effort removals of this service's entries from locks' waiting services, sent again when Redis did not answer
 * them: a wait ends by a failed attempt just when Redis is away, so its removal usually fails too. Each is kept until
 * an attempt of the service next gets an answer (`retry`), with no timer, so nothing runs while Redis is away or
 * after shutdown. Bounded: past MAX_PENDING they are forgotten, and an entry left costs the waiters one poll (or one
 * grant released by this service), or expires with its set. Used by LockGrants (one server) and LockWakeups (a
 * cluster or a quorum).
 */
export class PendingLeaves<K> {
  private readonly pending = new Map<K, () => Promise<unknown> | undefined>();

  /** @param retriable which failures are kept for a retry (by default every one) */
  constructor(private readonly retriable: (err: unknown) => boolean = () => true) {}

  /** Sends `leave` now (replacing one kept for `key`); when it fails, keeps it for `retry`. */
  send(key: K, leave: () => Promise<unknown> | undefined): void {
    this.pending.delete(key);
    leave()?.catch((err: unknown) => {
      if (!this.retriable(err)) return;
      if (this.pending.size >= MAX_PENDING) this.pending.clear();
      this.pending.set(key, leave);
    });
  }

  /** Forgets the one kept for `key`: its entry is no longer to be taken out. */
  drop(key: K): void {
    this.pending.delete(key);
  }

  /** An attempt of the service got an answer: every one kept is sent again, except (dropped) those `skip` names. */
  retry(skip?: (key: K) => boolean): void {
    if (this.pending.size === 0) return;
    const kept = [...this.pending];
    this.pending.clear();
    for (const [key, leave] of kept) if (!skip?.(key)) this.send(key, leave);
  }
}
