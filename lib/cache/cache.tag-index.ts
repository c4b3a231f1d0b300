import { BULK_BATCH, unlinkMany } from '../common/bulk-keys.js';
import type { KeyBuilder } from '../common/keys.js';
import { LuaScript } from '../common/lua-script.js';
import type { RedisClock } from '../common/redis-clock.js';
import type { RedisConnection } from '../connection/redis-connection.js';
import type { EvictionPolicyCheck } from '../connection/eviction-policy-check.js';
import type { CacheL1, TagMembers } from './cache.l1.js';

/** How long a tag remembers its last invalidation, so loads that started before it do not store their value. */
const MIN_MARK_TTL = 60_000;

const tagAdd = LuaScript.fromFile<number>('rtk_cache_tag_add', 'cache/tag-add.lua', 2);
const soften = LuaScript.fromFile<number>('rtk_cache_soften', 'cache/soften.lua', 1);

/**
 * The tag indexes: per tag a sorted set of entry keys scored by their stale horizon, and a mark of the tag's last
 * invalidation. Callers run these inside the cache's Redis guard.
 */
export class CacheTagIndex {
  constructor(
    private readonly connection: RedisConnection,
    private readonly keys: KeyBuilder,
    private readonly feature: string,
    private readonly lockTtl: number,
    private readonly l1: CacheL1 | undefined,
    private readonly evictionCheck: EvictionPolicyCheck,
    /**
     * Marks, scores and the soften script's `now` are Redis's time: compared with loads' start, entries' horizons and
     * headers written by every instance.
     */
    private readonly clock: RedisClock,
  ) {}

  /**
   * `rtk:cache:{<tag>}:tag` — the hash-tag form keeps our own keys apart from entries (escaped keys never hold `{`).
   */
  tagKey(tag: string): string {
    return this.keys.tagged(this.feature, tag, ':tag');
  }

  /** `rtk:cache:{<tag>}:inv` — when the tag was last invalidated (same slot as its index). */
  tagMarkKey(tag: string): string {
    return this.keys.tagged(this.feature, tag, ':inv');
  }

  /**
   * Adds `redisKey` to the tag's index until `staleUntil`; resolves to 0 (nothing added) when the tag was
   * invalidated after `startedAt`.
   */
  add(tag: string, redisKey: string, staleUntil: number, startedAt: number, now: number): Promise<number> {
    const added = tagAdd.run(
      this.connection.client,
      [this.tagKey(tag), this.tagMarkKey(tag)],
      [now, redisKey, staleUntil, startedAt],
    );
    // After the write's command is sent, so its INFO never queues before it (every tagged write passes here).
    this.evictionCheck.once();
    return added;
  }

  /**
   * Records that the tag is invalidated now (see MIN_MARK_TTL). First an estimate of Redis's clock if none is in yet
   * (RedisClock.ready): this mark and the removal after it (deleteTag, softenTag) are judged by it, and on this
   * process's clock, an hour ahead of Redis's, they left every entry fresh for that hour.
   */
  async mark(tag: string): Promise<unknown> {
    await this.clock.ready();
    const marked = this.connection.client.set(
      this.tagMarkKey(tag),
      this.clock.now(),
      'PX',
      Math.max(MIN_MARK_TTL, this.lockTtl),
    );
    // An instance that only invalidates (tags written by others) is checked too: every invalidateTags passes here.
    this.evictionCheck.once();
    return marked;
  }

  /** Deletes the tag's entries (and drops them from L1, noted in `found` for the bus). */
  async deleteTag(tagKey: string, found: TagMembers): Promise<number> {
    let total = 0;
    for (;;) {
      const members = await this.connection.client.zrangebyscore(
        tagKey,
        this.clock.now(),
        '+inf',
        'LIMIT',
        0,
        BULK_BATCH,
      );
      if (members.length === 0) break;
      this.l1?.dropMembers(members, found);
      total += await unlinkMany(this.connection.client, members);
      await this.connection.client.zrem(tagKey, ...members);
      if (members.length < BULK_BATCH) break;
    }
    return total;
  }

  /**
   * Marks the tag's entries stale (and drops them from L1, noted in `found` for the bus: an L1 entry is fresh until
   * its own fresh-until, which the soften script rewrites in Redis only).
   */
  async softenTag(tagKey: string, found: TagMembers): Promise<number> {
    let total = 0;
    const now = this.clock.now();
    for (let offset = 0; ; offset += BULK_BATCH) {
      const members = await this.connection.client.zrangebyscore(tagKey, now, '+inf', 'LIMIT', offset, BULK_BATCH);
      this.l1?.dropMembers(members, found);
      const softened = await Promise.all(members.map((k) => soften.run(this.connection.client, [k], [now])));
      total += softened.reduce((s, n) => s + n, 0);
      if (members.length < BULK_BATCH) break;
    }
    return total;
  }
}
