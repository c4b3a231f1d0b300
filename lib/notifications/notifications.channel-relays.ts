import type { Unsubscribe } from '../pubsub/pubsub.types.js';

/** One PubSubService subscription of this instance, shared by the `count` sockets in its room. */
export interface Relay {
  count: number;
  ready: Promise<Unsubscribe>;
}

/** The Socket.IO room of a channel (or pattern). */
export function roomOf(name: string): string {
  return `rtk:${name}`;
}

/**
 * The per-channel relays of this instance: one PubSubService subscription per channel (or pattern), whatever the
 * number of sockets in its room, released with the last of them.
 */
export class ChannelRelays {
  private readonly relays = new Map<string, Relay>();

  /** `subscribe(name)` opens the PubSubService subscription that feeds the room of `name`. */
  constructor(private readonly subscribe: (name: string) => Promise<Unsubscribe>) {}

  /** Channels and patterns relayed (one Redis subscription each). */
  get size(): number {
    return this.relays.size;
  }

  /** One PubSubService subscription per channel on this instance, shared by every socket in its room. */
  acquire(name: string): Relay {
    let relay = this.relays.get(name);
    if (relay) {
      relay.count++;
      return relay;
    }
    const created: Relay = { count: 1, ready: this.subscribe(name) };
    created.ready.catch(() => {
      if (this.relays.get(name) === created) this.relays.delete(name);
    });
    this.relays.set(name, created);
    relay = created;
    return relay;
  }

  /** One socket less in the room of `name`: the last one closes the subscription. */
  release(name: string, relay: Relay): void {
    relay.count--;
    if (relay.count > 0) return;
    if (this.relays.get(name) === relay) this.relays.delete(name);
    relay.ready.then((off) => off()).catch(() => undefined);
  }

  /**
   * Its PubSubService subscription was dropped (Redis refused it after a reconnect; PubSubService's
   * onSubscriptionDropped): the next socket to subscribe opens a new one, and is told if Redis refuses it, instead of
   * joining a dead room.
   */
  forget(name: string): void {
    this.relays.delete(name);
  }

  /** Closes every subscription (module shutdown). */
  closeAll(): void {
    for (const relay of this.relays.values()) void relay.ready.then((off) => off()).catch(() => undefined);
    this.relays.clear();
  }
}
