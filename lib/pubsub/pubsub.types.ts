/** What every message carries besides its payload. */
export interface MessageMeta {
  /**
   * Unique per message. For durable `notifyUser` messages: the stream entry id (`1700000000000-0`), usable to replay.
   */
  id: string;
  /** Publish time, ms since the epoch (the publisher's clock). */
  ts: number;
  /** The pattern that matched, for pattern subscriptions. */
  pattern?: string;
  /** True for a message read back from a user's durable stream. */
  replayed?: boolean;
}

/**
 * Called for each message. What it returns is ignored, except a promise (any thenable): its rejection is logged as a
 * throw is, never an unhandled rejection. So one-liners such as `() => count++` or `(m) => list.push(m)` are fine.
 */
export type MessageHandler<T = unknown> = (payload: T, channel: string, meta: MessageMeta) => unknown;

/** Whether a handler returned a promise or another thenable, whose rejection must be caught. */
export function isThenable(value: unknown): value is PromiseLike<unknown> {
  return (
    (typeof value === 'object' || typeof value === 'function') &&
    value !== null &&
    typeof (value as PromiseLike<unknown>).then === 'function'
  );
}
export type Unsubscribe = () => Promise<void>;

/** A message read back from a user's durable stream. */
export interface ReplayedMessage<T = unknown> {
  channel: string;
  data: T;
  id: string;
  ts: number;
}

/** The largest part of a stream id (ms and sequence are unsigned 64-bit in Redis): 2^64-1. */
export const MAX_STREAM_ID_PART = 2n ** 64n - 1n;

const STREAM_ID_PARTS = /^(\d{1,20})-(\d{1,20})$/;

/**
 * Whether `id` is a stream id Redis accepts: `<ms>-<seq>`, each part at most 2^64-1. Compared as BigInt (a Number
 * rounds past 2^53): `99999999999999999999-0` has the right shape but Redis refuses it (ERR Invalid stream ID).
 */
export function isStreamId(id: unknown): id is string {
  if (typeof id !== 'string') return false;
  const parts = STREAM_ID_PARTS.exec(id);
  return parts !== null && BigInt(parts[1]) <= MAX_STREAM_ID_PART && BigInt(parts[2]) <= MAX_STREAM_ID_PART;
}

/**
 * A durable message id (a stream entry id), as `replay(afterId)` and a client's `lastId` carry it: `STREAM_ID.test(id)`
 * is isStreamId (the shape and each part's range; a pattern alone cannot bound a part to 2^64-1).
 */
export const STREAM_ID: { readonly test: (id: unknown) => boolean } = { test: isStreamId };

/** A name containing `*`, `?` or `[` is a pattern subscription. */
export function isPattern(name: string): boolean {
  return /[*?[]/.test(name);
}
