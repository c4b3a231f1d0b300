import { type ExecutionContext, Inject, Injectable, SetMetadata } from '@nestjs/common';
import { DiscoveryService, MetadataScanner, Reflector } from '@nestjs/core';
import { InvalidOptionsError } from '../common/errors.js';
import { OptionProblems } from '../common/option-checks.js';
import { handlerKindOf, peerMetadataKeys, THROTTLER_METADATA_PREFIXES } from '../common/peer-metadata.js';
import { SKIP_THROTTLE_METADATA, THROTTLE_METADATA } from './rate-limit.constants.js';
import { checkAccessList, checkIpv6Grouping } from './rate-limit.access-list.js';
import { refundProblem } from './rate-limit.guard-checks.js';
import { handlerContextOf } from './rate-limit.guard-contexts.js';
import { checkGuardValues, checkSkip, unknownSkipNames, unknownThrottleKeys } from './rate-limit.option-names.js';
import {
  checkPolicy,
  RATE_LIMIT_OPTIONS,
  type ResolvedRateLimitOptions,
  type ThrottleOptions,
} from './rate-limit.options.js';

/** A @Throttle policy with its name filled in. */
export interface NamedThrottleOptions extends ThrottleOptions {
  name: string;
}

/**
 * The limits RateLimitGuard applies to a handler (on a method) or to every handler of a controller (on a class).
 * Several policies must all hold: `@Throttle({ limit: 10, ttl: 1_000 }, { limit: 100, ttl: 60_000 })`. They are
 * checked and charged together, in one atomic Redis call: a refused request charges none of them.
 *
 * Handler policies replace the controller's; the controller's replace `rateLimit.defaults`. Values may be functions
 * of the ExecutionContext, resolved per request. Static values are checked here, at decoration time.
 */
export function Throttle(...policies: ThrottleOptions[]): ClassDecorator & MethodDecorator {
  if (policies.length === 0) throw new InvalidOptionsError('@Throttle() needs at least one policy');
  const problems = new OptionProblems('@Throttle');
  const named = policies.map((p, i): NamedThrottleOptions => {
    const named = typeof p?.name === 'string' ? ` (${JSON.stringify(p.name)})` : '';
    const path = `@Throttle policy ${i + 1}${named}`;
    if (!problems.object(path, p) || p === undefined) return { ...(p as ThrottleOptions), name: '' };
    unknownThrottleKeys(path, p, problems);
    checkAccessList(`${path}.allowList`, p.allowList, problems);
    checkAccessList(`${path}.denyList`, p.denyList, problems);
    // as every call will (the module's default algorithm is not known yet: see policyProblems)
    checkPolicy(path, p, problems);
    checkGuardValues(path, p, problems); // key, name, failOpen: as rateLimit.defaults'
    problems.boolean(`${path}.skipSuccessfulRequests`, p.skipSuccessfulRequests);
    problems.boolean(`${path}.skipFailedRequests`, p.skipFailedRequests);
    return {
      ...p,
      ...(Array.isArray(p.allowList) && { allowList: [...p.allowList] }),
      ...(Array.isArray(p.denyList) && { denyList: [...p.denyList] }),
      name: p.name ?? (i === 0 ? 'default' : `default-${i + 1}`),
    };
  });
  const names = named.map((p) => p.name);
  const duplicate = names.find((n, i) => names.indexOf(n) !== i);
  if (duplicate !== undefined) problems.add('@Throttle', `has two policies named ${JSON.stringify(duplicate)}`);
  try {
    problems.throwIfAny();
  } catch (err) {
    throw new InvalidOptionsError(
      (err as Error).message.replace('Invalid RedisToolkitModule options', 'Invalid @Throttle options'),
    );
  }
  return SetMetadata(THROTTLE_METADATA, named);
}

/**
 * Turns RateLimitGuard off for a controller or handler; `@SkipThrottle(false)` on a handler turns it back on;
 * `@SkipThrottle({ login: true })` skips only the policies so named (throttler's named skip). The value is checked
 * here; the names when the module starts (ThrottlePolicyCheck), once it is known which policies apply there.
 */
export function SkipThrottle(skip: boolean | Record<string, boolean> = true): ClassDecorator & MethodDecorator {
  const problems = new OptionProblems('@SkipThrottle');
  checkSkip(skip, problems);
  problems.throwIfAny();
  return SetMetadata(SKIP_THROTTLE_METADATA, typeof skip === 'object' ? { ...skip } : skip);
}

/** A handler and its class, as ExecutionContext gives them (getHandler, getClass). */
type Handler = ReturnType<ExecutionContext['getHandler']>;
type HandlerClass = ReturnType<ExecutionContext['getClass']>;

/**
 * The policies a handler declares to RateLimitGuard: its @Throttle policies if it has any, else its class's, else
 * `rateLimit.defaults` (named `default`), read with Reflector.getAllAndOverride, handler first.
 */
export function declaredPolicies(
  reflector: Reflector,
  handler: Handler,
  cls: HandlerClass,
  defaults: ResolvedRateLimitOptions['defaults'],
): NamedThrottleOptions[] {
  const declared = reflector.getAllAndOverride<NamedThrottleOptions[] | undefined>(THROTTLE_METADATA, [handler, cls]);
  return declared ?? [{ ...defaults, name: 'default' }];
}

/**
 * The policies RateLimitGuard applies to a handler: the declared ones less those a @SkipThrottle({ name: true }) there
 * skips; none under @SkipThrottle() (a handler's @SkipThrottle(false) turns its class's off). The guard resolves each
 * request with it and ThrottlePolicyCheck each resolver and gateway handler at start: one set of rules for both.
 */
export function appliedPolicies(
  reflector: Reflector,
  handler: Handler,
  cls: HandlerClass,
  defaults: ResolvedRateLimitOptions['defaults'],
  declared?: NamedThrottleOptions[],
): NamedThrottleOptions[] {
  const skip = reflector.getAllAndOverride<boolean | Record<string, boolean> | undefined>(SKIP_THROTTLE_METADATA, [
    handler,
    cls,
  ]);
  if (skip === true) return [];
  // `declared`: declaredPolicies' answer for this handler when the caller has it already (ThrottlePolicyCheck)
  const all = declared ?? declaredPolicies(reflector, handler, cls, defaults);
  return typeof skip === 'object' && skip !== null ? all.filter((p) => skip[p.name] !== true) : all;
}

/**
 * When the module is built (as the options are: before anything connects), checks the static values of every
 * @Throttle policy (on controllers, gateways, resolvers) again, now that the module's default algorithm and
 * `maxSlidingWindowLimit` are known: @Throttle checked them when it decorated, but a policy that names no algorithm
 * takes the module's, and its cost may fit one algorithm's capacity and not another's. What would fail every call
 * fails the start instead (InvalidOptionsError naming the class or handler, the policy and the field), and so does an
 * IPv6 list entry narrower than `ipv6Subnet` (checkIpv6Grouping), which would match nothing. Each name a
 * `@SkipThrottle({ name: true })` gives must name a policy that applies there (a typo would skip nothing).
 *
 * A refund option (skipSuccessfulRequests / skipFailedRequests) that applies to a GraphQL resolver's or a Socket.IO
 * gateway's handler (appliedPolicies, the guard's rules) fails the start too (refundProblem): until 2026-12-06 such an
 * app started, and each call there failed (or, with no guard there, the option did nothing). Whether a guard runs
 * there is not asked: the option cannot work on that handler under any guard. What this cannot see is left to the
 * guard's per-request check (refundableHere): a RateLimitGuard subclass that builds its own options (its defaults are
 * its constructor's, not metadata), and a resolver provided by a factory or a value (no class here; GraphQL finds its
 * handlers on the instance). `rateLimit.defaults` takes no refund option (an unknown key, refused when the options are
 * resolved).
 *
 * The same scan notes each handler (HTTP route, resolver, gateway, message pattern) that carries @nestjs/throttler's
 * metadata, on it or on its class: ThrottlerPeerCheck (rate-limit.peer-metadata.ts) fails the start (or warns) at
 * onModuleInit, once the global guards are known, where RateLimitGuard guards one of them without throttler's guard.
 */
@Injectable()
export class ThrottlePolicyCheck {
  /** The handlers carrying @nestjs/throttler's metadata (read by ThrottlerPeerCheck). */
  readonly throttlerMarked: { cls: HandlerClass; name: string; method: object }[] = [];

  constructor(
    discovery: DiscoveryService,
    private readonly scanner: MetadataScanner,
    reflector: Reflector,
    @Inject(RATE_LIMIT_OPTIONS) private readonly options: ResolvedRateLimitOptions,
  ) {
    // every module is scanned (its classes known) before any provider is made
    const problems = new OptionProblems('@Throttle / @SkipThrottle');
    const seen = new Set<unknown>();
    for (const wrapper of [...discovery.getControllers(), ...discovery.getProviders()]) {
      const type: unknown = wrapper.metatype;
      if (typeof type !== 'function' || seen.has(type)) continue;
      seen.add(type);
      const cls = type as HandlerClass;
      const anyHandler = new Set(this.check(type.name, type, problems) ?? ['default']);
      const classMarked = peerMetadataKeys(type, THROTTLER_METADATA_PREFIXES).length > 0;
      const prototype = (type as { prototype?: unknown }).prototype;
      if (prototype !== null && typeof prototype === 'object') {
        for (const name of this.scanner.getAllMethodNames(prototype)) {
          const method: unknown = (prototype as Record<string, unknown>)[name];
          if (typeof method !== 'function') continue;
          const where = `${type.name}.${name}`;
          if (
            (classMarked || peerMetadataKeys(method, THROTTLER_METADATA_PREFIXES).length > 0) &&
            handlerKindOf(method) !== undefined
          ) {
            this.throttlerMarked.push({ cls, name, method });
          }
          for (const n of this.check(where, method, problems) ?? []) anyHandler.add(n);
          const declared = declaredPolicies(reflector, method as Handler, cls, options.defaults);
          const skip: unknown = Reflect.getMetadata(SKIP_THROTTLE_METADATA, method);
          unknownSkipNames(
            where,
            skip,
            declared.map((p) => p.name),
            problems,
          );
          const context = handlerContextOf(method);
          if (context === undefined) continue;
          for (const p of appliedPolicies(reflector, method as Handler, cls, options.defaults, declared)) {
            const problem = refundProblem(context, p);
            if (problem) problems.add(`${where}:`, problem);
          }
        }
      }
      // a class's skip applies to each of its handlers: it may name a policy of any of them
      unknownSkipNames(type.name, Reflect.getMetadata(SKIP_THROTTLE_METADATA, type), [...anyHandler], problems);
    }
    problems.throwIfAny(); // InvalidOptionsError: Invalid @Throttle / @SkipThrottle options, every problem on its line
  }

  /** Checks the @Throttle policies of a class or handler; returns their names (undefined: it has none). */
  private check(where: string, target: object, problems: OptionProblems): string[] | undefined {
    const policies: NamedThrottleOptions[] | undefined = Reflect.getMetadata(THROTTLE_METADATA, target);
    if (!Array.isArray(policies)) return undefined;
    policies.forEach((p, i) => {
      const path = `${where}: @Throttle policy ${i + 1} (${JSON.stringify(p.name)})`;
      checkPolicy(path, p, problems, this.options.defaults.algorithm, this.options.maxSlidingWindowLimit);
      checkIpv6Grouping(`${path}.allowList`, p.allowList, this.options.ipv6Subnet, problems);
      checkIpv6Grouping(`${path}.denyList`, p.denyList, this.options.ipv6Subnet, problems);
    });
    return policies.map((p) => p.name);
  }
}
