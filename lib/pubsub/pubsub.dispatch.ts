import type { Logger } from '@nestjs/common';
import { diagnose } from '../common/diagnostics.js';
import type { Serializer } from '../common/serializer.js';
import { ThrottledWarning } from '../common/throttled-logger.js';
import type { MessageEnvelopes } from './pubsub.envelope.js';
import { isThenable, type MessageHandler, type MessageMeta } from './pubsub.types.js';

/** What our envelope adds to a payload at most (`rtk1:`, the id, the time, two colons), in characters. */
const ENVELOPE_CHARS = 64;

/**
 * The handlers of one subscription, each delivery going to those registered when its message arrived (a handler
 * subscribed during a delivery gets the next message) that are still registered at their turn (one unsubscribed
 * before its turn gets nothing more). Copied on write, and only while a delivery goes over them: a handler that
 * (un)subscribes during a delivery changes a copy, so a message costs no copy of its handlers, and an (un)subscribe
 * outside a delivery none either.
 */
export class Handlers {
  private set: Set<MessageHandler>;
  /** Deliveries going over `set` now (more than one if a handler delivers again): a write then copies it first. */
  private readers = 0;

  constructor(first: MessageHandler) {
    this.set = new Set([first]);
  }

  get size(): number {
    return this.set.size;
  }

  add(handler: MessageHandler): void {
    this.writable().add(handler);
  }

  /** Whether `handler` was registered (and is no longer). */
  delete(handler: MessageHandler): boolean {
    return this.set.has(handler) && this.writable().delete(handler);
  }

  /** Calls `call` with each handler registered now that is still registered when its turn comes. */
  each(call: (handler: MessageHandler) => void): void {
    const registered = this.set;
    this.readers++;
    try {
      for (const handler of registered) if (this.set === registered || this.set.has(handler)) call(handler);
    } finally {
      // A write during the delivery replaced `set`: its copy has readers of its own.
      if (this.set === registered) this.readers--;
    }
  }

  private writable(): Set<MessageHandler> {
    if (this.readers > 0) {
      this.set = new Set(this.set);
      this.readers = 0;
    }
    return this.set;
  }
}

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
    handlers: Handlers,
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
    // The handlers registered when the message arrived, each still registered when its turn comes (Handlers).
    handlers.each((handler) => this.call(handler, name, payload, channel, meta));
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
