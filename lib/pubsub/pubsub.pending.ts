import type { Logger } from '@nestjs/common';
import { RedisReplyError } from '../common/errors.js';
import type { RedisClient } from '../common/lua-script.js';

/** Between two attempts to make the pending subscriptions (also tried at once when the main connection is ready). */
const RETRY_MS = 1_000;

/**
 * With `lazyConnect`, a subscription whose (P|S)SUBSCRIBE could not be made because Redis was not reachable: the
 * handler stays registered, `subscribe` resolves, one warning says so, and the subscription is made once Redis is
 * there (each second, and at once when the main connection becomes ready). Then `made` is called (the service tells
 * its onResubscribed listeners: messages published meanwhile were not received) and an info line says so. One Redis
 * answers with an error (the ACL refuses its pattern) is not tried again: `refused` drops it, with an error logged.
 */
export class PendingSubscriptions {
  private readonly names = new Set<string>();
  private timer: NodeJS.Timeout | undefined;
  private running = false;
  private closed = false;
  private watching = false;
  private readonly onMainReady = () => void this.run();

  constructor(
    private readonly main: RedisClient,
    private readonly logger: Logger,
    /** Makes the subscription `name` if it is still wanted; rejects when Redis is still away. */
    private readonly subscribe: (name: string) => Promise<void>,
    private readonly made: () => void,
    /** Redis answered its (P|S)SUBSCRIBE with an error (an ACL denial): not tried again (RefusedSubscriptions). */
    private readonly refused: (name: string, err: RedisReplyError) => void,
  ) {}

  get size(): number {
    return this.names.size;
  }

  add(name: string, err: unknown): void {
    if (this.closed) return;
    this.names.add(name);
    // A failed connect's advice to start with lazyConnect (RedisConnection.connect) is beside the point here.
    const reason = (err as Error).message.replace(/\.? Check that the server is running.*$/s, '').replace(/\.$/, '');
    this.logger.warn(
      `pub/sub: the subscription to ${name} is pending: ${reason}. Its handler is registered and it ` +
        'is made once Redis is reachable (lazyConnect); messages published until then are not received.',
    );
    if (!this.watching) {
      this.watching = true;
      this.main.on('ready', this.onMainReady);
    }
    this.schedule();
  }

  /** No longer wanted (its last handler unsubscribed); whether it was pending. */
  delete(name: string): boolean {
    return this.names.delete(name);
  }

  close(): void {
    this.closed = true;
    this.names.clear();
    clearTimeout(this.timer);
    this.main.off('ready', this.onMainReady);
  }

  private schedule(): void {
    if (this.closed || this.timer || this.names.size === 0) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.run();
    }, RETRY_MS);
    this.timer.unref();
  }

  private async run(): Promise<void> {
    if (this.running || this.closed) return;
    this.running = true;
    const done: string[] = [];
    try {
      for (const name of [...this.names]) {
        try {
          await this.subscribe(name);
        } catch (err) {
          // Refused, not away: trying it again each second could only fail again, without a word.
          if (!(err instanceof RedisReplyError)) break; // still away: the next attempt tries them all again
          this.names.delete(name);
          this.refused(name, err);
          continue;
        }
        if (this.closed) return;
        if (this.names.delete(name)) done.push(name);
      }
    } finally {
      this.running = false;
    }
    if (done.length > 0) {
      this.logger.log(`pub/sub: the pending subscription(s) to ${done.join(', ')} are made`);
      this.made();
    }
    this.schedule();
  }
}
