import type { OptionProblems } from '../common/option-checks.js';
import type { NotificationsGatewayOptions } from '../notifications/notifications.options.js';

/** Injection token of ResolvedPubSubOptions (`pubsub` of forRoot less `gateway`, defaults filled in). */
export const PUBSUB_OPTIONS = Symbol('PUBSUB_OPTIONS');

export interface PubSubDurableOptions {
  /** Entries kept per user stream (XADD MAXLEN ~, so Redis may keep slightly more). Default 1000. */
  maxLen?: number;
  /** A user stream untouched this long is deleted (ms; a fraction is rounded up to whole ms). Default 24 h. */
  ttl?: number;
}

export interface PubSubOptions {
  /**
   * On a Redis Cluster: `sharded` (default) publishes with SPUBLISH and subscribes with SSUBSCRIBE, so a message only
   * travels to the shard that owns its channel; pattern subscriptions are refused there (Redis has no sharded
   * PSUBSCRIBE and PSUBSCRIBE never sees SPUBLISH). `classic` uses PUBLISH/SUBSCRIBE/PSUBSCRIBE, which the cluster bus
   * copies to every node. Ignored on a single server or Sentinel.
   */
  cluster?: 'sharded' | 'classic';
  /** `notifyUser` also appends to a capped stream per user, so reconnecting clients can replay what they missed. */
  durable?: PubSubDurableOptions | boolean;
  /**
   * Largest payload `publish` and `notifyUser` send, in bytes of its serialized (UTF-8) form: a larger one fails that
   * call alone with SerializationError, before anything is sent or written. Redis closes every subscriber connection
   * whose pending output passes `client-output-buffer-limit pubsub` (32 MB at once, or 8 MB for 60 s): a huge message
   * would cut off every subscriber of its channel, and the messages queued with it would be lost. Default 1 MiB
   * (1_048_576); at most 512 MiB (Redis's `proto-max-bulk-len`).
   */
  maxMessageBytes?: number;
  /**
   * Options of the Socket.IO NotificationsGateway (loaded with the `notificationsGateway` extra of forRoot, or by
   * importing NotificationsGatewayModule); `false` refuses every connection. Resolved by the notifications feature.
   */
  gateway?: NotificationsGatewayOptions | false;
}

export interface ResolvedPubSubOptions {
  cluster: 'sharded' | 'classic';
  durable: { maxLen: number; ttl: number } | false;
  maxMessageBytes: number;
}

/** pubsub.maxMessageBytes when not given: 1 MiB, well under the 8 MB soft limit of Redis's pubsub output buffers. */
export const DEFAULT_MAX_MESSAGE_BYTES = 1_048_576;
/** The largest pubsub.maxMessageBytes: Redis's default proto-max-bulk-len (512 MiB), the longest argument it reads. */
const MAX_MESSAGE_BYTES_LIMIT = 536_870_912;

/**
 * A duration rounded up to whole ms: notifyUser's PEXPIRE refuses a fraction (a ttl of 1500.5 left every user stream
 * without an expiry). A value that is not a number is left for the option check to name.
 */
function wholeMs<T>(value: T): T {
  return (typeof value === 'number' ? Math.ceil(value) : value) as T;
}

export function resolvePubSubOptions(raw: PubSubOptions | undefined, problems: OptionProblems): ResolvedPubSubOptions {
  const o = raw ?? {};
  if (!problems.object('pubsub', raw))
    return { cluster: 'sharded', durable: false, maxMessageBytes: DEFAULT_MAX_MESSAGE_BYTES };
  problems.oneOf('pubsub.cluster', o.cluster, ['sharded', 'classic']);
  problems.integer('pubsub.maxMessageBytes', o.maxMessageBytes, 1, MAX_MESSAGE_BYTES_LIMIT);
  let durable: ResolvedPubSubOptions['durable'] = false;
  if (o.durable !== undefined && o.durable !== false) {
    const d = o.durable === true ? {} : o.durable;
    if (problems.object('pubsub.durable', d)) {
      problems.integer('pubsub.durable.maxLen', d.maxLen, 1);
      problems.duration('pubsub.durable.ttl', d.ttl);
    }
    durable = { maxLen: d.maxLen ?? 1_000, ttl: wholeMs(d.ttl ?? 86_400_000) };
  }
  return {
    cluster: o.cluster ?? 'sharded',
    durable,
    maxMessageBytes: o.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES,
  };
}
