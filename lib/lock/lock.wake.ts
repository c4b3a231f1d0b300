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
  /**
   * Lock keys whose wake arrived while the attempt that queued for it was still in flight (its reply and the wake come
   * on different connections): that caller tries again at once instead of sleeping a poll pause.
   */
  private readonly early = new Set<string>();

  constructor(
    keys: KeyBuilder,
    /** Opens one subscriber connection per lock server (quit by the connection on shutdown). */
    private readonly open: () => RedisClient[],
    /** Wakes a local waiter for the lock key: false when none waits. */
    private readonly wake: (lockKey: string) => boolean,
    /** Whether an attempt of this service is asking for the lock key right now. */
    private readonly inFlight: (lockKey: string) => boolean,
    private readonly warn: (message: string) => void,
  ) {
    this.channelPrefix = keys.channel(KeyBuilder.internalChannel(FEATURES.lock, 'wake:'));
  }

  /** True (once) when a wake for `lockKey` arrived while its attempt was in flight: try again at once. */
  takeEarly(lockKey: string): boolean {
    return this.early.delete(lockKey);
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
        if (this.wake(lockKey) || !this.inFlight(lockKey)) return;
        if (this.early.size >= 10_000) this.early.clear();
        this.early.add(lockKey);
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
