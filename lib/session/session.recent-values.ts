/** Sessions whose last value this process keeps (see RecentValues). */
const RECENT_VALUES = 1_000;
/** At most this many UTF-16 units of values in all (~8 MB of strings); a larger value is not kept at all. */
const RECENT_UNITS = 4 * 1_024 * 1_024;
const LARGEST_KEPT = 64 * 1_024;

import { applyChanges, CHANGE_SEPARATOR, type SessionEnvelope } from './session.envelope.js';

/** A stored value's UTF-8 length, the changes appended to it and their UTF-8 length (SessionRecords.update). */
export type ValueShape = readonly [bytes: number, changes: number, changeBytes: number];

/** What RecentValues keeps of one session. */
interface Kept {
  value: string;
  /** Its parsed form, when known. */
  envelope: SessionEnvelope | undefined;
  /** Its shape, when its writer knew it. */
  shape: ValueShape | undefined;
  /** Whether a value was kept for it again since it last came to the end of the order (see set). */
  renewed: boolean;
}

/**
 * The value of each session this process last read or wrote (RECENT_VALUES sessions, RECENT_UNITS in all; the one
 * whose value was kept longest ago goes first, near enough: see set; a read of an unchanged value does not renew it):
 * a write merges into it and sends it as the value expected by the compare-and-set, so a read-then-write (a request)
 * costs no second read. Only a guess: a stale value makes the compare-and-set fail and answer with the current one; a
 * session not kept costs one GET before its write.
 */
export class RecentValues {
  private readonly kept = new Map<string, Kept>();
  private units = 0;

  get(id: string): string | undefined {
    return this.kept.get(id)?.value;
  }

  /**
   * The parsed form of `value` when it is the value kept for `id` (never mutated by its users: a merge copies; a read
   * that gets the same text back skips parsing it, 9 % of a read's CPU in a profile), or that value with changes
   * appended since (another process's updates: only those are parsed, onto the kept form).
   */
  envelopeOf(id: string, value: string): SessionEnvelope | undefined {
    const kept = this.kept.get(id);
    if (kept === undefined) return undefined;
    if (kept.value === value) return kept.envelope;
    const known = kept.value;
    if (value.length <= known.length || value[known.length] !== CHANGE_SEPARATOR || !value.startsWith(known))
      return undefined;
    return kept.envelope === undefined ? undefined : (applyChanges(kept.envelope, value, known.length) ?? undefined);
  }

  /**
   * The shape of `id`'s kept value, when its writer knew it (an update, from its script's reply): the next update needs
   * it, and counting it meant flattening the appended value each time.
   */
  shapeOf(id: string): ValueShape | undefined {
    return this.kept.get(id)?.shape;
  }

  /**
   * Keeps `value` for `id`. A session kept already gets it in place, marked renewed, and keeps its place in the
   * order; the eviction gives a renewed one a second round (moved to the end, unmarked) instead (CLOCK). Moving it at
   * every write (a Map delete and insert: a rehash of the Map every few inserts, 0.2-0.3 us each at 1,000 sessions)
   * was 5.5 % of an update's CPU in an on-CPU profile (50 callers updating 1,000 sessions).
   */
  set(id: string, value: string, envelope?: SessionEnvelope, shape?: ValueShape): void {
    const old = this.kept.get(id);
    if (old !== undefined) {
      // The same text read again (a session read more often than written): the kept string and parsed form stay.
      // Storing the new copy in this long-lived Map promoted it to V8's old generation on every read (GC 11 % of a
      // read loop).
      if (envelope !== undefined && old.value === value && old.envelope === envelope) return;
      if (value.length > LARGEST_KEPT) {
        this.delete(id);
        return;
      }
      this.units += value.length - old.value.length;
      old.value = value;
      old.envelope = envelope;
      old.shape = shape;
      old.renewed = true;
      while (this.units > RECENT_UNITS && this.evictOne());
      return;
    }
    if (value.length > LARGEST_KEPT) return;
    while ((this.kept.size >= RECENT_VALUES || this.units + value.length > RECENT_UNITS) && this.evictOne());
    this.kept.set(id, { value, envelope, shape, renewed: false });
    this.units += value.length;
  }

  delete(id: string): void {
    const old = this.kept.get(id);
    if (old === undefined) return;
    this.units -= old.value.length;
    this.kept.delete(id);
  }

  /** Forgets the session kept longest ago that was not renewed since it came to the end; false when none is kept. */
  private evictOne(): boolean {
    // (an entry moved to the end is met again by this loop, unmarked: it ends after one pass at most)
    for (const [id, kept] of this.kept) {
      if (kept.renewed) {
        kept.renewed = false;
        this.kept.delete(id);
        this.kept.set(id, kept);
        continue;
      }
      this.delete(id);
      return true;
    }
    return false;
  }
}
