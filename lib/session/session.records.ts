import { FEATURES, KeyBuilder } from '../common/keys.js';
import { SessionTooLargeError } from '../common/errors.js';
import type { RedisClient } from '../common/lua-script.js';
import type { TickBatcher } from '../common/tick-batcher.js';
import { registerSessionKeyPrefix } from '../common/traced-scripts.js';
import {
  CAS_CHANGED,
  type CasReply,
  type CasWrite,
  compareAndSetBatcher,
  plainReadBatcher,
  type TouchRead,
  touchReadBatcher,
} from './session.batchers.js';
import {
  checkSessionSize,
  checkSetsSize,
  expiryOf,
  jsonBytesBound,
  lastAccessOf,
  mergeFields,
  parseEnvelope,
  type RawSession,
  type SessionEnvelope,
} from './session.envelope.js';
import { DEFAULT_SESSION_MAX_SIZE, type SessionRecordsOptions } from './session.options.js';
import { RecentTouches } from './session.recent-touches.js';
import { RecentValues } from './session.recent-values.js';
import { destroyScript, storeTouchScript, updateInLua } from './session.lua-writes.js';
import { SessionAppends } from './session.appends.js';
import { type ClockAheadReport, SessionDeadline } from './session.deadline.js';
import { SessionKeyScan } from './session.key-scan.js';
import { persist, retouch } from './session.retouch.js';
import { readWithExpiry, sessionValue } from './session.single-reads.js';
import { expectedOf, isStamped, stampedJson } from './session.stamp.js';
import { splicedJson } from './session.splice.js';
import { storeSetNow } from './session.store-set.js';
import { SessionSizeBound } from './session.size-bound.js';
import { SessionUserIndex } from './session.user-index.js';
import {
  combineUpdates,
  SessionWriteQueue,
  type StoreSetPatch,
  type StoreSetWritten,
  type UpdatePatch,
} from './session.write-queue.js';

export { checkFieldName, encodeField, type RawSession, type SessionEnvelope } from './session.envelope.js';

/** Compare-and-set attempts before a write falls back to its atomic Lua script (it never loses, but decodes JSON). */
const CAS_ATTEMPTS = 3;
/**
 * The Redis side of sessions, shared by SessionService and RedisSessionStore so both use the same keys and layout.
 *
 * A session is one string key: a touching read is `GETEX key PX ttl`, one command and one round trip (plus a second
 * only for a session whose own ttl differs from the default, or in its last ttl before the absolute deadline: see
 * session.retouch.ts); the touching reads of one tick go as one script call of GETEXs on a single server
 * (session.read-many.ts) and as one pipeline of GETEXs per master on a cluster (cluster-batch.ts). The reads that are
 * not batched stay under the connection's reply budget too (session.single-reads.ts).
 * A write merges in this process and stores the result with a compare-and-set script that compares strings and does
 * no JSON work (session-compare-and-set.lua), so no concurrent update is lost; after CAS_ATTEMPTS lost races it
 * falls back to a script that merges atomically in Lua. The compare-and-sets of one tick go as one script call on a
 * single server and as one pipeline of calls per master on a cluster, like the reads (session.batchers.ts). Every
 * script sent to a cluster touches only the keys of one session (one `{id}` hash tag); the per-user index lives in
 * its own slot (SessionUserIndex).
 *
 * createdAt and the absolute deadline come from Redis's clock as estimated (`redisClock`: session.create.ts, and
 * session.store-set.ts for the store); Redis's clock times the idle expiry every write gives a key (a duration,
 * idleExpiry) and judges the deadline (reads and writes by the estimate, or this clock when ahead): past it by the
 * clock judging, a session is asked about (SessionDeadline), never deleted on that clock's word. Callers validate ids
 * before they get here and wrap errors; this class never logs (`clockAhead`).
 */
export class SessionRecords {
  private readonly keys: KeyBuilder;
  private readonly sessionHead: string;
  /** Touching reads of one tick as one command (on a cluster one pipeline per master: each session has its slot). */
  private readonly touchReads: TickBatcher<TouchRead, string | null | Error>;
  /** With `touchAfter`: reads of sessions this process touched lately (MGET, or GETs per master on a cluster). */
  private readonly plainReads: TickBatcher<string, string | null> | undefined;
  private readonly touches: RecentTouches | undefined;
  /** @internal the values this process last saw (session.store-set.ts) */
  readonly recent = new RecentValues();
  /** Compare-and-set writes of one tick as one script call (on a cluster one pipeline per master). */
  private readonly writes: TickBatcher<CasWrite, CasReply | Error>;
  /** With `session.appendUpdates`: updates appended to sessions instead of compare-and-sets. */
  private readonly appends: SessionAppends | undefined;
  readonly index: SessionUserIndex; // each user's index of session ids
  /** Session ids and user index keys, found with SCAN (RedisSessionStore's all, ids, length, clear). */
  readonly scan: SessionKeyScan;
  /** Updates of one session made while one is in flight: then written as one. */
  private readonly updates = new SessionWriteQueue<UpdatePatch, RawSession | null>(
    combineUpdates,
    (id, patch) => this.updateNow(id, patch),
    (err) => err instanceof SessionTooLargeError,
  );
  /** Store sets of one session made while one is in flight: then only the last is written. */
  private readonly storeSets = new SessionWriteQueue<StoreSetPatch, StoreSetWritten>(
    (patches) => patches[patches.length - 1],
    async (id, patch) => ({ patch, result: await storeSetNow(this, id, patch.fields, patch.maxAgeMs) }),
    (err) => err instanceof SessionTooLargeError,
  );

  /** Largest stored session (maxSize, or the server's reply limit): checked before a write is sent, after a merge. */
  readonly size: SessionSizeBound;
  /** Whether a session past its deadline by this process's clock is live by Redis's (which decides). */
  readonly deadline: SessionDeadline;

  constructor(
    readonly client: RedisClient,
    keyPrefix: string,
    options: SessionRecordsOptions = {},
    clockAhead?: ClockAheadReport,
  ) {
    this.size = options.size ?? new SessionSizeBound(options.maxSize ?? DEFAULT_SESSION_MAX_SIZE);
    this.deadline = new SessionDeadline(client, clockAhead, options.redisClock);
    const touchReuse = options.touchReuse;
    this.keys = new KeyBuilder(keyPrefix);
    registerSessionKeyPrefix(keyPrefix); // a tracer's serializer then writes no id of these keys (otel.session-ids.ts)
    this.sessionHead = this.keys.tagHead(FEATURES.session);
    this.index = new SessionUserIndex(client, this.keys, (ids) => this.existing(ids));
    this.scan = new SessionKeyScan(client, this.keys);
    this.touchReads = touchReadBatcher(client);
    if (touchReuse !== undefined) {
      this.plainReads = plainReadBatcher(client);
      this.touches = new RecentTouches(touchReuse);
    }
    this.writes = compareAndSetBatcher(client);
    if (options.appendUpdates)
      this.appends = new SessionAppends(
        client,
        this.size,
        this.recent,
        this.touches,
        (id, raw) => this.parse(id, raw),
        this.deadline,
      );
  }

  /** @internal The compare-and-set of one session, batched with this tick's writes: its reply, or its error reply. */
  compareAndSet(id: string, expected: string, json: string, expiry: number | 'keep' | 'none', m: number) {
    return this.writes.add([this.sessionKey(id), this.tombstoneKey(id), expectedOf(expected), json, expiry, m]);
  }

  /** `raw` parsed, or its parsed form kept from when this process last saw exactly that text. */
  /** @internal */
  parse(id: string, raw: string): SessionEnvelope | null {
    return this.recent.envelopeOf(id, raw) ?? parseEnvelope(raw);
  }

  /** `<prefix>sess:{<id>}` — ids are validated (base64url) by the callers, so nothing needs escaping. */
  sessionKey(id: string): string {
    return `${this.sessionHead}${id}}`;
  }

  tombstoneKey(id: string): string {
    return this.keys.taggedTrusted(FEATURES.session, id, ':gone');
  }

  /**
   * Reads a session. With `touchTtl` the idle expiry is extended in the same command (GETEX PX); a session whose
   * own ttl differs, or whose absolute deadline comes first, gets a second command to correct it (retouch; one
   * without an idle ttl, a GETEX PERSIST). With `touchAfter`, a session this process touched lately is read without
   * the extension (see RecentTouches).
   */
  async read(id: string, touchTtl: number | undefined): Promise<RawSession | null> {
    const key = this.sessionKey(id);
    const now = Date.now();
    if (touchTtl === undefined) {
      // the value and its exact expiry in one round trip (under the reply budget of the connection, when there is one)
      const [raw, expireTime] = await readWithExpiry(this.client, key);
      const envelope = raw === null ? null : this.parse(id, raw);
      if (!envelope) return null;
      // past the deadline by this clock or by Redis's as estimated (this one may run behind Redis's: a key without
      // expiry, a session without an idle ttl, was then live past its deadline): Redis's decides
      const redisNow = this.deadline.now();
      let expiresAt = expireTime > 0 ? Number(expireTime) : expiryOf(envelope, redisNow);
      if (envelope.m <= Math.max(now, redisNow)) {
        expiresAt = await this.deadline.heldLive(key, envelope.m, now, Number(expireTime));
        if (!expiresAt) return null;
      }
      this.recent.set(id, raw!, envelope);
      return { envelope, expiresAt, lastAccessedAt: lastAccessOf(envelope, expiresAt, now) };
    }
    const ttl = Math.ceil(touchTtl);
    const touchedUntil = this.touches?.expiryOf(id, ttl, now);
    if (touchedUntil !== undefined) {
      const read = await this.readUntouched(id, key, now, touchedUntil);
      if (read) return read;
    }
    const raw = await this.touchReads.add([key, ttl]);
    // a batched read answers per key: the error reply of this key alone (WRONGTYPE) fails only this read
    if (raw instanceof Error) throw raw;
    if (raw === null) return null;
    const envelope = this.parse(id, raw);
    if (!envelope) {
      await this.client.del(key);
      return null;
    }
    // the deadline is judged by Redis's clock, estimated with no command (RedisClock): this process's may run behind
    const redisNow = this.deadline.now();
    if (envelope.m <= redisNow) {
      // past the deadline by that estimate: Redis's decides (its PEXPIREAT m LT caps this GETEX's extension at m)
      const expiresAt = await this.deadline.live(key, envelope.m, redisNow);
      if (!expiresAt) return null;
      this.recent.set(id, raw, envelope);
      return { envelope, expiresAt, lastAccessedAt: now };
    }
    this.recent.set(id, raw, envelope);
    const expiresAt = expiryOf(envelope, redisNow);
    // no idle ttl (t 0): the key keeps no expiry, the one GETEX gave it before the value was known goes (persist)
    if (envelope.t === 0) await persist(this.client, key);
    else if (envelope.t !== ttl || envelope.m < redisNow + envelope.t)
      await retouch(this.client, key, envelope, ttl, redisNow);
    // the life the touch gave, on one clock: expiresAt is Redis's, so measured from Redis's now, not this process's
    this.touches?.set(id, ttl, now, expiresAt, redisNow);
    return { envelope, expiresAt, lastAccessedAt: now };
  }

  /**
   * A plain read of a session touched lately: undefined when it is not there as a live session (gone, past its
   * deadline, unreadable, or nil from MGET for a key of another type), and the touching read decides then.
   */
  private async readUntouched(
    id: string,
    key: string,
    now: number,
    expiresAt: number,
  ): Promise<RawSession | undefined> {
    const raw = await this.plainReads!.add(key);
    const envelope = raw === null ? null : this.parse(id, raw);
    if (!envelope || envelope.m <= this.deadline.now()) return undefined;
    this.recent.set(id, raw!, envelope);
    return { envelope, expiresAt: Math.min(expiresAt, envelope.m), lastAccessedAt: now };
  }

  /**
   * express-session's touch: the session's idle ttl becomes `ttl` (stored, so later touching reads keep it) and its
   * cookie `cookieJson` ('' keeps the stored one); false when the session is gone.
   */
  async storeTouch(id: string, ttl: number, cookieJson: string): Promise<boolean> {
    this.recent.delete(id);
    this.touches?.delete(id);
    const exp = await storeTouchScript.run(this.client, [this.sessionKey(id)], [Math.ceil(ttl), cookieJson]);
    return exp !== 0;
  }

  /** A session as stored (JSON); SessionTooLargeError over the size bound, before anything is sent. */
  encode(envelope: SessionEnvelope): string {
    const json = stampedJson(envelope);
    checkSessionSize(this.size, [json]);
    return json;
  }

  /**
   * Merges `sets` and `deletes` into an existing session (never creates one): merged here, into the value this process
   * last saw of it (or a GET), then written with a compare-and-set that fails if the session changed meanwhile — it
   * then answers with the current value and the merge runs again on that one. With `appendUpdates`, the change is
   * appended to the stored value instead (session-change.lua: APPEND, no compare, so concurrent updates of different
   * fields all survive, and no JSON work in Redis), when the value this process knows is stamped; every
   * CHANGES_BEFORE_REWRITE changes, or when the changes outgrow the session, the merged session is written whole
   * instead, if the session is still exactly that value. A value without a stamp (written by a cjson script), or one
   * the change would take past the size bound, goes through the compare-and-set.
   */
  async update(id: string, touch: boolean, sets: [string, string][], deletes: string[]): Promise<RawSession | null> {
    // What this call adds can be refused before anything is sent; the merged total is checked after the merge.
    checkSetsSize(this.size, sets);
    // behind a write of this session still in flight, with the others made meanwhile, as one (SessionWriteQueue)
    return this.updates.add(id, { touch, sets, deletes });
  }

  private async updateNow(id: string, { touch, sets, deletes }: UpdatePatch): Promise<RawSession | null> {
    const key = this.sessionKey(id);
    let current = this.recent.get(id);
    let fresh = current === undefined;
    if (current === undefined) current = (await sessionValue(this.client, key)) ?? undefined;
    let appends = this.appends;
    let liveUntil = 0; // a deadline Redis's clock has not reached, though this process's has
    for (let attempt = 0; attempt < CAS_ATTEMPTS; attempt++) {
      if (current === undefined) {
        this.recent.delete(id);
        return null;
      }
      const now = Date.now();
      const envelope = this.parse(id, current);
      // past by Redis's clock as estimated too: what this process saw may be a session since made again under the id
      // (session.clock-leftovers.spec.ts), and the write caps its expiry at the deadline it sends
      if (!envelope || (envelope.m <= Math.max(now, this.deadline.now()) && envelope.m !== liveUntil)) {
        if (!fresh) {
          // what this process saw may be older than what is there now (a session created again under the id)
          current = (await sessionValue(this.client, key)) ?? undefined;
          fresh = true;
          continue;
        }
        // not a session, or past its absolute deadline by Redis's clock: gone, as for a read
        if (envelope && (await this.deadline.live(key, envelope.m, now))) liveUntil = envelope.m;
        else {
          this.recent.delete(id);
          if (!envelope) await this.client.del(key);
          return null;
        }
      }
      const merged = mergeFields(envelope, sets, deletes);
      if (appends && isStamped(current)) {
        const written = await appends.append(id, key, current, merged, { touch, sets, deletes }, now);
        if (written !== 'rewrite') return written;
        // the changes would pass maxSize: merged and written whole, from the value there now
        appends = undefined;
        current = (await sessionValue(this.client, key)) ?? undefined;
        fresh = true;
        continue;
      }
      const json = splicedJson(current, envelope, sets, deletes) ?? stampedJson(merged);
      // (UTF-8 is at most 3 bytes per UTF-16 unit: most sessions need no count)
      if (json.length * 3 > this.size.max && Buffer.byteLength(json) > this.size.max) {
        // merged into the value this process last saw: another instance may have made the session smaller since
        if (!fresh) {
          current = (await sessionValue(this.client, key)) ?? undefined;
          fresh = true;
          continue;
        }
        throw this.size.tooLarge('after the merge', Buffer.byteLength(json));
      }
      // a session without an idle ttl (t 0) keeps its key's expiry (none) even when touched
      // the idle ttl, timed by Redis's clock in the script (session-expiry.lua), at most the deadline
      const reply = await this.compareAndSet(id, current, json, touch && merged.t !== 0 ? merged.t : 'keep', merged.m);
      if (reply instanceof Error) throw reply;
      if (typeof reply === 'number' && reply >= 0) {
        this.recent.set(id, json, merged);
        // 0: the key has no expiry; the session still ends at its absolute deadline
        const expiresAt = reply === 0 ? merged.m : reply;
        return { envelope: merged, expiresAt, lastAccessedAt: touch ? now : lastAccessOf(merged, expiresAt, now) };
      }
      // changed meanwhile: its value now (under a reply budget the script answers CAS_CHANGED, and it is read here)
      if (reply === CAS_CHANGED) current = (await sessionValue(this.client, key)) ?? undefined;
      else current = typeof reply === 'string' ? reply : undefined;
      fresh = true;
    }
    this.recent.delete(id);
    const merged = await updateInLua(this.client, key, this.size.max, touch, sets, deletes);
    if (merged === 'too large') throw this.size.tooLarge('after the merge', undefined);
    return merged;
  }

  /**
   * Deletes the session and leaves a tombstone; returns its userId ('' for anonymous), or null when there was none.
   * With `always`, the tombstone is left even for an absent session, so a write still on its way cannot create it.
   * destroyIf with `copied` (regenerate): only while the session holds that value; -1 when it holds another.
   */
  async destroy(id: string, tombstoneMs: number, always = false): Promise<string | null> {
    return (await this.destroyIf(id, tombstoneMs, always ? '1' : '0')) as string | null;
  }
  destroyIf(id: string, tombstoneMs: number, always: '0' | '1', copied?: string): Promise<string | null | -1> {
    this.recent.delete(id);
    this.touches?.delete(id);
    const args = [Math.ceil(tombstoneMs), always, ...(copied === undefined ? [] : [copied])];
    return destroyScript.run(this.client, [this.sessionKey(id), this.tombstoneKey(id)], args);
  }

  /**
   * express-session's set: replace data, create when missing; 'tombstoned' when the id was destroyed recently. Keeps
   * createdAt and the absolute deadline of a live session. When the session gets a new owner (`fields.u`), the id
   * enters that user's index before the session is written, as in `create`; the caller removes it from the previous
   * owner's index. `fields.t` 0: the key gets no Redis expiry. Written with a compare-and-set against the value this
   * process last saw (or a GET), like update().
   */
  async storeSet(
    id: string,
    fields: Omit<SessionEnvelope, 'c' | 'm'>,
    maxAgeMs: number,
  ): Promise<{ previousUserId: string; expiresAt: number } | 'tombstoned' | 'superseded'> {
    if (jsonBytesBound(fields) > this.size.max) checkSessionSize(this.size, [JSON.stringify(fields)]);
    // Behind a set of this session still in flight; of the sets made meanwhile only the last is written (each
    // replaces the whole session): the others are 'superseded', as if written and overwritten at once.
    const patch: StoreSetPatch = { fields, maxAgeMs };
    return this.storeSets.add(id, patch).then((r) => (r.patch === patch ? r.result : 'superseded'));
  }

  /** Whether each session exists (concurrent EXISTS: on a cluster each id lives in its own slot). */
  async existing(ids: string[]): Promise<boolean[]> {
    const counts = await Promise.all(ids.map((id) => this.client.exists(this.sessionKey(id))));
    return counts.map((n) => n === 1);
  }
}
