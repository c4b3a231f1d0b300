/** Sessions whose last value this process keeps (see RecentValues). */
const RECENT_VALUES = 1_000;

/**
 * The value of each session this process last read or wrote (the most recent RECENT_VALUES sessions): a write merges
 * into it and sends it as the value expected by the compare-and-set, so a read-then-write (a request) costs no
 * second read. Only a guess: a stale value makes the compare-and-set fail and answer with the current one.
 */
export class RecentValues {
  private readonly values = new Map<string, string>();

  get(id: string): string | undefined {
    return this.values.get(id);
  }

  set(id: string, value: string): void {
    this.values.delete(id);
    if (this.values.size >= RECENT_VALUES) {
      const oldest = this.values.keys().next().value;
      if (oldest !== undefined) this.values.delete(oldest);
    }
    this.values.set(id, value);
  }

  delete(id: string): void {
    this.values.delete(id);
  }
}
