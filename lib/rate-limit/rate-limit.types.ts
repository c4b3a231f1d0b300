import type { ResolvedPolicy } from './rate-limit.policy-resolver.js';
import type { RateLimitPolicy } from './rate-limit.options.js';

/** The outcome of one policy. */
export interface RateLimitResult {
  allowed: boolean;
  /**
   * The counter's capacity: the policy's limit (a token bucket's burst); with `degraded: 'insurance'`, the per-process
   * share the insurance limiter enforces.
   */
  limit: number;
  /** Units left (after this call's charge when it was allowed). */
  remaining: number;
  /** ms until the full limit is available again. */
  resetMs: number;
  /** 0 when allowed; otherwise ms until the same call would be allowed. */
  retryAfterMs: number;
  /**
   * Set when Redis could not decide: `fail-open` (allowed without counting in Redis) or `insurance` (decided by
   * the in-process limiter). In a decision's `results`, each result insurance decided says `insurance` (on a cluster
   * some trackers of a decision may be Redis's): pass it to `reward` to give that charge back (RewardOptions).
   */
  degraded?: 'fail-open' | 'insurance';
}

/** One counter of a multi-policy decision. */
export interface RateLimitCheck {
  /** Who is limited (an IP, a user id...). Hashed: any string is safe. Checks of one call should share it. */
  key: string;
  policy: RateLimitPolicy;
  /**
   * Which counter of that key (e.g. route + policy name). Default: derived from the policy, so two different
   * policies on one key never share a counter.
   */
  scope?: string;
  /** Shown in headers. Default `default`. */
  name?: string;
}

export interface RateLimitDecision {
  /** True only when every policy allowed the call (and then every one was charged). */
  allowed: boolean;
  /** The longest wait among the policies that refused; 0 when allowed. */
  retryAfterMs: number;
  results: (RateLimitResult & { name: string; policy: ResolvedPolicy })[];
  degraded?: 'fail-open' | 'insurance';
}

export interface ConsumeOptions {
  /** Override `rateLimit.failOpen` for this call. */
  failOpen?: boolean;
}

/** Which charge a `reward` gives back. */
export interface RewardOptions {
  /**
   * When the window of the charge given back ends, on `performance.now()`'s clock: the time read just before the
   * consume plus its `resetMs` (what the guard's refunds pass). A fixed window is then given the units back only while
   * that window counts: once a later window has opened, the reward changes nothing (it would free a unit of that
   * window's limit) and answers its units left. Sliding window and token bucket: not read.
   */
  windowEndsAt?: number;
  /**
   * The `degraded` of the result that made the charge (default: none, a charge Redis made). `insurance`: the charge
   * is given back to the insurance limiter's window of this process, never to Redis, which never saw it (also once
   * Redis is back), with no Redis call; a fixed window's `windowEndsAt` rule applies to it whatever the algorithm (its
   * windows are fixed). `fail-open`: nothing was charged, nothing is given back; resolves with the counter's capacity,
   * as that result said. `insurance` with `rateLimit.insurance` off is an InvalidOptionsError.
   */
  degraded?: 'fail-open' | 'insurance';
}

export interface RateLimitStats {
  /** Decisions made by Redis (and, for `denied`, by the block cache). */
  allowed: number;
  denied: number;
  /** Calls allowed because Redis was unreachable or slow (failOpen). */
  failedOpen: number;
  /** Calls refused because Redis was unreachable or slow (failOpen: false). */
  failedClosed: number;
  /** Of `denied`: refused by the in-process block cache (`rateLimit.blockCache`) without a Redis call. */
  deniedLocally: number;
  /** Calls decided by the in-process insurance limiter, and penalties it took while Redis was unreachable. */
  insurance: number;
  /**
   * Counters the insurance limiter dropped, their window or block still running, to store another within
   * `rateLimit.insurance.maxKeys` while it decided (Redis unreachable): each starts over with a fresh share (many
   * fresh keys in an outage, an attacker's churn included). Logged, at most once per `warnIntervalMs`.
   */
  insuranceDropped: number;
  /**
   * Calls Redis answered with an error (WRONGTYPE under a counter key, NOPERM, OOM...): each failed with a
   * RedisReplyError; never allowed, never decided by the failure policy.
   */
  replyErrors: number;
}

/** At most this many policies in one decision (one script call). */
export const MAX_POLICIES_PER_CALL = 32;

/** A check with its policy resolved and its counter key worked out. */
export interface PreparedCheck {
  key: string;
  policy: ResolvedPolicy;
  name: string;
  redisKey: string;
}

/** What one script call (or its fallback) decided for a group of checks. */
export interface GroupOutcome {
  allowed: boolean;
  results: RateLimitDecision['results'];
  degraded?: 'fail-open' | 'insurance';
  /** Refused by the in-process block cache: without a Redis call, or with Redis unreachable. */
  local?: true;
}

/** The service's own counts (replyErrors comes from the failure policy). */
export type DecisionCounters = Omit<RateLimitStats, 'replyErrors'>;
