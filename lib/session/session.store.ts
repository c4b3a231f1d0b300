import { Logger } from '@nestjs/common';
import { InvalidKeyError, SerializationError, SessionTooLargeError } from '../common/errors.js';
import { DEFAULT_KEY_PREFIX, KeyBuilder } from '../common/keys.js';
import { isDuration, MAX_DURATION_MS } from '../common/option-checks.js';
import { JsonSerializer, SafeSerializer, type Serializer } from '../common/serializer.js';
import { encodeField, SessionRecords, type RawSession } from './session.records.js';
import { decodeFields } from './session.envelope.js';
import { cookieJson } from './session.cookie-json.js';
import { DEFAULT_SESSION_MAX_SIZE, SESSION_DEFAULTS } from './session.options.js';
import { SessionSizeBound } from './session.size-bound.js';
import { clientSource } from '../common/reply-limit.js';
import { touchReuseOf } from './session.recent-touches.js';
import { unlinkMany } from '../common/bulk-keys.js';
import { sessionRevokerFor } from './session.revocation.js';
import { clockAheadMessage, STORE_CLOCK_TIMEOUT_MS, storeClockOf } from './session.deadline.js';
import { ThrottledWarning } from '../common/throttled-logger.js';
import {
  checkStoreOptions,
  plainGetOption,
  type RedisSessionStoreOptions,
  type StoreTtlFunction,
} from './session.store-options.js';
import { makeRoom } from '../common/bounded-map.js';
import {
  appError,
  checkStoreSession,
  loadStoreBase,
  settleStoreCall as settle,
  type StoreCallback as Callback,
  type StoredSession,
  type StoreSessionData,
} from './session.store-base.js';
import { badStoreId, CookiePastLifetime, STORE_ID } from './session.store-lifetime.js';

const STORE_LOGGER = new Logger('RedisToolkit:Session');

/** A ttl below this many ms looks like connect-redis seconds: warned about at startup. */
const SECONDS_LIKE_TTL = 1_000;

/** How many ids touched by get() are remembered for touch() (see RedisSessionStore.touchedOnGet). */
const TOUCHED_ON_GET_LIMIT = 10_000;

/**
 * An express-session Store on Redis (single server or Cluster), a drop-in for connect-redis:
 * `session({ store: new RedisSessionStore({ client }), secret, ... })`.
 *
 * It uses SessionService's keys and layout (one JSON string per session read by GETEX, top-level fields serialized
 * one by one, a per-user index), so with `genid: generateSessionId` both see the same sessions. `get` touches in one
 * round trip; `destroy` leaves a tombstone so a late `set` from an in-flight request cannot resurrect the session,
 * and (on the toolkit's client) revokes its WebSockets on every instance, as `clear` does;
 * `all`, `ids`, `length` and `clear` use SCAN on every master, never KEYS.
 */
export class RedisSessionStore extends loadStoreBase() {
  private readonly records: SessionRecords;
  /** maxSize, lowered by the server's reply limit: read once per client (shared with the toolkit's on it). */
  private readonly size: SessionSizeBound;
  private readonly serializer: Serializer;
  private readonly ttl: number;
  private readonly ttlFunction: StoreTtlFunction | undefined;
  private readonly disableTouch: boolean;
  private readonly disableTTL: boolean;
  private readonly scanCount: number;
  private readonly maxAgeMs: number;
  /** Warns once when a cookie outlives maxAgeMs (connect-redis has no absolute lifetime). */
  private readonly lifetime: CookiePastLifetime;
  private readonly tombstoneMs: number;
  private readonly userIdField: string;
  private readonly touchOnGet: boolean;
  /**
   * The idle ttl recent touching gets applied, by id, and how many of those gets no touch has matched yet: touch()
   * with the same ttl has nothing to do; with another (the cookie's maxAge changed) it stores the new one. Bounded:
   * the oldest entries go first.
   */
  private readonly touchedOnGet = new Map<string, { ttl: number; gets: number }>();
  /**
   * The idle ttl of the last session read: GETEX uses it, so sessions sharing one cookie maxAge cost one command.
   * Always a duration Redis accepts: a session's stored ttl that is not (0, written with disableTTL; past 100 years,
   * written before such ttls were capped) is never taken, or that one session would fail every later read.
   */
  private ttlGuess: number;

  constructor(options: RedisSessionStoreOptions) {
    super();
    checkStoreOptions(options);
    this.disableTouch = options.disableTouch ?? false;
    this.disableTTL = options.disableTTL ?? false;
    this.touchOnGet = plainGetOption(options) === undefined;
    // (no shutdown hook on an express-session store: a count still pending logs from its unref'd timer)
    const clockWarning = new ThrottledWarning(STORE_LOGGER, 60_000, () => 'reads past a deadline by this clock');
    // Redis's clock, which touching gets judge the deadline by: one per client, shared by its stores and started by
    // the first, as the store has no start or shutdown (its TIME samples run on an unref'd timer and on each 'ready')
    const redisClock = storeClockOf(options.client, (m) => STORE_LOGGER.warn(m));
    const { maxSize = DEFAULT_SESSION_MAX_SIZE } = options;
    const given = options.maxSize !== undefined;
    const size = new SessionSizeBound(maxSize, 'RedisSessionStore maxSize', given, (m) => STORE_LOGGER.warn(m));
    // (no start hook either: read now, or at the client's first ready; a set waits for a read in flight)
    this.size = size.watch(clientSource(options.client, STORE_CLOCK_TIMEOUT_MS));
    void size.start();
    this.records = new SessionRecords(
      options.client,
      options.prefix ?? DEFAULT_KEY_PREFIX,
      { size, touchReuse: touchReuseOf(options.touchAfter, this.touchOnGet), redisClock },
      (ms) => clockWarning.warn(clockAheadMessage(ms)),
    );
    this.serializer = new SafeSerializer(options.serializer ?? new JsonSerializer());
    this.ttlFunction = typeof options.ttl === 'function' ? options.ttl : undefined;
    this.ttl = typeof options.ttl === 'number' ? options.ttl : SESSION_DEFAULTS.ttl;
    if (typeof options.ttl === 'number' && options.ttl < SECONDS_LIKE_TTL) {
      STORE_LOGGER.warn(
        `RedisSessionStore ttl is ${options.ttl} ms: it is milliseconds here, seconds in connect-redis ` +
          `(for ${options.ttl} seconds write ttl: ${options.ttl * 1_000})`,
      );
    }
    this.scanCount = options.scanCount ?? 500;
    this.maxAgeMs = options.maxAgeMs ?? SESSION_DEFAULTS.maxAgeMs;
    this.lifetime = new CookiePastLifetime(this.maxAgeMs, (m) => STORE_LOGGER.warn(m));
    this.tombstoneMs = options.tombstoneMs ?? SESSION_DEFAULTS.tombstoneMs;
    this.userIdField = options.userIdField ?? 'userId';
    this.ttlGuess = this.ttl;
  }

  /**
   * The session as stored (touching it unless `touchOnGet: false`), or null. `T` names your session type, e.g.
   * express-session's `SessionData`; by default the cookie and every stored field as `unknown`.
   */
  get<T extends StoreSessionData = StoredSession>(sid: string, callback?: Callback<T | null>): Promise<T | null> {
    return settle(callback, async (): Promise<T | null> => {
      if (!STORE_ID.test(String(sid))) return null;
      const raw = await this.records.read(sid, this.touchOnGet ? this.ttlGuess : undefined);
      if (!raw) return null;
      if (isDuration(raw.envelope.t)) this.ttlGuess = raw.envelope.t;
      if (this.touchOnGet) this.rememberTouch(sid, raw.envelope.t);
      return this.toSessionData(raw) as T;
    });
  }

  set(sid: string, session: StoreSessionData, callback?: Callback<void>): Promise<void> {
    return settle(callback, async () => {
      this.checkId(sid);
      checkStoreSession(session);
      const ttl = this.idleTtlOf(session);
      if (!(ttl > 0)) {
        await this.destroyId(sid);
        return;
      }
      if (this.ttlFunction === undefined) this.lifetime.check(ttl);
      const source = session as StoreSessionData & Record<string, unknown>;
      // A loop over the own keys (this runs on every write; a rest copy and Object.entries cost 3× as much), cookie
      // apart; defineProperty keeps a field named __proto__ an own field.
      const d: Record<string, string> = {};
      let userValue: unknown;
      for (const name of Object.keys(source)) {
        if (name === 'cookie') continue;
        const value = source[name];
        if (name === this.userIdField) userValue = value;
        if (value === undefined || typeof value === 'function') continue;
        const encoded = this.encode(name, value);
        if (name === '__proto__')
          Object.defineProperty(d, name, { value: encoded, enumerable: true, writable: true, configurable: true });
        else d[name] = encoded;
      }
      const userId = typeof userValue === 'string' || typeof userValue === 'number' ? String(userValue) : '';
      if (userId !== '') this.checkUserId(userId);
      let result: Awaited<ReturnType<SessionRecords['storeSet']>>;
      try {
        // the first sets of a store made on a connected client: checked against the server's limit too
        const reading = this.size.pending();
        if (reading !== undefined) await reading;
        const fields = { u: userId, t: this.disableTTL ? 0 : ttl, d, k: cookieText(source.cookie ?? null) };
        result = await this.records.storeSet(sid, fields, this.maxAgeMs);
      } catch (err) {
        // the request's fault: Express answers 413, not 500
        if (err instanceof SessionTooLargeError) Object.assign(err, { status: 413, statusCode: 413 });
        throw err;
      }
      // A tombstoned id: the session was destroyed while this request was in flight; its late write is dropped.
      // Superseded: a later set of this session, made while an earlier one was in flight, was written instead.
      if (result === 'tombstoned' || result === 'superseded') return;
      // A new owner's index got the id before the write (storeSet); the previous owner's loses it.
      if (result.previousUserId !== userId && result.previousUserId !== '') {
        await this.records.index.remove(result.previousUserId, [sid]);
      }
    });
  }

  destroy(sid: string, callback?: Callback<void>): Promise<void> {
    return settle(callback, () => this.destroyId(sid));
  }

  touch(sid: string, session: StoreSessionData, callback?: Callback<void>): Promise<void> {
    return settle(callback, async () => {
      if (this.disableTouch || this.disableTTL || !STORE_ID.test(String(sid))) return;
      const ttl = this.idleTtlOf(session);
      if (!(ttl > 0)) return;
      // get() already extended the ttl in its own round trip, with this very ttl: nothing left to do. Counted per
      // get: concurrent requests of one session each get() then touch(), and every one of those touches must find
      // its get (one entry per id sent all but one of them to the script: 41.6 µs of Redis CPU per request).
      if (this.touchOnGet && this.takeTouch(sid, ttl)) return;
      const cookie = (session as Partial<StoreSessionData> | undefined)?.cookie;
      await this.records.storeTouch(sid, ttl, cookie === undefined ? '' : cookieText(cookie));
    });
  }

  all<T extends StoreSessionData = StoredSession>(callback?: Callback<T[]>): Promise<T[]> {
    return settle(callback, async () => {
      const out: T[] = [];
      for await (const page of this.records.scan.ids(this.scanCount)) {
        const raws = await Promise.all(page.map((id) => this.records.read(id, undefined)));
        raws.forEach((raw, i) => {
          if (raw) out.push(Object.assign(this.toSessionData(raw), { id: page[i] }) as T);
        });
      }
      return out;
    });
  }

  ids(callback?: Callback<string[]>): Promise<string[]> {
    return settle(callback, async () => {
      const out = new Set<string>();
      for await (const page of this.records.scan.ids(this.scanCount)) for (const id of page) out.add(id);
      return [...out];
    });
  }

  length(callback?: Callback<number>): Promise<number> {
    return settle(callback, async () => (await this.ids()).length);
  }

  /**
   * Deletes every session under the prefix and the per-user indexes (SCAN + UNLINK, slot by slot on a cluster); the
   * sessions' WebSockets are revoked page by page.
   */
  clear(callback?: Callback<void>): Promise<void> {
    return settle(callback, async () => {
      for await (const page of this.records.scan.ids(this.scanCount)) {
        await unlinkMany(
          this.records.client,
          page.map((id) => this.records.sessionKey(id)),
        );
        await this.revoke(page);
      }
      for await (const page of this.records.scan.userIndexKeys(this.scanCount))
        await unlinkMany(this.records.client, page);
    });
  }

  /**
   * A touching get of `sid` applied `ttl`: the next touch with that ttl has nothing to do (see takeTouch). An entry is
   * changed in place, never replaced per request: a new object per get stored in this long-lived Map was promoted to
   * V8's old generation, and GC was 11 % of a get+touch loop.
   */
  private rememberTouch(sid: string, ttl: number): void {
    const entry = this.touchedOnGet.get(sid);
    if (entry !== undefined) {
      entry.gets = entry.ttl === ttl ? Math.min(entry.gets + 1, TOUCHED_ON_GET_LIMIT) : 1;
      entry.ttl = ttl;
      return;
    }
    makeRoom(this.touchedOnGet, TOUCHED_ON_GET_LIMIT);
    this.touchedOnGet.set(sid, { ttl, gets: 1 });
  }

  /**
   * Whether a touching get not yet matched by a touch applied `ttl` to `sid` (it is matched now). A matched entry stays
   * (with no gets left) for the session's next request, until the oldest entries make room.
   */
  private takeTouch(sid: string, ttl: number): boolean {
    const entry = this.touchedOnGet.get(sid);
    if (entry === undefined || entry.gets === 0) return false;
    if (entry.ttl !== ttl) {
      entry.gets = 0;
      return false;
    }
    entry.gets--;
    return true;
  }

  private async destroyId(sid: string): Promise<void> {
    if (!STORE_ID.test(String(sid))) return;
    const userId = await this.records.destroy(sid, this.tombstoneMs);
    // Announced even when already gone, as SessionService.destroy does: a retry must still reach the gateways.
    await this.revoke([sid]);
    if (userId) await this.records.index.remove(userId, [sid]);
  }

  /**
   * Disconnects the sessions' WebSockets on every instance (SessionService's announcement, when this store shares the
   * toolkit's client). Awaited: a destroy that succeeds has been announced; a failed announcement fails it.
   */
  private async revoke(ids: string[]): Promise<void> {
    if (ids.length > 0) await sessionRevokerFor(this.records.client)?.(ids);
  }

  /** A field as stored; ill-formed Unicode is the request's fault: status 400 lets Express answer 400, not 500. */
  private encode(name: string, value: unknown): string {
    try {
      return encodeField(this.serializer, name, value);
    } catch (err) {
      throw badRequest(err);
    }
  }

  /**
   * The owner the session is indexed under must make a key (at most 1,024 bytes, no control characters): checked
   * before any Redis command, and like a bad field the request's fault (status 400, not 500).
   */
  private checkUserId(userId: string): void {
    try {
      KeyBuilder.validate(userId, `session ${this.userIdField}`);
    } catch (err) {
      throw badRequest(err);
    }
  }

  private checkId(sid: string): void {
    if (!STORE_ID.test(String(sid))) throw badStoreId(sid);
  }

  /**
   * The session's idle ttl as stored, whole ms: not > 0 (NaN from an invalid cookie.expires too, as connect-redis
   * treats it) means expired and is never sent to Redis. Past 100 years (MAX_DURATION_MS: a ttl function returning
   * Infinity for "remember me", a huge cookie maxAge) it is 100 years: the session then lives until its absolute
   * deadline (maxAgeMs, itself at most 100 years), which comes first anyway. Redis refuses a larger expiry, and JSON
   * would store Infinity as null.
   */
  private idleTtlOf(session: StoreSessionData): number {
    const ttl = this.ttlOf(session);
    return ttl > MAX_DURATION_MS ? MAX_DURATION_MS : Math.ceil(ttl);
  }

  /**
   * The idle ttl: the cookie's maxAge (express-session resets `expires` to now + maxAge on every request), else the
   * time left until the cookie's `expires` (as connect-redis computes it), else the store's ttl. An `expires` in the
   * past or not a valid date means the cookie is dead, whatever its maxAge: 0. A ttl function decides alone.
   */
  private ttlOf(session: StoreSessionData): number {
    if (this.ttlFunction) {
      try {
        return this.ttlFunction(session);
      } catch (err) {
        throw appError(err); // passed on as the app threw it, not as a Redis failure
      }
    }
    const cookie = (session as Partial<StoreSessionData> | undefined)?.cookie;
    const expiresAt = cookie?.expires ? new Date(cookie.expires).getTime() : undefined;
    if (expiresAt !== undefined && !(expiresAt > Date.now())) return 0;
    const maxAge = cookie?.originalMaxAge;
    if (typeof maxAge === 'number' && maxAge > 0) return maxAge;
    if (expiresAt !== undefined) return expiresAt - Date.now();
    return this.ttl;
  }

  private toSessionData(raw: RawSession): StoredSession {
    const { envelope } = raw;
    const data = decodeFields(this.serializer, envelope.d);
    if (envelope.u !== '' && data[this.userIdField] === undefined) data[this.userIdField] = envelope.u;
    if (envelope.k !== undefined) {
      // What set() stored, as it was: a session set without a cookie comes back without one (`k` is 'null').
      const cookie = JSON.parse(envelope.k) as unknown;
      if (cookie !== null) data.cookie = cookie;
    } else {
      // A session created by SessionService has no express cookie: describe one that expires with the session, on
      // this process's clock (raw.expiresAt is Redis's), which express-session and ttlOf judge `expires` by
      data.cookie = {
        originalMaxAge: envelope.t,
        expires: new Date(this.records.deadline.toLocal(raw.expiresAt)).toISOString(),
        httpOnly: true,
        path: '/',
      };
    }
    return data as StoredSession;
  }
}

/** An InvalidKeyError caused by the request's data, with status 400 so Express answers 400 rather than 500. */
function badRequest(err: unknown): unknown {
  if (err instanceof InvalidKeyError) Object.assign(err, { status: 400, statusCode: 400 });
  return err;
}

/** The cookie as stored; one JSON cannot write (a BigInt in it) is a SerializationError, not a TypeError. */
function cookieText(cookie: unknown): string {
  try {
    return cookieJson(cookie);
  } catch (err) {
    const reason = err instanceof Error ? err.message : String(err);
    throw new SerializationError(`session cookie could not be serialized: ${reason}`, { cause: err });
  }
}
