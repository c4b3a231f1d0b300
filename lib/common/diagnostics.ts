import diagnosticsChannel from 'node:diagnostics_channel';

/**
 * The toolkit's diagnostics_channel names, one per feature operation, in ioredis 6's style (`ioredis:command`).
 * Stable: subscribers key on them. Payloads carry the feature, the operation and the outcome, never a secret
 * (no session id, no lock token, no cookie, no raw rate-limit tracker).
 */
export const REDIS_TOOLKIT_CHANNELS = {
  cacheGet: 'rtk:cache:get',
  cacheLoad: 'rtk:cache:load',
  cacheRefresh: 'rtk:cache:refresh',
  cacheInvalidate: 'rtk:cache:invalidate',
  rateLimitDecision: 'rtk:ratelimit:decision',
  lockAcquire: 'rtk:lock:acquire',
  lockExtend: 'rtk:lock:extend',
  lockRelease: 'rtk:lock:release',
  lockLost: 'rtk:lock:lost',
  sessionCreate: 'rtk:session:create',
  sessionDestroy: 'rtk:session:destroy',
  pubsubPublish: 'rtk:pubsub:publish',
  pubsubRelay: 'rtk:pubsub:relay',
  pubsubDrop: 'rtk:pubsub:drop',
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

/**
 * The operations that take time, each a `TracingChannel` (as ioredis 6 traces `ioredis:command`): Node publishes
 * `tracing:<name>:start`, `:end`, `:asyncStart`, `:asyncEnd` and `:error` around the operation, with one context
 * object per call. The names are those of the matching event channels above.
 */
export const REDIS_TOOLKIT_TRACING_CHANNELS = {
  cacheGet: 'rtk:cache:get',
  cacheLoad: 'rtk:cache:load',
  rateLimitDecision: 'rtk:ratelimit:decision',
  lockAcquire: 'rtk:lock:acquire',
  lockExtend: 'rtk:lock:extend',
  lockRelease: 'rtk:lock:release',
  sessionCreate: 'rtk:session:create',
  sessionDestroy: 'rtk:session:destroy',
  pubsubPublish: 'rtk:pubsub:publish',
} as const;

export type TracedOperation = keyof typeof REDIS_TOOLKIT_TRACING_CHANNELS;

/**
 * The context object of one traced call, the same object on each of its five events. At start it has `feature`,
 * `operation` and the call's own fields; before `asyncEnd` the toolkit adds `outcome` (and on failure `error`).
 * Unlike `tracePromise`, the result is never attached: a session or a lock would carry its id or token.
 */
export interface TracingContext {
  readonly feature: DiagnosticsPayload['feature'];
  readonly operation: string;
  outcome?: string;
  error?: unknown;
  [field: string]: unknown;
}

const tracingChannels = Object.fromEntries(
  Object.entries(REDIS_TOOLKIT_TRACING_CHANNELS).map(([k, name]) => [
    k,
    diagnosticsChannel.tracingChannel<TracingContext>(name),
  ]),
) as { readonly [K in TracedOperation]: diagnosticsChannel.TracingChannel<TracingContext, TracingContext> };

type ToolkitTracingChannel = (typeof tracingChannels)[TracedOperation];

/**
 * Whether anyone traces on `channel`: its own `hasSubscribers` where the runtime has that getter (Node), else any of
 * its five channels' (Node's definition of it). Bun 1.4's TracingChannel has no such getter: read as undefined, every
 * traced call ran untraced there, so no subscriber (the OpenTelemetry spans of `/otel`) ever saw one, without a word.
 */
const tracing: (channel: ToolkitTracingChannel) => boolean =
  typeof tracingChannels.cacheGet.hasSubscribers === 'boolean'
    ? (channel) => channel.hasSubscribers
    : (channel) =>
        channel.start.hasSubscribers ||
        channel.end.hasSubscribers ||
        channel.asyncStart.hasSubscribers ||
        channel.asyncEnd.hasSubscribers ||
        channel.error.hasSubscribers;

/** @internal Whether anyone traces `operation` (subscribed to any of its five channels or bound a store). */
export function traceObserved(operation: TracedOperation): boolean {
  return tracing(tracingChannels[operation]);
}

/**
 * @internal Runs `fn` as one traced call of `operation`: without a subscriber, just `fn()` (no context is built).
 * `start` builds the context's fields; `finish` reads the outcome (and other fields) from the result, `failure` the
 * outcome from an error (default `failed`; the error is in `error`). The events
 * follow `TracingChannel.tracePromise` (`fn` runs inside `start.runStores`, so a subscriber's bound store — an
 * OpenTelemetry context — is active for the Redis commands it issues), except that no result is attached.
 */
export function traced<R>(
  operation: TracedOperation,
  start: () => TracingContext,
  fn: () => Promise<R>,
  finish: (result: R) => Partial<TracingContext>,
  failure: (err: unknown) => string = () => 'failed',
): Promise<R> {
  const channel = tracingChannels[operation];
  if (!tracing(channel)) return fn();
  const context = start();
  return channel.start.runStores(context, () => {
    let promise: Promise<R>;
    try {
      promise = fn();
    } catch (err) {
      context.outcome = failure(err);
      context.error = err;
      channel.error.publish(context);
      throw err;
    } finally {
      channel.end.publish(context);
    }
    return promise.then(
      (result) => {
        Object.assign(context, finish(result));
        channel.asyncStart.publish(context);
        channel.asyncEnd.publish(context);
        return result;
      },
      (err: unknown) => {
        context.outcome = failure(err);
        context.error = err;
        channel.error.publish(context);
        channel.asyncStart.publish(context);
        channel.asyncEnd.publish(context);
        throw err;
      },
    );
  });
}
