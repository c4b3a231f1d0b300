/**
 * Values kept by key until the current event-loop turn ends (a `setImmediate` clears them all): what calls of one
 * turn share (a read, a fetch), never handed to a call made in a later turn, which asks for itself and so never gets
 * an answer older than its own would be.
 */
export class TurnMemo<K, V> {
  private readonly entries = new Map<K, V>();
  private clearScheduled = false;

  get(key: K): V | undefined {
    return this.entries.get(key);
  }

  private set(key: K, value: V): void {
    this.entries.set(key, value);
    if (this.clearScheduled) return;
    this.clearScheduled = true;
    setImmediate(() => {
      this.clearScheduled = false;
      this.entries.clear();
    });
  }

  /**
   * `set`, held only until `pending` settles (or the turn ends, if sooner): a call made after it settled, even in
   * this turn (an awaiting loop), asks anew.
   */
  setWhilePending(key: K, value: V, pending: Promise<unknown>): void {
    this.set(key, value);
    const forget = () => {
      if (this.entries.get(key) === value) this.entries.delete(key);
    };
    pending.then(forget, forget);
  }
}
