import { LuaScript, type RedisClient, type ScriptArg } from '../common/lua-script.js';
import { lastAccessOf, parseEnvelope, type RawSession, type SessionEnvelope } from './session.envelope.js';
import { IDLE_EXPIRY } from './session.deadline.js';
import { withSessionReply } from './session.single-reads.js';
import type { SessionUserIndex } from './session.user-index.js';

/**
 * The writes of sessions that are one Lua script each: create, destroy and express-session's touch, and the merges
 * that decode the stored JSON with cjson (update, express-session's set): atomic, so they never lose a race, but they
 * cost Redis several times the CPU of the compare-and-set (session.records.ts), which falls back to them only after
 * losing CAS_ATTEMPTS races in a row.
 */

/**
 * Creates a session unless its id exists or is tombstoned (SessionRecords.create): the expiry it gave the key (epoch ms
 * by Redis's clock; 0: none), -2 when the id is taken, -1 when tombstoned.
 */
export const createScript = LuaScript.fromFile<number>('rtk_sess_create', 'session/session-create.lua', 2, [
  IDLE_EXPIRY,
]);
/**
 * Deletes a session and leaves its tombstone (SessionRecords.destroy); with a copied value (regenerate), only while the
 * session still holds it: -1 otherwise.
 */
export const destroyScript = LuaScript.fromFile<string | null | -1>(
  'rtk_sess_destroy',
  'session/session-destroy.lua',
  2,
);
/** express-session's touch (SessionRecords.storeTouch). */
export const storeTouchScript = LuaScript.fromFile<number>(
  'rtk_sess_store_touch',
  'session/session-store-touch.lua',
  1,
  [IDLE_EXPIRY],
);
/** The atomic merge in Lua. */
const updateScript = LuaScript.fromFile<[string, number] | -1 | null>(
  'rtk_sess_update',
  'session/session-update.lua',
  1,
  [IDLE_EXPIRY],
);
/** express-session's set in one script. */
const storeSetScript = LuaScript.fromFile<[string, number] | [string, number, 'unindexed'] | -1>(
  'rtk_sess_store_set',
  'session/session-store-set.lua',
  2,
  [IDLE_EXPIRY],
);

/** SessionRecords.update in one script: the merged session, null when gone, 'too large' when over `maxSize`. */
export async function updateInLua(
  client: RedisClient,
  key: string,
  maxSize: number,
  touch: boolean,
  sets: [string, string][],
  deletes: string[],
): Promise<RawSession | null | 'too large'> {
  const now = Date.now();
  const args: ScriptArg[] = [touch ? '1' : '0', maxSize, sets.length];
  for (const [f, v] of sets) args.push(f, v);
  args.push(...deletes);
  // its reply is the merged session, at most maxSize: that much of the reply budget is reserved first (at once without
  // a server limit), as a read's (session.single-reads.ts)
  const reply = await withSessionReply(client, key, maxSize, () => updateScript.run(client, [key], args));
  if (reply === -1) return 'too large';
  if (!reply) return null;
  const envelope = parseEnvelope(reply[0]);
  if (!envelope) return null;
  // the expiry by Redis's clock; -1: the key has no expiry (a session without an idle ttl, t 0), it still ends at its
  // absolute deadline
  const expiresAt = Number(reply[1]) > 0 ? Number(reply[1]) : envelope.m;
  return { envelope, expiresAt, lastAccessedAt: touch ? now : lastAccessOf(envelope, expiresAt, now) };
}

/**
 * SessionRecords.storeSet in one script (`keys`: session, tombstone); `indexed` when the caller already put the id in
 * the new owner's index.
 */
export async function storeSetInLua(
  client: RedisClient,
  index: SessionUserIndex,
  id: string,
  keys: [string, string],
  fields: Omit<SessionEnvelope, 'c' | 'm'>,
  maxAgeMs: number,
  now: number,
  indexed: boolean,
): Promise<{ previousUserId: string; expiresAt: number } | 'tombstoned'> {
  const args: ScriptArg[] = [now, Math.ceil(maxAgeMs), fields.t, JSON.stringify(fields), indexed ? '' : fields.u];
  let reply = await storeSetScript.run(client, keys, args);
  if (reply !== -1 && reply.length === 3) {
    await index.add(fields.u, id, Number(reply[1]), true);
    indexed = true;
    // The same `now`: the deadline of a new session is the one just indexed.
    args[4] = '';
    reply = await storeSetScript.run(client, keys, args);
  }
  if (reply !== -1 && indexed) await index.settled(fields.u, id);
  if (reply === -1) return 'tombstoned';
  return { previousUserId: String(reply[0]), expiresAt: Number(reply[1]) };
}
