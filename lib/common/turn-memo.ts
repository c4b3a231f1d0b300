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

  set(key: K, value: V): void {
    this.entries.set(key, value);
    if (this.clearScheduled) return;
    this.clearScheduled = true;
    setImmediate(() => {
      this.clearScheduled = false;
      this.entries.clear();
    });
  }

  /** Forgets `key` if it still holds `value` (a settled read, before its turn ends). */
  deleteIf(key: K, value: V): void {
    if (this.entries.get(key) === value) this.entries.delete(key);
  }
}
