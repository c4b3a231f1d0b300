import type { Logger } from '@nestjs/common';
import { diagnose } from '../common/diagnostics.js';
import type { Serializer } from '../common/serializer.js';
import { ThrottledWarning } from '../common/throttled-logger.js';
import type { MessageEnvelopes } from './pubsub.envelope.js';
import { isThenable, type MessageHandler, type MessageMeta } from './pubsub.types.js';

/** What our envelope adds to a payload at most (`rtk1:`, the id, the time, two colons), in characters. */
const ENVELOPE_CHARS = 64;

/** Hands a received message to the handlers of its subscription: deserialized once, shared by every handler. */
export class MessageDispatcher {
  private readonly handlerWarning: ThrottledWarning;

  /**
   * The longest message read, in characters: pubsub.maxMessageBytes plus the envelope. A string never has more
   * characters than UTF-8 bytes, so every message our publish sends fits, and a longer one is over the limit in bytes
   * too: it is dropped before the envelope is read or the payload parsed (a foreign PUBLISH of 30 MB would otherwise be
   * parsed whole, blocking the event loop, and handed to every handler).
   */
  private readonly maxChars: number;

  constructor(
    private readonly envelopes: MessageEnvelopes,
    private readonly serializer: Serializer,
    private readonly logger: Logger,
    maxMessageBytes: number,
  ) {
    this.handlerWarning = new ThrottledWarning(logger, 5_000, () => 'unreadable or too large pub/sub messages dropped');
    this.maxChars = maxMessageBytes + ENVELOPE_CHARS;
  }

  /** At shutdown: the pending count of its warnings is logged now, and no timer outlives the app. */
  close(): void {
    this.handlerWarning.close();
  }

  /**
   * `name`: the subscription (channel or pattern) the handlers belong to; `channel`: the channel the message came on,
   * without the prefix; `redisChannel`: with it.
   */
  deliver(
    handlers: Set<MessageHandler>,
    name: string,
    channel: string,
    redisChannel: string,
    message: string,
    pattern?: string,
  ): void {
    if (message.length > this.maxChars) {
      this.drop(
        `dropped a message of ${message.length} characters on ${redisChannel}: more than pubsub.maxMessageBytes ` +
          `(${this.maxChars - ENVELOPE_CHARS}) allows`,
        'too-large',
      );
      return;
    }
    let payload: unknown;
    let meta: MessageMeta;
    try {
      const parsed = this.envelopes.open(message);
      payload = this.serializer.deserialize(parsed.body);
      meta = { id: parsed.id, ts: parsed.ts };
      if (pattern !== undefined) meta.pattern = pattern;
    } catch (err) {
      this.drop(`dropped a message on ${redisChannel} that could not be read: ${(err as Error).message}`, 'unreadable');
      return;
    }
    const count = handlers.size;
    diagnose('pubsubRelay', () => ({ feature: 'pubsub', operation: 'relay', outcome: 'relayed', handlers: count }));
    // The handlers registered when the message arrived, each still registered when its turn comes: one subscribed by a
    // handler during this delivery gets the next message (iterating the live Set handed it this one, published before
    // its subscribe), one unsubscribed by a handler before its turn gets nothing more.
    if (count === 1) {
      this.call(handlers.values().next().value as MessageHandler, name, payload, channel, meta);
      return;
    }
    for (const handler of Array.from(handlers)) {
      if (handlers.has(handler)) this.call(handler, name, payload, channel, meta);
    }
  }

  /** One failing handler must not stop the others, nor surface as an unhandled rejection. */
  private call(handler: MessageHandler, name: string, payload: unknown, channel: string, meta: MessageMeta): void {
    try {
      const result = handler(payload, channel, meta);
      if (isThenable(result)) result.then(undefined, (err: unknown) => this.handlerFailed(name, err));
    } catch (err) {
      this.handlerFailed(name, err);
    }
  }

  private drop(warning: string, reason: 'unreadable' | 'too-large'): void {
    this.handlerWarning.warn(warning);
    diagnose('pubsubDrop', () => ({ feature: 'pubsub', operation: 'drop', outcome: 'dropped', reason }));
  }

  private handlerFailed(name: string, err: unknown): void {
    diagnose('pubsubDrop', () => ({
      feature: 'pubsub',
      operation: 'drop',
      outcome: 'dropped',
      reason: 'handler-failed',
    }));
    this.logger.error(`a handler of ${name} threw: ${err instanceof Error ? err.message : String(err)}`);
  }
}
