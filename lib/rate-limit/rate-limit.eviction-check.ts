import type { LoggerService } from '@nestjs/common';
import type { Redis } from 'ioredis';
import { mastersOf, nodeKey } from '../common/cluster-masters.js';
import { withTimeout } from '../common/timeout.js';
import { DEFAULT_CONNECTION_NAME } from '../connection/connection.options.js';
import type { RedisConnection } from '../connection/redis-connection.js';

const RISK =
  'a counter can be evicted (every counter has a TTL, so volatile-* policies too; volatile-ttl picks the keys ' +
  'nearest their expiry, which counters usually are): that client then starts over with a full limit, and a ' +
  'blockDuration or block() ends early, without an error';
const REMEDY =
  'Keep rate limiting on a Redis that does not evict (e.g. rateLimit on a named connection whose server has ' +
  'maxmemory-policy noeviction), or size maxmemory so it never evicts';

/**
 * Whether the rate limiter's server(s) may evict counters: read once, at the first decision this RateLimitService
 * sends (on a ready connection), from `INFO memory` of every master (INFO is in the documented ACL line; CONFIG GET is
 * not). An evicting server is one warning; the check never delays or fails a decision, and a check that fails is one
 * warning naming INFO. A process that limits nothing sends nothing. The cache's tag check (cache.eviction-check.ts)
 * reads the same fields for its own risk.
 */
export class RateLimitEvictionCheck {
  private started = false;
  private closed = false;

  constructor(
    private readonly connection: RedisConnection,
    private readonly logger: LoggerService,
  ) {}

  /** Starts the check the first time (fire and forget); after that a boolean test and nothing else. */
  once(): void {
    if (!this.started) this.start();
  }

  /** Shutting down: a check still running logs nothing (its INFO fails with the closed connection). */
  close(): void {
    this.closed = true;
  }

  private start(): void {
    this.started = true;
    this.run().catch((err: unknown) => this.failed(this.connection.description, err));
  }

  private async run(): Promise<void> {
    const nodes = await mastersOf(this.connection.client);
    const evicting: string[] = [];
    const failures: string[] = [];
    const ms = this.connection.commandTimeout;
    await Promise.all(
      nodes.map(async (node) => {
        const name = this.nameOf(node);
        try {
          const info = await withTimeout(node.info('memory'), ms, `no reply within commandTimeout (${ms} ms)`);
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
      this.logger.warn(
        `rate limiting: ${evicting.join(', ')} may evict keys under memory pressure: ${RISK}. ${REMEDY}.`,
      );
    }
    if (failures.length > 0) this.failed(failures.join(', '), undefined);
  }

  private failed(where: string, err: unknown): void {
    if (this.closed) return;
    const why = err === undefined ? '' : ` (INFO memory: ${err instanceof Error ? err.message : String(err)})`;
    this.logger.warn(
      `rate limiting: could not read the eviction policy of ${where}${why}. If it evicts (maxmemory set and a ` +
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
