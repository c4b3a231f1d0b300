import { InvalidKeyError, InvalidOptionsError } from '../common/errors.js';
import { MAX_DURATION_MS } from '../common/option-checks.js';
import {
  DEFAULT_SLIDING_WINDOW_MAX_LIMIT,
  RATE_LIMIT_ALGORITHMS,
  slidingWindowTooLarge,
  type RateLimitAlgorithm,
  type RateLimitPolicy,
} from './rate-limit.options.js';

/**
 * What a caller of RateLimitService gives at call time, checked before any Redis call: the key, and the policy with
 * its defaults filled in (InvalidKeyError / InvalidOptionsError naming the field).
 */

export interface ResolvedPolicy {
  limit: number;
  ttl: number;
  algorithm: RateLimitAlgorithm;
  burst: number;
  cost: number;
  /** ms a counter stays blocked after this policy refused a consume; 0 = none. */
  blockDuration: number;
}

/** Fills defaults and validates a policy given at call time (InvalidOptionsError naming the field). */
export function resolveCallPolicy(
  p: RateLimitPolicy,
  path: string,
  defaultAlgorithm: RateLimitAlgorithm,
  maxSlidingWindowLimit = DEFAULT_SLIDING_WINDOW_MAX_LIMIT,
): ResolvedPolicy {
  if (p === null || typeof p !== 'object') throw new InvalidOptionsError(`rate limit: ${path} must be an object`);
  const algorithm = p.algorithm ?? defaultAlgorithm;
  if (!isInt(p.limit, 1)) throw wrong(path, 'limit', 'an integer >= 1', p.limit);
  if (!isInt(p.ttl, 1) || p.ttl > MAX_DURATION_MS)
    throw wrong(path, 'ttl', `a whole number of milliseconds from 1 to ${MAX_DURATION_MS}`, p.ttl);
  if (!RATE_LIMIT_ALGORITHMS.includes(algorithm))
    throw wrong(path, 'algorithm', `one of ${RATE_LIMIT_ALGORITHMS.join(', ')}`, algorithm);
  if (algorithm === 'sliding-window' && p.limit > maxSlidingWindowLimit) {
    throw new InvalidOptionsError(`rate limit: ${path}.limit ${slidingWindowTooLarge(maxSlidingWindowLimit, p.limit)}`);
  }
  const burst = p.burst ?? p.limit;
  if (!isInt(burst, 1)) throw wrong(path, 'burst', 'an integer >= 1', p.burst);
  const cost = p.cost ?? 1;
  const capacity = algorithm === 'token-bucket' ? burst : p.limit;
  if (!isInt(cost, 0) || cost > capacity)
    throw wrong(path, 'cost', `an integer from 0 to ${capacity} (a larger cost could never be allowed)`, p.cost);
  const blockDuration = p.blockDuration ?? 0;
  if (!isInt(blockDuration, 0) || blockDuration > MAX_DURATION_MS)
    throw wrong(path, 'blockDuration', `a whole number of milliseconds from 0 to ${MAX_DURATION_MS}`, p.blockDuration);
  return { limit: p.limit, ttl: p.ttl, algorithm, burst, cost, blockDuration };
}

/** The counter of a policy when the caller names no scope: two different policies on one key never share one. */
export function defaultScope(p: ResolvedPolicy): string {
  return `${p.limit}/${p.ttl}`;
}

export function checkKey(key: unknown): void {
  if (typeof key !== 'string') throw new InvalidKeyError(`rate limit key must be a string, got ${typeof key}`);
  if (key.length === 0) throw new InvalidKeyError('rate limit key must not be empty');
}

function wrong(path: string, field: string, what: string, value: unknown): InvalidOptionsError {
  return new InvalidOptionsError(
    `rate limit: ${path}.${field} must be ${what}, got ${JSON.stringify(value) ?? String(value)}`,
  );
}

function isInt(value: unknown, min: number): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= min;
}
