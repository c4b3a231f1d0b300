import type { Logger } from '@nestjs/common';
import { Cluster } from 'ioredis';
import type { RedisClient } from '../common/lua-script.js';

/**
 * Tells listeners when the subscriber connection is back after a loss, once its subscriptions are in effect again:
 * whatever was published meanwhile was not received (pub/sub has no replay), so a listener that must not miss a
 * message (session revocations) re-reads the state it stands for.
 *
 * ioredis re-sends SUBSCRIBE / PSUBSCRIBE before it emits `ready` on the reconnected connection; a PING sent then is
 * answered after them. A Cluster moves its subscriber connection to another node without an event: not covered there.
 */
export class SubscriberReconnects {
  private readonly listeners = new Set<() => void>();

  constructor(private readonly logger: Logger) {}

  /** Calls `listener` after each reconnect of the subscriber; returns the function that removes it. */
  add(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  watch(subscriber: RedisClient): void {
    if (subscriber instanceof Cluster) return;
    let connected = subscriber.status === 'ready';
    subscriber.on('ready', () => {
      if (!connected) {
        connected = true;
        return;
      }
      subscriber.ping().then(
        () => this.notify(),
        (err: unknown) => this.logger.warn(`the subscriber reconnected but did not answer: ${(err as Error).message}`),
      );
    });
  }

  private notify(): void {
    for (const listener of this.listeners) {
      try {
        listener();
      } catch (err) {
        this.logger.error(`a reconnect listener threw: ${(err as Error).message}`);
      }
    }
  }
}
