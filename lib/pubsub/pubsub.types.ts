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

export type MessageHandler<T = unknown> = (payload: T, channel: string, meta: MessageMeta) => void | Promise<void>;
export type Unsubscribe = () => Promise<void>;

/** A message read back from a user's durable stream. */
export interface ReplayedMessage<T = unknown> {
  channel: string;
  data: T;
  id: string;
  ts: number;
}

/** A durable message id (a stream entry id), as `replay(afterId)` and a client's `lastId` carry it. */
export const STREAM_ID = /^\d{1,20}-\d{1,20}$/;

/** A name containing `*`, `?` or `[` is a pattern subscription. */
export function isPattern(name: string): boolean {
  return /[*?[]/.test(name);
}
