import { checkSessionSize, type SessionEnvelope } from './session.envelope.js';
import { CAS_CHANGED } from './session.batchers.js';
import { storeSetInLua } from './session.lua-writes.js';
import type { SessionRecords } from './session.records.js';
import { sessionValue } from './session.single-reads.js';
import { stampedJson } from './session.stamp.js';

/** Compare-and-set attempts before the set falls back to its atomic Lua script (as SessionRecords.update). */
const CAS_ATTEMPTS = 3;

/**
 * express-session's set, written (SessionRecords.storeSet queues it): the whole session replaced with a compare-and-set
 * against the value this process last saw (or a GET), keeping createdAt, the absolute deadline and the owner of a
 * live session; a session past its deadline by this process's clock or Redis's as estimated is live or gone as
 * Redis's clock says (SessionDeadline). After CAS_ATTEMPTS lost races, one Lua script.
 */
export async function storeSetNow(
  records: SessionRecords,
  id: string,
  fields: Omit<SessionEnvelope, 'c' | 'm'>,
  maxAgeMs: number,
): Promise<{ previousUserId: string; expiresAt: number } | 'tombstoned'> {
  const { client, index, recent } = records;
  const key = records.sessionKey(id);
  const now = Date.now();
  // a new session's createdAt, its deadline maxAgeMs later: Redis's clock as estimated (RedisClock), which judges the
  // deadline (until 2026-12-05 this process's clock: an hour behind Redis's with maxAgeMs 30 min, the key was deleted
  // at once; an hour ahead, the session lived an hour past maxAgeMs: session.clock-leftovers.spec.ts). One for every
  // attempt: the deadline of a new session stays the one indexed.
  let redisNow = records.deadline.now();
  let corrected = false;
  let current = recent.get(id) ?? (await sessionValue(client, key)) ?? '';
  let indexed = false;
  for (let attempt = 0; attempt < CAS_ATTEMPTS; attempt++) {
    let old = current === '' ? null : records.parse(id, current);
    // past its deadline by this clock or by the estimate of Redis's (this one may run behind, and a session without an
    // idle ttl, written 'none', is judged nowhere else): Redis's decides (gone: its key is deleted, a new one written)
    if (old !== null && old.m <= Math.max(now, redisNow) && !(await records.deadline.live(key, old.m, now)))
      [old, current] = [null, ''];
    const created = old ? old.c : redisNow;
    const deadline = old ? old.m : redisNow + Math.ceil(maxAgeMs);
    const previous = old ? old.u : '';
    if (fields.u !== '' && previous !== fields.u && !indexed) {
      await index.add(fields.u, id, deadline, true);
      indexed = true;
    }
    const envelope: SessionEnvelope = { c: created, m: deadline, ...fields };
    const json = stampedJson(envelope);
    checkSessionSize(records.size, [json]);
    // the idle ttl, timed by Redis's clock in the script, at most the deadline
    const reply = await records.compareAndSet(id, current, json, fields.t === 0 ? 'none' : fields.t, deadline);
    if (reply instanceof Error) throw reply;
    if (reply === CAS_CHANGED) {
      // changed meanwhile, its value not in the reply under a reply budget: read under it, and merged into again
      current = (await sessionValue(client, key)) ?? '';
      continue;
    }
    if (reply === -1) {
      recent.delete(id);
      return 'tombstoned';
    }
    if (typeof reply === 'number') {
      recent.set(id, json, envelope);
      if (indexed) await index.settled(fields.u, id);
      // the expiry the script set, by Redis's clock; 0: none, the session ends at its deadline
      return { previousUserId: previous, expiresAt: reply === 0 ? deadline : reply };
    }
    if (reply === null && current === '' && !corrected) {
      // a new session whose deadline Redis's clock had passed (nothing written): the estimate was not in (the store's
      // first TIME sample) and this clock runs behind Redis's by more than maxAgeMs. Once, the times from the store's
      // clock after a sample (the first one if still in flight), and indexed again with that deadline: one more round
      // trip, only then (as create's retry), and the estimate is in for every later call
      await records.deadline.sample();
      redisNow = records.deadline.now();
      [corrected, indexed] = [true, false];
      attempt--;
      continue;
    }
    current = reply ?? '';
  }
  recent.delete(id);
  return storeSetInLua(client, index, id, [key, records.tombstoneKey(id)], fields, maxAgeMs, redisNow, indexed);
}
