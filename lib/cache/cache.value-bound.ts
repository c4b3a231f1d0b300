import type { Logger } from '@nestjs/common';
import { CacheValueTooLargeError } from '../common/errors.js';
import { FEATURES, type KeyBuilder } from '../common/keys.js';
import {
  boundOfLimit,
  type ReplyLimit,
  type ReplyLimitUser,
  type ReplyLimitWatch,
  type UnreadNote,
  pastServerLimit,
  watchReplyLimit,
} from '../common/reply-limit.js';
import { ThrottledWarning } from '../common/throttled-logger.js';
import type { RedisConnection } from '../connection/redis-connection.js';
import type { CacheCounters } from './cache.stats.js';

/** The caller's key of an entry key (KeyBuilder.escape undone: `%3A` is `:` again), as warnings name it. */
const UNESCAPE = /%(25|7B|7D|3A)/g;
const unescaped = (_: string, hex: string): string => String.fromCharCode(Number.parseInt(hex, 16));

/**
 * The bound on the size of a cache entry, in bytes as sent to Redis: `cache.maxValueBytes`, else what the server's
 * `client-output-buffer-limit normal` lets one reply carry (boundOfLimit of the smallest non-zero limit of the
 * masters), read at start with one CONFIG GET per master, or at the first `ready` of a lazy connection, and again at
 * each reconnect: the read shared with the sessions on the same connection (common/reply-limit.ts). Past the limit a
 * read of the entry makes Redis close the connection, failing every call in flight on it, at each read. No bound
 * while it is unknown, when every limit is 0 (Redis's default), or when none could be read (CONFIG refused by the
 * ACL, renamed, a timeout: said in the shared read's one log line, not a warning; the documented ACL user has no
 * CONFIG). Entries each within it can still pass the limit together: the reads share the connection's reply budget
 * (common/reply-budget.ts).
 *
 * On the path of every write: an entry of at most a third of the bound in UTF-16 units (3 UTF-8 bytes each at most)
 * costs one length comparison; only a longer one has its bytes counted.
 */
export class CacheValueBound implements ReplyLimitUser {
  /** The bound (bytes); Infinity: none. */
  private max = Number.POSITIVE_INFINITY;
  /** Where the bound comes from, for the error and the warning. */
  private from = '';
  private readonly warning: ThrottledWarning;
  /** `rtk:cache:`, cut from the entry keys the warnings name. */
  private readonly featurePrefix: string;
  /** The server's limit, read once per connection with the sessions on it (again at each reconnect). */
  private readonly limit: ReplyLimitWatch;
  /** The server limit cache.maxValueBytes was last warned to be past (a reconnect reading it again says nothing). */
  private warnedOf: number | undefined;

  constructor(
    connection: RedisConnection,
    private readonly option: number | undefined,
    private readonly logger: Logger,
    private readonly counters: CacheCounters,
    keys: KeyBuilder,
  ) {
    this.featurePrefix = keys.featurePrefix(FEATURES.cache);
    if (option !== undefined) this.set(option, 'cache.maxValueBytes');
    this.warning = new ThrottledWarning(logger, undefined, () => 'cache values not stored (over the size bound)');
    this.limit = watchReplyLimit(connection, this);
  }

  /** Reads the server's limit now when connected (resolves once read; never rejects), else at the first `ready`. */
  start(): Promise<void> {
    return this.limit.start();
  }

  close(): void {
    this.limit.close();
    this.warning.close();
  }

  /** set / mset: CacheValueTooLargeError (counted) for an entry past the bound. */
  check(key: string, raw: string, call: string): void {
    if (this.within(raw)) return;
    this.counters.tooLarge++;
    const bytes = Buffer.byteLength(raw);
    throw new CacheValueTooLargeError(
      `cache.${call}: the entry of ${key} is ${bytes} bytes, over the bound of ${this.max} bytes (${this.from}); ` +
        `nothing was written. Store a smaller value, or raise ${this.raise()}`,
      key,
      bytes,
      this.max,
      this.from,
    );
  }

  /**
   * A loaded value's entry (getOrSet, @Cacheable, the HTTP cache, a refresh): true to store it; past the bound false,
   * counted and warned (at most once per 10 s, the others counted), and the caller returns the value unstored.
   */
  admits(redisKey: string, raw: string): boolean {
    if (this.within(raw)) return true;
    this.counters.tooLarge++;
    const key = redisKey.slice(this.featurePrefix.length).replace(UNESCAPE, unescaped);
    this.warning.warn(
      `cache value of ${key} not stored: its entry is ${Buffer.byteLength(raw)} bytes, over the bound of ` +
        `${this.max} bytes (${this.from}); it is returned uncached, and each call loads it again. Keep such values ` +
        `smaller (or out of the cache: shouldCache, @CacheIf), or raise ${this.raise()}`,
    );
    return false;
  }

  /** What raises the bound, in a message. */
  private raise(): string {
    return this.option === undefined ? "the server's client-output-buffer-limit normal" : 'cache.maxValueBytes';
  }

  /** Bytes counted only for an entry longer than a third of the bound (3 UTF-8 bytes per UTF-16 unit at most). */
  private within(raw: string): boolean {
    return raw.length * 3 <= this.max || (raw.length <= this.max && Buffer.byteLength(raw) <= this.max);
  }

  private set(max: number, from: string): void {
    this.max = max;
    this.from = from;
  }

  /**
   * The server's limit as read (common/reply-limit.ts), at start and again at each reconnect: the bound unless
   * cache.maxValueBytes is given; none again when every limit is 0 now. The warning of an option past the server's
   * bound is said once per limit.
   */
  take({ smallest }: ReplyLimit): void {
    if (this.option !== undefined) {
      // the option wins; a value between the server's bound and it would close the connection at each read
      if (smallest === undefined || this.option <= boundOfLimit(smallest.limit)) return;
      if (this.warnedOf === smallest.limit) return;
      this.warnedOf = smallest.limit;
      const bound = boundOfLimit(smallest.limit);
      this.logger.warn(
        pastServerLimit('cache.maxValueBytes', this.option, smallest, 'an entry') +
          `cache.maxValueBytes is kept; lower it to ${bound} or less, or raise the server's limit`,
      );
      return;
    }
    if (smallest === undefined) this.set(Number.POSITIVE_INFINITY, '');
    else
      this.set(
        boundOfLimit(smallest.limit),
        `from client-output-buffer-limit normal ${smallest.limit} of ${smallest.where}, which closes the connection ` +
          'of a reply past it',
      );
  }

  /** A limit not read (of some master or all): what the shared log line says of the cache, unless the option is set. */
  unread({ smallest }: ReplyLimit): UnreadNote | undefined {
    if (this.option !== undefined) return undefined;
    return {
      consequence:
        smallest === undefined
          ? 'no bound on the size of a cached value'
          : `the bound on a cached value (${this.max} bytes) comes from the other masters alone`,
      option: 'cache.maxValueBytes',
    };
  }
}
