import { RedisUnavailableError } from '../common/errors.js';
import type { FailurePolicy } from '../common/failure-policy.js';
import type { InsuranceLimiter } from './rate-limit.insurance-limiter.js';
import { capacityOf } from './rate-limit.policy-resolver.js';
import type { DecisionCounters, GroupOutcome, PreparedCheck } from './rate-limit.types.js';

/**
 * What a decision becomes when Redis could not make it. An error reply (NOPERM, WRONGTYPE, OOM) is thrown: only a
 * transport failure falls back, to the in-process insurance limiter when configured, else to the failOpen policy.
 * Called once per script call, so once per tracker of a decision on a cluster: a degraded outcome (fail-open,
 * insurance) is counted by the service once per decision (RateLimitService.count), not here; a failed-closed one is
 * counted here, as it throws and so ends its decision.
 */
export class DecisionFallback {
  constructor(
    private readonly failures: FailurePolicy,
    private readonly insurance: InsuranceLimiter | undefined,
    private readonly counters: DecisionCounters,
    private readonly failOpenByDefault: boolean,
  ) {}

  decide(
    group: readonly PreparedCheck[],
    mode: 'c' | 'p',
    failOpenOverride: boolean | undefined,
    err: unknown,
  ): GroupOutcome & { degraded: 'fail-open' | 'insurance' } {
    const typed = this.failures.classify(err, 'decision');
    if (!(typed instanceof RedisUnavailableError)) throw typed;
    if (this.insurance) {
      this.failures.unavailable(typed, true, 'the in-process insurance limiter decides');
      // a peek carries the policy's cost, as its script call does: it answers what that consume would
      const checks = group.map((g) => ({ redisKey: g.redisKey, policy: g.policy, cost: g.policy.cost }));
      const decided = this.insurance.consume(checks, Date.now(), mode);
      return {
        allowed: decided.allowed,
        degraded: 'insurance',
        // limit: the per-process share insurance enforces (remaining counts down from it), not the policy's limit
        results: group.map(({ policy, name }, i) => ({ name, policy, ...decided.results[i] })),
      };
    }
    const failOpen = failOpenOverride ?? this.failOpenByDefault;
    if (mode === 'c' && !failOpen) this.counters.failedClosed++;
    this.failures.unavailable(typed, failOpen, failOpen ? 'allowing requests (failOpen)' : 'refusing requests');
    return {
      allowed: true,
      degraded: 'fail-open',
      results: group.map(({ policy, name }) => ({
        name,
        policy,
        allowed: true,
        // as Redis answers: the counter's capacity (a token bucket's burst), all of it left
        limit: capacityOf(policy),
        remaining: capacityOf(policy),
        resetMs: 0,
        retryAfterMs: 0,
      })),
    };
  }
}
