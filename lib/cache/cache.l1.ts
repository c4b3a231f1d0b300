import { randomUUID } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import { FEATURES, KeyBuilder } from '../common/keys.js';
import type { ThrottledWarning } from '../common/throttled-logger.js';
import type { RedisConnection } from '../connection/redis-connection.js';
import type { PubSubService } from '../pubsub/pubsub.service.js';
import type { Unsubscribe } from '../pubsub/pubsub.types.js';
import type { CacheEntry } from './cache.entry.js';
import type { CacheL1Options } from './cache.options.js';
import type { CacheCounters } from './cache.stats.js';

/** Internal pub/sub channel on which instances tell each other which L1 entries to drop. */
export const CACHE_L1_CHANNEL = KeyBuilder.internalChannel(FEATURES.cache, 'l1');
const L1_MESSAGE_KEYS = 1_000;

interface L1Message {
  from: string;
  keys?: string[];
  tags?: string[];
  all?: boolean;
}

/**
 * The in-process LRU in front of Redis (only created when `cache.l1` is configured), kept coherent across instances:
 * every local invalidation is published on CACHE_L1_CHANNEL and every other instance drops the same entries.
 */
export class CacheL1 {
  private readonly lru: LRUCache<string, CacheEntry>;
  private readonly instanceId = randomUUID();
  private unsubscribe: Unsubscribe | undefined;
  private subscribeTimer: NodeJS.Timeout | undefined;
  private closed = false;
  private readonly onReconnect = (): void => this.lru.clear();

  constructor(
    private readonly options: CacheL1Options,
    private readonly connection: RedisConnection,
    private readonly pubsub: PubSubService,
    private readonly counters: CacheCounters,
    private readonly redisWarning: ThrottledWarning,
  ) {
    this.lru = new LRUCache<string, CacheEntry>({ max: options.max, ttl: options.ttl });
  }

  async start(): Promise<void> {
    // Messages sent while our subscriber was away are lost: after a reconnect L1 starts empty.
    this.connection.client.on('ready', this.onReconnect);
    await this.subscribe();
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.subscribeTimer);
    this.connection.client.off('ready', this.onReconnect);
    const unsubscribe = this.unsubscribe;
    this.unsubscribe = undefined;
    if (unsubscribe) await unsubscribe().catch(() => undefined);
    this.lru.clear();
  }

  get(redisKey: string): CacheEntry | undefined {
    return this.lru.get(redisKey);
  }

  /** Empties this instance's L1 and (through the channel) every other instance's. */
  clearAll(): void {
    this.lru.clear();
    this.broadcast({ all: true });
  }

  delete(redisKey: string): void {
    this.lru.delete(redisKey);
  }

  remember(redisKey: string, entry: CacheEntry): void {
    const left = entry.freshUntil - Date.now();
    if (left <= 0) return;
    this.lru.set(redisKey, entry, { ttl: Math.min(this.options.ttl, left) });
  }

  dropTags(tags: string[]): void {
    const doomed = new Set(tags);
    for (const [key, entry] of this.lru.entries()) {
      if (entry.tags.some((t) => doomed.has(t))) this.lru.delete(key);
    }
  }

  /** Tells the other instances to drop these entries (large key lists in several messages). */
  broadcast(message: Omit<L1Message, 'from'>): void {
    if (this.closed) return;
    const send = (m: Omit<L1Message, 'from'>) =>
      this.pubsub.publish(CACHE_L1_CHANNEL, { from: this.instanceId, ...m }).catch((err: unknown) => {
        this.counters.errors++;
        this.redisWarning.warn(`cache L1 invalidation could not be published: ${(err as Error).message}`);
      });
    const keys = message.keys ?? [];
    if (keys.length <= L1_MESSAGE_KEYS) {
      void send(message);
      return;
    }
    for (let i = 0; i < keys.length; i += L1_MESSAGE_KEYS) void send({ keys: keys.slice(i, i + L1_MESSAGE_KEYS) });
  }

  private onMessage(message: L1Message): void {
    if (message.from === this.instanceId) return;
    if (message.all) this.lru.clear();
    for (const k of message.keys ?? []) this.lru.delete(k);
    if (message.tags?.length) this.dropTags(message.tags);
  }

  private async subscribe(): Promise<void> {
    if (this.closed) return;
    try {
      this.unsubscribe = await this.pubsub.subscribe<L1Message>(CACHE_L1_CHANNEL, (m) => this.onMessage(m));
      this.lru.clear();
    } catch (err) {
      this.redisWarning.warn(`cache L1 cannot subscribe to invalidations yet (retrying): ${(err as Error).message}`);
      this.subscribeTimer = setTimeout(() => void this.subscribe(), 2_000);
      this.subscribeTimer.unref();
    }
  }
}
