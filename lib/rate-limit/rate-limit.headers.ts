import type { RateLimitHeaders } from './rate-limit.options.js';
import type { RateLimitDecision } from './rate-limit.types.js';

type SetHeader = (name: string, value: string | number) => void;

/**
 * Writes the rate-limit headers of a decision in the configured style:
 * - `draft` (IETF draft-8+): every policy, `RateLimit-Policy: "name";q=5;w=60` and `RateLimit: "name";r=4;t=60`;
 * - `draft-7`: one policy (shownPolicy), `RateLimit: limit=5, remaining=4, reset=60` and `RateLimit-Policy: 5;w=60`;
 * - `draft-6`: one policy, `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset` (+ the policy);
 * - `legacy`: one policy, `X-RateLimit-Limit`, `-Remaining`, `-Reset`; `both`: draft + legacy.
 * Reset values are whole seconds (rounded up; a refused policy's at least its Retry-After: resetSeconds), windows `w`
 * whole seconds (at least 1).
 */
export function writeRateLimitHeaders(mode: RateLimitHeaders, decision: RateLimitDecision, set: SetHeader): void {
  if (mode === false) return;
  if (mode === 'draft' || mode === 'both') {
    const policy = decision.results.map((r) => `${sfString(r.name)};q=${r.limit};w=${windowSeconds(r)}`);
    const state = decision.results.map((r) => `${sfString(r.name)};r=${r.remaining};t=${resetSeconds(r)}`);
    set('RateLimit-Policy', policy.join(', '));
    set('RateLimit', state.join(', '));
  }
  if (mode === 'draft') return;
  const shown = shownPolicy(decision);
  const reset = resetSeconds(shown);
  if (mode === 'draft-7') {
    set('RateLimit', `limit=${shown.limit}, remaining=${shown.remaining}, reset=${reset}`);
    set('RateLimit-Policy', `${shown.limit};w=${windowSeconds(shown)}`);
  } else if (mode === 'draft-6') {
    set('RateLimit-Policy', `${shown.limit};w=${windowSeconds(shown)}`);
    set('RateLimit-Limit', shown.limit);
    set('RateLimit-Remaining', shown.remaining);
    set('RateLimit-Reset', reset);
  } else {
    set('X-RateLimit-Limit', shown.limit);
    set('X-RateLimit-Remaining', shown.remaining);
    set('X-RateLimit-Reset', reset);
  }
}

type PolicyState = RateLimitDecision['results'][number];

/**
 * The one policy of the single-policy styles. Admitted: the one closest to refusing (fewest units left; on a tie, the
 * longest reset). Refused: the one Retry-After comes from (the longest retry among the policies that refused; on a
 * tie, as admitted), whose reset is never before its retry (resetNotBeforeRetry). With a cost over 1 a refusing policy
 * can have units left (2, for a call of 3) while another has fewer and is back sooner: showing that one would give a
 * reset before Retry-After, and a client trusting it would come back too early.
 */
function shownPolicy(decision: RateLimitDecision): PolicyState {
  const refused = decision.allowed ? [] : decision.results.filter((r) => !r.allowed);
  if (refused.length > 0) {
    return refused.reduce((a, b) =>
      b.retryAfterMs > a.retryAfterMs || (b.retryAfterMs === a.retryAfterMs && closerToRefusing(b, a)) ? b : a,
    );
  }
  return decision.results.reduce((a, b) => (closerToRefusing(b, a) ? b : a));
}

/** Fewer units left; on a tie, the longer reset. */
function closerToRefusing(b: PolicyState, a: PolicyState): boolean {
  return b.remaining < a.remaining || (b.remaining === a.remaining && b.resetMs > a.resetMs);
}

/**
 * Retry-After (s) of a refusal that says to wait `retryAfterMs`, as RateLimitGuard writes it: rounded up, at least 1
 * (a refusal in a window's last ms says 0 ms, and "retry at once" would be refused again).
 */
export function retryAfterSeconds(retryAfterMs: number): number {
  return Math.max(1, Math.ceil(retryAfterMs / 1000));
}

/**
 * A policy's reset (s). A policy that refused is not back before its Retry-After: rounded up alike, a resetMs never
 * below its retryAfterMs (resetNotBeforeRetry) gives a reset never below its Retry-After, but a refusal whose figures
 * are both under 1 ms (a fixed window refused in its last ms: Redis's PTTL is 0) would say reset 0 beside Retry-After:
 * 1. The longest retry of a decision is the guard's Retry-After, and its policy the one the single-policy styles show.
 */
function resetSeconds(r: PolicyState): number {
  const reset = Math.ceil(r.resetMs / 1000);
  return r.allowed ? reset : Math.max(reset, retryAfterSeconds(r.retryAfterMs));
}

function windowSeconds(r: PolicyState): number {
  return Math.max(1, Math.ceil(r.policy.ttl / 1000));
}

/** A structured-field string (RFC 8941): printable ASCII, with `"` and `\` escaped. */
function sfString(value: string): string {
  return `"${value.replace(/[^\x20-\x7e]/g, '_').replace(/["\\]/g, (c) => `\\${c}`)}"`;
}
