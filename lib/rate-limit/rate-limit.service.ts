import { Inject, Injectable, Logger, type OnModuleDestroy } from '@nestjs/common';
import { InvalidOptionsError, RateLimitExceededError } from '../common/errors.js';
import { FailurePolicy } from '../common/failure-policy.js';
import { KeyBuilder } from '../common/keys.js';
import { ThrottledWarning } from '../common/throttled-logger.js';
import type { ScriptArg } from '../common/lua-script.js';
import type { EvictionPolicyCheck } from '../connection/eviction-policy-check.js';
import { RedisConnection } from '../connection/redis-connection.js';
import { FEATURE_CONNECTION } from '../connection/redis-connections.js';
import {
  capacityOf,
  checkKey,
  defaultScope,
  resolveCallPolicy,
  type ResolvedPolicy,
} from './rate-limit.policy-resolver.js';
import { RateLimitAdmin, type CounterRef } from './rate-limit.admin.js';
import { BlockCache } from './rate-limit.block-cache.js';
import { DecisionBatcher } from './rate-limit.decision-batcher.js';
import { countDecision, DecisionFallback, FAILED, type DecisionOutage } from './rate-limit.fallback.js';
import { rateLimitEvictionCheck } from './rate-limit.eviction-check.js';
import { decideByTracker } from './rate-limit.tracker-groups.js';
import {
  decisionObserved,
  diagnosed,
  groupBy,
  redisResults,
  resetNotBeforeRetry,
  toResult,
} from './rate-limit.results.js';
import { BLOCK_SUFFIX, policySpec, RateLimitKeys } from './rate-limit.keys.js';
import { InsuranceLimiter } from './rate-limit.insurance-limiter.js';
import { checkCheck, checkConsumeOptions } from './rate-limit.option-names.js';
import {
  RATE_LIMIT_OPTIONS,
  type RateLimitAlgorithm,
  type RateLimitPolicy,
  type ResolvedRateLimitOptions,
} from './rate-limit.options.js';
import {
  MAX_POLICIES_PER_CALL,
  type ConsumeOptions,
  type DecisionCounters,
  type GroupOutcome,
  type PreparedCheck,
  type RateLimitCheck,
  type RateLimitDecision,
  type RateLimitResult,
  type RateLimitStats,
  type RewardOptions,
} from './rate-limit.types.js';

export {
  MAX_POLICIES_PER_CALL,
  type ConsumeOptions,
  type RateLimitCheck,
  type RateLimitDecision,
  type RateLimitResult,
  type RateLimitStats,
  type RewardOptions,
} from './rate-limit.types.js';

/**
 * Rate limiting on Redis: every decision is one run of one Lua script (EVALSHA) that checks all the policies of a call
 * and charges them only if all allow it; on a single server the decisions of one tick share one EVALSHA
 * (DecisionBatcher). Time comes from the Redis server. No command is queued while the connection is
 * not ready and none is retried after an unknown outcome (that could charge twice): the failure policy decides at once.
 */
@Injectable()
export class RateLimitService implements OnModuleDestroy {
  private readonly logger = new Logger('RedisToolkit:RateLimit');
  private readonly options: ResolvedRateLimitOptions;
  private readonly failures: FailurePolicy;
  private readonly decisions: DecisionBatcher;
  private readonly keys: RateLimitKeys;
  private readonly admin: RateLimitAdmin;
  private readonly fallback: DecisionFallback;
  private readonly counters: DecisionCounters = {
    allowed: 0,
    denied: 0,
    failedOpen: 0,
    failedClosed: 0,
    insurance: 0,
    deniedLocally: 0,
    insuranceDropped: 0,
  };
  /** `rateLimit.blockCache`: counters Redis refused, refused here until then without a Redis call. */
  private readonly blockCache: BlockCache | undefined;
  /** Whether Redis may evict counters: asked once, at the first decision sent (rate-limit.eviction-check). */
  private readonly evictionCheck: EvictionPolicyCheck;
  private readonly droppedWarning: ThrottledWarning;

  constructor(
    @Inject(FEATURE_CONNECTION.rateLimit) private readonly connection: RedisConnection,
    keys: KeyBuilder,
    @Inject(RATE_LIMIT_OPTIONS) options: ResolvedRateLimitOptions,
  ) {
    this.options = options;
    this.failures = new FailurePolicy(connection, {
      feature: 'rate limiting',
      logger: this.logger,
      warnIntervalMs: this.options.warnIntervalMs,
    });
    const ins = this.options.insurance;
    // a live counter dropped in an outage (maxKeys reached) starts over with a fresh share: counted and logged
    this.droppedWarning = new ThrottledWarning(this.logger, options.warnIntervalMs, () => 'insurance counters dropped');
    const maxKeys = ins === false ? 0 : ins.maxKeys;
    const dropped = () => {
      this.counters.insuranceDropped++;
      this.droppedWarning.warn(
        `rate limiting insurance dropped a counter whose window was still running, to keep within ` +
          `rateLimit.insurance.maxKeys (${maxKeys}): it starts over with a fresh share. Raise maxKeys ` +
          'above the keys active in a window while Redis is unreachable',
      );
    };
    const insurance = ins ? new InsuranceLimiter(ins.divideLimitBy, ins.maxKeys, dropped) : undefined;
    this.decisions = new DecisionBatcher(connection);
    this.keys = new RateLimitKeys(keys);
    this.blockCache = options.blockCache ? new BlockCache(options.blockCache.maxKeys) : undefined;
    this.admin = new RateLimitAdmin(
      connection,
      this.failures,
      this.keys,
      insurance,
      this.blockCache,
      options.defaults.algorithm,
      (p, path) => this.resolvePolicy(p, path),
      this.counters,
    );
    this.fallback = new DecisionFallback(this.failures, insurance, this.counters, options.failOpen, this.blockCache);
    this.evictionCheck = rateLimitEvictionCheck(connection, this.logger);
  }

  onModuleDestroy(): void {
    this.evictionCheck.close();
    this.failures.close();
    this.droppedWarning.close();
  }

  /** Charges `policy.cost` (default 1) to `key` if the policy allows it. */
  consume(key: string, policy: RateLimitPolicy, options: ConsumeOptions = {}): Promise<RateLimitResult> {
    if (!decisionObserved()) return this.single(key, policy, 'c', options);
    return diagnosed(() => this.single(key, policy, 'c', options), key);
  }

  /**
   * `consume`, throwing RateLimitExceededError (with `retryAfterMs`) when refused — for limits inside services and
   * jobs.
   */
  async consumeOrThrow(key: string, policy: RateLimitPolicy, options: ConsumeOptions = {}): Promise<RateLimitResult> {
    const result = await (decisionObserved()
      ? diagnosed(() => this.single(key, policy, 'c', options), key)
      : this.single(key, policy, 'c', options));
    if (!result.allowed) {
      throw new RateLimitExceededError(`rate limit exceeded, retry in ${result.retryAfterMs} ms`, result.retryAfterMs);
    }
    return result;
  }

  /** What `consume` would answer for a call of `policy.cost` (default 1), without charging anything. */
  peek(key: string, policy: RateLimitPolicy, options: ConsumeOptions = {}): Promise<RateLimitResult> {
    return this.single(key, policy, 'p', options);
  }

  /** What `consumeAll` would answer, without charging anything (e.g. a counter the guard keeps: give its `scope`). */
  peekAll(checks: readonly RateLimitCheck[], options: ConsumeOptions = {}): Promise<RateLimitDecision> {
    return this.decide(checks, 'p', options);
  }

  /**
   * Checks every policy and charges all of them only if all allow the call, in one atomic script call. On a Redis
   * Cluster the checks of one call should share `key` (their counters then share a hash slot); checks with different
   * keys are decided per key, one script call each, in order, and a later refusal does not undo an earlier charge.
   */
  consumeAll(checks: readonly RateLimitCheck[], options: ConsumeOptions = {}): Promise<RateLimitDecision> {
    if (!decisionObserved()) return this.decide(checks, 'c', options);
    return diagnosed(() => this.decide(checks, 'c', options), checks[0]?.key ?? '', checks);
  }

  /**
   * Clears the counters of `key`: the one of `policy` when given, else every counter of that key (a SCAN, on every
   * master of a cluster). Returns how many counters existed.
   */
  reset(key: string, policy?: CounterRef): Promise<number> {
    return this.admin.reset(key, policy);
  }

  /**
   * Blocks a counter of `key` for `ms` (rate-limiter-flexible `block`): every consume and peek of it is refused until
   * then, with `retryAfterMs` the time left. The counter is the one of `policy` (or of a guard's `scope`), as for
   * `reset`; `reset` lifts the block.
   */
  block(key: string, ms: number, policy: CounterRef): Promise<void> {
    return this.admin.block(key, ms, policy);
  }

  /**
   * Gives back `points` units of the counter of `policy` for `key` (rate-limiter-flexible `reward`; what the guard does
   * for `skipSuccessfulRequests` / `skipFailedRequests`). `scope` names a guard's counter (default: the policy's).
   * Resolves with the units left afterwards. `points` is an integer >= 1 (InvalidOptionsError otherwise).
   * `charge.windowEndsAt` names the window the units were charged in: a fixed window gives them back only while that
   * window counts; `charge.degraded` (a result's) gives a charge insurance made back to insurance (RewardOptions).
   */
  reward(
    key: string,
    points: number,
    policy: RateLimitPolicy,
    scope?: string,
    charge?: RewardOptions,
  ): Promise<number> {
    return this.admin.adjust(key, points, policy, scope, 'reward', charge);
  }

  /**
   * Charges `points` more units to the counter of `policy` for `key`, whatever it allows (rate-limiter-flexible
   * `penalty`). `points` is an integer >= 1 (InvalidOptionsError otherwise). Redis unreachable, with
   * `rateLimit.insurance` on: charged to the insurance limiter's window of that counter (resolves with the units left
   * of its share; logged, counted in `stats().insurance`); without it: RedisUnavailableError.
   */
  penalty(key: string, points: number, policy: RateLimitPolicy, scope?: string): Promise<number> {
    return this.admin.adjust(key, points, policy, scope, 'penalty');
  }

  /** Counts since start (this process). */
  stats(): RateLimitStats {
    return { ...this.counters, replyErrors: this.failures.counts.replyErrors };
  }

  /** The Redis key of a counter: `<prefix>rl:{hash(key)}:hash(scope):<algorithm>` — fixed length whatever the input. */
  redisKey(key: string, scope: string, algorithm: RateLimitAlgorithm): string {
    return this.keys.counter(key, scope, algorithm);
  }

  /** consume/peek of one policy: the same script call as consumeAll, with fewer allocations around it (hot path). */
  private async single(
    key: string,
    policy: RateLimitPolicy,
    mode: 'c' | 'p',
    options: ConsumeOptions,
  ): Promise<RateLimitResult> {
    checkKey(key);
    checkConsumeOptions(options);
    const p = this.resolvePolicy(policy, 'policy');
    const redisKey = this.redisKey(key, defaultScope(p), p.algorithm);
    if (this.blockCache) {
      // the block cache's path: the group code (a little more allocation; off by default)
      const outcome = await this.runGroup([{ key, policy: p, name: 'default', redisKey }], mode, options);
      if (mode === 'c') countDecision(this.counters, outcome);
      return toResult(outcome.results[0], outcome.degraded);
    }
    let raw: number[];
    try {
      this.failures.assertReady('decision');
      this.evictionCheck.once();
      raw = await this.decisions.run(
        [redisKey, `${redisKey}${BLOCK_SUFFIX}`],
        [mode === 'c' ? 'c1' : 'p1', policySpec(p)],
      );
      // Inside the try: a per-item READONLY/LOADING is an outage and takes the failure policy like a transport error.
      if (raw[0] === FAILED) throw this.fallback.itemFailed(raw);
    } catch (err) {
      // never retried: the call may have run
      const outcome = this.fallback.decide(
        [{ key, policy: p, name: 'default', redisKey }],
        mode,
        options.failOpen,
        err,
      );
      if (mode === 'c') countDecision(this.counters, outcome);
      return toResult(outcome.results[0], outcome.degraded);
    }
    const result: RateLimitResult = {
      allowed: raw[1] === 1,
      limit: capacityOf(p),
      remaining: Math.max(0, raw[2]),
      resetMs: resetNotBeforeRetry(raw[3], raw[4]),
      retryAfterMs: raw[4],
    };
    if (mode === 'c') {
      if (result.allowed) this.counters.allowed++;
      else this.counters.denied++;
      this.fallback.learn(redisKey, p, result);
    }
    return result;
  }

  private async decide(
    checks: readonly RateLimitCheck[],
    mode: 'c' | 'p',
    options: ConsumeOptions,
  ): Promise<RateLimitDecision> {
    if (!Array.isArray(checks) || checks.length === 0)
      throw new InvalidOptionsError('rate limit: at least one policy is required');
    if (checks.length > MAX_POLICIES_PER_CALL) {
      throw new InvalidOptionsError(
        `rate limit: at most ${MAX_POLICIES_PER_CALL} policies per call, got ${checks.length}`,
      );
    }
    checkConsumeOptions(options);
    const prepared = checks.map((c, i) => {
      checkCheck(c, i);
      checkKey(c.key);
      const policy = this.resolvePolicy(c.policy, checks.length === 1 ? 'policy' : `policies[${i}]`);
      const scope = c.scope ?? defaultScope(policy);
      return { key: c.key, policy, name: c.name ?? 'default', redisKey: this.redisKey(c.key, scope, policy.algorithm) };
    });
    if (prepared.length > 1 && new Set(prepared.map((p) => p.redisKey)).size !== prepared.length) {
      throw new InvalidOptionsError(
        'rate limit: two policies of one call use the same counter (give them different names or scopes)',
      );
    }

    if (prepared.length === 1 || !this.connection.isCluster) {
      // the common case: one script call decides everything
      const outcome = await this.runGroup(prepared, mode, options);
      if (mode === 'c') countDecision(this.counters, outcome);
      let retryAfterMs = 0;
      if (!outcome.allowed) for (const r of outcome.results) retryAfterMs = Math.max(retryAfterMs, r.retryAfterMs);
      return {
        allowed: outcome.allowed,
        retryAfterMs,
        results: outcome.results,
        ...(outcome.degraded && { degraded: outcome.degraded }),
      };
    }

    // On a cluster, one script call per key (per hash slot): one decision all the same, warned about once.
    const { results, refusal, degraded, unavailable } = await decideByTracker(
      groupBy(prepared, (p) => p.key),
      mode,
      (group, groupMode, outage) => this.runGroup(group, groupMode, options, outage),
      (group) => this.fallback.unread(group),
    );
    // Redis could not decide a tracker and no other refused: failed closed (one count for the call)
    if (refusal === undefined && unavailable !== undefined) {
      if (mode === 'c') this.counters.failedClosed++;
      throw unavailable;
    }
    // A refusal decides the call and says who made it (Redis, the block cache, insurance): an earlier group that
    // failed open, or that Redis could not read, admitted nothing in the end. Admitted, the call is degraded if one of
    // its groups was.
    const decided: Omit<GroupOutcome, 'results'> = refusal ?? { allowed: true, degraded };
    if (mode === 'c') countDecision(this.counters, decided);
    const retryAfterMs = decided.allowed ? 0 : Math.max(0, ...results.map((r) => r.retryAfterMs));
    return {
      allowed: decided.allowed,
      retryAfterMs,
      results,
      ...(decided.degraded && { degraded: decided.degraded }),
    };
  }

  private async runGroup(
    group: readonly PreparedCheck[],
    mode: 'c' | 'p',
    options: ConsumeOptions,
    outage?: DecisionOutage,
  ): Promise<GroupOutcome> {
    const local = this.blockCache?.answer(group);
    if (local) return local;
    const sent = this.blockCache?.stamp();
    const args: ScriptArg[] = [`${mode}${group.length}`];
    const keys: string[] = [];
    for (const { policy, redisKey } of group) {
      args.push(policySpec(policy));
      keys.push(redisKey, `${redisKey}${BLOCK_SUFFIX}`);
    }
    let raw: number[];
    try {
      this.failures.assertReady('decision');
      this.evictionCheck.once();
      raw = await this.decisions.run(keys, args);
      if (raw[0] === FAILED) throw this.fallback.itemFailed(raw);
    } catch (err) {
      return this.fallback.decide(group, mode, options.failOpen, err, outage);
    }
    const results = redisResults(group, raw);
    if (mode === 'c')
      for (let i = 0; i < group.length; i++) this.fallback.learn(group[i].redisKey, group[i].policy, results[i]);
    if (sent) {
      const replies = results.map((r) => [r.allowed, r.remaining, r.resetMs, r.retryAfterMs] as const);
      this.blockCache?.learn(group, raw[0] === 1, replies, sent);
    }
    return { allowed: raw[0] === 1, results };
  }

  /** Fills defaults and validates a policy given at call time (InvalidOptionsError naming the field). */
  resolvePolicy(p: RateLimitPolicy, path: string): ResolvedPolicy {
    return resolveCallPolicy(p, path, this.options.defaults.algorithm, this.options.maxSlidingWindowLimit);
  }
}
