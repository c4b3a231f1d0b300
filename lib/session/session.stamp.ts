import { randomBytes } from 'node:crypto';

/**
 * Every session this process writes from JSON it built starts with a stamp, `{"v":"/<token>"`, the token unique to
 * that write (this process's random tag and a counter). The compare-and-set then sends only the stamp of the value
 * it read (about 20 bytes) and Redis compares it with a GETRANGE of as many bytes, instead of both sides carrying and
 * comparing the whole session: measured on the session bench, a write sent half the bytes and cost Redis less CPU.
 *
 * A stamp stands for one write only: a merge in this process parses the value (the stamp is not part of the parsed
 * session) and stamps the result anew; the Lua scripts that re-encode a session with cjson drop it
 * (session-update.lua, session-store-touch.lua), and any cjson-encoded copy writes its `/` as `\/`, so a re-encoded
 * value never starts with the stamp it was read with. A value without one (written before stamps, or by a script)
 * is compared whole. Readers ignore `v`, so stamped and unstamped sessions read alike, in this version and the
 * previous one.
 */
export const STAMP_HEAD = '{"v":"/';

/** 8 base64url characters: no quote, slash or backslash can occur in a token. */
const processTag = randomBytes(6).toString('base64url');
let writes = 0;

/** `envelope` as stored: its JSON, stamped with a token no other write carries. */
export function stampedJson(envelope: object): string {
  const json = JSON.stringify(envelope);
  writes = writes === Number.MAX_SAFE_INTEGER ? 0 : writes + 1;
  const head = `${STAMP_HEAD}${processTag}${writes.toString(36)}"`;
  return json === '{}' ? `${head}}` : `${head},${json.slice(1)}`;
}

/**
 * What the compare-and-set expects to find for a value read: its stamp (`{"v":"/<token>"`, ending with the quote),
 * or the whole value when it has none.
 */
export function expectedOf(value: string): string {
  if (!value.startsWith(STAMP_HEAD)) return value;
  const end = value.indexOf('"', STAMP_HEAD.length);
  return end < 0 ? value : value.slice(0, end + 1);
}
