import { RedisToolkitError } from '../common/errors.js';
import { KeyBuilder, MAX_KEY_BYTES } from '../common/keys.js';
import { hasLoneSurrogate } from '../common/unicode.js';
import { MAX_STREAM_ID_PART, type ReplayedMessage, STREAM_ID } from '../pubsub/pubsub.types.js';

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
const LARGEST_STREAM_ID = `${MAX_STREAM_ID_PART}-${MAX_STREAM_ID_PART}`;
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
  // Own properties only: what a body inherits (its prototype) is no field of the request.
  const channel = own(body, 'channel');
  const lastId = own(body, 'lastId');
  if (typeof channel !== 'string' || channel.length === 0)
    throw new AckError('E_BAD_REQUEST', 'channel must be a non-empty string');
  if (channel.length > maxChannelLength) {
    throw new AckError('E_BAD_REQUEST', `channel is longer than ${maxChannelLength} characters`);
  }
  if (CONTROL.test(channel)) throw new AckError('E_BAD_REQUEST', 'channel must not contain control characters');
  // What PubSubService.subscribe would refuse (KeyBuilder.validate), refused here before the request is counted or
  // authorized: a lone surrogate ('room:\uD800' and 'room:\uDC00' are one Redis channel, U+FFFD, whose messages reach
  // neither) and more UTF-8 bytes than a channel may have (a maxChannelLength of 1024 characters can be 4 KB).
  if (hasLoneSurrogate(channel))
    throw new AckError('E_BAD_REQUEST', 'channel must be well-formed Unicode (it has a lone surrogate)');
  if (Buffer.byteLength(channel) > MAX_KEY_BYTES)
    throw new AckError('E_BAD_REQUEST', `channel is longer than ${MAX_KEY_BYTES} bytes in UTF-8`);
  if (isInternalChannel(channel)) throw new AckError('E_FORBIDDEN', `not allowed to subscribe to ${channel}`);
  if (subscribing && lastId !== undefined && (typeof lastId !== 'string' || !STREAM_ID.test(lastId))) {
    throw new AckError('E_BAD_REQUEST', 'lastId must be a notification id like 1700000000000-0');
  }
  // The largest id (nothing can come after it; PubSubService.replay refuses it): refused here, before a subscription
  // the socket holds is restarted for a replay of it.
  if (subscribing && lastId === LARGEST_STREAM_ID) {
    throw new AckError('E_BAD_REQUEST', `lastId ${lastId} is the largest stream id: no message can come after it`);
  }
  return { channel, ...(typeof lastId === 'string' && { lastId }) };
}

function own(body: object, key: string): unknown {
  return Object.hasOwn(body, key) ? (body as Record<string, unknown>)[key] : undefined;
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
