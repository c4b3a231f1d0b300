import type { Logger } from '@nestjs/common';
import { OptionProblems } from '../common/option-checks.js';
import type { RateLimitService } from '../rate-limit/rate-limit.service.js';
import type { SessionService } from '../session/session.service.js';
import { localRateLimiter } from './notifications.local-rate-limiter.js';
import {
  resolveGatewayOptions,
  type GatewayAuthenticate,
  type GatewayRateLimiter,
  type NotificationsGatewayOptions,
  type ResolvedNotificationsGatewayOptions,
} from './notifications.options.js';
import { sessionAuthenticate } from './notifications.session-authenticate.js';

/** What the gateway runs with, decided once at module init from its options and the services present. */
export interface GatewaySetup {
  /** Loaded but switched off by configuration: every connection is refused. */
  disabled: boolean;
  options: ResolvedNotificationsGatewayOptions;
  authenticate: GatewayAuthenticate;
  rateLimiter: GatewayRateLimiter;
  /** The default session authentication: revocations are subscribed to before each session lookup. */
  sessionAuth: boolean;
}

/** What the gateway needs to set itself up (its constructor's injections). */
export interface GatewaySetupSources {
  configured: ResolvedNotificationsGatewayOptions | false;
  overrides: NotificationsGatewayOptions | undefined;
  sessions: SessionService | undefined;
  rateLimitService: RateLimitService | undefined;
  logger: Logger;
}

export function setUpGateway(sources: GatewaySetupSources): GatewaySetup {
  if (sources.configured === false) {
    return {
      disabled: true,
      options: resolveGatewayOptions({}, new OptionProblems()),
      authenticate: () => null,
      rateLimiter: localRateLimiter(),
      sessionAuth: false,
    };
  }
  const options = withOverrides(sources.configured, sources.overrides, sources.logger);
  return {
    disabled: false,
    options,
    authenticate: options.authenticate ?? defaultAuthenticate(sources),
    rateLimiter: options.rateLimiter ?? defaultRateLimiter(sources.rateLimitService),
    sessionAuth: options.authenticate === undefined && sources.sessions !== undefined,
  };
}

/** Deprecated: gateway options given to NotificationsGatewayModule.register(); they win over `pubsub.gateway`. */
function withOverrides(
  base: ResolvedNotificationsGatewayOptions,
  overrides: NotificationsGatewayOptions | undefined,
  logger: Logger,
): ResolvedNotificationsGatewayOptions {
  const given = Object.keys(overrides ?? {}) as (keyof NotificationsGatewayOptions)[];
  if (given.length === 0) return base;
  logger.warn(
    `NotificationsGatewayModule.register({ ${given.join(', ')} }) is deprecated: give gateway options as ` +
      '`pubsub.gateway` of RedisToolkitModule.forRoot / forRootAsync (register() takes only { namespace })',
  );
  const problems = new OptionProblems('NotificationsGatewayModule');
  const resolved = resolveGatewayOptions(overrides, problems, 'NotificationsGatewayModule.register()');
  problems.throwIfAny();
  const merged: Record<string, unknown> = { ...base };
  for (const key of given) merged[key] = resolved[key];
  return merged as unknown as ResolvedNotificationsGatewayOptions;
}

function defaultAuthenticate(sources: GatewaySetupSources): GatewayAuthenticate {
  if (!sources.sessions) {
    sources.logger.warn(
      'notifications: no pubsub.gateway.authenticate and no SessionService: every connection is refused',
    );
    return () => null;
  }
  return sessionAuthenticate(sources.sessions);
}

/** RateLimitService (one atomic Redis call, shared by every instance; fails open by its own policy). */
function defaultRateLimiter(limiter: RateLimitService | undefined): GatewayRateLimiter {
  if (!limiter) return localRateLimiter();
  return async (key, policy) => {
    const r = await limiter.consume(key, policy);
    return { allowed: r.allowed, retryAfterMs: r.retryAfterMs };
  };
}
