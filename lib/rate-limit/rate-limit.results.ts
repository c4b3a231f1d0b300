import { diagnose } from '../common/diagnostics.js';
import type { RateLimitKeys } from './rate-limit.keys.js';
import type { RateLimitCheck, RateLimitDecision, RateLimitResult } from './rate-limit.types.js';

/**
 * The one diagnostics point of a charging decision (only wrapped in when someone listens). The tracker is a short
 * hash: an IP or a user id must not reach a log through a subscriber.
 */
export function diagnosed<R extends { allowed: boolean; degraded?: 'fail-open' | 'insurance' }>(
  keys: RateLimitKeys,
  decided: Promise<R>,
  key: string,
  checks?: readonly RateLimitCheck[],
): Promise<R> {
  const started = performance.now();
  return decided.then((r) => {
    const durationMs = performance.now() - started;
    diagnose('rateLimitDecision', () => ({
      feature: 'ratelimit',
      operation: 'decision',
      outcome: r.allowed ? 'allowed' : 'refused',
      ...(r.degraded && { degraded: r.degraded }),
      policies: checks ? checks.map((c) => c.name ?? 'default') : ['default'],
      tracker: keys.hash(key).slice(0, 8),
      durationMs,
    }));
    return r;
  });
}

export function toResult(
  r: RateLimitDecision['results'][number],
  degraded: RateLimitDecision['degraded'],
): RateLimitResult {
  const result: RateLimitResult = {
    allowed: r.allowed,
    limit: r.limit,
    remaining: r.remaining,
    resetMs: r.resetMs,
    retryAfterMs: r.retryAfterMs,
  };
  if (degraded) result.degraded = degraded;
  return result;
}

export function groupBy<T>(items: readonly T[], by: (item: T) => string): T[][] {
  const groups = new Map<string, T[]>();
  for (const item of items) {
    const k = by(item);
    let g = groups.get(k);
    if (!g) groups.set(k, (g = []));
    g.push(item);
  }
  return [...groups.values()];
}
