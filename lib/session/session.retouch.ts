import { LuaScript, type RedisClient } from '../common/lua-script.js';
import { MAX_DURATION_MS } from '../common/option-checks.js';
import type { SessionEnvelope } from './session.envelope.js';
import { underBudget } from './session.single-reads.js';

/** The expiry corrected with no value in the reply (session-retouch.lua): only under a reply budget. */
const retouchScript = LuaScript.fromFile<number>('rtk_sess_retouch', 'session/session-retouch.lua', 1);

/*
 * The corrections of a session key's expiry after a touching read or an appended change (SessionRecords.read,
 * SessionAppends): GETEX PX or PERSIST, whose replies carry the session whole. Under a server's reply limit
 * (reply-budget.ts) that reply, beside the budgeted reads in flight on the connection, could pass the limit: there the
 * same commands run in session-retouch.lua, whose reply is the key's expiry alone. Without a limit, the GETEXs as
 * they were.
 */

/**
 * The expiry of a session the touching read gave `ttl`, corrected: its own idle ttl (`GETEX key PX t`, timed by
 * Redis's clock as the read's was; never `PEXPIREAT now + t` from this process's, which from a clock behind Redis's
 * deleted the session), then, when its deadline comes first by Redis's clock as estimated here (`redisNow`,
 * RedisClock), `PEXPIREAT key m LT`: the deadline only where it comes before the idle expiry by Redis's own clock,
 * so an estimate off (by at most half a TIME round trip, until the next sample) never lets an idle session live
 * until its deadline, and a clock behind Redis's no longer sends the cap late. Both in one round trip.
 */
export async function retouch(
  client: RedisClient,
  key: string,
  { t, m }: SessionEnvelope,
  ttl: number,
  redisNow: number,
): Promise<void> {
  if (m >= redisNow + t) {
    if (underBudget(client)) await retouchScript.run(client, [key], [t, '']);
    else await client.getex(key, 'PX', t);
  } else if (t === ttl) await client.pexpireat(key, m, 'LT');
  else {
    // (a ttl an earlier version stored past Redis's range, 1e19: capped, the deadline comes first anyway)
    const own = Math.min(t, MAX_DURATION_MS);
    if (underBudget(client)) return void (await retouchScript.run(client, [key], [own, m]));
    const replies = await client.pipeline().getex(key, 'PX', own).pexpireat(key, m, 'LT').exec();
    for (const [err] of replies ?? []) if (err) throw err;
  }
}

/**
 * No idle ttl (t 0): the key keeps no expiry, the one a touching read gave it before the value was known goes (GETEX
 * PERSIST: a command the startup ACL check already asks for, where PERSIST would need a rule of its own).
 */
export async function persist(client: RedisClient, key: string): Promise<void> {
  if (underBudget(client)) await retouchScript.run(client, [key], ['persist', '']);
  else await client.getex(key, 'PERSIST');
}

/**
 * The key's idle expiry made from the session's own ttl and deadline (`t`, `m`) after an appended change
 * (SessionAppends.reexpire): `GETEX PX t` then `PEXPIREAT m LT`, or GETEX PERSIST for none, and PEXPIRETIME, one
 * pipeline (one key, one slot). The key's PEXPIRETIME after (-1: none, -2: gone).
 */
export async function reexpireKey(client: RedisClient, key: string, { t, m }: SessionEnvelope): Promise<number> {
  const own = Math.min(t, MAX_DURATION_MS);
  if (underBudget(client)) return Number(await retouchScript.run(client, [key], t === 0 ? ['persist', ''] : [own, m]));
  const pipeline = client.pipeline();
  if (t === 0) pipeline.getex(key, 'PERSIST');
  else pipeline.getex(key, 'PX', own).pexpireat(key, m, 'LT');
  const replies = (await pipeline.pexpiretime(key).exec()) ?? [];
  for (const [err] of replies) if (err) throw err;
  return Number(replies[replies.length - 1]?.[1] ?? -2);
}
