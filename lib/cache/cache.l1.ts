import { randomUUID } from 'node:crypto';
import { Logger } from '@nestjs/common';
import { LRUCache } from 'lru-cache';
import { InvalidOptionsError, SerializationError } from '../common/errors.js';
import { replyCodeOf } from '../common/failure-policy.js';
import { FEATURES, KeyBuilder } from '../common/keys.js';
import type { RedisClock } from '../common/redis-clock.js';
import type { ThrottledWarning } from '../common/throttled-logger.js';
import type { RedisConnection } from '../connection/redis-connection.js';
import type { PubSubService } from '../pubsub/pubsub.service.js';
import type { Unsubscribe } from '../pubsub/pubsub.types.js';
import type { CacheEntry } from './cache.entry.js';
import type { ResolvedCacheL1Options } from './cache.options.js';
import type { CacheCounters } from './cache.stats.js';
import { CacheTracking } from './cache.tracking.js';

/** Internal pub/sub channel on which instances tell each other which L1 entries to drop. */
export const CACHE_L1_CHANNEL = KeyBuilder.internalChannel(FEATURES.cache, 'l1');
/** Most keys (or tags) in one bus message. */
const L1_MESSAGE_KEYS = 1_000;
/**
 * The share of pubsub.maxMessageBytes the keys (or tags) of one bus message may take as JSON: well under the bound,
 * which PubSubService.publish enforces on the serialized payload (a larger message would be refused), with room for
 * the rest of the message and for a serializer that writes more than JSON.
 */
const L1_MESSAGE_SHARE = 0.5;
const RETRY_MS = 2_000;
/**
 * Most entry keys one invalidateTags publishes beside its tags (in messages cut by `parts`); past it the other
 * instances are told to empty their L1 instead (see TagMembers).
 */
const TAG_MEMBER_KEYS = 10_000;
/**
 * Most keys whose last invalidation is remembered (`changed`); past it they are all forgotten at once and every read
 * already under way is treated as overtaken (`floor`): its L1 fill is skipped (a later read fills it).
 */
const CHANGED_MEMO = 10_000;

/**
 * The entry keys a tag invalidation found in the tags' indexes in Redis (deleted or softened), for its bus message:
 * another instance's L1 files an entry under the tags of its last write, so an entry re-stored under other tags
 * would not be found by the tag names alone. Past TAG_MEMBER_KEYS only `overflow` is kept.
 */
export interface TagMembers {
  keys: string[];
  overflow: boolean;
}

interface L1Message {
  from: string;
  keys?: string[];
  tags?: string[];
  all?: boolean;
}

/**
 * The in-process LRU in front of Redis (only created when `cache.l1` is configured), kept coherent across instances
 * in one of two ways (`cache.l1.invalidation`, docs/cache.md):
 * - `tracking`: Redis itself reports every write of a key under the cache prefix, by any client (CLIENT TRACKING
 *   BCAST, cache.tracking.ts), and this instance drops the entry; it publishes nothing.
 * - `bus`: every local invalidation is published on CACHE_L1_CHANNEL and every other instance drops the same entries
 *   (a write by a client other than the toolkit is not seen).
 * `auto` (default) takes tracking when the server allows it (Redis >= 6, ACL), else the bus with a warning.
 */
export class CacheL1 {
  private readonly lru: LRUCache<string, CacheEntry>;
  /**
   * The keys in the LRU of each tag: dropping a tag visits its entries only. Visiting every entry blocked the event
   * loop 9 ms per invalidation at 10,000 entries, 29 ms at 100,000, 0.6 s at 1,000,000.
   */
  private readonly byTag = new Map<string, Set<string>>();
  private readonly instanceId = randomUUID();
  private readonly logger = new Logger('RedisToolkit:Cache');
  private unsubscribe: Unsubscribe | undefined;
  private tracking: CacheTracking | undefined;
  /** Undefined until decided (tracking tried at start, retried while Redis cannot be reached). */
  private chosen: 'tracking' | 'bus' | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private closed = false;
  /**
   * The fill guard: a read (or write) notes `version` before its command is sent and gives it to remember, which
   * stores nothing if the key was invalidated here since (this instance's own del, set, tag, pattern or clear, a
   * tracking or bus message): a reply that left Redis before the invalidation is never put back after it.
   * `generation` counts invalidations; `changed` holds each key's last one (bounded, CHANGED_MEMO); reads noted
   * before `floor` (an L1 cleared, or `changed` forgotten) store nothing.
   */
  private generation = 0;
  private floor = 0;
  private readonly changed = new Map<string, number>();
  private readonly onReconnect = (): void => this.forget();
  /** Removes the bus's listener of the subscriber's returns (PubSubService.onResubscribed). */
  private stopResubscribed: (() => void) | undefined;

  constructor(
    private readonly options: ResolvedCacheL1Options,
    private readonly connection: RedisConnection,
    private readonly pubsub: PubSubService,
    private readonly counters: CacheCounters,
    private readonly redisWarning: ThrottledWarning,
    /** Every entry key starts with it (`rtk:cache:`): the BCAST prefix of tracking. */
    private readonly prefix: string,
    /** An entry's header times are Redis's (cache.entry.ts). */
    private readonly clock: RedisClock,
  ) {
    // dispose: whenever an entry leaves (evicted, expired, deleted, replaced, cleared), its keys leave byTag.
    // maxSize: each set gives its entry's size (remember); past the bound the least recently used are evicted first.
    this.lru = new LRUCache<string, CacheEntry>({
      max: options.max,
      ttl: options.ttl,
      dispose: (entry, key) => this.unindex(key, entry),
      ...(options.maxBytes === undefined ? {} : { maxSize: options.maxBytes }),
    });
  }

  /** Whether entries are counted in bytes (`maxBytes`): the reads and writes then measure what they hand over. */
  get measures(): boolean {
    return this.options.maxBytes !== undefined;
  }

  /** How invalidations reach this L1: `tracking`, `bus`, or undefined while still undecided (Redis unreachable). */
  get invalidation(): 'tracking' | 'bus' | undefined {
    return this.chosen;
  }

  /**
   * Starts the invalidations. Rejects with InvalidOptionsError when `invalidation: 'tracking'` and the server refuses
   * CLIENT TRACKING (Redis < 6, or the ACL); with `auto` that falls back to the bus with a warning.
   */
  async start(): Promise<void> {
    // Invalidations sent while the cache's connection was away are lost: after its reconnect L1 starts empty (the bus's
    // subscriber, which can be lost alone, is watched in startBus).
    this.connection.client.on('ready', this.onReconnect);
    if (this.options.invalidation === 'bus') return this.startBus();
    await this.startTracking(true);
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.retryTimer);
    this.connection.client.off('ready', this.onReconnect);
    this.stopResubscribed?.();
    const unsubscribe = this.unsubscribe;
    this.unsubscribe = undefined;
    if (unsubscribe) await unsubscribe().catch(() => undefined);
    const tracking = this.tracking;
    this.tracking = undefined;
    await tracking?.close();
    this.forget();
  }

  get(redisKey: string): CacheEntry | undefined {
    return this.lru.get(redisKey);
  }

  /** Noted before a read or write is sent, for its remember (see `generation`). */
  get version(): number {
    return this.generation;
  }

  /** Empties this instance's L1 and (through the channel) every other instance's. */
  clearAll(): void {
    this.forget();
    this.broadcast({ all: true });
  }

  /** Drops the entry and blocks the fill of every read of it already under way. */
  delete(redisKey: string): void {
    this.lru.delete(redisKey);
    const generation = ++this.generation;
    if (this.changed.size >= CHANGED_MEMO) {
      this.changed.clear();
      this.floor = generation;
    }
    this.changed.set(redisKey, generation);
  }

  /** Empties L1 and blocks the fill of every read under way. */
  private forget(): void {
    this.lru.clear();
    this.changed.clear();
    this.floor = ++this.generation;
  }

  /** Stores an entry read or written after `version` was noted, unless its key was invalidated since. */
  remember(redisKey: string, entry: CacheEntry, version: number): void {
    // While tracking is off on a master (reconnecting, undecided), a write by another client would go unseen.
    if (this.chosen !== 'bus' && !this.tracking?.live) return;
    if (version < this.floor || (this.changed.get(redisKey) ?? 0) > version) return;
    const left = entry.freshUntil - this.clock.now();
    if (left <= 0) return;
    const size = this.sizeOf(redisKey, entry);
    if (size > (this.options.maxBytes ?? Number.POSITIVE_INFINITY)) {
      // Never kept (each read of it goes to Redis), and not filed under its tags; an older copy of the key leaves too.
      this.lru.delete(redisKey);
      return;
    }
    this.lru.set(redisKey, entry, { ttl: Math.min(this.options.ttl, left), size });
    // (the entry it replaced, if any, was unindexed by dispose during set)
    for (const tag of entry.tags) {
      let keys = this.byTag.get(tag);
      if (keys === undefined) this.byTag.set(tag, (keys = new Set()));
      keys.add(redisKey);
    }
  }

  /**
   * What an entry counts against `maxBytes`: its key's and its stored text's UTF-8 bytes (the entry's `bytes`, measured
   * where it was read or written). The heap its decoded value takes is not known cheaply; the text is what Redis holds
   * and what `maxValueBytes` bounds. 0 without `maxBytes` (lru-cache then counts nothing). An entry that was not
   * measured (no path hands one over) counts as past the bound: kept out rather than uncounted.
   */
  private sizeOf(redisKey: string, entry: CacheEntry): number {
    if (this.options.maxBytes === undefined) return 0;
    if (entry.bytes === undefined) return Number.POSITIVE_INFINITY;
    return Buffer.byteLength(redisKey) + entry.bytes;
  }

  /** Drops the entries a tag invalidation found in Redis (`keys`) and notes them for its bus message. */
  dropMembers(keys: string[], members: TagMembers): void {
    for (const k of keys) this.delete(k);
    if (this.chosen !== 'bus' || members.overflow) return;
    if (members.keys.length + keys.length > TAG_MEMBER_KEYS) {
      members.overflow = true;
      members.keys = [];
    } else for (const k of keys) members.keys.push(k);
  }

  /**
   * Tells the other instances that these tags were invalidated: they drop the entries their L1 files under the tags
   * and the members found in Redis, or (more than TAG_MEMBER_KEYS members) empty their L1.
   */
  broadcastTags(tags: string[], members: TagMembers): void {
    this.broadcast(members.overflow ? { all: true } : { keys: members.keys, tags });
  }

  dropTags(tags: string[]): void {
    for (const tag of tags) {
      const keys = this.byTag.get(tag);
      // a copy: each delete unindexes its key (dispose) from this very set
      if (keys !== undefined) for (const key of [...keys]) this.delete(key);
    }
  }

  private unindex(redisKey: string, entry: CacheEntry): void {
    for (const tag of entry.tags) {
      const keys = this.byTag.get(tag);
      if (keys === undefined) continue;
      keys.delete(redisKey);
      if (keys.size === 0) this.byTag.delete(tag);
    }
  }

  /**
   * Tells the other instances to drop these entries. A long list goes in several messages, each of at most
   * L1_MESSAGE_KEYS keys (or tags) and L1_MESSAGE_SHARE of pubsub.maxMessageBytes. Only on the bus: with tracking,
   * Redis reports the writes themselves (also tag and pattern invalidation, which delete or rewrite keys).
   */
  broadcast(message: Omit<L1Message, 'from'>): void {
    if (this.closed || this.chosen !== 'bus') return;
    if (message.all) void this.send({ all: true });
    if (message.keys?.length) for (const keys of this.parts(message.keys)) void this.send({ keys });
    if (message.tags?.length) for (const tags of this.parts(message.tags)) void this.send({ tags });
  }

  private send(message: Omit<L1Message, 'from'>): Promise<unknown> {
    return this.pubsub.publish(CACHE_L1_CHANNEL, { from: this.instanceId, ...message }).catch((err: unknown) => {
      // Still past maxMessageBytes (a serializer that writes much more than JSON): each half goes on its own.
      const list = message.keys ?? message.tags;
      if (err instanceof SerializationError && list && list.length > 1) {
        const half = Math.ceil(list.length / 2);
        const part = (items: string[]) => (message.keys ? { keys: items } : { tags: items });
        return Promise.all([this.send(part(list.slice(0, half))), this.send(part(list.slice(half)))]);
      }
      this.counters.errors++;
      this.redisWarning.warn(`cache L1 invalidation could not be published: ${(err as Error).message}`);
    });
  }

  /** `list` cut into runs of at most L1_MESSAGE_KEYS items whose JSON takes at most the message budget. */
  private parts(list: string[]): string[][] {
    if (list.length === 1) return [list];
    const budget = this.pubsub.maxMessageBytes * L1_MESSAGE_SHARE;
    const parts: string[][] = [];
    let part: string[] = [];
    let bytes = 0;
    for (const item of list) {
      // Its JSON (quotes, escapes, UTF-8) and a comma.
      const size = Buffer.byteLength(JSON.stringify(item)) + 1;
      if (part.length > 0 && (part.length === L1_MESSAGE_KEYS || bytes + size > budget)) {
        parts.push(part);
        part = [];
        bytes = 0;
      }
      part.push(item);
      bytes += size;
    }
    parts.push(part);
    return parts;
  }

  private onMessage(message: L1Message): void {
    if (message.from === this.instanceId) return;
    if (message.all) this.forget();
    for (const k of message.keys ?? []) this.delete(k);
    if (message.tags?.length) this.dropTags(message.tags);
  }

  private startBus(): Promise<void> {
    this.chosen = 'bus';
    // Messages published while our subscriber was away are lost (pub/sub has no replay), even when the cache's own
    // connection stayed up (CLIENT KILL TYPE pubsub, client-output-buffer-limit pubsub, a proxy): once the subscriber
    // is back with its subscriptions, L1 starts empty.
    this.stopResubscribed ??= this.pubsub.onResubscribed(() => this.forget());
    return this.subscribe();
  }

  private async subscribe(): Promise<void> {
    if (this.closed) return;
    try {
      this.unsubscribe = await this.pubsub.subscribe<L1Message>(CACHE_L1_CHANNEL, (m) => this.onMessage(m));
      this.forget();
    } catch (err) {
      this.redisWarning.warn(`cache L1 cannot subscribe to invalidations yet (retrying): ${(err as Error).message}`);
      this.retryTimer = setTimeout(() => void this.subscribe(), RETRY_MS);
      this.retryTimer.unref();
    }
  }

  /** `atStart`: a refusal with `invalidation: 'tracking'` rejects start (later, with lazyConnect, it is logged). */
  private async startTracking(atStart: boolean): Promise<void> {
    if (this.closed) return;
    const tracking = new CacheTracking(this.connection, this.prefix, {
      invalidate: (keys) => {
        if (keys === null) this.forget();
        else for (const k of keys) this.delete(k);
      },
      resynced: () => this.forget(),
      failed: (err) => {
        this.counters.errors++;
        this.redisWarning.warn(`cache L1 tracking could not be re-enabled (retrying): ${err.message}`);
      },
      silent: (why) => {
        // Invalidations sent to it meanwhile may be lost: what L1 holds may be stale.
        this.forget();
        this.counters.errors++;
        this.redisWarning.warn(`cache L1 tracking connection ${why}: L1 emptied, reconnecting it`);
      },
    });
    try {
      await tracking.start();
    } catch (err) {
      this.trackingRefused(err as Error, atStart);
      return;
    }
    if (this.closed) return void (await tracking.close());
    this.tracking = tracking;
    this.chosen = 'tracking';
  }

  private trackingRefused(err: Error, atStart: boolean): void {
    if (replyCodeOf(err) === undefined) {
      // Unreachable: neither tracking nor the bus can be decided yet; L1 stays empty (remember refuses) meanwhile.
      this.redisWarning.warn(`cache L1 cannot enable CLIENT TRACKING yet (retrying): ${err.message}`);
      this.retryTimer = setTimeout(() => void this.startTracking(false), RETRY_MS);
      this.retryTimer.unref();
      return;
    }
    if (this.options.invalidation === 'tracking') {
      const refused = new InvalidOptionsError(
        `cache.l1.invalidation is 'tracking' but Redis refused CLIENT TRACKING (${err.message}): it needs ` +
          "Redis >= 6 and the ACL rules +client|tracking +client|id &__redis__:invalidate; or use 'auto' or 'bus'.",
      );
      if (atStart) throw refused;
      this.logger.error(refused.message);
      return;
    }
    this.logger.warn(
      `cache L1: Redis refused CLIENT TRACKING (${err.message}); invalidating through the toolkit's pub/sub bus ` +
        'instead (writes by clients other than the toolkit are not seen). Grant +client|tracking +client|id ' +
        "&__redis__:invalidate (Redis >= 6) for tracking, or set cache.l1.invalidation: 'bus' to silence this.",
    );
    void this.startBus();
  }
}
