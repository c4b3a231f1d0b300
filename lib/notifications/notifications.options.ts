import type { OptionProblems } from '../common/option-checks.js';
import { normalizeOrigin } from './notifications.origin-check.js';

// The notifications feature's options. This file must not import socket.io or @nestjs/websockets: the root entry
// point reaches it (the options type and the module's provider), and those peers are optional.

/**
 * slowClient.maxBufferedBytes when not given: 16 MiB, twice Redis's own soft limit for a pub/sub client's output
 * buffer (8 MB), and 16 messages of the default pubsub.maxMessageBytes.
 */
const DEFAULT_MAX_BUFFERED_BYTES = 16 * 1024 * 1024;

/** The gateway's options (`pubsub.gateway`, resolved), or `false` when configured off. */
export const NOTIFICATIONS_GATEWAY_OPTIONS = Symbol('NOTIFICATIONS_GATEWAY_OPTIONS');

/** What a gateway `authenticate` returns for an accepted connection: at least the user's id. */
export interface PubSubUser {
  id: string;
  [key: string]: unknown;
}

/**
 * The parts of a Socket.IO handshake `authenticate` sees (a structural copy, so this file does not need socket.io's
 * types): request headers (`cookie`), the client's `auth` object (`auth.token`), the query and the remote address.
 */
export interface GatewayHandshake {
  headers: Record<string, string | string[] | undefined>;
  auth: Record<string, unknown>;
  query: Record<string, unknown>;
  address: string;
}

export type GatewayAuthenticate = (
  handshake: GatewayHandshake,
) => PubSubUser | null | undefined | Promise<PubSubUser | null | undefined>;
export type GatewayAuthorize = (
  user: PubSubUser,
  channel: string,
  context: { pattern: boolean },
) => boolean | Promise<boolean>;

/** Decides one subscribe message; the default uses RateLimitService (or an in-process window when it is absent). */
export type GatewayRateLimiter = (
  key: string,
  policy: { limit: number; ttl: number },
) => Promise<{ allowed: boolean; retryAfterMs: number }>;

export type SlowClientPolicy = 'drop' | 'disconnect';

export interface NotificationsGatewayOptions {
  /** Maps a connection to a user; null refuses it. Default: the session id from the session cookie or `auth.token`. */
  authenticate?: GatewayAuthenticate;
  /** Decides each subscription. Default: the user's own `user:{id}` channel and `publicChannels`; no patterns. */
  authorize?: GatewayAuthorize;
  /** Channels every authenticated user may subscribe to with the default `authorize`. Default none. */
  publicChannels?: string[];
  /** Default 100. */
  maxSubscriptionsPerSocket?: number;
  /**
   * Connections one user may hold open on this instance; one more is refused at handshake (`E_TOO_MANY_CONNECTIONS`).
   * Default 50.
   */
  maxSocketsPerUser?: number;
  /** Longest channel name a client may send, in characters. Default 200. */
  maxChannelLength?: number;
  /** Subscribe/unsubscribe messages per user and window. Default 30 per 10 s; `false` turns it off. */
  subscribeRateLimit?: { limit: number; ttl: number } | false;
  /** Replaces the default limiter (RateLimitService.consume). */
  rateLimiter?: GatewayRateLimiter;
  /**
   * A socket holding `maxBufferedMessages` unsent packets (default 1000), or `maxBufferedBytes` unsent bytes (default
   * 16 MiB), is slow: `drop` skips it for that message (default), `disconnect` disconnects it. Memory per socket stays
   * bounded either way.
   */
  slowClient?: { policy?: SlowClientPolicy; maxBufferedMessages?: number; maxBufferedBytes?: number };
  /** Most missed durable messages one subscribe replays. Default 1000. */
  maxReplay?: number;
  /**
   * Origins (`https://app.example.com`) allowed to open a connection authenticated by the session cookie (a handshake
   * without `auth.token`): a cross-site page would otherwise ride the browser's cookies (cross-site WebSocket
   * hijacking). Default: the same origin only (the Origin's host equals the request's Host). `'*'` turns the check
   * off. A handshake without an Origin header (not a browser page) passes.
   */
  allowedOrigins?: string[] | '*';
}

export interface ResolvedNotificationsGatewayOptions {
  authenticate: GatewayAuthenticate | undefined;
  authorize: GatewayAuthorize | undefined;
  publicChannels: string[];
  maxSubscriptionsPerSocket: number;
  maxSocketsPerUser: number;
  maxChannelLength: number;
  subscribeRateLimit: { limit: number; ttl: number } | false;
  rateLimiter: GatewayRateLimiter | undefined;
  slowClient: { policy: SlowClientPolicy; maxBufferedMessages: number; maxBufferedBytes: number };
  maxReplay: number;
  /** Normalized origins, `'*'`, or undefined for same-origin only. */
  allowedOrigins: string[] | '*' | undefined;
}

/** `pubsub.gateway` of forRoot: `false` stays false (the gateway, if loaded, refuses every connection). */
export function resolveNotificationsOptions(
  raw: NotificationsGatewayOptions | false | undefined,
  problems: OptionProblems,
): ResolvedNotificationsGatewayOptions | false {
  return raw === false ? false : resolveGatewayOptions(raw, problems);
}

export function resolveGatewayOptions(
  raw: NotificationsGatewayOptions | undefined,
  problems: OptionProblems,
  path = 'pubsub.gateway',
): ResolvedNotificationsGatewayOptions {
  const g = raw ?? {};
  if (problems.object(path, raw)) {
    if ((g as Record<string, unknown>).namespace !== undefined && path === 'pubsub.gateway') {
      problems.add(
        `${path}.namespace`,
        'is a module-level option (Socket.IO namespaces are fixed at start): use notificationsGateway: { namespace } ' +
          'in forRoot, or NotificationsGatewayModule.register({ namespace })',
      );
    }
    problems.func(`${path}.authenticate`, g.authenticate);
    problems.func(`${path}.authorize`, g.authorize);
    problems.func(`${path}.rateLimiter`, g.rateLimiter);
    if (
      g.publicChannels !== undefined &&
      (!Array.isArray(g.publicChannels) || g.publicChannels.some((c) => typeof c !== 'string' || c === ''))
    ) {
      problems.add(`${path}.publicChannels`, 'must be an array of non-empty strings');
    }
    problems.integer(`${path}.maxSubscriptionsPerSocket`, g.maxSubscriptionsPerSocket, 1);
    problems.integer(`${path}.maxSocketsPerUser`, g.maxSocketsPerUser, 1);
    problems.integer(`${path}.maxChannelLength`, g.maxChannelLength, 1, 1024);
    problems.integer(`${path}.maxReplay`, g.maxReplay, 0);
    if (
      g.subscribeRateLimit !== undefined &&
      g.subscribeRateLimit !== false &&
      problems.object(`${path}.subscribeRateLimit`, g.subscribeRateLimit)
    ) {
      problems.integer(`${path}.subscribeRateLimit.limit`, g.subscribeRateLimit.limit, 1);
      problems.duration(`${path}.subscribeRateLimit.ttl`, g.subscribeRateLimit.ttl);
      if (g.subscribeRateLimit.limit === undefined || g.subscribeRateLimit.ttl === undefined) {
        problems.add(`${path}.subscribeRateLimit`, 'needs both limit and ttl (or false)');
      }
    }
    if (
      g.allowedOrigins !== undefined &&
      g.allowedOrigins !== '*' &&
      (!Array.isArray(g.allowedOrigins) ||
        g.allowedOrigins.some((o) => typeof o !== 'string' || normalizeOrigin(o) === undefined))
    ) {
      problems.add(
        `${path}.allowedOrigins`,
        "must be '*' or an array of origins like https://app.example.com (scheme, host, optional port, no path)",
      );
    }
    if (problems.object(`${path}.slowClient`, g.slowClient) && g.slowClient) {
      problems.oneOf(`${path}.slowClient.policy`, g.slowClient.policy, ['drop', 'disconnect']);
      problems.integer(`${path}.slowClient.maxBufferedMessages`, g.slowClient.maxBufferedMessages, 1);
      problems.integer(`${path}.slowClient.maxBufferedBytes`, g.slowClient.maxBufferedBytes, 1);
    }
  }
  return {
    authenticate: g.authenticate,
    authorize: g.authorize,
    publicChannels: Array.isArray(g.publicChannels) ? [...g.publicChannels] : [],
    maxSubscriptionsPerSocket: g.maxSubscriptionsPerSocket ?? 100,
    maxSocketsPerUser: g.maxSocketsPerUser ?? 50,
    maxChannelLength: g.maxChannelLength ?? 200,
    subscribeRateLimit: g.subscribeRateLimit === false ? false : (g.subscribeRateLimit ?? { limit: 30, ttl: 10_000 }),
    rateLimiter: g.rateLimiter,
    slowClient: {
      policy: g.slowClient?.policy ?? 'drop',
      maxBufferedMessages: g.slowClient?.maxBufferedMessages ?? 1_000,
      maxBufferedBytes: g.slowClient?.maxBufferedBytes ?? DEFAULT_MAX_BUFFERED_BYTES,
    },
    maxReplay: g.maxReplay ?? 1_000,
    allowedOrigins:
      g.allowedOrigins === '*'
        ? '*'
        : Array.isArray(g.allowedOrigins)
          ? g.allowedOrigins.map((o) => normalizeOrigin(String(o)) ?? String(o))
          : undefined,
  };
}
