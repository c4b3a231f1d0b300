import { LRUCache } from 'lru-cache';
import { capacityOf, type ResolvedPolicy } from './rate-limit.policy-resolver.js';
import { resetNotBeforeRetry } from './rate-limit.results.js';

export interface InsuranceCheck {
  redisKey: string;
  policy: Pick<ResolvedPolicy, 'algorithm' | 'limit' | 'ttl' | 'burst'>;
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

interface Window {
  count: number;
  endsAt: number;
}

/**
 * The in-process stand-in used while Redis is unreachable: a fixed window per counter, with each process allowed its
 * share of the counter's capacity (insuredWindow), all policies of a request checked and charged together. It only
 * has to keep an outage from turning into "no limit at all". A counter's window opens with its first charge (a peek
 * or a cost of 0 stores nothing, as Redis writes nothing for them). Its windows are kept when Redis is back (each
 * ends by itself, the LRU bounds them to maxKeys), so a second outage in a window goes on counting; only
 * RateLimitService.reset clears them, those of the key (or counter) it resets. Times are on the monotonic clock
 * (performance.now()): a step of the wall clock would end every window at once, or stretch each by its size. A refusal
 * waits at least 1 ms, and its resetMs is never before its retryAfterMs (so no reset header says sooner than
 * Retry-After).
 */
export class InsuranceLimiter {
  private readonly windows: LRUCache<string, Window>;

  constructor(
    private readonly divideLimitBy: number,
    maxKeys: number,
  ) {
    this.windows = new LRUCache({ max: maxKeys });
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
      let w = this.windows.get(c.redisKey);
      const { limit, span } = insuredWindow(c.policy, this.divideLimitBy);
      // an ended window holds nothing, as an expired key in Redis
      if (w && w.endsAt <= now) w = undefined;
      return { c, w, limit, span, ok: (w?.count ?? 0) + c.cost <= limit };
    });
    const allowed = states.every((s) => s.ok);
    const charged = allowed && mode === 'c';
    const results = states.map(({ c, w, limit, span, ok }) => {
      // Redis writes nothing for a peek or a cost of 0: a window opened by one would make the first real charge land
      // in a window that ends early (the client's fresh window sooner than Redis gives it), and a window of nothing
      // would push charged ones out of the LRU
      if (charged && c.cost > 0) {
        w ??= { count: 0, endsAt: now + span };
        w.count += c.cost;
        this.windows.set(c.redisKey, w);
      }
      // an empty counter resets at once (the scripts' reset of an absent key), but consume.lua and
      // consume-fixed-window.lua answer a fixed window's consume of cost 0 with the window a charge would open
      let left = 0;
      if (w) left = Math.max(0, w.endsAt - now);
      else if (charged && c.policy.algorithm === 'fixed-window') left = c.policy.ttl;
      // A cost over the per-process limit fits no window: the time left in this one would send the client back to be
      // refused again. Answered as the scripts answer a cost over the limit (a bucket's burst): a whole ttl from now.
      const retryAfterMs = ok ? 0 : c.cost > limit ? c.policy.ttl : Math.max(1, left);
      return {
        allowed: ok,
        limit,
        remaining: Math.max(0, limit - (w?.count ?? 0)),
        resetMs: resetNotBeforeRetry(left, retryAfterMs),
        retryAfterMs,
      };
    });
    return { allowed, results };
  }

  /**
   * Forgets one counter's window (reset of one policy) or, with a prefix, the windows of every counter of a key: a
   * reset of one client must not give every other client of the process a fresh share.
   */
  forget(counter: string, isPrefix = false): void {
    if (!isPrefix) {
      this.windows.delete(counter);
      return;
    }
    for (const k of [...this.windows.keys()]) if (k.startsWith(counter)) this.windows.delete(k);
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
