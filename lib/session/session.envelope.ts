import { InvalidKeyError } from '../common/errors.js';
import { isPlainJson, type Serializer } from '../common/serializer.js';
import type { Session, SessionData } from './session.types.js';
import { containsLoneSurrogate, hasLoneSurrogate } from '../common/unicode.js';
import type { SessionSizeBound } from './session.size-bound.js';

/**
 * What one session key holds: a JSON string. `d` maps each top-level data field to its serialized value, so an
 * update merges field by field without re-serializing the other values.
 */
export interface SessionEnvelope {
  /** userId ('' for an anonymous express-session session). */
  u: string;
  /** createdAt, epoch ms. */
  c: number;
  /** Absolute deadline: createdAt + maxAgeMs. */
  m: number;
  /** Idle ttl of this session, ms; 0: none (RedisSessionStore's disableTTL), the session lives until `m`. */
  t: number;
  /** Data fields: name → serialized value. */
  d: Record<string, string>;
  /** express-session's cookie (JSON), when the session was written by RedisSessionStore. */
  k?: string;
}

/**
 * When a session used at `now` expires: after its idle ttl, or at its absolute deadline when that comes first or when
 * it has no idle ttl (t 0: such a session's key has no Redis expiry, and `now + 0` would delete it).
 */
export function expiryOf(envelope: SessionEnvelope, now: number): number {
  return envelope.t === 0 ? envelope.m : Math.min(now + envelope.t, envelope.m);
}

/**
 * When a session read or written without a touch was last used, as far as its expiry tells (expiry − idle ttl): never
 * before its creation, never after `now` (a session without an idle ttl tells nothing: `now`).
 */
export function lastAccessOf(envelope: SessionEnvelope, expiresAt: number, now: number): number {
  return Math.max(envelope.c, Math.min(now, expiresAt - envelope.t));
}

/** A session as read from Redis. */
export interface RawSession {
  readonly envelope: SessionEnvelope;
  readonly expiresAt: number;
  readonly lastAccessedAt: number;
}

/**
 * One data field as stored: its value serialized. Names and values must be well-formed Unicode (no lone UTF-16
 * surrogate): Lua's cjson (the scripts that still decode a session: destroy, express-session's touch) cannot decode
 * a stored name with one, so every later write of the session would fail. Throws InvalidKeyError before anything
 * is sent.
 */
export function encodeField(serializer: Serializer, name: string, value: unknown): string {
  if (hasLoneSurrogate(name)) throw illFormed();
  if (!isPlainJson(serializer)) {
    if (containsLoneSurrogate(value)) throw illFormed();
    const serialized = serializer.serialize(value);
    if (hasLoneSurrogate(serialized)) throw illFormed();
    return serialized;
  }
  // The default serializer (JSON.stringify) writes a lone surrogate as a `\udXXX` escape and nothing else as one, so
  // its text tells whether the value held one: the value is walked only when the text has `\ud` (or fails to
  // serialize), where every value was walked before serializing (and the text again after): 2.2 against 1.3 µs for
  // the bench's 9 fields. A lone surrogate JSON leaves out (the key of an undefined value) is not stored.
  let serialized: string;
  try {
    serialized = serializer.serialize(value);
  } catch (err) {
    if (containsLoneSurrogate(value)) throw illFormed();
    throw err;
  }
  if (serialized.includes('\\ud') && containsLoneSurrogate(value)) throw illFormed();
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

/**
 * Between a session's envelope and each change appended to it (`update` appends the fields it changes instead of
 * rewriting the session, see SessionRecords.update). JSON text never holds a raw line feed (JSON.stringify escapes
 * it inside strings), so the first one ends the envelope and each one starts a change.
 */
export const CHANGE_SEPARATOR = '\n';

/**
 * One appended change as stored: the separator, then `{"d":{name: serialized value, ...},"x":[deleted names]}` (`x`
 * only when something is deleted). Built by hand so that a field named `__proto__` is written as a field.
 */
export function changeText(sets: [string, string][], deletes: string[]): string {
  let text = `${CHANGE_SEPARATOR}{"d":{`;
  for (let i = 0; i < sets.length; i++) {
    if (i > 0) text += ',';
    text += `${JSON.stringify(sets[i][0])}:${JSON.stringify(sets[i][1])}`;
  }
  text += '}';
  if (deletes.length > 0) text += `,"x":${JSON.stringify(deletes)}`;
  return `${text}}`;
}

/** How many changes are appended to a stored session (the line feeds in it). */
export function changeCount(raw: string): number {
  let count = 0;
  for (let at = raw.indexOf(CHANGE_SEPARATOR); at >= 0; at = raw.indexOf(CHANGE_SEPARATOR, at + 1)) count++;
  return count;
}

/**
 * The stored JSON as an envelope, with the changes appended to it applied in order; null when it is not one (a
 * foreign or damaged value: also a change without an envelope in front, or a change that does not parse).
 */
export function parseEnvelope(raw: string): SessionEnvelope | null {
  const end = raw.indexOf(CHANGE_SEPARATOR);
  const envelope = parseBase(end < 0 ? raw : raw.slice(0, end));
  if (envelope === null || end < 0) return envelope;
  return applyChanges(envelope, raw, end);
}

/**
 * `envelope` (parsed from the text before `from`) with the changes of `raw` from `from` on applied: a new envelope
 * and data object, the input is not changed. Null when a change does not parse.
 */
export function applyChanges(envelope: SessionEnvelope, raw: string, from: number): SessionEnvelope | null {
  const d: Record<string, string> = { ...envelope.d };
  let at = from;
  while (at >= 0) {
    const next = raw.indexOf(CHANGE_SEPARATOR, at + 1);
    const change = parseChange(raw.slice(at + 1, next < 0 ? undefined : next));
    if (change === null) return null;
    for (const name in change.d) setField(d, name, change.d[name]);
    if (change.x) for (const name of change.x) delete d[name];
    at = next;
  }
  return { ...envelope, d };
}

function parseChange(text: string): { d: Record<string, string>; x?: string[] } | null {
  try {
    const c = JSON.parse(text) as { d?: unknown; x?: unknown } | null;
    if (!c || typeof c !== 'object' || !c.d || typeof c.d !== 'object') return null;
    if (c.x !== undefined && !Array.isArray(c.x)) return null;
    return c as { d: Record<string, string>; x?: string[] };
  } catch {
    return null;
  }
}

/** A field set on a data object: an own field even when named `__proto__`, never the prototype. */
function setField<T>(d: Record<string, T>, name: string, value: T): void {
  if (name === '__proto__')
    Object.defineProperty(d, name, { value, enumerable: true, writable: true, configurable: true });
  else d[name] = value;
}

function parseBase(raw: string): SessionEnvelope | null {
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

/** `envelope` with `sets` written and `deletes` removed (a new object; the input is not changed). */
export function mergeFields(envelope: SessionEnvelope, sets: [string, string][], deletes: string[]): SessionEnvelope {
  // A plain object (a prototype-less one is a slow dictionary, to fill and to stringify): a spread copies a field
  // named `__proto__` as an own field, and one set here is defined as one, never as the prototype.
  const d: Record<string, string> = { ...envelope.d };
  for (const [name, value] of sets) setField(d, name, value);
  for (const name of deletes) delete d[name];
  return { ...envelope, d };
}

/** A session's data as stored fields: each top-level field serialized on its own; `undefined` fields are dropped. */
export function encodeSessionData(serializer: Serializer, data: SessionData, what: string): Record<string, string> {
  if (data === null || typeof data !== 'object' || Array.isArray(data))
    throw new InvalidKeyError(`session ${what} must be a plain object`);
  // Object.fromEntries defines own properties: a field named __proto__ stays a field.
  return Object.fromEntries(
    Object.entries(data)
      .filter(([, value]) => value !== undefined)
      .map(([name, value]) => [name, encodeField(serializer, name, value)]),
  );
}

/** Each stored data field deserialized, as a plain object (SessionService's Session data, the store's session). */
export function decodeFields(serializer: Serializer, fields: Record<string, string>): Record<string, unknown> {
  // A loop, not Object.fromEntries(Object.entries(...).map(...)): this runs on every read (15 % of a read's CPU).
  const data: Record<string, unknown> = {};
  // own data property even for "__proto__" (as fromEntries would), never the prototype
  for (const name in fields) setField(data, name, serializer.deserialize(fields[name]));
  return data;
}

/** A Session while it is being filled in (see toSession). */
type SessionBeingBuilt = { -readonly [K in keyof Session]: Session[K] };

/** How Node's util.inspect (console.log) asks an object to show itself. */
const INSPECT = Symbol.for('nodejs.util.inspect.custom');

/**
 * A stored session as the Session callers get: a plain object filled in by assignment, not an object literal. V8
 * pretenures an object literal whose objects have survived young-generation GCs (an app holding many sessions at
 * once: `create` results kept, a listing), and from then on every read allocated its Session in the old generation,
 * where it kept the data it points to alive through each young-generation GC. Measured in the session bench: scavenges
 * of 8–10 ms instead of ~1 ms in every round of reads, 10 % of the reads over 2 ms (docs/session.md).
 *
 * With `lazyData` (the result of a write: create, update, regenerate, whose callers often want only the id or the
 * expiry) `data` is decoded when first read, then kept: an own enumerable accessor, so a spread, JSON.stringify,
 * structuredClone and Jest's toEqual see the data as they see a plain field, and assigning it replaces it. Decoding
 * every field was 17 % of an update's CPU in an on-CPU profile (50 callers, ~400-byte sessions). A field that cannot be
 * decoded then throws on that read, not from the write, which has already happened.
 */
export function toSession<T extends SessionData>(
  serializer: Serializer,
  id: string,
  raw: RawSession,
  lazyData = false,
): Session<T> {
  const session = Object.create(Object.prototype) as SessionBeingBuilt;
  session.id = id;
  session.userId = raw.envelope.u;
  if (lazyData) defineLazyData(session, serializer, raw.envelope.d);
  else session.data = decodeFields(serializer, raw.envelope.d);
  session.createdAt = raw.envelope.c;
  session.lastAccessedAt = raw.lastAccessedAt;
  session.expiresAt = raw.expiresAt;
  return session as Session<T>;
}

/** Where a Session with lazy data keeps what its `data` accessor needs (a non-enumerable own property). */
const LAZY = Symbol('rtk session data');

interface LazyData {
  readonly serializer: Serializer;
  readonly fields: Record<string, string>;
  data: SessionData | undefined;
}

/**
 * The accessor and its state go on with shared descriptors and functions, no closure per Session: every such Session
 * then has the same shape, and building one took ~0.4 µs instead of ~1 µs with a getter closure per Session (node 20,
 * 2e6 builds).
 */
const LAZY_DATA: PropertyDescriptor = {
  get(this: { [LAZY]: LazyData }): SessionData {
    const lazy = this[LAZY];
    lazy.data ??= decodeFields(lazy.serializer, lazy.fields);
    return lazy.data;
  },
  set(this: { [LAZY]: LazyData }, value: SessionData): void {
    this[LAZY].data = value;
  },
  enumerable: true,
  configurable: true,
};
// console.log shows the data, not `[Getter/Setter]`; not enumerable, so nothing else sees it
const INSPECT_SESSION: PropertyDescriptor = {
  value(this: Session): Session {
    return { ...this }; // the spread reads the data
  },
};

function defineLazyData(session: SessionBeingBuilt, serializer: Serializer, fields: Record<string, string>): void {
  Object.defineProperty(session, LAZY, { value: { serializer, fields, data: undefined } satisfies LazyData });
  Object.defineProperty(session, 'data', LAZY_DATA);
  Object.defineProperty(session, INSPECT, INSPECT_SESSION);
}

/**
 * Throws SessionTooLargeError when the texts' UTF-8 bytes add up to more than the bound (counted only if they might).
 */
export function checkSessionSize(bound: SessionSizeBound, texts: string[]): void {
  const max = bound.max;
  let units = 0;
  for (const t of texts) units += t.length;
  if (units * 3 <= max) return; // 3 bytes per UTF-16 unit at most
  let bytes = 0;
  for (const t of texts) bytes += Buffer.byteLength(t);
  if (bytes > max) throw bound.tooLarge(`(${bytes} bytes)`, bytes);
}

/** checkSessionSize of the names and values of `sets` (without copying them into one list first). */
export function checkSetsSize(bound: SessionSizeBound, sets: [string, string][]): void {
  let units = 0;
  for (let i = 0; i < sets.length; i++) units += sets[i][0].length + sets[i][1].length;
  if (units * 3 > bound.max) checkSessionSize(bound, sets.flat());
}

/**
 * At least the UTF-8 bytes of `fields` as JSON, without encoding them: 6 bytes per UTF-16 unit (`\u001f`, the
 * longest escape) and 6 per field for quotes, colon and comma. A write under the size bound by this needs no exact
 * count.
 */
export function jsonBytesBound(fields: { u: string; d: Record<string, string>; k?: string }): number {
  let units = fields.u.length + (fields.k?.length ?? 0);
  let count = 0;
  for (const name in fields.d) {
    units += name.length + fields.d[name].length;
    count++;
  }
  return 6 * units + 6 * count + 64;
}
