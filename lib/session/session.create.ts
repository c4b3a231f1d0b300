import { InvalidOptionsError, SessionNotFoundError } from '../common/errors.js';
import { diagnose } from '../common/diagnostics.js';
import { lastAccessOf, type RawSession, type SessionEnvelope } from './session.envelope.js';
import { generateSessionId } from './session.id.js';
import { createScript } from './session.lua-writes.js';
import type { SessionRecords } from './session.records.js';

/** New ids tried when one is taken (a broken random source) or tombstoned. */
const ID_ATTEMPTS = 3;

/**
 * What storing a new session did (createRecord): created, with the expiry it gave the key (epoch ms by Redis's clock;
 * 0: none); 'taken' (the id exists); 'tombstoned' (destroyed recently); or, nothing written, the deadline had come by
 * Redis's clock, which read `redisNow` then (session-create.lua).
 */
export type CreateOutcome = number | 'taken' | 'tombstoned' | { pastDeadline: true; redisNow: number };

/** Stores a new session (`json` from SessionRecords.encode() of `envelope`; t 0: no Redis expiry). */
export async function createRecord(
  records: SessionRecords,
  id: string,
  json: string,
  { t, m }: SessionEnvelope,
): Promise<CreateOutcome> {
  const keys = [records.sessionKey(id), records.tombstoneKey(id)];
  const created = await createScript.run(records.client, keys, [json, t === 0 ? 'none' : t, m]);
  if (created >= 0) {
    records.recent.set(id, json);
    return created;
  }
  return created === -1 ? 'tombstoned' : created === -2 ? 'taken' : { pastDeadline: true, redisNow: -created };
}

/**
 * SessionService.create: a session for `userId` with a fresh 256-bit id, indexed before it is written. Its createdAt is
 * now by Redis's clock as this process estimates it (RedisClock, no command), its deadline `maxAgeMs` later: Redis's
 * clock judges the deadline. From this process's clock (until 2026-12-05), an instance running more than `maxAgeMs`
 * behind Redis's made a session whose deadline had passed, so its key, written with PXAT in Redis's past, was deleted
 * at once, and create resolved with the id of a session that did not exist (test/session/session.clock-behind.spec.ts).
 * Should the estimate be off by that much (not in yet, TIME refused), the script refuses the write and answers Redis's
 * TIME, and the times are made from it: one more round trip, only then.
 */
export async function newSession(
  records: SessionRecords,
  userId: string,
  ttl: number,
  maxAgeMs: number,
  d: Record<string, string>,
  settle: (userId: string, id: string) => void,
): Promise<{ id: string; session: RawSession }> {
  let tombstoned = 0;
  let correction = 0; // Redis's clock less the estimate, when the script found the estimate that far off
  let corrected = false;
  for (let attempt = 0; attempt < ID_ATTEMPTS; attempt++) {
    const id = generateSessionId();
    // createdAt on the deadline's clock too: the session ends exactly maxAgeMs after its createdAt
    const redisNow = records.deadline.now() + correction;
    const envelope: SessionEnvelope = { u: userId, c: redisNow, m: redisNow + maxAgeMs, t: ttl, d };
    const json = records.encode(envelope);
    // The index entry first: destroyAllForUser reads the index, so a session must never exist unindexed.
    await records.index.add(userId, id, envelope.m, true);
    const created = await createRecord(records, id, json, envelope);
    if (typeof created !== 'number') {
      // A 2^-256 collision, or destroyAllForUser saw the id in the index and tombstoned it: try another id.
      if (created === 'tombstoned') tombstoned++;
      await records.index.remove(userId, [id]);
      if (typeof created === 'object') {
        // once: again means maxAgeMs ran out within the round trip
        if (corrected) throw new InvalidOptionsError(`session maxAgeMs (${maxAgeMs} ms) ran out while creating it`);
        corrected = true;
        correction += created.redisNow - redisNow;
        attempt--; // not an id problem
      }
      continue;
    }
    settle(userId, id);
    diagnose('sessionCreate', () => ({ feature: 'session', operation: 'create', outcome: 'created', ttl }));
    // the expiry Redis holds, as a later read reports it; lastAccessedAt as such a read derives it from that
    const session = { envelope, expiresAt: created, lastAccessedAt: lastAccessOf(envelope, created, Date.now()) };
    return { id, session };
  }
  if (tombstoned > 0) {
    throw new SessionNotFoundError(
      'the new session was destroyed while being created (destroyAllForUser ran meanwhile)',
    );
  }
  throw new InvalidOptionsError('could not allocate a session id (random source broken?)');
}
