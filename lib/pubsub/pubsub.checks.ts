import { InvalidOptionsError } from '../common/errors.js';

/**
 * The largest `limit` replay accepts. Any integer up to it is a valid XRANGE COUNT, and the gateway's `maxReplay`
 * (an integer option) reaches replay unchanged; a stream holds about `durable.maxLen` entries, so that is what a
 * larger limit reads.
 */
export const MAX_REPLAY_LIMIT = Number.MAX_SAFE_INTEGER;

/**
 * InvalidOptionsError unless `limit` is an integer from 1 to MAX_REPLAY_LIMIT: 1.5, Infinity, NaN or 1e20 reached
 * XRANGE COUNT, which Redis refused, and was counted and logged as a Redis failure.
 */
export function checkReplayLimit(limit: unknown): void {
  if (typeof limit === 'number' && Number.isInteger(limit) && limit >= 1 && limit <= MAX_REPLAY_LIMIT) return;
  const shown = typeof limit === 'string' ? JSON.stringify(limit.slice(0, 60)) : String(limit);
  throw new InvalidOptionsError(`replay limit must be an integer from 1 to ${MAX_REPLAY_LIMIT}, got ${shown}`);
}
