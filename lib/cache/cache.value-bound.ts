import type { Logger } from '@nestjs/common';
import type { Redis } from 'ioredis';
import { mastersOf, nodeKey } from '../common/cluster-masters.js';
import { CacheValueTooLargeError } from '../common/errors.js';
import { FEATURES, type KeyBuilder } from '../common/keys.js';
import { ThrottledWarning } from '../common/throttled-logger.js';
import { withTimeout } from '../common/timeout.js';
import type { RedisConnection } from '../connection/redis-connection.js';
import type { CacheCounters } from './cache.stats.js';

/**
 * The largest entry a server whose `client-output-buffer-limit normal` hard limit is `limit` bytes sends in a GET
 * reply without closing the connection: Redis counts a reply by the allocator blocks holding it (jemalloc's size
 * classes, up to 1/4 above the bytes asked) and closes at the limit. Measured on Redis 7.0.15 (jemalloc 5.3): under
 * a 1 MiB limit a value of 933,864 bytes closed the connection (89 % of it); 4/5 less 128 bytes was read back under
 * every limit tried from 64 KiB to 5 MiB, also after 16 KiB of other replies in the same batch.
 */
export function boundOfLimit(limit: number): number {
  return Math.max(1, Math.floor((limit * 4) / 5) - 128);
}

/** The `normal` class's hard limit (bytes, 0: none) in a `CONFIG GET client-output-buffer-limit` reply. */
export function normalHardLimit(reply: unknown): number | undefined {
  const text = Array.isArray(reply) ? reply[1] : undefined;
  const hard = typeof text === 'string' ? /(?:^|\s)normal (\d+) \d+ \d+/.exec(text)?.[1] : undefined;
  return hard === undefined ? undefined : Number(hard);
}

const message = (err: unknown): string => (err instanceof Error ? err.message : String(err));
/** The caller's key of an entry key (KeyBuilder.escape undone: `%3A` is `:` again), as warnings name it. */
const UNESCAPE = /%(25|7B|7D|3A)/g;
const unescaped = (_: string, hex: string): string => String.fromCharCode(Number.parseInt(hex, 16));

/**
 * The bound on the size of a cache entry, in bytes as sent to Redis: `cache.maxValueBytes`, else what the server's
 * `client-output-buffer-limit normal` lets one reply carry (boundOfLimit of the smallest non-zero limit of the
 * masters), read once at start with one CONFIG GET per master, or at the first `ready` of a lazy connection. Past
 * the limit a read of the entry makes Redis close the connection, failing every call in flight on it, at each read.
 * No bound while it is unknown, when every limit is 0 (Redis's default), or when none could be read (CONFIG refused
 * by the ACL, renamed, a timeout: one log line, not a warning; the documented ACL user has no CONFIG).
 *
 * On the path of every write: an entry of at most a third of the bound in UTF-16 units (3 UTF-8 bytes each at most)
 * costs one length comparison; only a longer one has its bytes counted.
 */
export class CacheValueBound {
  /** The bound (bytes); Infinity: none. */
  private max = Number.POSITIVE_INFINITY;
  /** An entry of at most this many UTF-16 units is within the bound whatever its characters. */
  private sure = Number.POSITIVE_INFINITY;
  /** Where the bound comes from, for the error and the warning. */
  private from = '';
  private readonly warning: ThrottledWarning;
  /** `rtk:cache:`, cut from the entry keys the warnings name. */
  private readonly featurePrefix: string;
  private closed = false;
  private readonly onReady = (): void => void this.read();

  constructor(
    private readonly connection: RedisConnection,
    private readonly option: number | undefined,
    private readonly logger: Logger,
    private readonly counters: CacheCounters,
    keys: KeyBuilder,
  ) {
    this.featurePrefix = keys.featurePrefix(FEATURES.cache);
    if (option !== undefined) this.set(option, 'cache.maxValueBytes');
    this.warning = new ThrottledWarning(logger, undefined, () => 'cache values not stored (over the size bound)');
  }

  /** Reads the server's limit now when connected (resolves once read; never rejects), else at the first `ready`. */
  start(): Promise<void> {
    if (this.connection.client.status === 'ready') return this.read();
    this.connection.client.once('ready', this.onReady);
    return Promise.resolve();
  }

  close(): void {
    this.closed = true;
    this.connection.client.off('ready', this.onReady);
    this.warning.close();
  }

  /** set / mset: CacheValueTooLargeError (counted) for an entry past the bound. */
  check(key: string, raw: string, call: string): void {
    if (raw.length <= this.sure || this.within(raw)) return;
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
    if (raw.length <= this.sure || this.within(raw)) return true;
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

  private within(raw: string): boolean {
    return raw.length <= this.max && Buffer.byteLength(raw) <= this.max;
  }

  private set(max: number, from: string): void {
    this.max = max;
    this.sure = Math.floor(max / 3);
    this.from = from;
  }

  private async read(): Promise<void> {
    const limits: { where: string; limit: number }[] = [];
    const failures: string[] = [];
    const ms = this.connection.commandTimeout;
    let nodes: Redis[] = [];
    try {
      nodes = await mastersOf(this.connection.client);
    } catch (err) {
      failures.push(`${this.connection.description} (${message(err)})`);
    }
    await Promise.all(
      nodes.map(async (node) => {
        const where = this.connection.isCluster ? `cluster master ${nodeKey(node)}` : this.connection.description;
        try {
          const reply = await withTimeout(
            node.config('GET', 'client-output-buffer-limit'),
            ms,
            `no reply within commandTimeout (${ms} ms)`,
          );
          const limit = normalHardLimit(reply);
          if (limit === undefined) failures.push(`${where} (CONFIG GET answered ${JSON.stringify(reply)})`);
          else limits.push({ where, limit });
        } catch (err) {
          failures.push(`${where} (CONFIG GET: ${message(err)})`);
        }
      }),
    );
    if (!this.closed) this.decide(limits, failures);
  }

  private decide(limits: { where: string; limit: number }[], failures: string[]): void {
    let smallest: { where: string; limit: number } | undefined;
    for (const l of limits) if (l.limit > 0 && (smallest === undefined || l.limit < smallest.limit)) smallest = l;
    if (this.option !== undefined) {
      // the option wins; a value between the server's bound and it would close the connection at each read
      if (smallest === undefined || this.option <= boundOfLimit(smallest.limit)) return;
      const bound = boundOfLimit(smallest.limit);
      this.logger.warn(
        `cache.maxValueBytes (${this.option} bytes) is past what ${smallest.where} sends in one reply: its ` +
          `client-output-buffer-limit normal hard limit is ${smallest.limit} bytes, and a read of an entry over ` +
          `about ${bound} bytes makes it close the connection, failing every call in flight on it, at each read. ` +
          `cache.maxValueBytes is kept; lower it to ${bound} or less, or raise the server's limit`,
      );
      return;
    }
    if (smallest !== undefined) {
      this.set(
        boundOfLimit(smallest.limit),
        `from client-output-buffer-limit normal ${smallest.limit} of ${smallest.where}, which closes the connection ` +
          'of a reply past it',
      );
    }
    if (failures.length === 0) return;
    const bound =
      smallest === undefined
        ? 'no bound on the size of a cached value'
        : `the bound on a cached value (${this.max} bytes) comes from the other masters alone`;
    this.logger.log(
      `cache: could not read client-output-buffer-limit of ${failures.join(', ')}: ${bound}. A value whose ` +
        "reply is past that server's normal hard limit makes it close the connection at each read; set " +
        'cache.maxValueBytes, or allow CONFIG GET (ACL +config|get) to have it read',
    );
  }
}
