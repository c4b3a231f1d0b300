import type { ExecutionContext } from '@nestjs/common';
import { isDuration, MAX_DURATION_MS, type OptionProblems, shownValue } from '../common/option-checks.js';
import { checkAccessList, checkIpv6Grouping, isAddressOrCidr } from './rate-limit.access-list.js';
import { checkGuardValues, MAX_KEYS } from './rate-limit.option-names.js';

/** Injection token of ResolvedRateLimitOptions (`rateLimit` of forRoot, defaults filled in). */
export const RATE_LIMIT_OPTIONS = Symbol('RATE_LIMIT_OPTIONS');

export type RateLimitAlgorithm = 'sliding-window' | 'fixed-window' | 'token-bucket';
export const RATE_LIMIT_ALGORITHMS: readonly RateLimitAlgorithm[] = ['sliding-window', 'fixed-window', 'token-bucket'];

/** One limit: at most `limit` units per `ttl` ms. */
export interface RateLimitPolicy {
  limit: number;
  /** Window length in ms (token bucket: the time to refill `limit` tokens, i.e. the steady rate is limit / ttl). */
  ttl: number;
  algorithm?: RateLimitAlgorithm;
  /** Token bucket only: how many tokens the bucket holds (the largest burst). Default `limit`. */
  burst?: number;
  /** Units this call uses. Default 1. */
  cost?: number;
  /**
   * After this policy refuses a consume, its counter stays refused for this many ms (from the refusal), whatever
   * the window says — @nestjs/throttler's and rate-limiter-flexible's `blockDuration`. Default 0 (none).
   */
  blockDuration?: number;
}

/** A value given once, or worked out per request from the execution context (HTTP or WebSocket). */
export type Resolvable<T> = T | ((context: ExecutionContext) => T | Promise<T>);

/** What `@Throttle(...)` takes: a policy whose values may depend on the request. */
export interface ThrottleOptions {
  limit: Resolvable<number>;
  ttl: Resolvable<number>;
  algorithm?: Resolvable<RateLimitAlgorithm>;
  burst?: Resolvable<number>;
  /** Units each request uses. Default 1. */
  cost?: Resolvable<number>;
  /** After a refusal the counter stays refused this many ms (RateLimitPolicy.blockDuration). Default 0. */
  blockDuration?: Resolvable<number>;
  /**
   * Who is limited. Default: the client IP (RateLimitGuard.getTracker). A string is one limit shared by every
   * client; a function gives per-user limits, e.g. `(ctx) => ctx.switchToHttp().getRequest().user.id`.
   * The value is hashed before it becomes part of a Redis key.
   */
  key?: string | ((context: ExecutionContext) => string | Promise<string>);
  /**
   * Names the policy in keys and in the RateLimit headers. Default `default` for the first policy of a decorator,
   * `default-2`, `default-3`... for the others.
   */
  name?: string;
  /** Redis down: allow (true) or deny with 503 (false). Default: `rateLimit.failOpen`. */
  failOpen?: boolean;
  /**
   * HTTP: give the charge back when the response succeeds (status < 400), so only failures count — the login
   * brute-force setup (express-rate-limit `skipSuccessfulRequests`). Default false.
   */
  skipSuccessfulRequests?: boolean;
  /**
   * HTTP: give the charge back when the response fails (status >= 400 or the connection closes first). Default false.
   */
  skipFailedRequests?: boolean;
  /**
   * Trackers this policy does not count (the other policies of the request still do): the entries of
   * `rateLimit.allowList`, matched against the same tracker. Static; checked when the decorator runs.
   */
  allowList?: string[];
  /**
   * Trackers refused (403, as `rateLimit.denyList`) on every route this policy applies to. A tracker denied by any
   * policy of the request, or module-wide, is refused even when an allow list has it.
   */
  denyList?: string[];
}

/**
 * Which rate-limit headers RateLimitGuard sends: `draft` (IETF draft-8 and later: `RateLimit` + `RateLimit-Policy`
 * per named policy), `draft-7` (one combined `RateLimit: limit=5, remaining=4, reset=60` + `RateLimit-Policy: 5;w=60`,
 * express-rate-limit `standardHeaders: 'draft-7'`), `draft-6` (`RateLimit-Limit`, `-Remaining`, `-Reset`:
 * express-rate-limit `standardHeaders: true`), `legacy` (`X-RateLimit-*`), `both` (draft + legacy) or none.
 */
export type RateLimitHeaders = 'draft' | 'draft-7' | 'draft-6' | 'legacy' | 'both' | false;
export const RATE_LIMIT_HEADERS: readonly RateLimitHeaders[] = ['draft', 'draft-7', 'draft-6', 'legacy', 'both', false];

/** Which X-Forwarded-For hops to believe. */
export type TrustProxy =
  | boolean
  /** The number of proxies in front of the app (1 = the address the nearest proxy saw). */
  | number
  /** Addresses or CIDR ranges of your proxies; `loopback`, `linklocal`, `uniquelocal` name the usual ranges. */
  | string[];

export interface RateLimitInsuranceOptions {
  /**
   * Each process allows its share while Redis is down: `ceil(limit / divideLimitBy)` per ttl, a token bucket's
   * `ceil(burst / divideLimitBy)` per `burst × ttl / limit` (set it to the number of app instances). Default 1.
   */
  divideLimitBy?: number;
  /** Counters kept (the least recently used is dropped, and starts over). Default 10 000, at most 1 000 000. */
  maxKeys?: number;
}

export interface RateLimitBlockCacheOptions {
  /** Counters remembered (least recently used are dropped). Default 10 000, at most 1 000 000. */
  maxKeys?: number;
}

export interface RateLimitOptions {
  /**
   * Trackers RateLimitGuard lets through without counting (no Redis call, no headers): IP addresses, CIDR ranges
   * (`10.0.0.0/8`, `2001:db8::/32`) or exact trackers (`user:42` when getTracker returns user ids). Checked at
   * startup: an address-like entry that is not a valid address or range is an InvalidOptionsError.
   */
  allowList?: string[];
  /**
   * Trackers RateLimitGuard always refuses, before counting: HTTP 403 Forbidden (a WsException with statusCode 403),
   * no Retry-After (waiting does not help). Same entries as `allowList`; a tracker on both lists is denied.
   */
  denyList?: string[];
  /**
   * In-process block cache: a counter Redis refused until time T is refused by this process until T with no Redis
   * call (rate-limiter-flexible `inMemoryBlockOnConsumed`), for calls with the policy Redis refused (another limit on
   * the same counter goes to Redis). Never admits what Redis would refuse; a reset() or reward() made by another
   * process is not seen until T. Default off.
   */
  blockCache?: boolean | RateLimitBlockCacheOptions;
  /** RateLimitGuard lets a request through uncounted when this returns true (express-rate-limit `skip`). */
  skipIf?: (context: ExecutionContext) => boolean | Promise<boolean>;
  /**
   * RateLimitGuard lets requests whose User-Agent matches one of these through uncounted (throttler
   * `ignoreUserAgents`).
   */
  ignoreUserAgents?: RegExp[];
  /**
   * The message of a refusal (429 body, WsException): a string or a function of the context. Default 'Too Many
   * Requests'.
   */
  errorMessage?: string | ((context: ExecutionContext, retryAfterMs: number) => string);
  /**
   * Used by RateLimitGuard where neither the handler nor its class has @Throttle. Default 100 per 60 s, sliding window.
   */
  defaults?: RateLimitPolicy;
  /**
   * Redis down or slow: allow and count the request (true, default) or refuse it (false: 503 / RedisUnavailableError).
   */
  failOpen?: boolean;
  /** Response headers (see RateLimitHeaders). Default `draft`. */
  headers?: RateLimitHeaders;
  /**
   * Honour X-Forwarded-For. Default false: the socket's address is the client, whatever the headers say.
   * `true` trusts proxies on loopback and private addresses; a number trusts that many hops; a list trusts those
   * addresses. The client is the right-most address that is not a trusted proxy.
   */
  trustProxy?: TrustProxy;
  /** IPv6 clients are grouped by this prefix length (a /64 is one subscriber). Default 64; 128 = per address. */
  ipv6Subnet?: number;
  /** While Redis is unreachable, an in-process limiter decides instead of failOpen. Default off. */
  insurance?: boolean | RateLimitInsuranceOptions;
  /** Interval between two "Redis unavailable" warnings, ms. Default 10 000. */
  warnIntervalMs?: number;
  /**
   * Largest `limit` (and so `cost`) a sliding-window policy may have: the window keeps one sorted-set member per
   * unit, so Redis time per call and the key's memory grow with it (10 000 ≈ 1.2 MB per key). Default 10 000, at
   * most 100 000; use 'fixed-window' or 'token-bucket' (O(1) whatever the limit) for larger limits.
   */
  maxSlidingWindowLimit?: number;
}

export interface ResolvedRateLimitOptions {
  allowList: string[];
  denyList: string[];
  blockCache: Required<RateLimitBlockCacheOptions> | false;
  skipIf?: (context: ExecutionContext) => boolean | Promise<boolean>;
  ignoreUserAgents: RegExp[];
  errorMessage: string | ((context: ExecutionContext, retryAfterMs: number) => string);
  defaults: Required<Omit<RateLimitPolicy, 'burst' | 'cost' | 'blockDuration'>> &
    Pick<RateLimitPolicy, 'burst' | 'cost' | 'blockDuration'>;
  failOpen: boolean;
  headers: RateLimitHeaders;
  trustProxy: TrustProxy;
  ipv6Subnet: number;
  insurance: Required<RateLimitInsuranceOptions> | false;
  warnIntervalMs: number;
  maxSlidingWindowLimit: number;
}

/** Default and hard maximum of `rateLimit.maxSlidingWindowLimit` (measurements in docs/rate-limit.md). */
export const DEFAULT_SLIDING_WINDOW_MAX_LIMIT = 10_000;
export const SLIDING_WINDOW_HARD_MAX_LIMIT = 100_000;

export function resolveRateLimitOptions(
  raw: RateLimitOptions | undefined,
  problems: OptionProblems,
): ResolvedRateLimitOptions {
  const o = raw ?? {};
  let insurance: Required<RateLimitInsuranceOptions> | false = false;
  let blockCache: Required<RateLimitBlockCacheOptions> | false = false;
  if (problems.object('rateLimit', raw)) {
    problems.boolean('rateLimit.failOpen', o.failOpen);
    problems.oneOf('rateLimit.headers', o.headers, RATE_LIMIT_HEADERS);
    checkAccessList('rateLimit.allowList', o.allowList, problems);
    checkAccessList('rateLimit.denyList', o.denyList, problems);
    if (
      o.blockCache !== undefined &&
      typeof o.blockCache !== 'boolean' &&
      problems.object('rateLimit.blockCache', o.blockCache)
    ) {
      problems.integer('rateLimit.blockCache.maxKeys', o.blockCache.maxKeys, 1, MAX_KEYS);
    }
    if (o.blockCache === true || (typeof o.blockCache === 'object' && o.blockCache !== null))
      blockCache = { maxKeys: (typeof o.blockCache === 'object' ? o.blockCache.maxKeys : undefined) ?? 10_000 };
    checkTrustProxy(o.trustProxy, problems);
    problems.integer('rateLimit.ipv6Subnet', o.ipv6Subnet, 1, 128);
    checkIpv6Grouping('rateLimit.allowList', o.allowList, o.ipv6Subnet ?? 64, problems);
    checkIpv6Grouping('rateLimit.denyList', o.denyList, o.ipv6Subnet ?? 64, problems);
    problems.duration('rateLimit.warnIntervalMs', o.warnIntervalMs, { allowZero: true });
    problems.integer('rateLimit.maxSlidingWindowLimit', o.maxSlidingWindowLimit, 1, SLIDING_WINDOW_HARD_MAX_LIMIT);
    const cap = o.maxSlidingWindowLimit ?? DEFAULT_SLIDING_WINDOW_MAX_LIMIT;
    // as each call will check them (the default algorithm is the sliding window; a wrong cap: its hard maximum)
    if (problems.object('rateLimit.defaults', o.defaults) && o.defaults) {
      const valid = Number.isInteger(cap) && cap >= 1 && cap <= SLIDING_WINDOW_HARD_MAX_LIMIT;
      const slidingCap = valid ? cap : SLIDING_WINDOW_HARD_MAX_LIMIT;
      checkPolicy('rateLimit.defaults', o.defaults, problems, 'sliding-window', slidingCap);
      // the guard spreads the defaults into the policy it applies: their key, name and failOpen as @Throttle's
      checkGuardValues('rateLimit.defaults', o.defaults, problems);
      // the guard names the defaults' policy 'default' (its counters, @SkipThrottle({ default: true })): another name
      // would be dropped without a word
      const { name } = o.defaults as { name?: unknown };
      if (typeof name === 'string' && name !== 'default') {
        problems.add(
          'rateLimit.defaults.name',
          `is "${name}", but the guard always names the defaults' policy "default" (its counters, ` +
            '@SkipThrottle({ default: true })): remove it, or give a named policy with @Throttle({ name, ... })',
        );
      }
    }
    if (
      o.insurance !== undefined &&
      typeof o.insurance !== 'boolean' &&
      problems.object('rateLimit.insurance', o.insurance)
    ) {
      problems.integer('rateLimit.insurance.divideLimitBy', o.insurance.divideLimitBy, 1);
      problems.integer('rateLimit.insurance.maxKeys', o.insurance.maxKeys, 1, MAX_KEYS);
    }
    if (o.insurance === true || (typeof o.insurance === 'object' && o.insurance !== null)) {
      const i = typeof o.insurance === 'object' ? o.insurance : {};
      insurance = { divideLimitBy: i.divideLimitBy ?? 1, maxKeys: i.maxKeys ?? 10_000 };
    }
  }
  if (o.skipIf !== undefined && typeof o.skipIf !== 'function') problems.add('rateLimit.skipIf', 'must be a function');
  if (
    o.ignoreUserAgents !== undefined &&
    !(Array.isArray(o.ignoreUserAgents) && o.ignoreUserAgents.every((r) => r instanceof RegExp))
  )
    problems.add('rateLimit.ignoreUserAgents', 'must be an array of RegExp');
  if (o.errorMessage !== undefined && typeof o.errorMessage !== 'string' && typeof o.errorMessage !== 'function')
    problems.add('rateLimit.errorMessage', 'must be a string or a function');
  return {
    allowList: Array.isArray(o.allowList) ? [...o.allowList] : [],
    denyList: Array.isArray(o.denyList) ? [...o.denyList] : [],
    blockCache,
    ...(o.skipIf && { skipIf: o.skipIf }),
    ignoreUserAgents: o.ignoreUserAgents ?? [],
    errorMessage: o.errorMessage ?? 'Too Many Requests',
    // `algorithm: undefined` given is the default too (as it is when checked above)
    defaults: { limit: 100, ttl: 60_000, ...o.defaults, algorithm: o.defaults?.algorithm ?? 'sliding-window' },
    failOpen: o.failOpen ?? true,
    headers: o.headers ?? 'draft',
    trustProxy: o.trustProxy ?? false,
    ipv6Subnet: o.ipv6Subnet ?? 64,
    insurance,
    warnIntervalMs: o.warnIntervalMs ?? 10_000,
    maxSlidingWindowLimit: o.maxSlidingWindowLimit ?? DEFAULT_SLIDING_WINDOW_MAX_LIMIT,
  };
}

/** The problem text for a sliding window over the cap (option check and call-time check say the same). */
export function slidingWindowTooLarge(cap: number, limit: unknown): string {
  return (
    `must be at most ${cap} for a sliding window (one sorted-set member per unit), got ${String(limit)}: ` +
    `raise rateLimit.maxSlidingWindowLimit (up to ${SLIDING_WINDOW_HARD_MAX_LIMIT}) or use 'fixed-window' or ` +
    `'token-bucket'`
  );
}

/**
 * Checks the static values of a policy at start (`rateLimit.defaults`; `@Throttle` when it decorates) with
 * policyProblems, the check every call makes: what starts is what the calls accept. A function (a @Throttle value
 * resolved per request) is checked when it is resolved, per call.
 */
export function checkPolicy(
  path: string,
  p: Partial<Record<keyof RateLimitPolicy, unknown>>,
  problems: OptionProblems,
  defaultAlgorithm?: RateLimitAlgorithm,
  slidingCap = SLIDING_WINDOW_HARD_MAX_LIMIT,
): void {
  for (const [field, problem] of policyProblems(p, defaultAlgorithm, slidingCap, true) ?? [])
    problems.add(`${path}.${field}`, problem);
}

/** One wrong value of a policy: its field and what is wrong (`must be ..., got ...`). */
export type PolicyProblem = readonly [field: keyof RateLimitPolicy, problem: string];

/**
 * What is wrong with a policy's values, or undefined: the one check behind the call-time resolution
 * (resolveCallPolicy, which throws the first) and the start-up checks (checkPolicy, which lists them all).
 * `defaultAlgorithm` applies when the policy names none: the module's default; undefined at decoration, where it is
 * not known yet: a cost is then refused only over both the limit and the burst (over the capacity of any algorithm),
 * and the limit is held to `slidingCap` as a sliding window's. With `deferFunctions`, a value that is a function
 * (resolved per request) is left, with every check that needs it, to the call.
 */
export function policyProblems(
  p: Partial<Record<keyof RateLimitPolicy, unknown>>,
  defaultAlgorithm: RateLimitAlgorithm | undefined,
  slidingCap: number,
  deferFunctions = false,
): PolicyProblem[] | undefined {
  const known = deferFunctions ? isStatic : isAny;
  let out: PolicyProblem[] | undefined;
  const { limit, ttl, cost = 1, blockDuration = 0 } = p;
  const burst = p.burst ?? limit;
  if (known(limit) && !isCount(limit, 1)) out = add(out, 'limit', 'an integer >= 1', limit);
  if (known(ttl) && !(isDuration(ttl) && Number.isInteger(ttl)))
    out = add(out, 'ttl', `a whole number of milliseconds from 1 to ${MAX_DURATION_MS}`, ttl);
  const algorithm = p.algorithm ?? defaultAlgorithm;
  const valid = RATE_LIMIT_ALGORITHMS.includes(algorithm as RateLimitAlgorithm);
  if (algorithm !== undefined && known(algorithm) && !valid)
    out = add(out, 'algorithm', `one of ${RATE_LIMIT_ALGORITHMS.join(', ')}`, algorithm);
  const algo = valid ? (algorithm as RateLimitAlgorithm) : undefined;
  if (isCount(limit, 1) && limit > slidingCap && (algo === 'sliding-window' || algorithm === undefined))
    (out ??= []).push(['limit', slidingWindowTooLarge(slidingCap, limit)]);
  if (p.burst !== undefined && known(burst) && !isCount(burst, 1)) out = add(out, 'burst', 'an integer >= 1', burst);
  if (algo === 'token-bucket' && isCount(limit, 1) && isCount(burst, 1) && isCount(ttl, 1) && isDuration(ttl)) {
    // The bucket's state is a time (µs) up to burst × ttl / limit ahead of now: bounded as every duration is, it stays
    // a whole number a double holds and Redis takes (past it: TATs in e-notation, full buckets that refuse a burst).
    // The µs per token rounded up and at least 1: never less than what a script uses, exact or rounded.
    const maxBurst = Math.floor((MAX_DURATION_MS * 1000) / Math.max(1, Math.ceil((ttl * 1000) / limit)));
    if (burst > maxBurst) {
      const why = `a token bucket's burst × ttl / limit (its time to refill) is at most ${MAX_DURATION_MS} ms`;
      out = add(out, 'burst', `at most ${maxBurst} for this limit and ttl (${why}: 100 years)`, burst);
    }
  }
  // what a call of this cost needs at once: a bucket's burst, a window's limit (unknown algorithm: the larger)
  let capacity: unknown = algo === 'token-bucket' ? burst : limit;
  if (algo === undefined) capacity = isCount(limit, 1) && isCount(burst, 1) ? Math.max(limit, burst) : undefined;
  if (!known(cost)) {
    // resolved per request
  } else if (isCount(capacity, 1)) {
    if (!isCount(cost, 0) || cost > capacity)
      out = add(out, 'cost', `an integer from 0 to ${capacity} (a larger cost could never be allowed)`, cost);
  } else if (!isCount(cost, 0)) out = add(out, 'cost', 'an integer >= 0', cost);
  if (known(blockDuration) && !(isDuration(blockDuration, true) && Number.isInteger(blockDuration)))
    out = add(out, 'blockDuration', `a whole number of milliseconds from 0 to ${MAX_DURATION_MS}`, blockDuration);
  return out;
}

function add(
  out: PolicyProblem[] | undefined,
  field: keyof RateLimitPolicy,
  what: string,
  value: unknown,
): PolicyProblem[] {
  (out ??= []).push([field, `must be ${what}, got ${shownValue(value)}`]);
  return out;
}

const isStatic = (v: unknown): boolean => typeof v !== 'function';
const isAny = (): boolean => true;

function isCount(value: unknown, min: number): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= min;
}

const PROXY_KEYWORDS = ['loopback', 'linklocal', 'uniquelocal'];

function checkTrustProxy(value: unknown, problems: OptionProblems): void {
  if (value === undefined || typeof value === 'boolean') return;
  if (typeof value === 'number') {
    problems.integer('rateLimit.trustProxy', value, 0, 100);
    return;
  }
  if (Array.isArray(value)) {
    value.forEach((entry: unknown, i) => {
      if (typeof entry !== 'string' || !(PROXY_KEYWORDS.includes(entry) || isAddressOrCidr(entry))) {
        problems.add(
          `rateLimit.trustProxy[${i}]`,
          `must be an IP address, a CIDR range or one of ${PROXY_KEYWORDS.join(', ')}, got ${shownValue(entry)}`,
        );
      }
    });
    return;
  }
  problems.add(
    'rateLimit.trustProxy',
    `must be true/false, a number of hops or a list of proxy addresses, got ${shownValue(value)}`,
  );
}
