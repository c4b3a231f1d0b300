import { diagnose } from '../common/diagnostics.js';
import type { FailurePolicy } from '../common/failure-policy.js';
import { FEATURES, KeyBuilder } from '../common/keys.js';
import type { RedisConnection } from '../connection/redis-connection.js';
import { unlinkMatching } from './cache.bulk.js';
import type { CacheL1 } from './cache.l1.js';
import type { CacheTagIndex } from './cache.tag-index.js';
import type { InvalidateTagsOptions } from './cache.types.js';

const FEATURE = FEATURES.cache;

/** Invalidation of many entries at once: by tag (hard or soft), by key pattern, and everything (clear). */
export class CacheInvalidation {
  constructor(
    private readonly connection: RedisConnection,
    private readonly keys: KeyBuilder,
    private readonly tags: CacheTagIndex,
    private readonly l1: CacheL1 | undefined,
    private readonly failures: FailurePolicy,
  ) {}

  async invalidateTags(tags: string[], options: InvalidateTagsOptions): Promise<number> {
    const tagKeys = tags.map((t) => this.tags.tagKey(t));
    if (tags.length === 0) return 0;
    this.l1?.dropTags(tags);
    let outcome = 'failed';
    let entries = 0;
    try {
      const counts = await this.failures.run('invalidateTags', () =>
        Promise.all(
          tags.map(async (tag, i) => {
            // Loads that started before now must not store what this invalidation removes.
            await this.tags.mark(tag);
            return options.soft ? this.tags.softenTag(tagKeys[i]) : this.tags.deleteTag(tagKeys[i]);
          }),
        ),
      );
      entries = counts.reduce((s, n) => s + n, 0);
      outcome = options.soft ? 'softened' : 'deleted';
      return entries;
    } catch (err) {
      this.failures.unavailable(err, false);
      throw err;
    } finally {
      this.l1?.broadcast({ tags });
      const n = tags.length;
      // tagNames: a copy, so a subscriber cannot change the caller's array (the dashboard counts hot tags from it).
      diagnose('cacheInvalidate', () => ({
        feature: 'cache',
        operation: 'invalidate',
        outcome,
        tags: n,
        tagNames: [...tags],
        entries,
      }));
    }
  }

  invalidatePattern(pattern: string): Promise<number> {
    const internal = this.keys.tagHead(FEATURE);
    const match = this.keys.pattern(FEATURE, pattern);
    return this.bulk('invalidatePattern', () =>
      unlinkMatching(this.connection, match, this.l1, (k) => k.startsWith(internal)),
    );
  }

  clear(): Promise<number> {
    const match = `${KeyBuilder.globEscape(this.keys.featurePrefix(FEATURE))}*`;
    this.l1?.clearAll();
    return this.bulk('clear', () => unlinkMatching(this.connection, match, this.l1));
  }

  private async bulk(what: string, run: () => Promise<number>): Promise<number> {
    try {
      return await this.failures.run(what, run);
    } catch (err) {
      this.failures.unavailable(err, false);
      throw err;
    }
  }
}
