import type { Logger } from '@nestjs/common';
import { Cluster } from 'ioredis';
import type { RedisClient } from '../common/lua-script.js';
import { isMasterNow } from './redis-info.js';

/** `readOnlyGraceMs` when the connection gives none: a failover's switch, and a DNS name's TTL after it. */
export const DEFAULT_READONLY_GRACE_MS = 30_000;
/** While a streak is on, whether the server is a master again is asked this often (INFO replication). */
const CHECK_EVERY_MS = 1_000;
/** At most one reconnect per this long on READONLY (the first at once), so a lasting replica is no reconnect storm. */
export const READONLY_RECONNECT_EVERY_MS = 5_000;
/** The ERROR of a lasting streak: at most one per this long, with the count of the calls refused since. */
const ERROR_EVERY_MS = 10_000;

export interface ReadOnlyStreakOptions {
  /** `readOnlyGraceMs` of the connection. */
  graceMs: number;
  /** The connection, for the log (`redis://10.0.0.5:6379 (connection "sessions")`). */
  where: string;
  logger: Logger;
  /**
   * INFO replication of the server now: true for a master, false for a replica, undefined when the server refuses
   * to say (an error reply); rejects when it cannot be reached.
   */
  isMaster: () => Promise<boolean | undefined>;
  /**
   * Drops the connection so that ioredis reconnects (Sentinel, or a DNS name, may now lead to the master). None for a
   * client the user gave: it is theirs.
   */
  reconnect?: () => void;
  /** Removes what the streak registered on the client (its 'ready' listener): the user's client outlives the app. */
  detach?: () => void;
}

/**
 * The READONLY replies of one connection (one server): a streak starts with the first, and ends when the server is
 * a master again (asked every second while it lasts, and on every reconnect). During `graceMs` after its start a
 * READONLY is a failover in progress (each feature's failure policy); after it the server is taken for what it is, a
 * replica the connection should not point at: `lasting` says why, the calls fail with a reply error, and one ERROR
 * per 10 s says so. Each feature of the connection sees the same streak.
 */
export class ReadOnlyStreak {
  private since: number | undefined;
  /** A READONLY since the last check (when INFO cannot tell, a whole interval without one ends the streak). */
  private seenSinceCheck = false;
  private watch: NodeJS.Timeout | undefined;
  private checking = false;
  private lastReconnectAt = Number.NEGATIVE_INFINITY;
  private lastErrorAt = Number.NEGATIVE_INFINITY;
  private refusedSinceError = 0;
  private closed = false;

  constructor(private readonly options: ReadOnlyStreakOptions) {}

  /**
   * A READONLY reply. Undefined while within the grace (the caller follows its failure policy); past it, why the
   * call fails instead (for its error).
   */
  seen(now = Date.now()): string | undefined {
    this.seenSinceCheck = true;
    if (this.since === undefined) this.start(now);
    this.maybeReconnect(now);
    const why = this.lasting(now);
    if (why === undefined) return undefined;
    if (now - this.lastErrorAt >= ERROR_EVERY_MS) {
      const extra = this.refusedSinceError > 0 ? ` (${this.refusedSinceError} more calls refused since)` : '';
      this.lastErrorAt = now;
      this.refusedSinceError = 0;
      this.options.logger.error(
        `Redis at ${this.options.where} is a replica, not the master: ${why}. Calls that write fail with ` +
          'RedisReplyError (READONLY) instead of following the failure policy (no fail-open). Point the connection ' +
          'at the master, or at Sentinel ({ sentinels, name }), which follows the master through a failover' +
          extra,
      );
    } else {
      this.refusedSinceError++;
    }
    return why;
  }

  /** Why the streak counts as lasting (past the grace), or undefined. */
  lasting(now = Date.now()): string | undefined {
    if (this.since === undefined) return undefined;
    const forMs = now - this.since;
    if (forMs < this.options.graceMs) return undefined;
    return (
      `the server has answered writes with READONLY for ${forMs} ms, longer than readOnlyGraceMs ` +
      `(${this.options.graceMs} ms)`
    );
  }

  /** A reconnect: a master now ends the streak at once. */
  reconnected(): void {
    if (this.since !== undefined) void this.check();
  }

  /** Stops checking, and leaves the client (shutdown). */
  close(): void {
    this.closed = true;
    this.stopWatching();
    this.options.detach?.();
  }

  private start(now: number): void {
    this.since = now;
    this.options.logger.warn(
      `Redis at ${this.options.where} answered READONLY: it is not the master (a failover in progress?). For ` +
        `readOnlyGraceMs (${this.options.graceMs} ms) each feature follows its failure policy` +
        `${this.options.reconnect ? '; reconnecting to find the master (at most once per 5 s)' : ''}.`,
    );
    if (this.closed || this.watch) return;
    this.watch = setInterval(() => void this.check(), CHECK_EVERY_MS);
    this.watch.unref();
  }

  private maybeReconnect(now: number): void {
    if (!this.options.reconnect || now - this.lastReconnectAt < READONLY_RECONNECT_EVERY_MS) return;
    this.lastReconnectAt = now;
    this.options.reconnect();
  }

  private async check(): Promise<void> {
    if (this.checking || this.since === undefined) return;
    this.checking = true;
    const quiet = !this.seenSinceCheck;
    this.seenSinceCheck = false;
    try {
      const master = await this.options.isMaster();
      // A check that cannot tell (INFO refused): no READONLY for a whole interval ends the streak instead.
      if (master === true || (master === undefined && quiet)) this.end();
    } catch {
      // Not reachable now (reconnecting): asked again in a second, or when it is back.
    } finally {
      this.checking = false;
    }
  }

  private end(): void {
    if (this.since === undefined) return;
    const forMs = Date.now() - this.since;
    this.since = undefined;
    this.lastErrorAt = Number.NEGATIVE_INFINITY;
    this.refusedSinceError = 0;
    this.stopWatching();
    this.options.logger.log(`Redis at ${this.options.where} takes writes again (READONLY for ${forMs} ms).`);
  }

  private stopWatching(): void {
    if (this.watch) clearInterval(this.watch);
    this.watch = undefined;
  }
}

/**
 * The READONLY streak of a connection's main client; undefined for a cluster, whose client sends writes to the
 * masters of its slot table (a cluster replica answers MOVED, which ioredis follows): READONLY there stays an outage.
 * `owned`: the toolkit created the client, and may reconnect it (never a client the user gave). Its 'ready' listener
 * goes at `close()`, whoever owns the client: a client the user gave outlives the app, and a listener left on it kept
 * the closed app's streak alive (an app per test on one client passed getMaxListeners() at the 11th).
 */
export function readOnlyStreakOf(
  client: RedisClient,
  options: { graceMs: number; where: string; logger: Logger; commandTimeout: number; owned: boolean },
): ReadOnlyStreak | undefined {
  if (client instanceof Cluster) return undefined;
  const { graceMs, where, logger, commandTimeout, owned } = options;
  const streak = new ReadOnlyStreak({
    graceMs,
    where,
    logger,
    isMaster: () => isMasterNow(client, commandTimeout),
    // ioredis reconnects (retryStrategy) after a disconnect(true); commands in flight fail as a transport failure.
    reconnect: owned ? () => client.status === 'ready' && client.disconnect(true) : undefined,
    detach: () => client.off('ready', onReady),
  });
  const onReady = () => streak.reconnected();
  client.on('ready', onReady);
  return streak;
}
