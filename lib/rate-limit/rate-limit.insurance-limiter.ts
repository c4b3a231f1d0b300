import { LRUCache } from 'lru-cache';
import { resetNotBeforeRetry } from './rate-limit.results.js';

export interface InsuranceCheck {
  redisKey: string;
  limit: number;
  ttl: number;
  cost: number;
}

export interface InsuranceResult {
  allowed: boolean;
  remaining: number;
  resetMs: number;
  retryAfterMs: number;
}

interface Window {
  count: number;
  endsAt: number;
}

/**
 * The in-process stand-in used while Redis is unreachable: a fixed window per counter, with each process allowed
 * `ceil(limit / divideLimitBy)`, all policies of a request checked and charged together. It only has to keep an
 * outage from turning into "no limit at all". Its windows are kept when Redis is back (each ends by itself, the LRU
 * bounds them to maxKeys); only RateLimitService.reset clears them. A refusal waits at least 1 ms, and its resetMs is
 * never before its retryAfterMs (so no reset header says sooner than Retry-After).
 */
export class InsuranceLimiter {
  private readonly windows: LRUCache<string, Window>;

  constructor(
    private readonly divideLimitBy: number,
    maxKeys: number,
  ) {
    this.windows = new LRUCache({ max: maxKeys });
  }

  consume(checks: readonly InsuranceCheck[], now = Date.now()): { allowed: boolean; results: InsuranceResult[] } {
    const states = checks.map((c) => {
      let w = this.windows.get(c.redisKey);
      if (!w || w.endsAt <= now) w = { count: 0, endsAt: now + c.ttl };
      const limit = Math.max(1, Math.ceil(c.limit / this.divideLimitBy));
      return { c, w, limit, ok: w.count + c.cost <= limit };
    });
    const allowed = states.every((s) => s.ok);
    const results = states.map(({ c, w, limit, ok }) => {
      if (allowed) {
        w.count += c.cost;
        this.windows.set(c.redisKey, w);
      }
      const left = Math.max(0, w.endsAt - now);
      // A cost over the per-process limit fits no window: the time left in this one would send the client back to be
      // refused again. Answered as the scripts answer a cost over the limit: a whole window from now.
      const retryAfterMs = ok ? 0 : c.cost > limit ? c.ttl : Math.max(1, left);
      return {
        allowed: ok,
        remaining: Math.max(0, limit - w.count),
        resetMs: resetNotBeforeRetry(left, retryAfterMs),
        retryAfterMs,
      };
    });
    return { allowed, results };
  }

  clear(): void {
    this.windows.clear();
  }
}
