import { SerializationError } from '../common/errors.js';
import { isPlainJson, type Serializer } from '../common/serializer.js';

/**
 * One cache entry as stored: everything stale-while-revalidate and XFetch need travels with the value, in one
 * Redis string per key, so a hit is exactly one GET and no second key can drift out of step with the value.
 *
 * Encoding: `<freshUntil>,<staleUntil>,<delta>,<tags JSON>\n<payload>` (epoch ms, ms). The header never contains a
 * newline (JSON escapes them), so the first `\n` ends it whatever the serializer produces. The key's PEXPIRE is the
 * stale horizon; soften.lua rewrites `freshUntil` in place for soft invalidation. The epoch ms are Redis's clock as
 * each instance estimates it (cache.clock.ts), written and compared on it, so instances whose own clocks disagree
 * agree on when an entry stops being fresh.
 *
 * A string value under the default JSON serializer is stored as it is, marked by an `s` right after the tags
 * (`…,[]s\n<the string>`): its JSON text only escaped it, and a read had to scan and parse it back (about a quarter of
 * the CPU of a Redis hit of a 1 KB string, in-process; HttpCacheInterceptor stores every response so). A version
 * before this mark cannot read such an entry: it takes it for a miss and stores the value again its own way.
 */
export interface CacheEntry<T = unknown> {
  value: T;
  /** Epoch ms (Redis's clock) until which the value is fresh. */
  freshUntil: number;
  /** Epoch ms until which the value may still be served stale (>= freshUntil); Redis drops the key then. */
  staleUntil: number;
  /** How long the loader took to produce this value, ms (XFetch's δ). 0 for values written with set(). */
  delta: number;
  tags: string[];
  /**
   * The entry's UTF-8 bytes as stored in Redis (its STRLEN), for an L1 with `maxBytes` to count: set on what a read
   * decodes or a write stores when that L1 measures (CacheEntryStore), absent otherwise.
   */
  bytes?: number;
}

/** An rxjs Observable (rxjs's own isObservable test, without importing rxjs). */
function isObservable(value: unknown): boolean {
  if (value === null || typeof value !== 'object') return false;
  const o = value as { lift?: unknown; subscribe?: unknown };
  return typeof o.lift === 'function' && typeof o.subscribe === 'function';
}

export function encodeEntry(entry: CacheEntry, serializer: Serializer): string {
  // JSON would store it as `{}`: the caller would get the Observable once and `{}` from then on.
  if (isObservable(entry.value)) {
    throw new SerializationError(
      'an Observable cannot be cached (it would be stored as {}): cache its value, e.g. return ' +
        'await lastValueFrom(observable) from the loader or the @Cacheable method',
    );
  }
  const header = `${entry.freshUntil},${entry.staleUntil},${Math.round(entry.delta)},${JSON.stringify(entry.tags)}`;
  if (typeof entry.value === 'string' && isPlainJson(serializer)) return `${header}${RAW_STRING}\n${entry.value}`;
  return `${header}\n${serializer.serialize(entry.value)}`;
}

/** The mark after the tags of an entry whose payload is its string value as it is (see CacheEntry). */
const RAW_STRING = 's';
const RAW_STRING_CODE = RAW_STRING.charCodeAt(0);

/** The value of an encoded entry whose header ends at `nl`: its payload as it is (RAW_STRING), or deserialized. */
function valueAt<T>(raw: string, nl: number, serializer: Serializer): T {
  return raw.charCodeAt(nl - 1) === RAW_STRING_CODE
    ? (raw.slice(nl + 1) as T)
    : serializer.deserialize<T>(raw.slice(nl + 1));
}

export function decodeEntry<T>(raw: string, serializer: Serializer): CacheEntry<T> {
  const nl = raw.indexOf('\n');
  const c1 = raw.indexOf(',');
  const c2 = raw.indexOf(',', c1 + 1);
  const c3 = raw.indexOf(',', c2 + 1);
  if (nl < 0 || c1 < 0 || c2 < 0 || c3 < 0 || c3 > nl)
    throw new SerializationError('stored cache entry has no valid header');
  const freshUntil = Number(raw.slice(0, c1));
  const staleUntil = Number(raw.slice(c1 + 1, c2));
  const delta = Number(raw.slice(c2 + 1, c3));
  const tagsJson = raw.slice(c3 + 1, raw.charCodeAt(nl - 1) === RAW_STRING_CODE ? nl - 1 : nl);
  let tags: string[] = [];
  if (tagsJson !== '[]') {
    try {
      tags = JSON.parse(tagsJson) as string[];
    } catch (err) {
      throw new SerializationError('stored cache entry has unreadable tags', { cause: err });
    }
  }
  if (!Number.isFinite(freshUntil) || !Number.isFinite(staleUntil) || !Number.isFinite(delta) || !Array.isArray(tags)) {
    throw new SerializationError('stored cache entry has an invalid header');
  }
  return { value: valueAt<T>(raw, nl, serializer), freshUntil, staleUntil, delta, tags };
}

/** The value of an encoded entry's payload (`raw` as encodeEntry wrote it). */
export function payloadOf<T>(raw: string, serializer: Serializer): T {
  return valueAt<T>(raw, raw.indexOf('\n'), serializer);
}

/**
 * A stable text for a list of arguments: object keys sorted (a class instance's prefixed with its class name), Dates
 * as ISO strings, undefined kept apart from null;
 * Map and Set by their entries (in a sorted order), URL, URLSearchParams and RegExp by their text, binary data by its
 * bytes. Throws for what has no stable text (functions, symbols, circular structures, and objects of a class whose
 * state is not in enumerable own properties — WeakMap, Promise, a class with only #private fields...): rendered as
 * `{}` those would make different arguments share one key.
 */
export function stableStringify(value: unknown, seen: Set<object> = new Set()): string {
  if (value === undefined) return 'u';
  if (value === null) return 'null';
  switch (typeof value) {
    case 'string':
      return JSON.stringify(value);
    case 'number':
    case 'boolean':
      return String(value);
    case 'bigint':
      return `${value.toString()}n`;
    case 'function':
    case 'symbol':
      throw new SerializationError(`a ${typeof value} argument has no stable cache key`);
    default:
      break;
  }
  const obj = value as object;
  if (obj instanceof Date) return `D${Number.isNaN(obj.getTime()) ? 'invalid' : obj.toISOString()}`;
  if (obj instanceof URL) return `URL${JSON.stringify(obj.href)}`;
  if (obj instanceof URLSearchParams) return `USP${JSON.stringify(obj.toString())}`;
  if (obj instanceof RegExp) return `RE${JSON.stringify(String(obj))}`;
  if (ArrayBuffer.isView(obj)) {
    const bytes = Buffer.from(obj.buffer, obj.byteOffset, obj.byteLength).toString('hex');
    return `${obj.constructor.name}(${bytes})`;
  }
  if (obj instanceof ArrayBuffer) return `ArrayBuffer(${Buffer.from(obj).toString('hex')})`;
  if (obj instanceof Number || obj instanceof String || obj instanceof Boolean) {
    return `${obj.constructor.name}(${stableStringify(obj.valueOf(), seen)})`;
  }
  if (seen.has(obj)) throw new SerializationError('a circular argument has no stable cache key');
  seen.add(obj);
  try {
    if (Array.isArray(obj)) return `[${obj.map((v) => stableStringify(v, seen)).join(',')}]`;
    if (obj instanceof Map) {
      const entries = [...obj].map(([k, v]) => `${stableStringify(k, seen)}=>${stableStringify(v, seen)}`);
      return `Map{${entries.sort().join(',')}}`;
    }
    if (obj instanceof Set)
      return `Set{${[...obj]
        .map((v) => stableStringify(v, seen))
        .sort()
        .join(',')}}`;
    const proto = Object.getPrototypeOf(obj) as object | null;
    const plain = proto === Object.prototype || proto === null;
    const name = plain ? '' : (obj.constructor as { name?: string } | undefined)?.name || 'object';
    if (!plain && Object.keys(obj).length === 0) {
      // A class instance with no enumerable own state (WeakMap, Promise, Error, #private fields): `{}` would be
      // shared by every such argument.
      throw new SerializationError(
        `a ${name} argument has no stable cache key (its state is not in enumerable properties): give @Cacheable a key`,
      );
    }
    const record = obj as Record<string, unknown>;
    const parts = Object.keys(record)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${stableStringify(record[k], seen)}`);
    // A class instance is named by its class: a User and a ServiceAccount (or a plain object) of the same fields are
    // different arguments.
    return `${name ? JSON.stringify(name) : ''}{${parts.join(',')}}`;
  } finally {
    seen.delete(obj);
  }
}
