import { randomBytes } from 'node:crypto';
import { InvalidOptionsError } from '../common/errors.js';
import { durationProblem, isDuration } from '../common/option-checks.js';
import { MAX_TIMER_MS } from '../common/timeout.js';
import type { LockRetryOptions } from './lock.options.js';
import { monotonicNow } from './lock.clock.js';

/** Owner tokens: 128 random bits, base64url. Drawn from a pooled buffer (one getrandom call per 256 tokens). */
let pool = Buffer.alloc(0);
let poolOffset = 0;
export function newToken(): string {
  if (poolOffset + 16 > pool.length) {
    pool = randomBytes(16 * 256);
    poolOffset = 0;
  }
  poolOffset += 16;
  return pool.toString('base64url', poolOffset - 16, poolOffset);
}

/**
 * Fencing-token floors for quorum acquisitions: the client clock in µs, strictly increasing in this process. Every
 * node of one acquisition is sent the same floor, so while it is above their counters they all draw it as the token.
 */
let lastFloor = 0;
export function nextFenceFloor(): number {
  lastFloor = Math.max(lastFloor + 1, Date.now() * 1000);
  return lastFloor;
}

/**
 * The problem with a retry pause (`retry.delay` + `retry.jitter`) past MAX_TIMER_MS, or undefined: a longer one is
 * refused (a Node timer would fire it after 1 ms).
 */
export function retryPauseProblem(retry: { delay?: unknown; jitter?: unknown }): string | undefined {
  const { delay, jitter } = retry;
  if (typeof delay !== 'number' || typeof jitter !== 'number' || delay + jitter <= MAX_TIMER_MS) return undefined;
  return (
    `delay + jitter must be at most ${MAX_TIMER_MS} ms (~24.8 days, the longest pause a Node timer keeps), got ` +
    `${delay} + ${jitter}`
  );
}

/**
 * How long an acquisition keeps trying: `retry.count` more attempts, or until `deadline` when `waitMs` was given.
 * Both times are on the monotonic clock (monotonicNow): a wall clock stepped back an hour made a `waitMs: 5_000` wait
 * retry for an hour and five seconds, one stepped forward gave it up at once.
 */
export interface RetryPlan {
  readonly retry: Required<LockRetryOptions>;
  readonly startedAt: number;
  readonly deadline: number | undefined;
}

export function planRetries(
  options: { retry?: LockRetryOptions; waitMs?: number },
  defaults: Required<LockRetryOptions>,
): RetryPlan {
  const retry = options.retry === undefined ? defaults : { ...defaults, ...checkRetry(options.retry) };
  const problem = retryPauseProblem(retry);
  if (problem !== undefined) throw new InvalidOptionsError(`retry: ${problem}`);
  const { waitMs } = options;
  if (waitMs !== undefined && (typeof waitMs !== 'number' || !Number.isFinite(waitMs) || waitMs < 0)) {
    throw new InvalidOptionsError(`waitMs must be a non-negative number of milliseconds, got ${String(waitMs)}`);
  }
  const startedAt = monotonicNow();
  return { retry, startedAt, deadline: waitMs === undefined ? undefined : startedAt + waitMs };
}

/**
 * The pause before the next attempt in whole ms, or undefined when `attempt` (0-based) was the last one. Whole: Node
 * keeps a timer list per distinct delay, and fractional delays (a new one per wait) kept V8 from optimizing
 * setTimeout and ioredis's sendCommand ("maps became deprecated during optimization": 256 aborted compilations in
 * 4 s of 20 contending services): whole ms took a quarter off this process's CPU per lock (docs/lock.md, round 7).
 */
export function nextPause(plan: RetryPlan, attempt: number): number | undefined {
  const { retry, deadline } = plan;
  // at most what a timer keeps (planRetries refuses more; options built by hand skip that check)
  const pause = Math.min(Math.round(retry.delay + Math.random() * retry.jitter), MAX_TIMER_MS);
  if (deadline === undefined) return attempt >= retry.count ? undefined : pause;
  const left = deadline - monotonicNow();
  return left <= 0 ? undefined : Math.min(pause, Math.ceil(left)); // whole ms: the monotonic clock has fractions
}

export const describeAttempts = (plan: RetryPlan, attempt: number): string =>
  `${attempt + 1} attempt${attempt === 0 ? '' : 's'} in ${Math.round(monotonicNow() - plan.startedAt)} ms`;

export function checkRetry(retry: LockRetryOptions | undefined): Partial<LockRetryOptions> {
  if (retry === undefined) return {};
  if (retry === null || typeof retry !== 'object')
    throw new InvalidOptionsError('retry must be an object { count, delay, jitter }');
  const out: Partial<LockRetryOptions> = {};
  for (const name of ['count', 'delay', 'jitter'] as const) {
    const value = retry[name];
    if (value === undefined) continue;
    if (
      typeof value !== 'number' ||
      !Number.isFinite(value) ||
      value < 0 ||
      (name === 'count' && !Number.isInteger(value))
    ) {
      throw new InvalidOptionsError(
        `retry.${name} must be a non-negative ${name === 'count' ? 'integer' : 'number of milliseconds'}, got ` +
          `${String(value)}`,
      );
    }
    out[name] = value;
  }
  return out;
}

/** A call's `maxHoldMs` (checked: a duration or Infinity), else `fallback`. */
export function maxHoldOf(fallback: number, ms: number | undefined): number {
  if (ms === undefined) return fallback;
  if (ms !== Number.POSITIVE_INFINITY && !isDuration(ms)) {
    throw new InvalidOptionsError(`maxHoldMs ${durationProblem(ms)} (or Infinity)`);
  }
  return ms;
}

/**
 * A call's `ttl` (checked like every duration, at most 100 years: a longer one fails in Redis; whole ms), else
 * `fallback`. `where` names the caller in the error (`semaphore "jobs": ttl must be ...`).
 */
export function ttlOf(fallback: number, ttl: unknown, where?: string): number {
  if (ttl === undefined) return fallback;
  if (!isDuration(ttl))
    throw new InvalidOptionsError(`${where === undefined ? '' : `${where}: `}ttl ${durationProblem(ttl)}`);
  return Math.ceil(ttl);
}
