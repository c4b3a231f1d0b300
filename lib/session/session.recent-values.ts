/** Sessions whose last value this process keeps (see RecentValues). */
const RECENT_VALUES = 1_000;
/** At most this many UTF-16 units of values in all (~8 MB of strings); a larger value is not kept at all. */
const RECENT_UNITS = 4 * 1_024 * 1_024;
const LARGEST_KEPT = 64 * 1_024;

import { applyChanges, CHANGE_SEPARATOR, type SessionEnvelope } from './session.envelope.js';

/** A stored value's UTF-8 length, the changes appended to it and their UTF-8 length (SessionRecords.update). */
export type ValueShape = readonly [bytes: number, changes: number, changeBytes: number];

/**
 * The value of each session this process last read or wrote (RECENT_VALUES sessions, RECENT_UNITS in all; the one
 * whose value was kept longest ago goes first: a read of an unchanged value does not renew it): a write merges into
 * it and sends it as the value expected by the compare-and-set, so a read-then-write (a request) costs no second
 * read. Only a guess: a stale value makes the compare-and-set fail and answer with the current one; a session not
 * kept costs one GET before its write.
 */
export class RecentValues {
  private readonly values = new Map<string, string>();
  /**
   * The parsed form of each kept value (when known): a read that gets the same text back skips parsing it (9 % of a
   * read's CPU in a profile). Never mutated by its users (a merge copies).
   */
  private readonly envelopes = new Map<string, SessionEnvelope>();
  /**
   * The shape of each kept value, when its writer knew it (an update, from its script's reply): the next update needs
   * it, and counting it meant flattening the appended value each time.
   */
  private readonly shapes = new Map<string, ValueShape>();
  private units = 0;

  get(id: string): string | undefined {
    return this.values.get(id);
  }

  /**
   * The parsed form of `value` when it is the value kept for `id`, or that value with changes appended since (another
   * process's updates: only those are parsed, onto the kept form).
   */
  envelopeOf(id: string, value: string): SessionEnvelope | undefined {
    const kept = this.values.get(id);
    if (kept === undefined) return undefined;
    if (kept === value) return this.envelopes.get(id);
    if (value.length <= kept.length || value[kept.length] !== CHANGE_SEPARATOR || !value.startsWith(kept))
      return undefined;
    const envelope = this.envelopes.get(id);
    return envelope === undefined ? undefined : (applyChanges(envelope, value, kept.length) ?? undefined);
  }

  /** The shape of `id`'s kept value, when its writer knew it (see set). */
  shapeOf(id: string): ValueShape | undefined {
    return this.shapes.get(id);
  }

  set(id: string, value: string, envelope?: SessionEnvelope, shape?: ValueShape): void {
    // The same text read again (a session read more often than written): the kept string and parsed form stay. Storing
    // the new copy in this long-lived Map promoted it to V8's old generation on every read (GC 11 % of a read loop).
    if (envelope !== undefined && this.values.get(id) === value && this.envelopes.get(id) === envelope) return;
    this.delete(id);
    if (value.length > LARGEST_KEPT) return;
    while (this.values.size >= RECENT_VALUES || this.units + value.length > RECENT_UNITS) {
      const oldest = this.values.keys().next().value;
      if (oldest === undefined) break;
      this.delete(oldest);
    }
    this.values.set(id, value);
    if (envelope) this.envelopes.set(id, envelope);
    if (shape !== undefined) this.shapes.set(id, shape);
    this.units += value.length;
  }

  delete(id: string): void {
    const old = this.values.get(id);
    if (old === undefined) return;
    this.units -= old.length;
    this.values.delete(id);
    this.envelopes.delete(id);
    this.shapes.delete(id);
  }
}
