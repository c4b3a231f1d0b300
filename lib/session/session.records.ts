import { scanKeys } from '../common/bulk-keys.js';
import { FEATURES, KeyBuilder } from '../common/keys.js';
import { Cluster } from 'ioredis';
import { InvalidKeyError, SessionTooLargeError } from '../common/errors.js';
import type { Serializer } from '../common/serializer.js';
import { containsLoneSurrogate, hasLoneSurrogate } from '../common/unicode.js';
import { LuaScript, type RedisClient, type ScriptArg } from '../common/lua-script.js';
import { TickBatcher } from '../common/tick-batcher.js';
import { DEFAULT_SESSION_MAX_SIZE } from './session.options.js';

/** Feature name in keys: `<prefix>sess:{<id>}`, `<prefix>sess:{<id>}:gone`, `<prefix>sess:user:{<userId>}`. */
/** How many ids of a user's index are checked for liveness on each write (a random sample; all when fewer). */
const PRUNE_SAMPLE = 32;

const createScript = LuaScript.fromFile<number>('rtk_sess_create', new URL('./session-create.lua', import.meta.url), 2);
const updateScript = LuaScript.fromFile<[string, number] | -1 | null>(
  'rtk_sess_update',
  new URL('./session-update.lua', import.meta.url),
  1,
);
const destroyScript = LuaScript.fromFile<string | null>(
  'rtk_sess_destroy',
  new URL('./session-destroy.lua', import.meta.url),
  2,
);
const storeSetScript = LuaScript.fromFile<[string, number] | [string, number, 'unindexed'] | -1>(
  'rtk_sess_store_set',
  new URL('./session-store-set.lua', import.meta.url),
  2,
);
const touchReadsScript = LuaScript.fromFile<(string | null | Error)[]>(
  'rtk_sess_touch_reads',
  new URL('./session-touch-reads.lua', import.meta.url),
  1,
);
const storeTouchScript = LuaScript.fromFile<number>(
  'rtk_sess_store_touch',
  new URL('./session-store-touch.lua', import.meta.url),
  1,
);
/** Touching reads per script call; more in one tick go as several calls (see TickBatcher). */
const TOUCH_READS_PER_CALL = 16;
const indexAddScript = LuaScript.fromFile<number>(
  'rtk_sess_index_add',
  new URL('./session-index-add.lua', import.meta.url),
  2,
);
const indexSampleScript = LuaScript.fromFile<string[]>(
  'rtk_sess_index_sample',
  new URL('./session-index-sample.lua', import.meta.url),
  2,
);
/**
 * How long an id added to a user's index is protected from pruning while its session is being written (the write
 * follows at once; this only has to outlast a slow round trip, with a wide margin).
 */
const PENDING_MS = 60_000;

/**
 * What one session key holds: a JSON string. `d` maps each top-level data field to its serialized value, so `update`
 * merges field by field in Lua (cjson only moves those strings around, never re-encodes a value).
 */
export interface SessionEnvelope {
  /** userId ('' for an anonymous express-session session). */
  u: string;
  /** createdAt, epoch ms. */
  c: number;
  /** Absolute deadline: createdAt + maxAgeMs. */
  m: number;
  /** Idle ttl of this session, ms. */
  t: number;
  /** Data fields: name → serialized value. */
  d: Record<string, string>;
  /** express-session's cookie (JSON), when the session was written by RedisSessionStore. */
  k?: string;
}

/** A session as read from Redis. */
export interface RawSession {
  readonly envelope: SessionEnvelope;
  readonly expiresAt: number;
  readonly lastAccessedAt: number;
}

/**
 * One data field as stored: its value serialized. Names and values must be well-formed Unicode (no lone UTF-16
 * surrogate): Lua's cjson cannot decode a stored name with one, so every later write of the session would fail.
 * Throws InvalidKeyError before anything is sent.
 */
export function encodeField(serializer: Serializer, name: string, value: unknown): string {
  if (hasLoneSurrogate(name) || containsLoneSurrogate(value)) throw illFormed();
  const serialized = serializer.serialize(value);
  if (hasLoneSurrogate(serialized)) throw illFormed();
  return serialized;
}

/** Throws InvalidKeyError when a field name to delete is not well-formed Unicode (see encodeField). */
export function checkFieldName(name: string): string {
  if (hasLoneSurrogate(name)) throw illFormed();
  return name;
}

function illFormed(): InvalidKeyError {
  // The text itself stays out of the message: it is the caller's data.
  return new InvalidKeyError('session field names and values must be well-formed Unicode (a lone UTF-16 surrogate)');
}

function parseEnvelope(raw: string): SessionEnvelope | null {
  try {
    const e = JSON.parse(raw) as Partial<SessionEnvelope> | null;
    if (!e || typeof e !== 'object' || typeof e.m !== 'number' || typeof e.t !== 'number' || typeof e.c !== 'number')
      return null;
    return {
      u: typeof e.u === 'string' ? e.u : '',
      c: e.c,
      m: e.m,
      t: e.t,
      d: e.d && typeof e.d === 'object' ? e.d : {},
      k: typeof e.k === 'string' ? e.k : undefined,
    };
  } catch {
    return null;
  }
}

/**
 * The Redis side of sessions, shared by SessionService and RedisSessionStore so both use the same keys and layout.
 *
 * A session is one string key, so the hot path needs no Lua: a touching read is `GETEX key PX ttl`, one command and
 * one round trip (plus a PEXPIREAT only for a session whose own ttl differs from the default, or in its last ttl
 * before the absolute deadline); on a single server the touching reads of one tick go as one script call of
 * GETEXs. Writes are Lua scripts touching only the keys of one session (one `{id}` hash tag); the per-user index
 * lives in its own slot and is maintained with separate commands.
 *
 * Times come from this process's clock (Date.now()): the deadline is checked here on every read, Redis expiry only
 * cleans up. Callers validate ids before they get here and wrap errors; this class never logs.
 */
export class SessionRecords {
  private readonly keys: KeyBuilder;
  private readonly sessionHead: string;
  /** Touching reads of one tick as one script call; undefined on a cluster (each session has its own slot). */
  private readonly touchReads: TickBatcher<[key: string, ttl: number], string | null | Error> | undefined;

  constructor(
    readonly client: RedisClient,
    keyPrefix: string,
    /** Largest stored session, bytes: checked here before a write is sent, and by the update script after a merge. */
    private readonly maxSize = DEFAULT_SESSION_MAX_SIZE,
  ) {
    this.keys = new KeyBuilder(keyPrefix);
    this.sessionHead = this.keys.tagHead(FEATURES.session);
    this.touchReads =
      client instanceof Cluster
        ? undefined
        : new TickBatcher(
            {
              one: ([key, ttl]) => client.getex(key, 'PX', ttl),
              many: (reads) =>
                touchReadsScript.runWithAnyKeys(
                  client,
                  reads.map(([key]) => key),
                  reads.map(([, ttl]) => ttl),
                ),
            },
            TOUCH_READS_PER_CALL,
          );
  }

  /** `<prefix>sess:{<id>}` — ids are validated (base64url) by the callers, so nothing needs escaping. */
  sessionKey(id: string): string {
    return this.keys.taggedTrusted(FEATURES.session, id);
  }

  tombstoneKey(id: string): string {
    return this.keys.taggedTrusted(FEATURES.session, id, ':gone');
  }

  userIndexKey(userId: string): string {
    return this.keys.tagged(FEATURES.sessionUserIndex, userId);
  }

  /** The ids of the user's index whose session may still be being written (same slot as the index). */
  userPendingKey(userId: string): string {
    return this.keys.tagged(FEATURES.sessionUserIndex, userId, ':new');
  }

  /**
   * Reads a session. With `touchTtl` the idle expiry is extended in the same command (GETEX PX); a session whose
   * own ttl differs, or whose absolute deadline comes first, gets a PEXPIREAT to correct it.
   */
  async read(id: string, touchTtl: number | undefined): Promise<RawSession | null> {
    const key = this.sessionKey(id);
    const now = Date.now();
    if (touchTtl === undefined) {
      // PEXPIRETIME (Redis 7): the exact expiry, in the same round trip as the value.
      const [[getErr, raw], [timeErr, expireTime]] = (await this.client.multi().get(key).pexpiretime(key).exec()) as [
        [Error | null, string | null],
        [Error | null, number],
      ];
      if (getErr) throw getErr;
      if (timeErr) throw timeErr;
      const envelope = raw === null ? null : parseEnvelope(raw);
      if (!envelope || envelope.m <= now) return null;
      const expiresAt = expireTime > 0 ? Number(expireTime) : Math.min(envelope.m, now + envelope.t);
      return { envelope, expiresAt, lastAccessedAt: Math.max(envelope.c, Math.min(now, expiresAt - envelope.t)) };
    }
    const ttl = Math.ceil(touchTtl);
    const raw = await (this.touchReads ? this.touchReads.add([key, ttl]) : this.client.getex(key, 'PX', ttl));
    // a batched read answers per key: the error reply of this key alone (WRONGTYPE) fails only this read
    if (raw instanceof Error) throw raw;
    if (raw === null) return null;
    const envelope = parseEnvelope(raw);
    if (!envelope || envelope.m <= now) {
      await this.client.del(key);
      return null;
    }
    const expiresAt = Math.min(now + envelope.t, envelope.m);
    if (expiresAt !== now + touchTtl) await this.client.pexpireat(key, expiresAt);
    return { envelope, expiresAt, lastAccessedAt: now };
  }

  /**
   * express-session's touch: the session's idle ttl becomes `ttl` (stored, so later touching reads keep it) and its
   * cookie `cookieJson` ('' keeps the stored one); false when the session is gone.
   */
  async storeTouch(id: string, ttl: number, cookieJson: string): Promise<boolean> {
    const exp = await storeTouchScript.run(
      this.client,
      [this.sessionKey(id)],
      [Date.now(), Math.ceil(ttl), cookieJson],
    );
    return exp !== 0;
  }

  /** A session as stored (JSON); SessionTooLargeError over maxSize, before anything is sent. */
  encode(envelope: SessionEnvelope): string {
    const json = JSON.stringify(envelope);
    this.checkSize([json]);
    return json;
  }

  /**
   * Stores a new session (`json` from encode()): 'created', 'taken' (the id exists) or 'tombstoned' (destroyed
   * recently).
   */
  async create(id: string, json: string, expiresAt: number): Promise<'created' | 'taken' | 'tombstoned'> {
    const created = await createScript.run(
      this.client,
      [this.sessionKey(id), this.tombstoneKey(id)],
      [json, expiresAt],
    );
    return created === 1 ? 'created' : created === -1 ? 'tombstoned' : 'taken';
  }

  async update(id: string, touch: boolean, sets: [string, string][], deletes: string[]): Promise<RawSession | null> {
    const now = Date.now();
    // What this call adds can be refused before anything is sent; the merged total only the script knows.
    this.checkSize(sets.flat());
    const args: ScriptArg[] = [now, touch ? '1' : '0', this.maxSize, sets.length];
    for (const [f, v] of sets) args.push(f, v);
    args.push(...deletes);
    const reply = await updateScript.run(this.client, [this.sessionKey(id)], args);
    if (reply === -1) throw this.tooLarge('after the merge');
    if (!reply) return null;
    const envelope = parseEnvelope(reply[0]);
    if (!envelope) return null;
    return {
      envelope,
      expiresAt: Number(reply[1]),
      lastAccessedAt: touch ? now : Math.max(envelope.c, Number(reply[1]) - envelope.t),
    };
  }

  /**
   * Throws SessionTooLargeError when the texts' UTF-8 bytes add up to more than maxSize (counted only if they might).
   */
  private checkSize(texts: string[]): void {
    let units = 0;
    for (const t of texts) units += t.length;
    if (units * 3 <= this.maxSize) return; // 3 bytes per UTF-16 unit at most
    let bytes = 0;
    for (const t of texts) bytes += Buffer.byteLength(t);
    if (bytes > this.maxSize) throw this.tooLarge(`(${bytes} bytes)`);
  }

  private tooLarge(detail: string): SessionTooLargeError {
    return new SessionTooLargeError(
      `the session would be larger than session.maxSize (${this.maxSize} bytes) ${detail}; nothing was written`,
    );
  }

  /**
   * Deletes the session and leaves a tombstone; returns its userId ('' for anonymous), or null when there was none.
   * With `always`, the tombstone is left even for an absent session, so a write still on its way cannot create it.
   */
  async destroy(id: string, tombstoneMs: number, always = false): Promise<string | null> {
    return destroyScript.run(
      this.client,
      [this.sessionKey(id), this.tombstoneKey(id)],
      [Math.ceil(tombstoneMs), always ? '1' : '0'],
    );
  }

  /**
   * express-session's set: replace data, create when missing; 'tombstoned' when the id was destroyed recently. When
   * the session gets a new owner (`fields.u`), the id enters that user's index before the session is written, as in
   * `create`; the caller removes it from the previous owner's index. `fields.t` 0: the key gets no Redis expiry.
   */
  async storeSet(
    id: string,
    fields: Omit<SessionEnvelope, 'c' | 'm'>,
    maxAgeMs: number,
  ): Promise<{ previousUserId: string; expiresAt: number } | 'tombstoned'> {
    const json = JSON.stringify(fields);
    this.checkSize([json]);
    const keys = [this.sessionKey(id), this.tombstoneKey(id)];
    const args: ScriptArg[] = [Date.now(), Math.ceil(maxAgeMs), fields.t, json, fields.u];
    let reply = await storeSetScript.run(this.client, keys, args);
    if (reply !== -1 && reply.length === 3) {
      await this.indexAdd(fields.u, id, Number(reply[1]), true);
      // The same `now`: the deadline of a new session is the one just indexed.
      args[4] = '';
      reply = await storeSetScript.run(this.client, keys, args);
      if (reply !== -1) await this.indexSettled(fields.u, id);
    }
    if (reply === -1) return 'tombstoned';
    return { previousUserId: String(reply[0]), expiresAt: Number(reply[1]) };
  }

  /**
   * Adds `id` to the user's index — BEFORE its session is written, so that destroyAllForUser (which reads the index)
   * never misses a session that exists — and prunes the index: ids past their absolute deadline go in the same
   * script; with `prune`, a random sample of the other ids is checked first (EXISTS, one command per id,
   * concurrently: they live in other slots) and the dead ones go too, unless added in the last PENDING_MS (their
   * session may still be on its way), so dead ids never pile up and a write costs a bounded amount of work.
   */
  async indexAdd(userId: string, id: string, deadline: number, prune: boolean): Promise<void> {
    const dead = prune ? await this.deadSample(userId, id) : [];
    await this.runIndexScript(userId, id, deadline, dead);
  }

  /** The session of `id` is written: pruning may drop the id again once it dies (see indexAdd). */
  async indexSettled(userId: string, id: string): Promise<void> {
    await this.client.zrem(this.userPendingKey(userId), id);
  }

  /**
   * Removes ids found dead from the user's index. Only ids that were not pending when found dead may be passed (an id
   * settles once its session is written, so one pending then may be alive now); pending ones stay anyway.
   */
  async indexPrune(userId: string, dead: string[]): Promise<void> {
    if (dead.length > 0) await this.runIndexScript(userId, '', 0, dead);
  }

  /** Removes ids whose session was destroyed (with a tombstone, so they can never be written again). */
  async indexRemove(userId: string, ids: string[]): Promise<void> {
    if (ids.length > 0) await this.client.zrem(this.userIndexKey(userId), ...ids);
  }

  private async deadSample(userId: string, except: string): Promise<string[]> {
    const keys = [this.userIndexKey(userId), this.userPendingKey(userId)];
    const ids = (await indexSampleScript.run(this.client, keys, [PRUNE_SAMPLE])).filter((other) => other !== except);
    const alive = await this.existing(ids);
    return ids.filter((_, i) => !alive[i]);
  }

  private async runIndexScript(userId: string, id: string, deadline: number, dead: string[]): Promise<void> {
    await indexAddScript.run(
      this.client,
      [this.userIndexKey(userId), this.userPendingKey(userId)],
      [Date.now(), PENDING_MS, id, deadline, ...dead],
    );
  }

  /** Ids in the user's index whose absolute deadline has not passed (some may have expired idle or been destroyed). */
  async indexIds(userId: string, now = Date.now()): Promise<string[]> {
    return this.client.zrangebyscore(this.userIndexKey(userId), now, '+inf');
  }

  /**
   * indexIds, and which of them are still pending (their session may not be written yet: not dead when missing), read
   * together (one MULTI on the user's slot).
   */
  async indexIdsWithPending(userId: string): Promise<{ ids: string[]; pending: Set<string> }> {
    const replies = await this.client
      .multi()
      .zrangebyscore(this.userIndexKey(userId), Date.now(), '+inf')
      .zrange(this.userPendingKey(userId), '0', '-1')
      .exec();
    const [[idsErr, ids], [pendingErr, pending]] = (replies ?? [[new Error('transaction aborted'), null], []]) as [
      [Error | null, string[]],
      [Error | null, string[]],
    ];
    if (idsErr) throw idsErr;
    if (pendingErr) throw pendingErr;
    return { ids, pending: new Set(pending) };
  }

  /** Whether each session exists (concurrent EXISTS: on a cluster each id lives in its own slot). */
  async existing(ids: string[]): Promise<boolean[]> {
    const counts = await Promise.all(ids.map((id) => this.client.exists(this.sessionKey(id))));
    return counts.map((n) => n === 1);
  }

  /** Pages of session ids, found with SCAN on every master (never KEYS). */
  async *scanIds(count = 500): AsyncGenerator<string[]> {
    const pattern = `${KeyBuilder.globEscape(this.sessionHead)}*}`;
    for await (const found of scanKeys(this.client, pattern, count)) {
      const ids = found
        .map((k) => k.slice(this.sessionHead.length, -1))
        .filter((id) => !id.includes('{') && !id.includes('}'));
      if (ids.length > 0) yield ids;
    }
  }

  /** Pages of user index keys (for clear()). */
  scanUserIndexKeys(count = 500): AsyncGenerator<string[]> {
    return scanKeys(
      this.client,
      `${KeyBuilder.globEscape(this.keys.featurePrefix(FEATURES.sessionUserIndex))}*`,
      count,
    );
  }
}
