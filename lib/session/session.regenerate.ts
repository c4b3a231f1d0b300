import { InvalidOptionsError, SessionNotFoundError } from '../common/errors.js';
import { parseEnvelope, type RawSession, type SessionEnvelope } from './session.envelope.js';
import { generateSessionId } from './session.id.js';
import type { SessionRecords } from './session.records.js';
import { createRecord } from './session.create.js';
import { sessionValue } from './session.single-reads.js';

/** New ids tried when one is taken (a broken random source). */
const ID_ATTEMPTS = 3;
/** Copies a regenerate makes of a session whose updates keep coming before its destroy. */
const COPY_ATTEMPTS = 8;

/**
 * SessionService.regenerate: the session under a new id (same user, data, createdAt and absolute deadline), the old
 * id destroyed with a tombstone. The old value is copied, and destroyed only while it still holds what was copied:
 * an update that came in between is copied again (before 2026-12-05 it resolved and was lost with the old id). Past
 * COPY_ATTEMPTS copies the old id is destroyed whatever it holds, as before. SessionNotFoundError when the session is
 * gone, or destroyed meanwhile (then the new id is destroyed too: at most one of the two is ever live), or past its
 * deadline by Redis's clock (then the old key is deleted). Until 2026-12-05 the deadline was judged by this process's
 * clock only: from one behind Redis's, the touching reads of which keep a key past its deadline, the copy was written
 * with PXAT in Redis's past, deleted at once, and regenerate answered the id of a session that did not exist.
 */
export async function moveSession(
  records: SessionRecords,
  id: string,
  tombstoneMs: number,
  hooks: { settle(userId: string, id: string): void; revoke(ids: string[]): Promise<void> },
): Promise<{ id: string; session: RawSession }> {
  for (let attempt = 0, copies = 1; attempt < ID_ATTEMPTS; attempt++, copies++) {
    const key = records.sessionKey(id);
    const raw = await sessionValue(records.client, key);
    const old = raw === null ? null : parseEnvelope(raw);
    const now = Date.now();
    const redisNow = records.deadline.now();
    // past its deadline by Redis's clock as estimated here (RedisClock): Redis's own decides (SessionDeadline)
    if (raw === null || !old || (old.m <= redisNow && !(await records.deadline.live(key, old.m, redisNow)))) {
      throw new SessionNotFoundError('session not found (expired or destroyed)');
    }
    const { u: userId, c, m, t, d } = old;
    const next = generateSessionId();
    const envelope: SessionEnvelope = { u: userId, c, m, t, d };
    // Indexed before it exists, as in create().
    if (userId !== '') await records.index.add(userId, next, m, false);
    // a session without an idle ttl (t 0, RedisSessionStore's disableTTL) keeps a key without expiry (create: 'none')
    const created = await createRecord(records, next, records.encode(envelope), envelope);
    if (typeof created !== 'number') {
      if (userId !== '') await records.index.remove(userId, [next]);
      if (typeof created !== 'object') continue;
      // Redis's clock has passed the deadline (the estimate had not: not in yet, or off): nothing copied, and the old
      // session is over, gone as if Redis had expired it (PEXPIREAT m LT, m in Redis's past, deletes the key), as an
      // update's compare-and-set deletes it
      records.recent.delete(id);
      await records.client.pexpireat(key, m, 'LT');
      throw new SessionNotFoundError('session not found (expired or destroyed)');
    }
    // the expiry the script set, by Redis's clock; 0: none, the session ends at its deadline
    const expiresAt = created === 0 ? m : created;
    if (userId !== '') hooks.settle(userId, next);
    // Only the caller that destroys the old id wins; anyone else (a concurrent destroy or regenerate) loses.
    const destroyed = await records.destroyIf(id, tombstoneMs, '0', copies < COPY_ATTEMPTS ? raw : undefined);
    if (destroyed === null || destroyed === -1) {
      await records.destroy(next, tombstoneMs);
      if (userId !== '') await records.index.remove(userId, [next]);
      if (destroyed === null) throw new SessionNotFoundError('session not found (destroyed while regenerating)');
      attempt--; // an update came first, not an id taken: copy again
      continue;
    }
    if (userId !== '') await records.index.remove(userId, [id]);
    await hooks.revoke([id]);
    return { id: next, session: { envelope, expiresAt, lastAccessedAt: now } };
  }
  throw new InvalidOptionsError('could not allocate a session id (random source broken?)');
}
