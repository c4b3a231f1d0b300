import { RedisUnavailableError, type RedisToolkitError } from '../common/errors.js';
import { type FailurePolicy, itemReplyError } from '../common/failure-policy.js';
import type { BlockCache } from './rate-limit.block-cache.js';
import type { InsuranceLimiter, InsuranceResult } from './rate-limit.insurance-limiter.js';
import { capacityOf, type ResolvedPolicy } from './rate-limit.policy-resolver.js';
import type { DecisionCounters, GroupOutcome, PreparedCheck } from './rate-limit.types.js';

/** consume.lua's allAllowed for a decision it could not make (an error reply under one of its keys). */
export const FAILED = -1;

/**
 * Counts a charging decision, once per call whatever the number of its script calls (one per tracker on a cluster):
 * decided by the insurance limiter (admitted or refused), failed open (always admitted), else admitted or refused by
 * Redis or the block cache. A failed-closed decision throws: the fallback counts it.
 */
export function countDecision(
  counters: DecisionCounters,
  outcome: Pick<GroupOutcome, 'allowed' | 'degraded' | 'local'>,
): void {
  if (outcome.degraded === 'insurance') counters.insurance++;
  else if (outcome.degraded === 'fail-open') counters.failedOpen++;
  else if (outcome.allowed) counters.allowed++;
  else {
    counters.denied++;
    if (outcome.local) counters.deniedLocally++;
  }
}

/**
 * One decision's meeting with an outage across its script calls (on a cluster, one per tracker): its warning is
 * logged (or counted in the throttled warning's count) once, as for the one script call of a decision on one server.
 */
export interface DecisionOutage {
  /** A script call of this decision already failed for want of Redis (and was warned about). */
  met: boolean;
  /** Redis (or the block cache, or insurance) already refused the call: a later failure only leaves figures unread. */
  refused: boolean;
}

/**
 * What a decision becomes when Redis could not make it. An error reply (NOPERM, WRONGTYPE, OOM) is thrown: only a
 * transport failure falls back: to a refusal when the block cache refuses one of its counters (Redis refused it until
 * then; all or nothing), else to the in-process insurance limiter when configured, else to the failOpen policy.
 * Called once per script call, so once per tracker of a decision on a cluster: a degraded outcome (fail-open,
 * insurance) is counted by the service once per decision (RateLimitService.count), not here; a failed-closed one is
 * counted here when it ends its decision (no `outage` given: one script call), else by the service. With an `outage`,
 * the warning is logged once per decision, and a failure after a refusal leaves the call refused (never thrown).
 */
export class DecisionFallback {
  constructor(
    private readonly failures: FailurePolicy,
    private readonly insurance: InsuranceLimiter | undefined,
    private readonly counters: DecisionCounters,
    private readonly failOpenByDefault: boolean,
    private readonly blockCache?: BlockCache,
  ) {}

  decide(
    group: readonly PreparedCheck[],
    mode: 'c' | 'p',
    failOpenOverride: boolean | undefined,
    err: unknown,
    outage?: DecisionOutage,
  ): GroupOutcome {
    const typed = this.failures.classify(err, 'decision');
    if (!(typed instanceof RedisUnavailableError)) throw typed;
    const first = outage?.met !== true;
    if (outage) outage.met = true;
    // the decision's first failed call is warned about (and thrown when failing closed); a later one is only thrown
    const unavailable = (failOpen: boolean, means: string) => {
      if (first) this.failures.unavailable(typed, failOpen, means);
      else if (!failOpen) throw typed;
    };
    // a counter the block cache refuses: refused as Redis would (until 2026-12-06, on one server a decision beside a
    // counter the cache held nothing of failed open, or was decided by insurance, or was a 503)
    const local = this.blockCache?.answer(group, this.unread(group));
    if (local) {
      unavailable(true, 'refused: the block cache holds a refusal Redis made for one of its counters');
      return local;
    }
    if (this.insurance) {
      unavailable(true, 'the in-process insurance limiter decides');
      // a peek carries the policy's cost, as its script call does: it answers what that consume would
      const checks = group.map((g) => ({ redisKey: g.redisKey, policy: g.policy, cost: g.policy.cost }));
      // the monotonic clock (a step of the wall clock would end every window, or stretch them by its size), in whole
      // ms as Redis's figures are (a fraction made a reset of 60000.0001 ms, 61 s in the headers)
      const decided = this.insurance.consume(checks, Math.floor(performance.now()), mode);
      return {
        allowed: decided.allowed,
        degraded: 'insurance',
        // limit: the per-process share insurance enforces (remaining counts down from it), not the policy's limit.
        // Each result says who decided it: on a cluster a decision's other trackers may be Redis's, and a refund of a
        // charge goes where it was made (RewardOptions.degraded; the guard's refunds)
        results: group.map(({ policy, name }, i) => ({ name, policy, ...decided.results[i], degraded: 'insurance' })),
      };
    }
    if (outage?.refused) {
      unavailable(true, "the call stays refused (another tracker's counter refused it); this counter was not read");
    } else {
      const failOpen = failOpenOverride ?? this.failOpenByDefault;
      if (mode === 'c' && !failOpen && outage === undefined) this.counters.failedClosed++;
      unavailable(failOpen, failOpen ? 'allowing requests (failOpen)' : 'refusing requests');
    }
    return { allowed: true, degraded: 'fail-open', results: this.unread(group) };
  }

  /**
   * Redis's answer to a charging decision of one counter: what insurance starts that counter from in the next outage
   * (InsuranceLimiter.learn; nothing without insurance). A counter a timed-out call charged in insurance is then
   * Redis's view again, which holds that call if its script ran after all (a paused server, resumed).
   */
  learn(redisKey: string, policy: ResolvedPolicy, answer: Omit<InsuranceResult, 'limit'>): void {
    this.insurance?.learn({ redisKey, policy }, answer);
  }

  /** A decision consume.lua could not make (its part of the reply: FAILED, the error text): that call fails alone. */
  itemFailed(raw: readonly (number | string)[]): RedisToolkitError {
    const err = itemReplyError('rate limiting decision', String(raw[1]));
    this.failures.replyFailed(err);
    return err;
  }

  /** The results of checks whose counters Redis could not read: as Redis answers an untouched counter. */
  unread(group: readonly PreparedCheck[]): GroupOutcome['results'] {
    return group.map(({ policy, name }) => ({
      name,
      policy,
      allowed: true,
      // as Redis answers: the counter's capacity (a token bucket's burst), all of it left
      limit: capacityOf(policy),
      remaining: capacityOf(policy),
      resetMs: 0,
      retryAfterMs: 0,
    }));
  }
}
