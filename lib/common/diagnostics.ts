import diagnosticsChannel from 'node:diagnostics_channel';

/**
 * The toolkit's diagnostics_channel names, one per feature operation, in ioredis 6's style (`ioredis:command`).
 * Stable: subscribers key on them. Payloads carry the feature, the operation and the outcome, never a secret
 * (no session id, no lock token, no cookie, no raw rate-limit tracker).
 */
export const REDIS_TOOLKIT_CHANNELS = {
  cacheGet: 'rtk:cache:get',
  cacheLoad: 'rtk:cache:load',
  cacheInvalidate: 'rtk:cache:invalidate',
  rateLimitDecision: 'rtk:ratelimit:decision',
  lockAcquire: 'rtk:lock:acquire',
  lockExtend: 'rtk:lock:extend',
  lockRelease: 'rtk:lock:release',
  lockLost: 'rtk:lock:lost',
  sessionCreate: 'rtk:session:create',
  sessionDestroy: 'rtk:session:destroy',
  pubsubPublish: 'rtk:pubsub:publish',
} as const;

export type RedisToolkitChannelName = (typeof REDIS_TOOLKIT_CHANNELS)[keyof typeof REDIS_TOOLKIT_CHANNELS];

/** What every payload has; each channel adds its own fields (docs/observability.md). */
export interface DiagnosticsPayload {
  readonly feature: 'cache' | 'ratelimit' | 'lock' | 'session' | 'pubsub';
  readonly operation: string;
  readonly outcome: string;
  readonly [field: string]: unknown;
}

// Created once: diagnostics_channel.channel() returns the same object per name, and hasSubscribers is a field read.
const channels = Object.fromEntries(
  Object.entries(REDIS_TOOLKIT_CHANNELS).map(([k, name]) => [k, diagnosticsChannel.channel(name)]),
) as { readonly [K in keyof typeof REDIS_TOOLKIT_CHANNELS]: diagnosticsChannel.Channel };

/** @internal Whether anyone listens on `channel` (to skip a timer read or a wrapper on the hot path). */
export function observed(channel: keyof typeof REDIS_TOOLKIT_CHANNELS): boolean {
  return channels[channel].hasSubscribers;
}

/**
 * @internal Publishes on `channel` only when someone listens: `payload` is a function so that, without subscribers,
 * no object is built (the zero-cost promise of issue 16).
 */
export function diagnose(channel: keyof typeof REDIS_TOOLKIT_CHANNELS, payload: () => DiagnosticsPayload): void {
  const ch = channels[channel];
  if (ch.hasSubscribers) ch.publish(payload());
}
