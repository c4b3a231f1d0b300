import { hostname } from 'node:os';
import { randomBytes } from 'node:crypto';
import type { CanActivate, Type } from '@nestjs/common';
import { InvalidOptionsError } from '../common/errors.js';
import { OptionProblems, type OptionShape, shownValue } from '../common/option-checks.js';
import { allowedHostEntry } from './dashboard.hosts.js';

/** What `RedisToolkitDashboardModule.register(options)` takes. */
export interface RedisToolkitDashboardOptions {
  /**
   * Where the page is served (its stream at `<path>/events`, a JSON snapshot at `<path>/snapshot`). Default
   * `/_toolkit`.
   */
  path?: string;
  /**
   * Who may see the page: a guard class (resolved by Nest, so it may inject e.g. SessionService) or instance. Required
   * unless `unsafeNoAuth: true`: the page shows traffic, policy names, tag names and Redis memory.
   */
  guard?: Type<CanActivate> | CanActivate;
  /**
   * Serve the page to anyone who can reach the app (a private network, a local demo). Default false. Even then only
   * requests whose Host is a loopback name or address (`localhost`, `*.localhost`, `127.0.0.0/8`, `[::1]`) or is in
   * `allowedHosts` are answered (403 otherwise): a page of another site cannot read it through DNS rebinding.
   */
  unsafeNoAuth?: boolean;
  /**
   * Host names (no port) the dashboard is reached by besides loopback ones, e.g. `['dash.internal', '10.0.0.5']`;
   * `.corp.example` takes that name and every name under it. Without a `guard` requests for any other Host are
   * refused (403); with a `guard` the Host is checked only when this is given.
   */
  allowedHosts?: readonly string[];
  /** How often each instance publishes a frame, ms (default 1 000; at least 250). */
  intervalMs?: number;
  /** Frames kept per instance and for the sum: the charts' width (default 120: two minutes at 1 s). */
  history?: number;
  /** An instance that sent no frame for this long is dropped from the page and the sum, ms (default 5 × intervalMs). */
  instanceTtlMs?: number;
  /** The label of this instance on the page (default `<hostname>:<pid>`; a short random suffix keeps it unique). */
  instanceName?: string;
}

export interface ResolvedDashboardOptions {
  readonly path: string;
  readonly guard: Type<CanActivate> | CanActivate | undefined;
  /**
   * The names served besides loopback ones (lower case, punycode, IPv6 in brackets; `.domain` for a domain and every
   * name under it), or null when the Host is not checked: a guard was given without `allowedHosts`. A guard that checks
   * a credential (a session cookie, a token) already refuses a rebinding page, whose requests are to the attacker's
   * origin and carry none of the app's cookies; one that trusts the client's address does not, so `allowedHosts`
   * turns the check on.
   */
  readonly allowedHosts: readonly string[] | null;
  readonly intervalMs: number;
  readonly history: number;
  readonly instanceTtlMs: number;
  /** Unique per process: the label plus a random suffix. */
  readonly instanceId: string;
}

export const DASHBOARD_OPTIONS = Symbol('RedisToolkit:DashboardOptions');

const DASHBOARD_OPTION_KEYS: OptionShape = {
  path: true,
  guard: true,
  unsafeNoAuth: true,
  allowedHosts: true,
  intervalMs: true,
  history: true,
  instanceTtlMs: true,
  instanceName: true,
};

/** The dashboard was registered with neither a `guard` nor `unsafeNoAuth: true`: the app refuses to start. */
export class DashboardUnguardedError extends InvalidOptionsError {
  static override readonly code: string = 'E_DASHBOARD_UNGUARDED';
}

const PATH = /^(\/[A-Za-z0-9._~-]+)+$/;

/** Checks the options (every problem in one InvalidOptionsError) and applies the defaults. */
export function resolveDashboardOptions(options: RedisToolkitDashboardOptions | undefined): ResolvedDashboardOptions {
  const o = options ?? {};
  const problems = new OptionProblems('RedisToolkitDashboardModule');
  if (!problems.object('', o)) problems.throwIfAny();
  problems.unknownKeys('', o, DASHBOARD_OPTION_KEYS);
  problems.boolean('unsafeNoAuth', o.unsafeNoAuth);
  // A `.` or `..` segment: browsers resolve it away before asking, and the page's relative links would miss.
  if (o.path !== undefined && (typeof o.path !== 'string' || !PATH.test(o.path) || /\/\.\.?(\/|$)/.test(o.path))) {
    problems.add('path', `must look like "/_toolkit" (segments of letters, digits, . _ ~ -), got ${String(o.path)}`);
  }
  const guard = o.guard as unknown;
  if (
    guard !== undefined &&
    typeof guard !== 'function' &&
    typeof (guard as Partial<CanActivate> | null)?.canActivate !== 'function'
  ) {
    problems.add('guard', 'must be a guard class or an object with canActivate()');
  }
  const allowedHosts = o.allowedHosts === undefined ? undefined : checkAllowedHosts(o.allowedHosts, problems);
  problems.integer('intervalMs', o.intervalMs, 250, 60_000);
  problems.integer('history', o.history, 2, 3_600);
  problems.integer('instanceTtlMs', o.instanceTtlMs, 500, 3_600_000);
  problems.string('instanceName', o.instanceName);
  if (typeof o.instanceName === 'string' && o.instanceName.length > 100)
    problems.add('instanceName', 'must be at most 100 characters');
  problems.throwIfAny();
  if (guard === undefined && o.unsafeNoAuth !== true) {
    throw new DashboardUnguardedError(
      'RedisToolkitDashboardModule needs a guard: register({ guard: YourAuthGuard }) so only your operators see the ' +
        'page, or register({ unsafeNoAuth: true }) to serve it to anyone who can reach the app',
    );
  }
  const intervalMs = o.intervalMs ?? 1_000;
  const name = o.instanceName ?? `${hostname()}:${process.pid}`;
  return {
    path: o.path ?? '/_toolkit',
    guard: o.guard,
    allowedHosts: allowedHosts ?? (guard === undefined ? [] : null),
    intervalMs,
    history: o.history ?? 120,
    instanceTtlMs: o.instanceTtlMs ?? 5 * intervalMs,
    instanceId: `${name}#${randomBytes(3).toString('hex')}`,
  };
}

/** The `allowedHosts` entries as the allow list compares them, each one that is not a host name added to `problems`. */
function checkAllowedHosts(value: unknown, problems: OptionProblems): string[] {
  if (!Array.isArray(value)) {
    problems.add('allowedHosts', `must be an array of host names, got ${shownValue(value)}`);
    return [];
  }
  const hosts: string[] = [];
  for (const [i, entry] of value.entries()) {
    const host = allowedHostEntry(entry);
    if (host !== undefined) hosts.push(host);
    else
      problems.add(
        `allowedHosts[${i}]`,
        'must be a host name (no port, scheme, path or wildcard: ".corp.example" takes corp.example and every name ' +
          `under it), got ${shownValue(entry)}`,
      );
  }
  return hosts;
}
