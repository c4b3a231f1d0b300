import type { RateLimitHeaders } from './rate-limit.options.js';
import type { RateLimitDecision } from './rate-limit.types.js';

type SetHeader = (name: string, value: string | number) => void;

/**
 * Writes the rate-limit headers of a decision in the configured style:
 * - `draft` (IETF draft-8+): every policy, `RateLimit-Policy: "name";q=5;w=60` and `RateLimit: "name";r=4;t=60`;
 * - `draft-7`: the tightest policy, `RateLimit: limit=5, remaining=4, reset=60` and `RateLimit-Policy: 5;w=60`;
 * - `draft-6`: the tightest policy, `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset` (+ the policy);
 * - `legacy`: the tightest policy, `X-RateLimit-Limit`, `-Remaining`, `-Reset`; `both`: draft + legacy.
 * Reset values are whole seconds (rounded up), windows `w` whole seconds (at least 1).
 */
export function writeRateLimitHeaders(mode: RateLimitHeaders, decision: RateLimitDecision, set: SetHeader): void {
  if (mode === false) return;
  if (mode === 'draft' || mode === 'both') {
    const policy = decision.results.map((r) => `${sfString(r.name)};q=${r.limit};w=${windowSeconds(r)}`);
    const state = decision.results.map((r) => `${sfString(r.name)};r=${r.remaining};t=${Math.ceil(r.resetMs / 1000)}`);
    set('RateLimit-Policy', policy.join(', '));
    set('RateLimit', state.join(', '));
  }
  if (mode === 'draft') return;
  // one policy only in these styles: the one closest to refusing (fewest left; on a tie, the longest reset)
  const tightest = decision.results.reduce((a, b) =>
    b.remaining < a.remaining || (b.remaining === a.remaining && b.resetMs > a.resetMs) ? b : a,
  );
  const reset = Math.ceil(tightest.resetMs / 1000);
  if (mode === 'draft-7') {
    set('RateLimit', `limit=${tightest.limit}, remaining=${tightest.remaining}, reset=${reset}`);
    set('RateLimit-Policy', `${tightest.limit};w=${windowSeconds(tightest)}`);
  } else if (mode === 'draft-6') {
    set('RateLimit-Policy', `${tightest.limit};w=${windowSeconds(tightest)}`);
    set('RateLimit-Limit', tightest.limit);
    set('RateLimit-Remaining', tightest.remaining);
    set('RateLimit-Reset', reset);
  } else {
    set('X-RateLimit-Limit', tightest.limit);
    set('X-RateLimit-Remaining', tightest.remaining);
    set('X-RateLimit-Reset', reset);
  }
}

function windowSeconds(r: RateLimitDecision['results'][number]): number {
  return Math.max(1, Math.ceil(r.policy.ttl / 1000));
}

/** A structured-field string (RFC 8941): printable ASCII, with `"` and `\` escaped. */
function sfString(value: string): string {
  return `"${value.replace(/[^\x20-\x7e]/g, '_').replace(/["\\]/g, (c) => `\\${c}`)}"`;
}
