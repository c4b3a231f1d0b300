import type { RedisClient } from '../common/lua-script.js';
import type { TickBatcher } from '../common/tick-batcher.js';
import { CHANGE_CHANGED, type ChangeReply, type ChangeWrite, changeBatcher } from './session.batchers.js';
import {
  CHANGE_SEPARATOR,
  changeCount,
  changeText,
  lastAccessOf,
  type RawSession,
  type SessionEnvelope,
} from './session.envelope.js';
import type { SessionDeadline } from './session.deadline.js';
import type { SessionSizeBound } from './session.size-bound.js';
import type { RecentTouches } from './session.recent-touches.js';
import type { RecentValues, ValueShape } from './session.recent-values.js';
import { reexpireKey } from './session.retouch.js';
import { sessionValue } from './session.single-reads.js';
import { expectedOf, stampedJson } from './session.stamp.js';
import type { UpdatePatch } from './session.write-queue.js';

/**
 * With `appendUpdates`, an update that would append the 16th change to a session writes the merged session whole
 * instead (when the session is still the value this process knows): reads parse every change, so they must not pile
 * up. Measured on a prototype of the layout (docs/session.md, 50 callers updating 1,000 sessions): Redis CPU per update
 * 1.36x connect-redis's with a rewrite every 16 changes, 1.5x every 8, 1.8x every 4; a read parsed 1.9, 3.0 and 6.1 µs
 * at 0, 4 and 16 changes.
 */
const CHANGES_BEFORE_REWRITE = 16;

/**
 * `session.appendUpdates`: SessionRecords.update's changes appended to the stored sessions (session-change.lua), the
 * updates of one tick in one script call on a single server, one call per session pipelined per master on a cluster.
 * Shares SessionRecords's recent values and touches.
 */
export class SessionAppends {
  private readonly batcher: TickBatcher<ChangeWrite, ChangeReply | Error>;

  constructor(
    private readonly client: RedisClient,
    /** The largest stored value (maxSize, or the server's reply limit once read): the script's bound too. */
    private readonly size: SessionSizeBound,
    private readonly recent: RecentValues,
    private readonly touches: RecentTouches | undefined,
    /** A stored value parsed (SessionRecords's, which reuses the parsed form it kept). */
    private readonly parse: (id: string, raw: string) => SessionEnvelope | null,
    /** The deadline judged by Redis's clock; its now() (estimated) is the clock the script's expiry is on. */
    private readonly deadline: SessionDeadline,
  ) {
    this.batcher = changeBatcher(client, () => size.max);
  }

  /**
   * An update appended to a session whose value this process knows (`current`, stamped, parsed and merged into
   * `merged`), or written whole in its place every CHANGES_BEFORE_REWRITE changes: the merged session, then the changes
   * other instances appended since `current` and this change again (session-change.lua), so two instances that update
   * a session in turn, each one change behind the other, still get it rewritten. A rewrite refused (another instance
   * rewrote the session meanwhile) appends the change and answers the value there now, which the next rewrite is made
   * from. Its touch extends the expiry (PEXPIREAT, the ttl timed by Redis's clock), unless this process extended it
   * less than `touchAfter` ago, as a get would not. 'rewrite' when the change or the merged session would take the
   * stored value past the size bound (nothing was kept).
   *
   * Whether the session was still `current` is told by its length: an append adds to the end, so a value as long as
   * `current` before it was `current`, unless another instance rewrote the session whole, at exactly that length, since
   * this process read it. Then the Session returned is `current`'s merge (what is stored has the other write and this
   * change: nothing is lost), and this process's next read or rewrite of it sees the difference. Checking the stamp
   * too, per update, cost Redis a STRLEN and a GETRANGE inside the script (docs/session.md).
   */
  async append(
    id: string,
    key: string,
    current: string,
    merged: SessionEnvelope,
    { touch, sets, deletes }: UpdatePatch,
    now: number,
  ): Promise<RawSession | null | 'rewrite'> {
    const change = changeText(sets, deletes);
    // known when this process wrote `current` (an update): else counted, which flattens an appended value
    const [length, changes, changeBytes] = this.recent.shapeOf(id) ?? shapeOf(current);
    const changeLength = Buffer.byteLength(change);
    let whole = '';
    let jsonFrom = 0;
    if (
      length + changeLength > this.size.max ||
      changes + 1 >= CHANGES_BEFORE_REWRITE ||
      // the changes longer than the session they change: reads would parse mostly superseded text
      2 * (changeBytes + changeLength) > length + changeLength
    ) {
      // past the bound the script keeps nothing and answers so ('rewrite'): SessionRecords merges again from the value
      // there now, which may be smaller than `current` (another instance deleted fields), and throws only then
      const json = stampedJson(merged);
      whole = `${expectedOf(current, length, changeBytes)} ${json}`;
      jsonFrom = whole.length - json.length;
    }
    // a session without an idle ttl (t 0) keeps its key's expiry (none) even when touched
    let expiry: number | 'keep' | 'skip' = 'keep';
    const touchedUntil = touch && merged.t !== 0 ? this.touches?.expiryOf(id, merged.t, now) : undefined;
    if (touchedUntil !== undefined) expiry = 'skip';
    else if (touch && merged.t !== 0) expiry = merged.t; // timed by Redis's clock in the script, at most the deadline
    const sentAt = this.deadline.now();
    const reply = await this.batcher.add([key, length, change, expiry, merged.m, whole]);
    if (reply instanceof Error) throw reply;
    const [first, at] = reply;
    // the value now, not in the reply under a reply budget: read under it (session.single-reads.ts)
    const result = first === CHANGE_CHANGED ? await sessionValue(this.client, key) : first;
    if (result === null) {
      this.recent.delete(id);
      return null;
    }
    if (result === -2) return 'rewrite';
    let envelope = merged;
    if (typeof result === 'number') {
      // result: the value's new length in bytes
      if (whole === '')
        this.recent.set(id, current + change, merged, [result, changes + 1, changeBytes + changeLength]);
      else this.recent.set(id, whole.slice(jsonFrom), merged, [result, 0, 0]);
    } else {
      // another write came first: the session as it is now, this change included
      const stored = this.parse(id, result);
      if (stored === null) {
        this.recent.delete(id);
        return null;
      }
      this.recent.set(id, result, stored);
      envelope = stored;
    }
    // 0: the key has no expiry; the session still ends at its absolute deadline
    let expiresAt = expiry === 'skip' ? Math.min(touchedUntil!, envelope.m) : at === 0 ? envelope.m : at;
    if (typeof expiry === 'number' && (envelope.m !== merged.m || envelope.t !== merged.t)) {
      // The script timed the touch with the ttl and capped it at the deadline of `current`, and the session there is
      // another: made again under this id since (the store's set after the key expired), with its own. Capped at the
      // old deadline it ended early (at once, the old deadline past by Redis's clock), or it outlived its own; now
      // given its own, as a touching read does (session.clock-leftovers.spec.ts). Only then: one more round trip.
      expiresAt = await this.reexpire(key, envelope);
      if (expiresAt === 0) {
        this.recent.delete(id);
        return null;
      }
    }
    // the expiry Redis has (by its clock), which a later update within touchAfter answers again
    // (the life it gave measured on Redis's clock, as expiresAt is: never from this process's `now`)
    if (typeof expiry === 'number' && envelope.t !== 0) this.touches?.set(id, envelope.t, now, expiresAt, sentAt);
    return { envelope, expiresAt, lastAccessedAt: touch ? now : lastAccessOf(envelope, expiresAt, now) };
  }

  /**
   * The idle expiry of the session under `key` made from its own ttl and deadline (`t`, `m`), timed by Redis's clock:
   * `GETEX PX t` then `PEXPIREAT m LT` and PEXPIRETIME, one pipeline (one key, one slot; session.retouch.ts); a
   * session without an idle ttl, none (GETEX PERSIST), it ends at m. Past m by Redis's clock as estimated, Redis's
   * decides (SessionDeadline). The key's expiry, m for none, or 0 when the session is gone.
   */
  private async reexpire(key: string, envelope: SessionEnvelope): Promise<number> {
    const { m } = envelope;
    if (m <= this.deadline.now()) return this.deadline.live(key, m, Date.now());
    const expireTime = await reexpireKey(this.client, key, envelope);
    return expireTime > 0 ? expireTime : expireTime === -1 ? m : 0;
  }
}

/** A value's shape (RecentValues), counted. */
function shapeOf(value: string): ValueShape {
  const changes = changeCount(value);
  const changeBytes = changes === 0 ? 0 : Buffer.byteLength(value.slice(value.indexOf(CHANGE_SEPARATOR)));
  return [Buffer.byteLength(value), changes, changeBytes];
}
