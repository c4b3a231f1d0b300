import { LRUCache } from 'lru-cache';
import { dropCounters } from './rate-limit.keys.js';
import { capacityOf, type ResolvedPolicy } from './rate-limit.policy-resolver.js';
import { resetNotBeforeRetry } from './rate-limit.results.js';

export interface InsuranceCheck {
  redisKey: string;
  /** blockDuration: ms the counter is refused from a consume its count refused (0 or absent: none). */
  policy: Pick<ResolvedPolicy, 'algorithm' | 'limit' | 'ttl' | 'burst'> &
    Partial<Pick<ResolvedPolicy, 'blockDuration'>>;
  /** The policy's cost, for a peek too (it answers what a consume of that cost would; mode 'p' charges nothing). */
  cost: number;
}

export interface InsuranceResult {
  allowed: boolean;
  /**
   * What this process admits in the counter's window (its share, insuredWindow), not the policy's limit: the result's
   * limit, so that limit, remaining and reset describe the one counter insurance enforces, in every header style.
   */
  limit: number;
  remaining: number;
  resetMs: number;
  retryAfterMs: number;
}

/** A counter as insurance holds it: its window (count and end) and its block, each ended by time alone. */
interface Counter {
  count: number;
  /** The window's end; one that has ended holds nothing (as an expired key in Redis). */
  endsAt: number;
  /** Refused until then (blockDuration); it may outlive the window, as Redis's block key outlives the counter's. */
  blockedUntil: number;
}

/**
 * The in-process stand-in used while Redis is unreachable: a fixed window per counter, with each process allowed its
 * share of the counter's capacity (insuredWindow), all policies of a request checked and charged together. It only
 * has to keep an outage from turning into "no limit at all". A counter's window opens with its first charge (a peek
 * or a cost of 0 stores nothing, as Redis writes nothing for them). A policy's blockDuration is applied as consume.lua
 * applies it: a consume the counter's count refuses blocks it from then (not a peek, not a refusal while blocked, not
 * a counter that fitted beside a refusal), and a blocked counter refuses every consume and peek, remaining 0, the
 * block's time left as its retry. A counter starts from what this process last learned from Redis for it (learn:
 * Redis's answer to its last charging decision), so a client at its limit in Redis is refused at the switch. Its
 * counters are kept when Redis is back (each ends by itself, the LRU bounds them to maxKeys) until Redis answers for
 * them again, so a second outage in a window goes on counting; RateLimitService.reset clears them (blocks too), those
 * of the key (or counter) it resets. Times are on the monotonic clock (performance.now()): a step of the wall
 * clock would end every window at once, or stretch each by its size. A refusal waits at least 1 ms, and its resetMs is
 * never before its retryAfterMs (so no reset header says sooner than Retry-After).
 */
export class InsuranceLimiter {
  private readonly counters: LRUCache<string, Counter>;
  /** Set while insurance itself stores a counter (a charge, a block): only then is a drop the outage's (dropped). */
  private storing = false;

  /**
   * `dropped`: a counter with a live window or block was pushed out of maxKeys by one insurance stored, so while it
   * decides (Redis unreachable): that counter starts over with a fresh share. Seeds learnt from Redis push each other
   * out without a call (the LRU keeps the most recent; nothing is admitted on them while Redis decides).
   */
  constructor(
    private readonly divideLimitBy: number,
    maxKeys: number,
    private readonly dropped?: () => void,
  ) {
    this.counters = new LRUCache({
      max: maxKeys,
      dispose: (counter, _key, reason) => {
        if (reason !== 'evict' || !this.storing) return;
        const now = performance.now();
        if (counter.endsAt > now || counter.blockedUntil > now) this.dropped?.();
      },
    });
  }

  /**
   * Decides `checks` together at `now`: mode 'c' charges them all if all allow it, 'p' (a peek) charges nothing.
   * A counter with no live window holds nothing and is answered as the scripts answer an absent key: its share left,
   * reset 0 (nothing to wait for), except a fixed window's consume of cost 0, which says its ttl (the window a charge
   * would open). Only a charge of 1 or more opens a window, of the counter's span from that charge.
   */
  consume(
    checks: readonly InsuranceCheck[],
    now = Math.floor(performance.now()),
    mode: 'c' | 'p' = 'c',
  ): { allowed: boolean; results: InsuranceResult[] } {
    const states = checks.map((c) => {
      const counter = this.counters.get(c.redisKey);
      const { limit, span } = insuredWindow(c.policy, this.divideLimitBy);
      // an ended window holds nothing, as an expired key in Redis
      const count = counter && counter.endsAt > now ? counter.count : 0;
      const blockedFor = counter && counter.blockedUntil > now ? counter.blockedUntil - now : 0;
      return { c, counter, limit, span, count, blockedFor, fits: count + c.cost <= limit };
    });
    const allowed = states.every((s) => s.fits && s.blockedFor === 0);
    const charged = allowed && mode === 'c';
    const results = states.map(({ c, limit, span, fits, ...s }) => {
      let { counter, count, blockedFor } = s;
      // Redis writes nothing for a peek or a cost of 0: a window opened by one would make the first real charge land
      // in a window that ends early (the client's fresh window sooner than Redis gives it), and a window of nothing
      // would push charged ones out of the LRU
      if (charged && c.cost > 0) {
        counter = this.charge(c.redisKey, counter, span, c.cost, now);
        count = counter.count;
      }
      // blockDuration, as consume.lua: a consume refused by this counter's own count blocks it from now (a refusal of
      // a blocked counter does not extend its block; a counter that fitted beside another's refusal is not blocked)
      const blockMs = c.policy.blockDuration ?? 0;
      if (mode === 'c' && !fits && blockedFor === 0 && blockMs > 0) {
        counter ??= { count: 0, endsAt: 0, blockedUntil: 0 };
        counter.blockedUntil = now + blockMs;
        blockedFor = blockMs;
        this.store(c.redisKey, counter);
      }
      // an empty counter resets at once (the scripts' reset of an absent key), but consume.lua and
      // consume-fixed-window.lua answer a fixed window's consume of cost 0 with the window a charge would open
      let left = 0;
      if (counter && counter.endsAt > now) left = counter.endsAt - now;
      else if (charged && c.policy.algorithm === 'fixed-window') left = c.policy.ttl;
      // A cost over the per-process limit fits no window: the time left in this one would send the client back to be
      // refused again. Answered as the scripts answer a cost over the limit (a bucket's burst): a whole ttl from now.
      // A blocked counter waits for its block too (consume.lua: the longer of the two).
      const countWait = fits ? 0 : c.cost > limit ? c.policy.ttl : Math.max(1, left);
      const retryAfterMs = Math.max(countWait, blockedFor);
      return {
        allowed: fits && blockedFor === 0,
        limit,
        // a blocked counter has nothing left until its block ends, whatever its window holds (as Redis answers)
        remaining: blockedFor > 0 ? 0 : Math.max(0, limit - count),
        resetMs: resetNotBeforeRetry(left, retryAfterMs),
        retryAfterMs,
      };
    });
    return { allowed, results };
  }

  /**
   * Gives back `points` of a charge this limiter made (RateLimitService.reward with `degraded: 'insurance'`: Redis
   * never saw it) to the counter's live window, never below 0; returns the units left of the share (a block
   * stays, as reward.lua leaves Redis's block key). As reward.lua does for a fixed window, nothing is given back when
   * the window holds nothing or when it is a later one than the charge's: one ending more than half a window after
   * `windowEndsAt` (a later window opens after the charged one ends, so it ends at least a whole window later).
   */
  refund(check: Omit<InsuranceCheck, 'cost'>, points: number, windowEndsAt?: number, now = performance.now()): number {
    const { limit, span } = insuredWindow(check.policy, this.divideLimitBy);
    const counter = this.counters.get(check.redisKey);
    if (!counter || counter.endsAt <= now) return limit;
    if (windowEndsAt === undefined || 2 * (counter.endsAt - windowEndsAt) <= span)
      counter.count = Math.max(0, counter.count - points);
    return Math.max(0, limit - counter.count);
  }

  /**
   * Charges `points` to a counter whatever it allows (RateLimitService.penalty while Redis is unreachable): added to
   * its live window, or to a window opened now; returns the units left of the share (never below 0). As reward.lua's
   * penalty, it blocks nothing (a block comes from a consume the count refuses).
   */
  penalize(check: Omit<InsuranceCheck, 'cost'>, points: number, now = Math.floor(performance.now())): number {
    const { limit, span } = insuredWindow(check.policy, this.divideLimitBy);
    const counter = this.charge(check.redisKey, this.counters.get(check.redisKey), span, points, now);
    return Math.max(0, limit - counter.count);
  }

  /** Adds `cost` to the counter's live window, or to a window of `span` opened now (consume's charge, a penalty). */
  private charge(redisKey: string, counter: Counter | undefined, span: number, cost: number, now: number): Counter {
    const charged = counter ?? { count: 0, endsAt: 0, blockedUntil: 0 };
    if (charged.endsAt <= now) [charged.count, charged.endsAt] = [0, now + span];
    charged.count += cost;
    this.store(redisKey, charged);
    return charged;
  }

  private store(redisKey: string, counter: Counter): void {
    this.storing = true;
    try {
      this.counters.set(redisKey, counter);
    } finally {
      this.storing = false;
    }
  }

  /**
   * Takes Redis's answer to a charging decision of this process as the counter's state (the seed of the next outage),
   * in place of what insurance held: the units Redis said are left (this process's part of them: floor(remaining /
   * divideLimitBy), at most the share, so that the processes together never admit more than Redis had left, where
   * ceil let N processes admit up to N - 1 more; a remaining under divideLimitBy admits nothing) until Redis's reset,
   * and a refusal of a policy with a blockDuration blocks it until Redis's retry. Replaced, not added to: Redis's
   * answer already holds every charge it saw, a script that timed out here and ran once the server resumed included,
   * so a charge insurance made for such a call is not counted twice. A counter whose part is a whole share is
   * forgotten (it would be answered as one holding nothing), so only counters in use take room under maxKeys.
   */
  learn(
    check: Omit<InsuranceCheck, 'cost'>,
    answer: Pick<InsuranceResult, 'allowed' | 'remaining' | 'resetMs' | 'retryAfterMs'>,
    now = Math.floor(performance.now()),
  ): void {
    const { limit } = insuredWindow(check.policy, this.divideLimitBy);
    const count = limit - Math.min(limit, Math.floor(Math.max(0, answer.remaining) / this.divideLimitBy));
    const blocked = !answer.allowed && (check.policy.blockDuration ?? 0) > 0;
    if (count === 0 && !blocked) {
      this.counters.delete(check.redisKey);
      return;
    }
    this.counters.set(check.redisKey, {
      count,
      endsAt: now + answer.resetMs,
      blockedUntil: blocked ? now + answer.retryAfterMs : 0,
    });
  }

  /** Counters held (at most maxKeys). */
  get size(): number {
    return this.counters.size;
  }

  /**
   * Forgets one counter's window and block (reset of one policy) or, with a prefix, those of every counter of a key:
   * a reset of one client must not give every other client of the process a fresh share.
   */
  forget(counter: string, isPrefix = false): void {
    dropCounters(this.counters, counter, isPrefix);
  }
}

/**
 * A counter's insurance window: `limit`, what one process admits in it (its share of the counter's capacity, rounded
 * up, at least 1), and `span`, its length in ms. A window's capacity is its limit per ttl. A token bucket's is its
 * burst: Redis admits any cost up to burst from a full bucket, and refills it in burst × ttl / limit (its span, rounded
 * up to a whole ms). A window that long keeps both: a fresh one admits any cost up to ceil(burst / divideLimitBy),
 * and its rate stays the bucket's, limit per ttl (a ttl-long window would let burst / limit times that through, or cut
 * a bucket whose burst is under its limit to burst per ttl).
 */
function insuredWindow(p: InsuranceCheck['policy'], divideLimitBy: number): { limit: number; span: number } {
  const limit = Math.max(1, Math.ceil(capacityOf(p) / divideLimitBy));
  return { limit, span: p.algorithm === 'token-bucket' ? Math.max(1, Math.ceil((p.burst * p.ttl) / p.limit)) : p.ttl };
}
