import { RedisToolkitError } from '../common/errors.js';
import { KeyBuilder } from '../common/keys.js';
import { type ReplayedMessage, STREAM_ID } from '../pubsub/pubsub.types.js';

/**
 * The wire protocol of the notifications namespace: what a client may send (`subscribe` / `unsubscribe`, validated
 * here), what it gets back (acks and their codes) and the `notification` it receives.
 */

/** What `subscribe` / `unsubscribe` acknowledge. */
export interface NotificationAck {
  ok: boolean;
  error?: string;
  /**
   * Stable code of the failure: E_BAD_REQUEST, E_FORBIDDEN, E_RATE_LIMITED, E_LIMIT, E_UNAVAILABLE, E_UNAUTHENTICATED
   * (the session has ended: the socket is then disconnected), E_SLOW (a replay stopped for a client reading too
   * slowly), E_INTERNAL.
   */
  code?: string;
  retryAfterMs?: number;
  /** Missed durable messages sent before live ones (subscribe with `lastId`). */
  replayed?: number;
  /** Only `true`, when more than `maxReplay` messages came after `lastId`: the newest were replayed, older ones not. */
  skipped?: true;
}

/** The `notification` event a client receives: the same shape as a message replayed from a durable stream. */
export type NotificationMessage<T = unknown> = ReplayedMessage<T>;

/** A valid `subscribe` / `unsubscribe` body. */
export interface NotificationRequest {
  channel: string;
  lastId?: string;
}

/** The toolkit's own channels (cache L1 invalidation, ...): never subscribed to or relayed to a client. */
export const isInternalChannel = KeyBuilder.isInternalChannel;
// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f]/;

/** A refused request: answered with an ack carrying `code`. */
export class AckError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly retryAfterMs?: number,
  ) {
    super(message);
  }
}

/** Validates a `subscribe` (`subscribing`, which may carry `lastId`) or `unsubscribe` body; AckError when it is not. */
export function parseRequest(body: unknown, subscribing: boolean, maxChannelLength: number): NotificationRequest {
  if (body === null || typeof body !== 'object' || Array.isArray(body)) {
    throw new AckError('E_BAD_REQUEST', 'expected an object { channel }');
  }
  const { channel, lastId } = body as Record<string, unknown>;
  if (typeof channel !== 'string' || channel.length === 0)
    throw new AckError('E_BAD_REQUEST', 'channel must be a non-empty string');
  if (channel.length > maxChannelLength) {
    throw new AckError('E_BAD_REQUEST', `channel is longer than ${maxChannelLength} characters`);
  }
  if (CONTROL.test(channel)) throw new AckError('E_BAD_REQUEST', 'channel must not contain control characters');
  if (isInternalChannel(channel)) throw new AckError('E_FORBIDDEN', `not allowed to subscribe to ${channel}`);
  if (subscribing && lastId !== undefined && (typeof lastId !== 'string' || !STREAM_ID.test(lastId))) {
    throw new AckError('E_BAD_REQUEST', 'lastId must be a notification id like 1700000000000-0');
  }
  return { channel, ...(typeof lastId === 'string' && { lastId }) };
}

/** The error a connection is refused with: the client sees `message` and `data.code`. */
export function refusal(code: string, message: string): Error {
  const err = new Error(message) as Error & { data: { code: string } };
  err.data = { code };
  return err;
}

/** The ack of a request that failed with `err`. */
export function failure(err: unknown): NotificationAck {
  if (err instanceof AckError) {
    return {
      ok: false,
      code: err.code,
      error: err.message,
      ...(err.retryAfterMs !== undefined && { retryAfterMs: err.retryAfterMs }),
    };
  }
  if (err instanceof RedisToolkitError && err.code === 'E_REDIS_UNAVAILABLE') {
    return { ok: false, code: 'E_UNAVAILABLE', error: 'notifications are unavailable, try again later' };
  }
  // Our own errors (InvalidKeyError, InvalidOptionsError...) are written for callers; anything else stays server-side.
  if (err instanceof RedisToolkitError) return { ok: false, code: 'E_BAD_REQUEST', error: err.message };
  return { ok: false, code: 'E_INTERNAL', error: 'the request failed' };
}
