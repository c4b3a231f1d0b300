import { traceObserved, traced } from '../common/diagnostics.js';
import { RedisPermissionError, RedisReplyError, RedisUnavailableError } from '../common/errors.js';

/**
 * The error a failed publish hands to its traced call (the `error` of the `rtk:pubsub:publish` context, which the
 * OpenTelemetry instrumentation exports as the span's status and exception event): a copy of the caller's error whose
 * message names no channel, since a `user:<id>` channel names a user (docs/observability.md). The caller's error keeps
 * the channel in its message, as docs/pubsub.md shows (`pub/sub publish to orders failed: ...`), and so does the
 * warning logged with it. The copy has the same class, `code` and `replyCode`, no `cause` (the driver's error holds
 * the command's arguments: the channel and the message) and no channel property. Any other error is returned as is.
 */
export function withoutChannel(err: unknown, channel: string, redisChannel: string): unknown {
  if (!(err instanceof RedisReplyError) && !(err instanceof RedisUnavailableError)) return err;
  const message = err.message
    .replaceAll(`publish to ${channel} failed`, 'publish failed')
    .replaceAll(redisChannel, '<channel>'); // an error reply may quote the channel (an ACL denial)
  if (message === err.message) return err;
  const copy =
    err instanceof RedisPermissionError
      ? new RedisPermissionError(message, err.replyCode)
      : err instanceof RedisReplyError
        ? new RedisReplyError(message, err.replyCode)
        : new RedisUnavailableError(message);
  // the caller's stack frames (where the publish came from), under the new message
  const head = `${err.name}: ${err.message}`;
  if (err.stack?.startsWith(head)) copy.stack = `${copy.name}: ${message}${err.stack.slice(head.length)}`;
  return copy;
}

// The traced publish's fields (docs/observability.md): no channel name (it may hold a user id), no payload.
const publishing = () => ({ feature: 'pubsub' as const, operation: 'publish' });
const sent = (receivers: number) => ({ outcome: 'sent', receivers });

/**
 * A publish (`send`) run as the traced `rtk:pubsub:publish` call when anyone traces it: the traced call sees the error
 * without the channel (withoutChannel), the caller gets the error as `send` threw it.
 */
export function tracedPublish(channel: string, redisChannel: string, send: () => Promise<number>): Promise<number> {
  if (!traceObserved('pubsubPublish')) return send();
  let failure: { err: unknown } | undefined;
  const run = async () => {
    try {
      return await send();
    } catch (err) {
      failure = { err };
      throw withoutChannel(err, channel, redisChannel);
    }
  };
  return traced('pubsubPublish', publishing, run, sent).catch((err: unknown) => {
    throw failure === undefined ? err : failure.err;
  });
}
