import { InvalidKeyError, InvalidOptionsError } from '../common/errors.js';
import { refuseUnknownPolicyKeys } from './rate-limit.option-names.js';
import {
  DEFAULT_SLIDING_WINDOW_MAX_LIMIT,
  policyProblems,
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

/**
 * Fills defaults and validates a policy given at call time with policyProblems, the check the start-up options and
 * @Throttle use too (InvalidOptionsError naming the first wrong field, or a key RateLimitPolicy does not have).
 */
export function resolveCallPolicy(
  p: RateLimitPolicy,
  path: string,
  defaultAlgorithm: RateLimitAlgorithm,
  maxSlidingWindowLimit = DEFAULT_SLIDING_WINDOW_MAX_LIMIT,
): ResolvedPolicy {
  if (p === null || typeof p !== 'object') throw new InvalidOptionsError(`rate limit: ${path} must be an object`);
  // a misspelled key (`algoritm`) would run the defaults without a word
  refuseUnknownPolicyKeys(p, `rate limit ${path}`);
  const problem = policyProblems(p, defaultAlgorithm, maxSlidingWindowLimit)?.[0];
  if (problem) throw new InvalidOptionsError(`rate limit: ${path}.${problem[0]} ${problem[1]}`);
  return {
    limit: p.limit,
    ttl: p.ttl,
    algorithm: p.algorithm ?? defaultAlgorithm,
    burst: p.burst ?? p.limit,
    cost: p.cost ?? 1,
    blockDuration: p.blockDuration ?? 0,
  };
}

/** A counter's capacity, the `limit` of every answer about it: a token bucket's burst, a window's limit. */
export function capacityOf(p: Pick<ResolvedPolicy, 'algorithm' | 'limit' | 'burst'>): number {
  return p.algorithm === 'token-bucket' ? p.burst : p.limit;
}

/** The counter of a policy when the caller names no scope: two different policies on one key never share one. */
export function defaultScope(p: Pick<RateLimitPolicy, 'limit' | 'ttl'>): string {
  return `${p.limit}/${p.ttl}`;
}

export function checkKey(key: unknown): void {
  if (typeof key !== 'string') throw new InvalidKeyError(`rate limit key must be a string, got ${typeof key}`);
  if (key.length === 0) throw new InvalidKeyError('rate limit key must not be empty');
}
