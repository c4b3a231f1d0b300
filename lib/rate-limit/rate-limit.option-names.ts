import { InvalidOptionsError } from '../common/errors.js';
import { nearest, type OptionProblems, refuseUnknown, shownValue } from '../common/option-checks.js';
import type { CounterScope } from './rate-limit.admin.js';
import type { RateLimitPolicy, ThrottleOptions } from './rate-limit.options.js';
import type { ConsumeOptions, RateLimitCheck, RewardOptions } from './rate-limit.types.js';

/**
 * The largest `maxKeys` of the block cache and of insurance: lru-cache reserves every slot when it is made (~16 bytes
 * each, 16 MB for 1 000 000, 2.5 GB for 100 000 000), and 2^32 or more was a bare RangeError at start.
 */
export const MAX_KEYS = 1_000_000;

/*
 * The keys each options object of the rate limiter takes. A misspelled one (`algoritm`, `blockDurationMs`, `failopen`)
 * would otherwise be ignored and change what the call does without a word: it is an InvalidOptionsError naming the
 * nearest known key, per call for the service, at declaration (or start) for the decorators. Each list `satisfies`
 * its type: a key added to the type and not here fails tsc, as does one here that the type lacks.
 */

const POLICY = {
  limit: true,
  ttl: true,
  algorithm: true,
  burst: true,
  cost: true,
  blockDuration: true,
} satisfies Record<keyof RateLimitPolicy, true>;
export const POLICY_KEYS: ReadonlySet<string> = new Set(Object.keys(POLICY));

/** reset/block: a policy, or a guard's `{ scope, algorithm }` (a policy with a scope names the scope's counter). */
export const COUNTER_KEYS: ReadonlySet<string> = new Set(
  Object.keys({ ...POLICY, scope: true } satisfies Record<keyof RateLimitPolicy | keyof CounterScope, true>),
);

/**
 * A policy given at call time: its keys are known ones (InvalidOptionsError naming the first other one). Every consume
 * runs this: the switch on constant names costs ~10 ns for six keys (POLICY_KEYS.has ~40 ns); a key it lacks only
 * takes the slower path, where POLICY_KEYS decides.
 */
export function refuseUnknownPolicyKeys(p: object, where: string): void {
  for (const key in p) {
    switch (key) {
      case 'limit':
      case 'ttl':
      case 'algorithm':
      case 'burst':
      case 'cost':
      case 'blockDuration':
        continue;
    }
    refuseUnknown(p, POLICY_KEYS, where);
    return;
  }
}

const CONSUME_KEYS: ReadonlySet<string> = new Set(
  Object.keys({ failOpen: true } satisfies Record<keyof ConsumeOptions, true>),
);

const REWARD_KEYS: ReadonlySet<string> = new Set(
  Object.keys({ windowEndsAt: true, degraded: true } satisfies Record<keyof RewardOptions, true>),
);

/**
 * A reward's RewardOptions: an object of known keys, `windowEndsAt` a finite number (NaN or a string would compare
 * false in the script and give the units back to whatever window counts), `degraded` one of a result's.
 */
export function checkRewardOptions(options: RewardOptions): void {
  if (options === null || typeof options !== 'object')
    throw new InvalidOptionsError(`rate limit reward: options must be an object, got ${shownValue(options)}`);
  refuseUnknown(options, REWARD_KEYS, 'rate limit reward options');
  const { windowEndsAt } = options;
  if (windowEndsAt !== undefined && !(typeof windowEndsAt === 'number' && Number.isFinite(windowEndsAt))) {
    throw new InvalidOptionsError(
      `rate limit reward options: windowEndsAt must be a finite number (performance.now() ms), ` +
        `got ${shownValue(windowEndsAt)}`,
    );
  }
  const { degraded } = options;
  if (degraded !== undefined && degraded !== 'fail-open' && degraded !== 'insurance') {
    throw new InvalidOptionsError(
      `rate limit reward options: degraded must be 'fail-open' or 'insurance' (a result's degraded), ` +
        `got ${shownValue(degraded)}`,
    );
  }
}

const CHECK_KEYS: ReadonlySet<string> = new Set(
  Object.keys({ key: true, policy: true, scope: true, name: true } satisfies Record<keyof RateLimitCheck, true>),
);

const THROTTLE_KEYS: readonly string[] = Object.keys({
  ...POLICY,
  key: true,
  name: true,
  failOpen: true,
  skipSuccessfulRequests: true,
  skipFailedRequests: true,
  allowList: true,
  denyList: true,
} satisfies Record<keyof ThrottleOptions, true>);
const THROTTLE_KEY_SET: ReadonlySet<string> = new Set(THROTTLE_KEYS);

/**
 * The ConsumeOptions of a call (consume, peek, consumeAll...): an object of known keys; `failOpen` true or false (a
 * truthy 'false' or a falsy 0 would fail open or closed against what was written).
 */
export function checkConsumeOptions(options: ConsumeOptions): void {
  if (options === null || typeof options !== 'object')
    throw new InvalidOptionsError('rate limit: options must be an object');
  refuseUnknown(options, CONSUME_KEYS, 'rate limit options');
  const { failOpen } = options;
  if (failOpen !== undefined && typeof failOpen !== 'boolean')
    throw new InvalidOptionsError(`rate limit options: failOpen must be true or false, got ${shownValue(failOpen)}`);
}

/**
 * A counter's scope given at call time (reset, block, reward, penalty, a check of consumeAll/peekAll): a string, else
 * InvalidOptionsError before it reaches the key hash (where it was a TypeError of node:crypto).
 */
export function checkScope(scope: unknown, where: string): asserts scope is string {
  if (typeof scope !== 'string')
    throw new InvalidOptionsError(`${where}: scope must be a string, got ${shownValue(scope)}`);
}

/**
 * One check of consumeAll/peekAll (`checks[i]`): an object of known keys, checked before its policy; its scope a
 * string and its name a non-empty string when given. The guard makes one per policy per request: a switch first, as
 * for a policy (~8 ns against ~30 for the Set).
 */
export function checkCheck(check: RateLimitCheck, i: number): void {
  if (check === null || typeof check !== 'object')
    throw new InvalidOptionsError(`rate limit: checks[${i}] must be an object`);
  for (const key in check) {
    switch (key) {
      case 'key':
      case 'policy':
      case 'scope':
      case 'name':
        continue;
    }
    refuseUnknown(check, CHECK_KEYS, `rate limit checks[${i}]`);
    break;
  }
  const { scope, name } = check;
  if (scope !== undefined) checkScope(scope, `rate limit checks[${i}]`);
  if (name !== undefined && (typeof name !== 'string' || name.length === 0)) {
    throw new InvalidOptionsError(`rate limit checks[${i}]: name must be a non-empty string, got ${shownValue(name)}`);
  }
}

/**
 * The values a policy RateLimitGuard applies has beside its limits, checked at start (`@Throttle` when it decorates,
 * `rateLimit.defaults` when the options are resolved): `key` a non-empty string or a function (per request), `name` a
 * non-empty string, `failOpen` true or false. Else `key: 5` failed every request (InvalidKeyError) and a truthy
 * `failOpen: 'no'` failed open.
 */
export function checkGuardValues(path: string, p: object, problems: OptionProblems): void {
  const { key, name, failOpen } = p as { key?: unknown; name?: unknown; failOpen?: unknown };
  if (typeof key !== 'function') problems.string(`${path}.key`, key);
  problems.string(`${path}.name`, name);
  problems.boolean(`${path}.failOpen`, failOpen);
}

/** A @Throttle policy's unknown keys, each a problem (all listed in the decorator's one error). */
export function unknownThrottleKeys(path: string, p: object, problems: OptionProblems): void {
  for (const key in p) {
    if (THROTTLE_KEY_SET.has(key) || !Object.hasOwn(p, key)) continue;
    const value: unknown = (p as Record<string, unknown>)[key];
    let hint = nearest(key, [...THROTTLE_KEYS]);
    // @nestjs/throttler's `@Throttle({ default: { limit, ttl } })`: a record of policies by name
    const named = value !== null && typeof value === 'object' && ('limit' in value || 'ttl' in value);
    if (named) hint = `@Throttle takes each policy itself: @Throttle({ name: '${key}', limit, ttl })`;
    else if (hint) hint = `did you mean ${hint}?`;
    problems.add(
      `${path}.${key}`,
      `is not a known option${hint ? ` (${hint})` : ''}; known: ${THROTTLE_KEYS.join(', ')}`,
    );
  }
}

/** @SkipThrottle's argument, at declaration: true, false or a record of policy names to true/false. */
export function checkSkip(skip: unknown, problems: OptionProblems): void {
  if (typeof skip === 'boolean') return;
  if (skip === null || typeof skip !== 'object' || Array.isArray(skip)) {
    const shown = typeof skip === 'string' ? JSON.stringify(skip) : typeof skip;
    problems.add('@SkipThrottle', `takes true, false or { policyName: true }, got ${shown}`);
    return;
  }
  for (const [name, value] of Object.entries(skip)) problems.boolean(`@SkipThrottle.${name}`, value);
}

/**
 * At start: each name a `@SkipThrottle({ name: true })` gives must be one of the policies that apply where it is
 * (`policies`): a misspelled name would skip nothing.
 */
export function unknownSkipNames(where: string, skip: unknown, policies: readonly string[], problems: OptionProblems) {
  if (skip === null || typeof skip !== 'object') return;
  for (const name of Object.keys(skip)) {
    if (policies.includes(name)) continue;
    const near = nearest(name, [...policies]);
    const hint = near ? ` (did you mean ${near}?)` : '';
    problems.add(
      `${where}:`,
      `@SkipThrottle names ${name}, which no policy there is named${hint}; policies: ${policies.join(', ')}`,
    );
  }
}
