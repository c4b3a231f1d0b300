/**
 * What RateLimitGuard checks of what is handed to it: the values its protected hooks (a subclass's overrides) give,
 * the policy values resolved per request, and where the refund options can apply. A wrong value is a typed error
 * naming the hook or the policy, never a bare TypeError or traffic let through (docs/rate-limit.md, Customising the
 * guard).
 */
import { type ExecutionContext, Logger } from '@nestjs/common';
import { InvalidKeyError, InvalidOptionsError } from '../common/errors.js';
import { shownValue } from '../common/option-checks.js';
import type { NamedThrottleOptions } from './rate-limit.decorators.js';
import type { ThrottledRequest, ThrottledResponse } from './rate-limit.guard.js';
import { policyProblems, type ResolvedRateLimitOptions } from './rate-limit.options.js';

/**
 * skipSuccessfulRequests / skipFailedRequests are decided by the HTTP response's status. A GraphQL field's failure is
 * an error in a 200 response (every failed login was refunded as a success: unlimited guesses) and a WebSocket
 * message has no status (the option did nothing). What is wrong with a policy of either option in a context of `type`
 * ('graphql', 'ws'...), or undefined: the start-up scan (ThrottlePolicyCheck) and the guard say the same.
 */
export function refundProblem(type: string, p: NamedThrottleOptions): string | undefined {
  if (type === 'http' || !(p.skipSuccessfulRequests || p.skipFailedRequests)) return undefined;
  const option = p.skipSuccessfulRequests ? 'skipSuccessfulRequests' : 'skipFailedRequests';
  const what =
    type === 'graphql'
      ? 'a GraphQL field fails with an error in a 200 response'
      : `a "${type}" call (a WebSocket message) has no response status`;
  return (
    `rate-limit policy "${p.name}".${option} is decided by the HTTP response's status, and ${what}: it works on ` +
    'HTTP routes only (remove it here, or use reward() where the outcome is known)'
  );
}

/**
 * refundProblem, per request: InvalidOptionsError before anything is charged. The start-up scan refuses what it
 * sees of resolvers and gateways; this is for what it cannot see (docs/rate-limit.md, skipSuccessfulRequests).
 */
export function refundableHere(context: ExecutionContext, p: NamedThrottleOptions): void {
  const problem = refundProblem(context.getType<string>(), p);
  if (problem) throw new InvalidOptionsError(`${context.getClass().name}.${context.getHandler().name}: ${problem}`);
}

/** The name of a guard's class, for errors about its hooks (`MyGuard.getTracker ...`). */
const hooksOf = (guard: object): string => guard.constructor.name;

/** getRequestResponse's result, checked: `req` an object, `res` an object or none. */
export function checkedRequestResponse(
  got: unknown,
  guard: object,
): { req: ThrottledRequest; res: ThrottledResponse | undefined } {
  const hook = `${hooksOf(guard)}.getRequestResponse`;
  if (got instanceof Promise) {
    // an `async getRequestResponse`: refused, and its rejection (if any) handled here, not left unhandled
    got.catch(() => undefined);
    throw new InvalidOptionsError(`${hook} returned a Promise: it is synchronous, return { req, res }`);
  }
  if (typeof got !== 'object' || got === null) {
    throw new InvalidOptionsError(`${hook} must return { req, res }, got ${shownValue(got)}`);
  }
  const { req, res } = got as { req?: unknown; res?: unknown };
  if (typeof req !== 'object' || req === null) {
    throw new InvalidOptionsError(`${hook} must return { req, res } with req an object, got req ${shownValue(req)}`);
  }
  // a response that is not an object had its headers dropped without a word (it has no setHeader, no header)
  if (res !== undefined && res !== null && typeof res !== 'object') {
    throw new InvalidOptionsError(
      `${hook} must return { req, res } with res an object or undefined, got res ${shownValue(res)}`,
    );
  }
  return { req, res: (res ?? undefined) as ThrottledResponse | undefined };
}

/**
 * getTracker's result: a non-empty string. A tracker that is not one was an InvalidKeyError naming a policy's key, or
 * with a range on an access list (read as an address there) a bare TypeError naming nothing.
 */
export function checkedTracker(tracker: unknown, guard: object): string {
  if (typeof tracker === 'string' && tracker.length > 0) return tracker;
  throw new InvalidKeyError(
    `${hooksOf(guard)}.getTracker: the tracker must be a non-empty string (or a Promise of one), ` +
      `got ${shownValue(tracker)}`,
  );
}

/** Whether a policy has a value given as a function (checked once resolved, per request). */
export function isResolvedPerRequest(p: NamedThrottleOptions): boolean {
  return (
    typeof p.limit === 'function' ||
    typeof p.ttl === 'function' ||
    typeof p.algorithm === 'function' ||
    typeof p.burst === 'function' ||
    typeof p.cost === 'function' ||
    typeof p.blockDuration === 'function'
  );
}

/**
 * The values of a policy given as functions, once resolved: the check a static value gets at start-up, naming the
 * policy and its route (the service's own check named `policy` or `policies[i]`, an index among the policies left to
 * charge).
 */
export function checkResolvedPolicy(
  context: ExecutionContext,
  name: string,
  values: Record<'limit' | 'ttl' | 'algorithm' | 'burst' | 'cost' | 'blockDuration', unknown>,
  options: ResolvedRateLimitOptions,
): void {
  const problem = policyProblems(values, options.defaults.algorithm, options.maxSlidingWindowLimit)?.[0];
  if (!problem) return;
  throw new InvalidOptionsError(
    `${context.getClass().name}.${context.getHandler().name}: rate-limit policy "${name}".${problem[0]} ` +
      `(a function, resolved per request) ${problem[1]}`,
  );
}

/** The throw* overrides of each guard already reported for returning without throwing (one line each, no flood). */
const reportedHooks = new WeakMap<object, Set<string>>();
const hookLogger = new Logger('RedisToolkit:RateLimit');

/** A throw* override returned without throwing: said once per guard and hook (the refusal stands). */
export function hookReturned(guard: object, hook: string, status: string): void {
  let reported = reportedHooks.get(guard);
  if (!reported) reportedHooks.set(guard, (reported = new Set()));
  if (reported.has(hook)) return;
  reported.add(hook);
  hookLogger.error(
    `${hooksOf(guard)}.${hook} returned without throwing: the request was refused with the default answer ` +
      `(${status}). An override must throw the refusal; to let requests through, use skipIf or the allow list`,
  );
}
