import { diagnose } from '../common/diagnostics.js';
import { InvalidOptionsError } from '../common/errors.js';
import type { FailurePolicy } from '../common/failure-policy.js';
import { FEATURES, KeyBuilder } from '../common/keys.js';
import { isPlainObject, refuseUnknown } from '../common/option-checks.js';
import type { RedisConnection } from '../connection/redis-connection.js';
import { unlinkMatching } from './cache.bulk.js';
import type { InflightLoads } from './cache.inflight-loads.js';
import type { CacheL1, TagMembers } from './cache.l1.js';
import type { CacheTagIndex } from './cache.tag-index.js';
import type { InvalidateTagsOptions } from './cache.types.js';

const FEATURE = FEATURES.cache;
const INVALIDATE_OPTIONS: ReadonlySet<string> = new Set(['soft']);

/**
 * The tags and options of `invalidateTags(...args)`: strings, then optionally one plain object (`{ soft }`). Anything
 * else is InvalidOptionsError, so a JS caller's mistake cannot pass as options: an array of tags given as one argument
 * was taken for the options object, and nothing was invalidated.
 */
export function tagsAndOptions(args: readonly unknown[]): { tags: string[]; options: InvalidateTagsOptions } {
  const last = args.length - 1;
  const hasOptions = last >= 0 && typeof args[last] !== 'string';
  const tags: string[] = [];
  for (const [i, arg] of args.entries()) {
    if (Array.isArray(arg)) {
      throw new InvalidOptionsError(
        "cache.invalidateTags: tags are separate string arguments (invalidateTags('a', 'b') or " +
          'invalidateTags(...tags)), got an array',
      );
    }
    if (typeof arg === 'string') tags.push(arg);
    else if (i < last) throw new InvalidOptionsError(`cache.invalidateTags: a tag must be a string, got ${shown(arg)}`);
  }
  if (!hasOptions) return { tags, options: {} };
  const options = args[last];
  if (!isPlainObject(options)) {
    throw new InvalidOptionsError(
      'cache.invalidateTags: the last argument must be a tag or an options object ({ soft?: boolean }), got ' +
        shown(options),
    );
  }
  refuseUnknown(options as object, INVALIDATE_OPTIONS, 'cache.invalidateTags');
  const { soft } = options as InvalidateTagsOptions;
  if (soft !== undefined && typeof soft !== 'boolean') {
    throw new InvalidOptionsError(`cache.invalidateTags: soft must be true or false, got ${shown(soft)}`);
  }
  return { tags, options: { soft } };
}

function shown(value: unknown): string {
  if (value === null || value === undefined) return String(value);
  if (typeof value === 'string') return JSON.stringify(value.length > 60 ? `${value.slice(0, 60)}…` : value);
  if (typeof value === 'function') return 'a function';
  if (typeof value === 'object') return `a ${value.constructor?.name ?? 'object'}`;
  return String(value);
}

/**
 * Invalidation of many entries at once: by tag (hard or soft), by key pattern, and everything (clear). Each first
 * marks this process's loads it covers overtaken (cache.inflight-loads: no later caller joins them, none stores).
 */
export class CacheInvalidation {
  constructor(
    private readonly connection: RedisConnection,
    private readonly keys: KeyBuilder,
    private readonly tags: CacheTagIndex,
    private readonly l1: CacheL1 | undefined,
    private readonly failures: FailurePolicy,
    private readonly loads: InflightLoads,
  ) {}

  async invalidateTags(tags: string[], options: InvalidateTagsOptions): Promise<number> {
    const tagKeys = tags.map((t) => this.tags.tagKey(t));
    if (tags.length === 0) return 0;
    this.loads.overtakeTags(tags);
    this.l1?.dropTags(tags);
    const found: TagMembers = { keys: [], overflow: false };
    let outcome = 'failed';
    let entries = 0;
    try {
      const counts = await this.failures.run('invalidateTags', () =>
        Promise.all(
          tags.map(async (tag, i) => {
            // Loads that started before now must not store what this invalidation removes.
            await this.tags.mark(tag);
            return options.soft ? this.tags.softenTag(tagKeys[i], found) : this.tags.deleteTag(tagKeys[i], found);
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
      this.l1?.broadcastTags(tags, found);
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

  /**
   * SCAN MATCH finds a superset (stored keys are escaped: `?` cannot stand for `:` written `%3A` there); each key
   * found is then matched exactly against the caller's key (KeyBuilder.patternMatcher), and our internal keys (tag
   * indexes, locks: `rtk:cache:{...`) are spared.
   */
  invalidatePattern(pattern: string): Promise<number> {
    const internal = this.keys.tagHead(FEATURE);
    const match = this.keys.pattern(FEATURE, pattern);
    const matches = this.keys.patternMatcher(FEATURE, pattern);
    const foreign = this.foreignKey();
    this.loads.overtakeMatching(matches);
    return this.bulk('invalidatePattern', () =>
      unlinkMatching(this.connection, match, this.l1, (k) => k.startsWith(internal) || foreign(k) || !matches(k)),
    );
  }

  clear(): Promise<number> {
    const match = `${KeyBuilder.globEscape(this.keys.featurePrefix(FEATURE))}*`;
    this.loads.overtakeAll();
    this.l1?.clearAll();
    return this.bulk('clear', () => unlinkMatching(this.connection, match, this.l1, this.foreignKey()));
  }

  /**
   * Whether a key under `<prefix>cache:` is another app's: one whose keyPrefix starts with ours + `cache:` (tenants
   * `<t>:` beside a tenant named `<t>:cache`). Ours are an entry (one escaped part: no raw `:`) or an internal key
   * (`{...}`, a brace no keyPrefix may hold); any key of another app has a raw `:` after its own feature name.
   */
  private foreignKey(): (redisKey: string) => boolean {
    const head = this.keys.featurePrefix(FEATURE).length;
    return (k) => k.charCodeAt(head) !== 123 /* { */ && k.indexOf(':', head) !== -1;
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
