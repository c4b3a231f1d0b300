import type { LoggerService } from '@nestjs/common';
import type { Redis } from 'ioredis';
import { mastersOf, nodeKey } from '../common/cluster-masters.js';
import { DEFAULT_CONNECTION_NAME } from '../connection/connection.options.js';
import type { RedisConnection } from '../connection/redis-connection.js';
import { withTimeout } from '../common/timeout.js';

const RISK =
  'a tag index can be evicted while its entries stay (an index is touched only on writes, entries on every read, ' +
  'so LRU and LFU pick indexes first), and invalidateTags then misses those entries, without an error, until their ' +
  'TTL ends';
const REMEDY =
  'Keep tagged entries on a Redis that does not evict (e.g. the cache on a named connection whose server has ' +
  'maxmemory-policy noeviction), or size maxmemory so it never evicts';

/**
 * Whether the cache's server(s) may evict a tag index: read once, the first time this CacheService uses tags (a tagged
 * write or an invalidateTags), from `INFO memory` of every master (INFO is in the documented ACL line, CONFIG GET is
 * not). An evicting server is one warning; the check never delays or fails the call that started it, and a check
 * that fails is one warning naming INFO. A process that uses no tags sends nothing.
 */
export class CacheEvictionCheck {
  private started = false;
  private closed = false;

  constructor(
    private readonly connection: RedisConnection,
    private readonly logger: LoggerService,
  ) {}

  /** Starts the check the first time (fire and forget); after that a boolean test and nothing else. */
  once(): void {
    if (this.started) return;
    this.started = true;
    this.run().catch((err: unknown) => this.failed(this.connection.description, err));
  }

  /** Shutting down: a check still running logs nothing (its INFO fails with the closed connection). */
  close(): void {
    this.closed = true;
  }

  private async run(): Promise<void> {
    const nodes = await mastersOf(this.connection.client);
    const evicting: string[] = [];
    const failures: string[] = [];
    await Promise.all(
      nodes.map(async (node) => {
        const name = this.nameOf(node);
        try {
          const info = await withTimeout(
            node.info('memory'),
            this.connection.commandTimeout,
            `no reply within commandTimeout (${this.connection.commandTimeout} ms)`,
          );
          const policy = /^maxmemory_policy:(.*)$/m.exec(info)?.[1]?.trim();
          const maxmemory = /^maxmemory:(\d+)/m.exec(info)?.[1];
          if (policy === undefined || maxmemory === undefined) {
            failures.push(`${name} (INFO memory has no maxmemory or maxmemory_policy)`);
            return;
          }
          if (Number(maxmemory) === 0 || policy === 'noeviction') return;
          const human = /^maxmemory_human:(.*)$/m.exec(info)?.[1]?.trim() ?? `${maxmemory} bytes`;
          evicting.push(`${name} (maxmemory-policy ${policy}, maxmemory ${human})`);
        } catch (err) {
          failures.push(`${name} (INFO memory: ${err instanceof Error ? err.message : String(err)})`);
        }
      }),
    );
    if (this.closed) return;
    if (evicting.length > 0) {
      this.logger.warn(`cache: ${evicting.join(', ')} may evict keys under memory pressure: ${RISK}. ${REMEDY}.`);
    }
    if (failures.length > 0) this.failed(failures.join(', '), undefined);
  }

  private failed(where: string, err: unknown): void {
    if (this.closed) return;
    const why = err === undefined ? '' : ` (INFO memory: ${err instanceof Error ? err.message : String(err)})`;
    this.logger.warn(
      `cache: could not read the eviction policy of ${where}${why}. If it evicts (maxmemory set and a ` +
        `maxmemory-policy other than noeviction), ${RISK}. ${REMEDY}; allow INFO so this check can run.`,
    );
  }

  /** A single server as the connection names it; a cluster master by its address (the description lists them all). */
  private nameOf(node: Redis): string {
    if (!this.connection.isCluster) return this.connection.description;
    const named = this.connection.name === DEFAULT_CONNECTION_NAME ? '' : ` (connection "${this.connection.name}")`;
    return `cluster master ${nodeKey(node)}${named}`;
  }
}
