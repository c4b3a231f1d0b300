/**
 * A migration from @nestjs/throttler left half done: a handler that RateLimitGuard guards still carries throttler's
 * `@Throttle({ login: { limit: 3, ttl: 60_000 } })` or `@SkipThrottle()` (the guard was replaced, the imports were
 * not). RateLimitGuard does not read throttler's metadata, so the login route's strict limit silently became
 * RateLimitGuard's own policy (its @Throttle, else `rateLimit.defaults`), and a skipped route was limited. The start
 * fails instead (InvalidOptionsError), naming each handler, throttler's decorator as written and ours to write.
 *
 * Where the peer's module is in the app but its guard / interceptor is not seen on a handler (it may run from inside
 * one of the app's own), the same text is a warning instead (reportPeerLeftovers).
 *
 * Silent where throttler's own guard (ThrottlerGuard or a subclass, by name or by the options token it injects) runs on
 * the handler too: both guards side by side is a legitimate step of a migration, and throttler reads its decorators.
 * Silent too where RateLimitGuard does not run (throttler's decorators under ThrottlerGuard alone are its business;
 * ours under ThrottlerGuard alone are ignored by it, as its own are here: ThrottlerGuard applies its module's
 * throttlers).
 *
 * The handlers come from ThrottlePolicyCheck's scan (every controller and provider when the module is built: HTTP
 * routes, resolvers, gateways, message patterns); the guards are read at onModuleInit, once APP_GUARD and
 * app.useGlobalGuards are applied. A module loaded later with LazyModuleLoader can declare no controller, resolver or
 * gateway (Nest refuses them there), so it has no handler to check.
 */
import { Inject, Injectable, Logger, type OnModuleInit, Optional } from '@nestjs/common';
import { ApplicationConfig, ModuleRef } from '@nestjs/core';
import { CLOSE_CONNECTIONS } from '../common/method-interception.js';
import {
  enhancersOf,
  isEnhancerOf,
  isPeerEnhancer,
  type PeerClass,
  peerMetadataKeys,
  peerValueText,
  reportPeerLeftovers,
  scopeText,
  THROTTLER_METADATA,
  THROTTLER_METADATA_PREFIXES,
} from '../common/peer-metadata.js';
import { ThrottlePolicyCheck } from './rate-limit.decorators.js';
import { RateLimitGuard } from './rate-limit.guard.js';

/** @nestjs/throttler's guard: its class name, and the options token its constructor injects (getOptionsToken()). */
const THROTTLER_GUARD: PeerClass = { name: 'ThrottlerGuard', injects: 'THROTTLER:MODULE_OPTIONS' };

const logger = new Logger('RedisToolkit:RateLimit');

type Field = keyof typeof THROTTLER_METADATA;
const FIELDS = Object.entries(THROTTLER_METADATA) as [Field, string][];

/** A handler the scan found with throttler's metadata on it or on its class. */
export interface ThrottlerMarkedHandler {
  readonly cls: { readonly name: string };
  readonly name: string;
  readonly method: object;
}

/** Whether a handler or class carries any of @nestjs/throttler's metadata. */
export function hasThrottlerMetadata(target: object): boolean {
  return peerMetadataKeys(target, THROTTLER_METADATA_PREFIXES).length > 0;
}

/** Throttler's metadata on a target, by throttler name: its @Throttle fields and its @SkipThrottle value. */
function throttlerMetadataOf(target: object): Map<string, Partial<Record<Field, unknown>>> {
  const byName = new Map<string, Partial<Record<Field, unknown>>>();
  for (const key of peerMetadataKeys(target, THROTTLER_METADATA_PREFIXES)) {
    const found = FIELDS.find(([, prefix]) => key.startsWith(prefix));
    if (found === undefined) continue;
    const name = key.slice(found[1].length);
    const fields = byName.get(name) ?? {};
    fields[found[0]] = Reflect.getMetadata(key, target) as unknown;
    byName.set(name, fields);
  }
  return byName;
}

/** Throttler's decorators on a target as written, and ours to write instead. */
function decoratorsOf(target: object): { theirs: string[]; ours: string[]; notes: string[] } {
  const theirs: string[] = [];
  const ours: string[] = [];
  const notes: string[] = [];
  const throttles: [string, Partial<Record<Field, unknown>>][] = [];
  const skips: [string, unknown][] = [];
  for (const [name, fields] of throttlerMetadataOf(target)) {
    if ('limit' in fields || 'ttl' in fields) throttles.push([name, fields]);
    if ('skip' in fields) skips.push([name, fields.skip]);
  }
  if (throttles.length > 0) {
    const values = (f: Partial<Record<Field, unknown>>) =>
      (['limit', 'ttl', 'blockDuration'] as const)
        .filter((k) => f[k] !== undefined)
        .map((k) => `${k}: ${peerValueText(f[k])}`);
    theirs.push(`@Throttle({ ${throttles.map(([n, f]) => `${n}: { ${values(f).join(', ')} }`).join(', ')} })`);
    const policies = throttles.map(([n, f]) => {
      const named = n === 'default' ? [] : [`name: ${JSON.stringify(n)}`];
      return `{ ${[...named, ...values(f)].join(', ')} }`;
    });
    ours.push(`@Throttle(${policies.join(', ')})`);
    if (throttles.some(([, f]) => f.getTracker !== undefined)) {
      notes.push("throttler's getTracker becomes the policy's `key: (context) => string`");
    }
    if (throttles.some(([, f]) => f.generateKey !== undefined)) {
      notes.push("throttler's generateKey becomes an override of RateLimitGuard's generateKey");
    }
  }
  if (skips.length > 0) {
    const record = skips.map(([n, v]) => `${n}: ${peerValueText(v)}`).join(', ');
    theirs.push(`@SkipThrottle({ ${record} })`);
    const [only] = skips;
    ours.push(
      skips.length === 1 && only[0] === 'default'
        ? `@SkipThrottle(${only[1] === true ? '' : peerValueText(only[1])})`
        : `@SkipThrottle({ ${record} })`,
    );
  }
  return { theirs, ours, notes };
}

/**
 * The lines of the error: each handler (or class, for its guarded handlers) with throttler's metadata where
 * RateLimitGuard runs and ThrottlerGuard does not.
 */
export function throttlerLeftovers(handlers: readonly ThrottlerMarkedHandler[], config?: ApplicationConfig): string[] {
  const lines: string[] = [];
  /** The class-level metadata, reported once per class with the guarded handlers it applies to. */
  const classes = new Map<object, { names: string[]; scope: string }>();
  for (const { cls, name, method } of handlers) {
    const guards = enhancersOf(config, 'guards', cls, method);
    const ours = guards.find((g) => isEnhancerOf(g.enhancer, RateLimitGuard));
    if (ours === undefined || guards.some((g) => isPeerEnhancer(g.enhancer, THROTTLER_GUARD))) continue;
    const scope = `RateLimitGuard through ${scopeText('guards', ours.scope)}`;
    if (hasThrottlerMetadata(method)) lines.push(line(`${cls.name}.${name}`, scope, method));
    if (hasThrottlerMetadata(cls)) {
      const seen = classes.get(cls) ?? { names: [], scope };
      seen.names.push(name);
      classes.set(cls, seen);
    }
  }
  for (const [cls, { names, scope }] of classes) {
    const where = `${(cls as { name: string }).name} (on the class, for ${names.join(', ')})`;
    lines.push(line(where, scope, cls));
  }
  return lines;
}

function line(where: string, scope: string, target: object): string {
  const { theirs, ours, notes } = decoratorsOf(target);
  const extra = notes.length > 0 ? ` (${notes.join('; ')})` : '';
  return (
    `${where} (${scope}): ${theirs.join(' ')} from @nestjs/throttler; write ${ours.join(' ')} ` +
    `imported from 'nestjs-redis-toolkit'${extra}`
  );
}

/**
 * Fails the start when a handler RateLimitGuard guards carries @nestjs/throttler's decorators and ThrottlerGuard does
 * not run there (see the top of this file). Runs at onModuleInit: the global guards are known then.
 */
@Injectable()
export class ThrottlerPeerCheck implements OnModuleInit {
  constructor(
    private readonly scan: ThrottlePolicyCheck,
    private readonly moduleRef: ModuleRef,
    @Optional() private readonly config?: ApplicationConfig,
    @Optional() @Inject(CLOSE_CONNECTIONS) private readonly closeConnections?: () => Promise<void>,
  ) {}

  async onModuleInit(): Promise<void> {
    const lines = throttlerLeftovers(this.scan.throttlerMarked, this.config);
    this.scan.throttlerMarked.length = 0; // checked once: the classes are not held for the app's life
    await reportPeerLeftovers(
      lines,
      "@nestjs/throttler's decorators on handlers that RateLimitGuard guards without @nestjs/throttler's " +
        'ThrottlerGuard: RateLimitGuard does not read them, so each of these handlers would get its own policies ' +
        '(its nestjs-redis-toolkit @Throttle, else rateLimit.defaults) in their place. Import Throttle / ' +
        "SkipThrottle from 'nestjs-redis-toolkit' (docs/migrating.md), or keep ThrottlerGuard on these handlers " +
        'while migrating',
      {
        token: THROTTLER_GUARD.injects,
        moduleRef: this.moduleRef,
        logger: logger,
        closeConnections: this.closeConnections,
      },
    );
  }
}
