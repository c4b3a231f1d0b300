import { Inject, Injectable, SetMetadata } from '@nestjs/common';
import { DiscoveryService, MetadataScanner } from '@nestjs/core';
import { InvalidOptionsError } from '../common/errors.js';
import { OptionProblems } from '../common/option-checks.js';
import { SKIP_THROTTLE_METADATA, THROTTLE_METADATA } from './rate-limit.constants.js';
import { checkAccessList, checkIpv6Grouping } from './rate-limit.access-list.js';
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

/**
 * When the module is built (as the options are: before anything connects), checks the static values of every
 * @Throttle policy (on controllers, gateways, resolvers) again, now that the module's default algorithm and
 * `maxSlidingWindowLimit` are known: @Throttle checked them when it decorated, but a policy that names no algorithm
 * takes the module's, and its cost may fit one algorithm's capacity and not another's. What would fail every call
 * fails the start instead (InvalidOptionsError naming the class or handler, the policy and the field), and so does an
 * IPv6 list entry narrower than `ipv6Subnet` (checkIpv6Grouping), which would match nothing. Each name a
 * `@SkipThrottle({ name: true })` gives must name a policy that applies there (a typo would skip nothing).
 */
@Injectable()
export class ThrottlePolicyCheck {
  constructor(
    discovery: DiscoveryService,
    private readonly scanner: MetadataScanner,
    @Inject(RATE_LIMIT_OPTIONS) private readonly options: ResolvedRateLimitOptions,
  ) {
    // every module is scanned (its classes known) before any provider is made
    const problems = new OptionProblems('@Throttle / @SkipThrottle');
    const seen = new Set<unknown>();
    for (const wrapper of [...discovery.getControllers(), ...discovery.getProviders()]) {
      const type: unknown = wrapper.metatype;
      if (typeof type !== 'function' || seen.has(type)) continue;
      seen.add(type);
      // the policies RateLimitGuard applies: the handler's, else the class's, else rateLimit.defaults (`default`)
      const classPolicies = this.check(type.name, type, problems) ?? ['default'];
      const anyHandler = new Set(classPolicies);
      const prototype = (type as { prototype?: unknown }).prototype;
      if (prototype !== null && typeof prototype === 'object') {
        for (const name of this.scanner.getAllMethodNames(prototype)) {
          const method: unknown = (prototype as Record<string, unknown>)[name];
          if (typeof method !== 'function') continue;
          const own = this.check(`${type.name}.${name}`, method, problems);
          for (const n of own ?? []) anyHandler.add(n);
          const skip: unknown = Reflect.getMetadata(SKIP_THROTTLE_METADATA, method);
          unknownSkipNames(`${type.name}.${name}`, skip, own ?? classPolicies, problems);
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
