import type { RedisClient } from '../../lib/common/lua-script.js';
import { RedisSessionStore, type SessionService } from '../../lib/index.js';
import type { SessionRecords } from '../../lib/session/session.records.js';
import type { RedisSessionStoreOptions } from '../../lib/session/session.store-options.js';
import { clientFor } from './clients.js';
import { realNow, restoreClocks, shiftDateNow } from './clock-shift.js';
import { waitFor } from './wait.js';

/** The session records behind a store or a SessionService (its private `records`). */
export const recordsOf = (o: RedisSessionStore | SessionService): SessionRecords =>
  (o as unknown as { records: SessionRecords }).records;

/**
 * Waits (up to 5 s, and expects it) until the estimate of Redis's clock of `o`'s records (RedisClock, through
 * SessionDeadline) reads within 1 s of the real clock, which the shared servers run on: its first TIME sample, sent
 * when `o` was constructed, is in. Until then the estimate is Date.now(), so on a clock that is not shifted the wait
 * holds at once. `askShifted`: the estimate is asked with Date.now() shifted by that many ms, and the real clocks after
 * each asking (restoreClocks). Resolves to the records.
 */
export async function clockEstimated(
  o: RedisSessionStore | SessionService,
  askShifted?: number,
): Promise<SessionRecords> {
  const records = recordsOf(o);
  const inYet = () => Math.abs(records.deadline.now() - realNow()) < 1_000;
  expect(await waitFor(askShifted === undefined ? inYet : () => askedShifted(askShifted, inYet), 5_000)).toBe(true);
  return records;
}

function askedShifted<T>(shift: number, run: () => T): T {
  shiftDateNow(shift);
  try {
    return run();
  } finally {
    restoreClocks();
  }
}

/**
 * A store on a client of its own of the shared single server (clientFor, a PING answered before the store is made),
 * its estimate of Redis's clock in (clockEstimated).
 */
export async function singleStoreEstimated(
  options: Omit<RedisSessionStoreOptions, 'client'>,
): Promise<{ client: RedisClient; store: RedisSessionStore }> {
  const client = clientFor('single');
  await client.ping();
  const store = new RedisSessionStore({ client, ...options });
  await clockEstimated(store);
  return { client, store };
}
