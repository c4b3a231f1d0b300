import type { LoggerService } from '@nestjs/common';
import type { Redis } from 'ioredis';
import { mastersOf, nodeKey } from '../common/cluster-masters.js';
import { withTimeout } from '../common/timeout.js';
import { DEFAULT_CONNECTION_NAME } from './connection.options.js';
import type { RedisConnection } from './redis-connection.js';

/** What an eviction would cost a feature, in its warning. */
export interface EvictionRisk {
  /** The warning's first words: `cache`, `rate limiting`. */
  readonly feature: string;
  /** What an evicted key does to the feature, without an error. */
  readonly risk: string;
  /** What to do about it. */
  readonly remedy: string;
}

/** An `INFO memory` reply without the fields (a server or proxy that leaves them out). */
export const NO_POLICY_IN_INFO = 'INFO memory has no maxmemory or maxmemory_policy';

/**
 * `maxmemory` (bytes; 0: no limit, nothing is evicted) and `maxmemory_policy` from an `INFO memory` reply, the
 * limit also as Redis writes it (`maxmemory_human`, e.g. `64.00M`); undefined when the reply lacks either.
 */
export function evictionPolicyOf(info: string): { policy: string; maxmemory: number; human: string } | undefined {
  const policy = /^maxmemory_policy:(.*)$/m.exec(info)?.[1]?.trim();
  const maxmemory = /^maxmemory:(\d+)/m.exec(info)?.[1];
  if (policy === undefined || maxmemory === undefined) return undefined;
  const human = /^maxmemory_human:(.*)$/m.exec(info)?.[1]?.trim() ?? `${maxmemory} bytes`;
  return { policy, maxmemory: Number(maxmemory), human };
}

/**
 * Whether a feature's server(s) may evict its keys: read once, on the feature's first use of what an eviction would
 * break (the cache's first tagged call, the rate limiter's first decision), from `INFO memory` of every master (INFO
 * is in the documented ACL line; CONFIG GET is not). A server with `maxmemory` set and a policy other than
 * `noeviction` is one warning; the check never delays or fails the call that started it, and a check that fails is
 * one warning naming INFO. A process that never makes such a call sends nothing. (The locks' check, which runs at
 * start and may refuse, is lock.eviction-check.ts.)
 */
export class EvictionPolicyCheck {
  private started = false;
  private closed = false;

  constructor(
    private readonly connection: RedisConnection,
    private readonly logger: LoggerService,
    private readonly about: EvictionRisk,
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
          const memory = evictionPolicyOf(info);
          if (memory === undefined) {
            failures.push(`${name} (${NO_POLICY_IN_INFO})`);
            return;
          }
          if (memory.maxmemory === 0 || memory.policy === 'noeviction') return;
          evicting.push(`${name} (maxmemory-policy ${memory.policy}, maxmemory ${memory.human})`);
        } catch (err) {
          failures.push(`${name} (INFO memory: ${err instanceof Error ? err.message : String(err)})`);
        }
      }),
    );
    if (this.closed) return;
    const { feature, risk, remedy } = this.about;
    if (evicting.length > 0) {
      this.logger.warn(`${feature}: ${evicting.join(', ')} may evict keys under memory pressure: ${risk}. ${remedy}.`);
    }
    if (failures.length > 0) this.failed(failures.join(', '), undefined);
  }

  private failed(where: string, err: unknown): void {
    if (this.closed) return;
    const { feature, risk, remedy } = this.about;
    const why = err === undefined ? '' : ` (INFO memory: ${err instanceof Error ? err.message : String(err)})`;
    this.logger.warn(
      `${feature}: could not read the eviction policy of ${where}${why}. If it evicts (maxmemory set and a ` +
        `maxmemory-policy other than noeviction), ${risk}. ${remedy}; allow INFO so this check can run.`,
    );
  }

  /** A single server as the connection names it; a cluster master by its address (the description lists them all). */
  private nameOf(node: Redis): string {
    if (!this.connection.isCluster) return this.connection.description;
    const named = this.connection.name === DEFAULT_CONNECTION_NAME ? '' : ` (connection "${this.connection.name}")`;
    return `cluster master ${nodeKey(node)}${named}`;
  }
}
