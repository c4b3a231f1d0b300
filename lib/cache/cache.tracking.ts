import { Logger } from '@nestjs/common';
import { Cluster, type Redis } from 'ioredis';
import type { RedisConnection } from '../connection/redis-connection.js';
import { downReason } from '../connection/redis-down-reason.js';

/** The channel on which Redis sends, over RESP2, the invalidations of a tracking connection's REDIRECT target. */
export const TRACKING_CHANNEL = '__redis__:invalidate';
/** CLIENT SETNAME of the L1's RESP2 invalidation connections (one per master): easy to find in CLIENT LIST. */
export const TRACKING_CONNECTION_NAME = 'rtk-l1-tracking';
const RETRY_MS = 2_000;
/**
 * A redirect connection that heard nothing for this long is PINGed (one PING at a time, answered within
 * commandTimeout): one that stays open but delivers nothing (a NAT or load balancer that dropped the idle flow) is
 * noticed within HEARTBEAT_MS + commandTimeout. Idle cost: one PING a second per master.
 */
const HEARTBEAT_MS = 1_000;

/** CLIENT SETNAME of a tracking connection of the L1's own (a `main` connection another L1 tracks on already). */
export const TRACKING_CONTROL_NAME = 'rtk-l1-control';
/**
 * The connections of this process on which an L1 has CLIENT TRACKING on. A connection has one redirect and one
 * tracking state: two apps given the same `{ client }` each turned it OFF and ON with their own redirect, so the
 * first never heard of a write again and the second's close turned it off for good. The second now tracks on a
 * connection of its own (claimed synchronously: two apps starting at once cannot both take it).
 */
const trackedBy = new WeakMap<Redis, MasterTracking>();

/** What the L1 does with what the server tells it. */
export interface TrackingListener {
  /** Keys under the cache prefix written by another client; null: a FLUSHDB/FLUSHALL (every key). */
  invalidate(keys: string[] | null): void;
  /** Tracking (re)started on a master after a gap (reconnect, new redirect id): invalidations may have been lost. */
  resynced(): void;
  /** A tracking step failed outside start (a reconnect): logged, retried. */
  failed(err: Error): void;
  /** The redirect connection did not answer a PING in time: what was reported meanwhile may be lost (reconnected). */
  silent(why: string): void;
}

/**
 * Server-assisted client-side caching on one master: the cache's own connection to it (`main`) runs
 * `CLIENT TRACKING on REDIRECT <id> BCAST PREFIX <prefix> NOLOOP`, `<id>` being a RESP2 connection of ours to the same
 * master subscribed to `__redis__:invalidate`. BCAST: the server keeps no per-key table, it reports every write of a
 * key under the prefix; NOLOOP: writes through `main` itself (this instance's own, already applied to its L1) are not
 * reported. Tracking state dies with either connection: each reconnect re-enables it (a new redirect id when the
 * subscriber reconnects) and tells the listener to drop what it holds. When another L1 of this process tracks on
 * `main` already (see trackedBy), tracking runs on a connection of this one's own (`control`) instead: its NOLOOP
 * hides nothing, so this instance's own writes are reported back to it too (they leave its L1: one more read each).
 */
class MasterTracking {
  private readonly sub: Redis;
  /** The connection CLIENT TRACKING is on: `main`, or one of our own when main is taken. */
  private readonly control: Redis;
  private redirectId: number | undefined;
  private tracking = false;
  private steps: Promise<void> = Promise.resolve();
  private retry: NodeJS.Timeout | undefined;
  private closed = false;
  private heartbeat: NodeJS.Timeout | undefined;
  /** When the redirect last delivered something (a message or a PING's answer). */
  private heardAt = 0;
  /** Until the first subscription, the connections' first `ready` is start's business, not a reconnect. */
  private started = false;
  private readonly onSubReady = () => {
    if (this.started) this.queue(() => this.resubscribe());
  };
  private readonly onMainReady = () => {
    if (this.started) this.queue(() => this.track());
  };
  private readonly onSubDown = () => {
    this.redirectId = undefined;
    this.tracking = false;
  };
  private readonly onMainDown = () => {
    this.tracking = false;
  };

  constructor(
    private readonly connection: RedisConnection,
    readonly main: Redis,
    private readonly prefix: string,
    private readonly listener: TrackingListener,
  ) {
    this.sub = connection.createNodeConnection(main, `L1 tracking ${main.options.host}:${main.options.port}`, {
      protocol: 2,
      autoResubscribe: false,
      connectionName: TRACKING_CONNECTION_NAME,
    });
    this.sub.on('messageBuffer', (channel: Buffer, keys: Buffer[] | null) => {
      this.heardAt = performance.now();
      if (String(channel) !== TRACKING_CHANNEL) return;
      this.listener.invalidate(keys === null ? null : keys.map((k) => k.toString()));
    });
    const where = `${main.options.host}:${main.options.port}`;
    if (trackedBy.has(main)) {
      this.control = connection.createNodeConnection(main, `L1 tracking control ${where}`, {
        connectionName: TRACKING_CONTROL_NAME,
      });
      new Logger('RedisToolkit:Cache').log(
        `cache L1: another app of this process tracks on the cache's connection to ${where} (one { client } given to ` +
          "several apps): tracking on a connection of this app's own (its own writes leave its L1 too)",
      );
    } else {
      trackedBy.set(main, this);
      this.control = main;
    }
    this.sub.on('ready', this.onSubReady);
    this.sub.on('close', this.onSubDown);
    this.control.on('ready', this.onMainReady);
    this.control.on('close', this.onMainDown);
  }

  /** Tracking is on: every write by another client of a key under the prefix reaches the listener. */
  get live(): boolean {
    return this.tracking && this.redirectId !== undefined;
  }

  /** The id of the RESP2 connection invalidations are redirected to (for tests and CLIENT LIST). */
  get redirect(): number | undefined {
    return this.redirectId;
  }

  /** Subscribes and enables tracking; rejects with the server's error (e.g. NOPERM, or Redis < 6). */
  async start(): Promise<void> {
    await this.resubscribe();
    this.started = true;
    this.beatLater();
  }

  /**
   * After a failed start: whether the server refused a connection of this tracking's own (maxclients). The start
   * then fails with that (RedisConnection.failsStart), naming it.
   */
  async refusedAtStart(): Promise<boolean> {
    for (const c of new Set([this.sub, this.control])) {
      const failed = c !== this.main && c.status !== 'ready' && c.status !== 'wait'; // 'wait': never tried
      if (failed && (await this.connection.failsStart(c))) return true;
    }
    return false;
  }

  /** Like start, for a master that joins later: a failure is reported and retried. */
  startInBackground(): void {
    this.queue(() => this.recover());
    this.beatLater();
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.retry);
    clearTimeout(this.heartbeat);
    this.sub.off('ready', this.onSubReady);
    this.sub.off('close', this.onSubDown);
    this.control.off('ready', this.onMainReady);
    this.control.off('close', this.onMainDown);
    if (this.control !== this.main) await this.connection.release(this.control);
    else {
      if (trackedBy.get(this.main) === this) trackedBy.delete(this.main);
      // Stop the server reporting to a connection that is going away (the main connection may well stay: the user's).
      if (this.tracking && this.main.status === 'ready') {
        await this.main.call('CLIENT', 'TRACKING', 'OFF').catch(() => undefined);
      }
    }
    this.tracking = false;
    await this.connection.release(this.sub);
  }

  private beatLater(): void {
    if (this.closed) return;
    this.heartbeat = setTimeout(() => void this.beat(), HEARTBEAT_MS);
    this.heartbeat.unref();
  }

  /**
   * PINGs the redirect connection when it tracks and heard nothing for HEARTBEAT_MS. No answer within commandTimeout
   * (a half-open link): tracking counts as off, L1 is emptied and the connection reconnected (a new redirect id is
   * tracked, and L1 emptied again, by the usual steps).
   */
  private async beat(): Promise<void> {
    if (this.live && this.sub.status === 'ready' && performance.now() - this.heardAt >= HEARTBEAT_MS) {
      const timeout = this.connection.commandTimeout;
      const answer = await pingWithin(this.sub, timeout);
      if (answer === 'answered') this.heardAt = performance.now();
      else if (answer === 'timeout' && !this.closed) {
        this.tracking = false;
        const where = `redis://${this.main.options.host}:${this.main.options.port}`;
        this.listener.silent(`to ${where} did not answer a PING within ${timeout} ms (half-open?)`);
        if (this.sub.status === 'ready') this.sub.disconnect(true);
      }
      // 'failed': the connection went down meanwhile; its close and ready steps handle it
    }
    this.beatLater();
  }

  private queue(step: () => Promise<void>): void {
    this.steps = this.steps.then(step).catch((err: unknown) => {
      if (this.closed) return;
      // In our words while a connection is down, not ioredis's ("Stream isn't writeable and enableOfflineQueue...")
      const down = [this.control, this.sub].find((c) => c.status !== 'ready');
      const description = `redis://${this.main.options.host}:${this.main.options.port}`;
      const lastError = () => (down ? this.connection.lastError(down) : undefined);
      this.listener.failed(
        down ? new Error(downReason({ description, status: down.status, lastError }, err)) : (err as Error),
      );
      clearTimeout(this.retry);
      this.retry = setTimeout(() => this.queue(() => this.recover()), RETRY_MS);
      this.retry.unref();
    });
  }

  /** After a failed step: whatever is missing, again. */
  private async recover(): Promise<void> {
    if (this.redirectId === undefined) await this.resubscribe();
    else if (!this.tracking) await this.track();
    this.started = true;
  }

  /** CLIENT ID first (a RESP2 connection in subscribed mode may run nothing else), then SUBSCRIBE. */
  private async resubscribe(): Promise<void> {
    if (this.closed) return;
    this.tracking = false;
    this.redirectId = undefined;
    const id = Number(await this.sub.client('ID'));
    await this.sub.subscribe(TRACKING_CHANNEL);
    this.redirectId = id;
    await this.track();
  }

  private async track(): Promise<void> {
    const id = this.redirectId;
    // Without a subscribed connection there is nowhere to redirect to: its own `ready` enables tracking.
    if (this.closed || id === undefined) return;
    this.tracking = false;
    // Still on with the old redirect (only the subscriber reconnected): Redis refuses ON again with the same prefix.
    await this.control.call('CLIENT', 'TRACKING', 'OFF');
    await this.control.call(
      'CLIENT',
      'TRACKING',
      'ON',
      'REDIRECT',
      String(id),
      'BCAST',
      'PREFIX',
      this.prefix,
      'NOLOOP',
    );
    if (id !== this.redirectId) return; // the subscriber reconnected meanwhile: its own step tracks again
    this.tracking = true;
    this.listener.resynced();
  }
}

/** A PING's fate: answered, no answer within `timeout` (also ioredis's own commandTimeout), or another failure. */
function pingWithin(conn: Redis, timeout: number): Promise<'answered' | 'timeout' | 'failed'> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve('timeout'), timeout);
    timer.unref();
    conn.ping().then(
      () => (clearTimeout(timer), resolve('answered')),
      (err: unknown) => {
        clearTimeout(timer);
        resolve(err instanceof Error && err.message === 'Command timed out' ? 'timeout' : 'failed');
      },
    );
  });
}

/**
 * The L1's invalidations from Redis itself (CLIENT TRACKING, Redis >= 6): one MasterTracking per master of the
 * cache's connection (the one client of a single server or Sentinel setup; every master of a cluster, followed as
 * masters join and leave). See docs/cache.md, "L1 invalidation".
 */
export class CacheTracking {
  private readonly masters = new Map<Redis, MasterTracking>();
  private syncing: Promise<void> = Promise.resolve();
  private closed = false;
  /** Masters in the cluster's slot map (a cluster drops a node connection that closed until a command needs it). */
  private expected = 1;
  private readonly onTopology = () => {
    this.syncing = this.syncing.then(() => this.sync()).catch((err: unknown) => this.listener.failed(err as Error));
  };
  private readonly onNodeGone = () => {
    this.onTopology();
    // Re-create the node connections of every master in the slot map ('+node' follows), so each tracks again.
    this.syncing = this.syncing.then(() => {
      const client = this.connection.client;
      if (!this.closed && client instanceof Cluster) client.refreshSlotsCache();
    });
  };

  constructor(
    private readonly connection: RedisConnection,
    private readonly prefix: string,
    private readonly listener: TrackingListener,
  ) {}

  /** Every master reports writes under the prefix (a master whose tracking is being re-enabled does not yet). */
  get live(): boolean {
    if (this.closed || this.masters.size === 0 || this.masters.size < this.expected) return false;
    for (const m of this.masters.values()) if (!m.live) return false;
    return true;
  }

  /** Redirect ids by master (`host:port`), for tests and diagnostics. */
  redirects(): Record<string, number | undefined> {
    const out: Record<string, number | undefined> = {};
    for (const [node, m] of this.masters) out[`${node.options.host}:${node.options.port}`] = m.redirect;
    return out;
  }

  /**
   * Enables tracking on every master; rejects (everything closed again) when one refuses or is unreachable. When the
   * server refused a connection of the tracking's own (maxclients) it resolves, closed: the start fails with that
   * refusal once every feature has started (RedisConnections.onApplicationBootstrap), instead of an L1 left empty and
   * retried every 2 s (until 2026-12-06). After the start (an L1 retrying) it rejects as for any other failure.
   */
  async start(): Promise<void> {
    try {
      await this.sync(true);
    } catch (err) {
      let refused = false;
      for (const m of this.masters.values()) if (!refused) refused = await m.refusedAtStart();
      await this.close();
      if (refused) return;
      throw err;
    }
    const client = this.connection.client;
    if (client instanceof Cluster) {
      client.on('+node', this.onTopology);
      client.on('-node', this.onNodeGone);
      client.on('refresh', this.onTopology);
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    const client = this.connection.client;
    client.off('+node', this.onTopology);
    client.off('-node', this.onNodeGone);
    client.off('refresh', this.onTopology);
    const all = [...this.masters.values()];
    this.masters.clear();
    await Promise.all(all.map((m) => m.close()));
  }

  /** A tracking per current master: new masters tracked (awaited only at start), departed ones closed. */
  private async sync(initial = false): Promise<void> {
    if (this.closed) return;
    const client = this.connection.client;
    const now = client instanceof Cluster ? client.nodes('master') : [client];
    if (client instanceof Cluster) this.expected = new Set(client.slots.map((owners) => owners?.[0])).size;
    const gone = [...this.masters.keys()].filter((n) => !now.includes(n));
    for (const n of gone) {
      const m = this.masters.get(n);
      this.masters.delete(n);
      await m?.close();
    }
    // Writes on a departed master's keys went unseen since its connection closed.
    if (gone.length > 0) this.listener.resynced();
    const added = now.filter((n) => !this.masters.has(n));
    const started = added.map((n) => {
      const m = new MasterTracking(this.connection, n, this.prefix, this.listener);
      this.masters.set(n, m);
      if (initial) return m.start();
      m.startInBackground();
      return undefined;
    });
    await Promise.all(started);
  }
}
