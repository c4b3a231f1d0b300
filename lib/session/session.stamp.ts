import { randomBytes } from 'node:crypto';
import type { SessionEnvelope } from './session.envelope.js';

/**
 * Every session this process writes from JSON it built ends with a stamp, `"v":"/<token>"}` (its last field), the token
 * unique to that write (this process's random tag and a counter). The compare-and-set then sends only the stamp of the
 * value it read (about 20 bytes), and Redis reads as many bytes from the end of the value with one GETRANGE: they are
 * the stamp only if the session is still exactly that value, with nothing appended to it (`session.appendUpdates`
 * appends changes behind a session). Both sides carrying and comparing the whole session cost
 * Redis more CPU and sent twice the bytes (measured on the session bench).
 *
 * A stamp stands for one write only: a merge in this process parses the value (the stamp is not part of the parsed
 * session) and stamps the result anew; the Lua scripts that re-encode a session with cjson drop it
 * (session-update.lua, session-store-touch.lua), and any cjson-encoded copy writes its `/` as `\/`, so a re-encoded
 * value never carries the stamp it was read with. A value without one (written before stamps, or by a script) is
 * compared whole; one stamped at its head, `{"v":"/<token>"`, as versions before this one wrote them, is compared by
 * that stamp and its length. Readers ignore `v`, so all of them read alike, in this version and the previous ones.
 */
const STAMP_FIELD = '"v":"/';
/** How a session written by an earlier version starts when it is stamped. */
const HEAD_STAMP = '{"v":"/';

/** 8 base64url characters: no quote, slash or backslash can occur in a token. */
const processTag = randomBytes(6).toString('base64url');
let writes = 0;

/** A new stamp as the last field of a session's JSON: `,"v":"/<token>"}` (session.splice.ts). */
export function newStamp(): string {
  writes = writes === Number.MAX_SAFE_INTEGER ? 0 : writes + 1;
  return `,"v":"/${processTag}${writes.toString(36)}"}`;
}

/**
 * `envelope` as stored: its JSON, stamped with a token no other write carries. One JSON.stringify of an object with
 * the stamp as its last field (a token needs no escaping), not the JSON cut and joined to the stamp: that made a
 * string of two parts, which ioredis's Buffer.byteLength then copied into one before the socket write.
 */
export function stampedJson(envelope: SessionEnvelope): string {
  writes = writes === Number.MAX_SAFE_INTEGER ? 0 : writes + 1;
  const { u, c, m, t, d, k } = envelope;
  return JSON.stringify({ u, c, m, t, d, k, v: `/${processTag}${writes.toString(36)}` });
}

/**
 * The stamp `value` ends its session's JSON with (`"v":"/<token>"}`), where that JSON ends (`end`, in UTF-16 units: the
 * first line feed, before any changes appended to it, or the value's end); undefined when it has none.
 */
function tailStampOf(value: string): { stamp: string; end: number } | undefined {
  const feed = value.indexOf('\n');
  const end = feed < 0 ? value.length : feed;
  if (value.charCodeAt(end - 1) !== 125 || value.charCodeAt(end - 2) !== 34) return undefined; // '"}'
  const at = value.lastIndexOf(STAMP_FIELD, end - 2);
  // a token has no quote: a quote between the field and the end means `v` is not the last field
  if (at < 0 || value.indexOf('"', at + STAMP_FIELD.length) !== end - 2) return undefined;
  return { stamp: value.slice(at, end), end };
}

/** Whether `value` carries a stamp (this version's, or an earlier one's at its head). */
export function isStamped(value: string): boolean {
  return tailStampOf(value) !== undefined || headStampOf(value) !== undefined;
}

function headStampOf(value: string): string | undefined {
  if (!value.startsWith(HEAD_STAMP)) return undefined;
  const end = value.indexOf('"', HEAD_STAMP.length);
  return end < 0 ? undefined : value.slice(0, end + 1);
}

/**
 * What the compare-and-set expects to find for a value read (the Lua scripts parse it: session-holds.lua):
 * - `"v":"/<token>"}`: its stamp, which ends it;
 * - `"v":"/<token>"}@<end>:<length>`: its stamp, the byte after it, and the value's length in bytes, with changes
 *   appended behind the stamp;
 * - `{"v":"/<token>"<length>`: the stamp an earlier version wrote at the head, and the length;
 * - the whole value, when it has no stamp.
 * `bytes` and `changeBytes`: the value's UTF-8 length and that of the changes appended to it, when the caller knows
 * them.
 */
export function expectedOf(value: string, bytes?: number, changeBytes?: number): string {
  const tail = tailStampOf(value);
  if (tail !== undefined) {
    if (tail.end === value.length) return tail.stamp;
    const length = bytes ?? Buffer.byteLength(value);
    const end = changeBytes !== undefined ? length - changeBytes : Buffer.byteLength(value.slice(0, tail.end));
    return `${tail.stamp}@${end}:${length}`;
  }
  const head = headStampOf(value);
  return head === undefined ? value : `${head}${bytes ?? Buffer.byteLength(value)}`;
}
