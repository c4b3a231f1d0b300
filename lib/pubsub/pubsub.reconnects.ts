import type { Logger } from '@nestjs/common';
import { Cluster, type Redis } from 'ioredis';
import type { RedisClient } from '../common/lua-script.js';

/**
 * The subscriber connections of an ioredis 6 Cluster, which it does not expose: `subscriber` (ClusterSubscriber) holds
 * the one classic SUBSCRIBE/PSUBSCRIBE connection, `shardedSubscribers` (ClusterSubscriberGroup) one SSUBSCRIBE
 * connection per master. Read defensively: a shape we do not know is treated as absent.
 */
interface ClusterInternals {
  subscriber?: { getInstance?: () => Redis | null };
  shardedSubscribers?: { shardedSubscribers?: Map<string, { getInstance?: () => Redis | null }> };
}

/**
 * Tells listeners when the subscriber connection is back after a loss, once its subscriptions are in effect again:
 * whatever was published meanwhile was not received (pub/sub has no replay), so a listener that must not miss a
 * message (session revocations, the cache's L1 bus) re-reads or drops the state it stands for.
 *
 * - Single server, Sentinel: ioredis re-sends SUBSCRIBE / PSUBSCRIBE before it emits `ready` on the reconnected
 *   connection; a PING sent then is answered after them.
 * - Cluster, classic pub/sub: the cluster's subscriber connection never reconnects; on its `end` ioredis opens a new
 *   one (to any node) and subscribes it to the same channels, without an event. So each connection is followed: on
 *   its `end`, the next one is awaited until `ready` and a PING answered on it (after its SUBSCRIBEs), then listeners
 *   are told and that one is followed in turn.
 * - Cluster, sharded pub/sub: a lost SSUBSCRIBE connection makes ioredis refresh the slots and rebuild its subscriber
 *   group (new connections, SSUBSCRIBE sent again), which it ends with `subscribersReady`; so does a change of the
 *   slot owners (channels moved to another master: messages sent during the move may be missed). When that follows a
 *   change of the connections or of the owners, every ready subscriber connection answers a PING (after the
 *   SSUBSCRIBEs ioredis sent it), then listeners are told.
 */
export class SubscriberReconnects {
  private readonly listeners = new Set<() => void>();

  constructor(
    private readonly logger: Logger,
    /**
     * Run once the connections answered, before the listeners are told: re-sends each subscription ioredis could not
     * restore (RefusedSubscriptions.restore); never rejects. None with sharded pub/sub.
     */
    private readonly restore?: (connections: Redis[]) => Promise<void>,
  ) {}

  /** Calls `listener` after each reconnect of the subscriber; returns the function that removes it. */
  add(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  watch(subscriber: RedisClient): void {
    if (subscriber instanceof Cluster) {
      if (subscriber.options.shardedSubscribers) this.watchSharded(subscriber);
      else this.watchClassic(subscriber);
      return;
    }
    let connected = subscriber.status === 'ready';
    subscriber.on('ready', () => {
      if (!connected) {
        connected = true;
        return;
      }
      this.confirm([subscriber]);
    });
  }

  private watchClassic(cluster: Cluster): void {
    const internals = (cluster as unknown as ClusterInternals).subscriber;
    let followed: Redis | null = null;
    /** A followed connection ended: the next one tells the listeners once it is ready. */
    let lost = false;
    const settle = (): void => {
      if (!lost || followed?.status !== 'ready') return;
      lost = false;
      this.confirm([followed]);
    };
    const follow = (): void => {
      // None while the cluster is down (it opens one when it connects again: `ready`, `+node`).
      const current = typeof internals?.getInstance === 'function' ? internals.getInstance() : null;
      if (current && current !== followed) {
        followed = current;
        // ioredis's own `end` handler, added when it made the connection, has already chosen the next one.
        current.once('end', () => {
          lost = true;
          follow();
        });
        current.once('ready', settle);
      }
      settle();
    };
    follow();
    cluster.on('ready', follow);
    cluster.on('+node', follow);
  }

  private watchSharded(cluster: Cluster): void {
    const group = (cluster as unknown as ClusterInternals).shardedSubscribers?.shardedSubscribers;
    const connections = (): (Redis | null)[] =>
      [...(group?.values() ?? [])].map((s) => (typeof s.getInstance === 'function' ? s.getInstance() : null));
    const owners = (): string[] => cluster.slots.map((nodes) => nodes?.[0] ?? '');
    // What the listeners were last told about: the connections (at start, the ones being opened) and the master of
    // each slot. subscribersReady also ends the group's first build, which may come after this watch begins: with the
    // same connections and slots, it is no return.
    let known = new Set(connections());
    let knownOwners = owners();
    cluster.on('subscribersReady', () => {
      const current = connections();
      // One that failed to start is replaced by the next refresh, which ends with subscribersReady again.
      if (current.some((c) => c?.status === 'end')) return;
      const currentOwners = owners();
      const changed =
        current.length !== known.size ||
        current.some((c) => !known.has(c)) ||
        currentOwners.length !== knownOwners.length ||
        currentOwners.some((owner, slot) => owner !== knownOwners[slot]);
      known = new Set(current);
      knownOwners = currentOwners;
      if (changed) this.confirm(current.filter((c): c is Redis => c?.status === 'ready'));
    });
  }

  /**
   * Notifies once every connection answered a PING (queued after its re-sent subscriptions), and the subscriptions
   * those did not restore were sent again.
   */
  private confirm(connections: Redis[]): void {
    Promise.all(connections.map((c) => c.ping())).then(
      async () => {
        await this.restore?.(connections);
        this.notify();
      },
      (err: unknown) => this.logger.warn(`the subscriber reconnected but did not answer: ${(err as Error).message}`),
    );
  }

  /** Tells every listener now (also when a subscription pending under lazyConnect has been made). */
  notify(): void {
    for (const listener of this.listeners) {
      try {
        listener();
      } catch (err) {
        this.logger.error(`a reconnect listener threw: ${(err as Error).message}`);
      }
    }
  }
}
