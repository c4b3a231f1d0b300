import { InvalidOptionsError, RedisUnavailableError } from '../common/errors.js';
import type { FailurePolicy } from '../common/failure-policy.js';
import { KeyBuilder } from '../common/keys.js';
import { LuaScript } from '../common/lua-script.js';
import { refuseUnknown, shownValue } from '../common/option-checks.js';
import { scanKeys, unlinkMany } from '../common/bulk-keys.js';
import type { RedisConnection } from '../connection/redis-connection.js';
import type { InsuranceLimiter } from './rate-limit.insurance-limiter.js';
import type { BlockCache } from './rate-limit.block-cache.js';
import { SLIDING_LOG_LUA } from './rate-limit.decision-batcher.js';
import { capacityOf, checkKey, defaultScope, type ResolvedPolicy } from './rate-limit.policy-resolver.js';
import { ALGORITHM_CODES, BLOCK_SUFFIX, type RateLimitKeys } from './rate-limit.keys.js';
import { COUNTER_KEYS, checkRewardOptions, checkScope } from './rate-limit.option-names.js';
import { RATE_LIMIT_ALGORITHMS, type RateLimitAlgorithm, type RateLimitPolicy } from './rate-limit.options.js';
import type { DecisionCounters, RewardOptions } from './rate-limit.types.js';

const ADJUST_LUA_FILE = 'rate-limit/reward.lua';

/** A guard's counter, named by its scope and algorithm (default: the module's). */
export interface CounterScope {
  scope: string;
  algorithm?: RateLimitAlgorithm;
}

/** A counter named by its policy, or by a guard's scope. */
export type CounterRef = RateLimitPolicy | CounterScope;

/**
 * The operations on counters outside a decision: reset, block, reward and penalty. Each is one Redis call (reset
 * of every counter of a key: a SCAN). A transport failure is thrown (and logged), never guessed, except a penalty's
 * with the insurance limiter on: that one is charged to insurance's window (as the decisions it stands for are
 * decided there), so a failed login penalised during an outage still counts.
 */
export class RateLimitAdmin {
  private readonly adjuster = LuaScript.fromFile<number>('rtk_rl_reward', ADJUST_LUA_FILE, 1, [SLIDING_LOG_LUA]);

  constructor(
    private readonly connection: RedisConnection,
    private readonly failures: FailurePolicy,
    private readonly keys: RateLimitKeys,
    private readonly insurance: InsuranceLimiter | undefined,
    private readonly blockCache: BlockCache | undefined,
    private readonly defaultAlgorithm: RateLimitAlgorithm,
    private readonly resolvePolicy: (p: RateLimitPolicy, path: string) => ResolvedPolicy,
    /** The service's counts: a penalty insurance took is one of `insurance`'s. */
    private readonly counters?: Pick<DecisionCounters, 'insurance'>,
  ) {}

  async reset(key: string, policy?: CounterRef): Promise<number> {
    checkKey(key);
    // before the try: a wrong counter is the caller's error, not a failed reset (which still clears the counter's
    // insurance window: the reset asked for it, and Redis's own reset waits for Redis)
    const counter = policy ? this.counterOf(key, policy) : undefined;
    try {
      this.failures.assertReady('reset');
      if (counter !== undefined) {
        this.blockCache?.forget(counter);
        return await this.connection.client.unlink(counter, `${counter}${BLOCK_SUFFIX}`);
      }
      this.blockCache?.forget(this.keys.tagOf(key), true);
      const pattern = `${KeyBuilder.globEscape(this.keys.tagOf(key))}*`;
      let removed = 0;
      for await (const page of scanKeys(this.connection.client, pattern))
        removed += await unlinkMany(this.connection.client, page);
      return removed;
    } catch (err) {
      throw this.failed(err, 'reset');
    } finally {
      // this key's windows only (until 2026-12-06 every counter's: one reset gave every client a fresh share)
      if (counter !== undefined) this.insurance?.forget(counter);
      else this.insurance?.forget(this.keys.tagOf(key), true);
    }
  }

  async block(key: string, ms: number, policy: CounterRef): Promise<void> {
    checkKey(key);
    if (!Number.isSafeInteger(ms) || ms < 1)
      throw new InvalidOptionsError(
        `rate limit: block ms must be a whole number of milliseconds >= 1, got ${shownValue(ms)}`,
      );
    if (policy === null || typeof policy !== 'object')
      throw new InvalidOptionsError('rate limit: block needs the policy (or { scope }) of the counter to block');
    const counter = this.counterOf(key, policy);
    try {
      this.failures.assertReady('block');
      await this.connection.client.set(`${counter}${BLOCK_SUFFIX}`, '1', 'PX', ms);
    } catch (err) {
      throw this.failed(err, 'block');
    }
  }

  /**
   * Gives back (reward) or charges (penalty) `points` units of a counter; resolves with the units left. `points` is
   * an integer >= 1 either way (checked as the caller gave it, before the sign of a penalty is applied): a negative
   * one would do the opposite of what was asked. A reward's `charge` names the window the units were charged in
   * (RewardOptions).
   */
  async adjust(
    key: string,
    points: number,
    policy: RateLimitPolicy,
    scope: string | undefined,
    what: 'reward' | 'penalty',
    charge?: RewardOptions,
  ): Promise<number> {
    checkKey(key);
    if (charge !== undefined) checkRewardOptions(charge);
    if (!Number.isSafeInteger(points) || points < 1) {
      throw new InvalidOptionsError(
        `rate limit: ${what} points must be a whole number >= 1, got ${shownValue(points)}`,
      );
    }
    // undefined: the policy's own counter; anything else names a guard's and must be a string (as reset's and block's)
    if (scope !== undefined) checkScope(scope, `rate limit ${what}`);
    const p = this.resolvePolicy(policy, 'policy');
    const counter = this.keys.counter(key, scope ?? defaultScope(p), p.algorithm);
    // a charge Redis never saw is given back where it was made, never to Redis (until 2026-12-06 the guard gave back
    // no charge of insurance's, and a reward of one in an outage failed)
    if (charge?.degraded !== undefined) return this.unseenCharge(counter, p, points, charge);
    // a reward can readmit the counter: forget what this process knew of it (a penalty only refuses more)
    if (what === 'reward') this.blockCache?.forget(counter);
    try {
      this.failures.assertReady(what);
      // reward.lua gives back a positive count and charges a negative one
      const args = [ALGORITHM_CODES[p.algorithm], p.limit, p.ttl, what === 'reward' ? points : -points, p.burst];
      // the ms the charged window has left by this process's clock, read as late as can be: the script compares it
      // with the time left of the window that counts (a refund held in flight only makes it smaller)
      const endsAt = charge?.windowEndsAt;
      if (endsAt !== undefined) args.push(Math.round(endsAt - performance.now()));
      return await this.adjuster.run(this.connection.client, [counter], args);
    } catch (err) {
      if (what === 'penalty' && this.insurance) return this.insuredPenalty(err, counter, p, points);
      throw this.failed(err, what);
    }
  }

  /**
   * A penalty Redis could not take (a transport failure; an error reply is thrown as ever), with insurance on: charged
   * to insurance's window of the counter, answered with the units left of its share, warned about and counted like a
   * decision insurance made. A penalty that timed out may still run in Redis (a paused server): Redis's next answer
   * for the counter then replaces insurance's view of it (InsuranceLimiter.learn), so it is not counted twice.
   */
  private insuredPenalty(err: unknown, counter: string, p: ResolvedPolicy, points: number): number {
    const typed = this.failures.classify(err, 'penalty');
    if (!(typed instanceof RedisUnavailableError) || !this.insurance) throw this.failed(typed, 'penalty');
    this.failures.unavailable(typed, true, 'the penalty is charged to the in-process insurance limiter');
    if (this.counters) this.counters.insurance++;
    return this.insurance.penalize({ redisKey: counter, policy: p }, points);
  }

  /**
   * A reward of a charge Redis never saw (RewardOptions.degraded): insurance's is given back to its window, a
   * failed-open one was never charged (the capacity, as its result said). No Redis call either way.
   */
  private unseenCharge(counter: string, p: ResolvedPolicy, points: number, charge: RewardOptions): number {
    if (charge.degraded === 'fail-open') return capacityOf(p);
    if (!this.insurance) {
      throw new InvalidOptionsError(
        "rate limit reward: degraded 'insurance' names a charge of the insurance limiter, but rateLimit.insurance is " +
          'off in this app: give the degraded of the result that made the charge',
      );
    }
    return this.insurance.refund({ redisKey: counter, policy: p }, points, charge.windowEndsAt);
  }

  private counterOf(key: string, policy: CounterRef): string {
    if (policy === null || typeof policy !== 'object')
      throw new InvalidOptionsError('rate limit: a counter is named by its policy or { scope, algorithm? }');
    refuseUnknown(policy, COUNTER_KEYS, 'rate limit counter');
    if (!('scope' in policy)) {
      const p = this.resolvePolicy(policy, 'policy');
      return this.keys.counter(key, defaultScope(p), p.algorithm);
    }
    // a guard's counter: its policy's values (if given too) do not name it
    const { scope, algorithm = this.defaultAlgorithm } = policy;
    checkScope(scope, 'rate limit counter');
    if (!RATE_LIMIT_ALGORITHMS.includes(algorithm)) {
      throw new InvalidOptionsError(
        `rate limit counter: algorithm must be one of ${RATE_LIMIT_ALGORITHMS.join(', ')}, ` +
          `got ${shownValue(algorithm)}`,
      );
    }
    return this.keys.counter(key, scope, algorithm);
  }

  private failed(err: unknown, what: string): Error {
    const typed = this.failures.classify(err, what);
    this.failures.unavailable(typed, false);
    return typed;
  }
}
