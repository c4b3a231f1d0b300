import type { RedisClient } from '../common/lua-script.js';
import { FEATURES, KeyBuilder } from '../common/keys.js';
import { newToken } from './lock.attempts.js';

/**
 * Wake-on-release across processes. Every LockService has an id and, from its first wait on, listens on its own
 * channel (`<prefix>ps:__rtk:lock:wake:<id>`) on every lock server. A caller that finds a lock held joins the lock's
 * waiting services (a sorted set beside the lock, oldest first, one entry per service); a release pops the oldest and
 * publishes the lock key on its channel, so exactly one waiting service tries again at once instead of at its next
 * poll (and services are served in the order they started waiting). The poll stays: a wake lost on the way (the
 * subscriber connection down, a service that stopped waiting) costs one poll pause, no more.
 */
export class LockWakeups {
  /** This service's id among the waiting services (random, 128 bits). */
  readonly id = newToken();
  /** Every service's wake channel starts with this; the scripts append the id. */
  readonly channelPrefix: string;
  /** Wakes received since start. */
  received = 0;
  private subscribers: RedisClient[] | undefined;

  constructor(
    keys: KeyBuilder,
    /** Opens one subscriber connection per lock server (quit by the connection on shutdown). */
    private readonly open: () => RedisClient[],
    /** Wakes a local waiter for the lock key. */
    private readonly wake: (lockKey: string) => void,
    private readonly warn: (message: string) => void,
  ) {
    this.channelPrefix = keys.channel(KeyBuilder.internalChannel(FEATURES.lock, 'wake:'));
  }

  get channel(): string {
    return this.channelPrefix + this.id;
  }

  /**
   * Starts listening (once; a no-op after). Until the subscription is active, the releases find nobody listening on
   * this channel and wake the next waiting service instead: the callers of this one poll meanwhile.
   */
  listen(): void {
    if (this.subscribers) return;
    this.subscribers = this.open();
    const channel = this.channel;
    for (const subscriber of this.subscribers) {
      subscriber.on('message', (from: string, lockKey: string) => {
        if (from !== channel) return;
        this.received++;
        this.wake(lockKey);
      });
      // ioredis subscribes again by itself after a reconnect; 'ready' covers a connection that was not up yet.
      const subscribe = (): void => {
        subscriber.subscribe(channel).catch((err: unknown) => {
          this.warn(`lock wake-ups: subscribing failed, waiters poll until it succeeds: ${(err as Error).message}`);
        });
      };
      subscriber.on('ready', subscribe);
      if (subscriber.status === 'wait') subscriber.connect().catch(() => undefined);
      else if (subscriber.status === 'ready') subscribe();
    }
  }
}
