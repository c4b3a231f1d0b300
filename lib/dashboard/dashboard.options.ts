import { hostname } from 'node:os';
import { randomBytes } from 'node:crypto';
import type { CanActivate, Type } from '@nestjs/common';
import { InvalidOptionsError } from '../common/errors.js';
import { OptionProblems, type OptionShape } from '../common/option-checks.js';

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
  /** Serve the page to anyone who can reach the app (a private network, a local demo). Default false. */
  unsafeNoAuth?: boolean;
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
    intervalMs,
    history: o.history ?? 120,
    instanceTtlMs: o.instanceTtlMs ?? 5 * intervalMs,
    instanceId: `${name}#${randomBytes(3).toString('hex')}`,
  };
}
