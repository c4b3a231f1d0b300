import { Logger } from '@nestjs/common';
import type { Redis } from 'ioredis';
import type { RedisConnection } from '../connection/redis-connection.js';
import { downReason } from '../connection/redis-down-reason.js';
import { nodeKey } from '../common/cluster-masters.js';
import { TRACKING_CHANNEL } from '../connection/redis-permissions.tracking.js';

export { TRACKING_CHANNEL };

/** CLIENT SETNAME of the L1's RESP2 invalidation connections (one per master): easy to find in CLIENT LIST. */
export const TRACKING_CONNECTION_NAME = 'rtk-l1-tracking';
/** CLIENT SETNAME of a tracking connection of the L1's own (a `main` connection another L1 tracks on already). */
export const TRACKING_CONTROL_NAME = 'rtk-l1-control';
const RETRY_MS = 2_000;
/**
 * A redirect connection that heard nothing for this long is PINGed (one PING at a time, answered within
 * commandTimeout): one that stays open but delivers nothing (a NAT or load balancer that dropped the idle flow) is
 * noticed within HEARTBEAT_MS + commandTimeout. Idle cost: one PING a second per master.
 */
const HEARTBEAT_MS = 1_000;

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

/** Commands go out now ('ready'), or connect it first ('wait': lazy, never connected); else it is on its way back. */
const usable = (c: Redis) => c.status === 'ready' || c.status === 'wait';
/**
 * What CLIENT TRACKING is on a connection first seen in this state: a connection that is not yet (or no longer) ready
 * gets a new one that tracks nothing; one that is ready may have been told anything before (by its owner): OFF first.
 */
const trackingAtFirst = (c: Redis): null | undefined => (c.status === 'ready' ? null : undefined);

/**
 * Server-assisted client-side caching on one master: the cache's own connection to it (`main`) runs
 * `CLIENT TRACKING on REDIRECT <id> BCAST PREFIX <prefix> NOLOOP`, `<id>` being a RESP2 connection of ours to the same
 * master subscribed to `__redis__:invalidate`. BCAST: the server keeps no per-key table, it reports every write of a
 * key under the prefix; NOLOOP: writes through `main` itself (this instance's own, already applied to its L1) are not
 * reported. When another L1 of this process tracks on `main` already (see trackedBy), tracking runs on a connection of
 * this one's own (`control`) instead: its NOLOOP hides nothing, so this instance's own writes are reported back to it
 * too (they leave its L1: one more read each).
 *
 * Tracking state dies with either connection. Each step (`ensure`) does only what is missing, from what this class
 * saw of each connection: a redirect reconnected needs CLIENT ID + SUBSCRIBE, then OFF + ON on a control connection
 * that still tracks with the dead id (Redis refuses ON again with the same prefix); a control connection that
 * reconnected tracks nothing: ON alone. Both back after one outage: one ON, run once both are ready (each one's
 * `ready` runs the step; the first to come back finds the other away and leaves it). The L1 is cleared once per gap,
 * when tracking is on again on both (invalidations sent meanwhile were reported to nobody).
 */
export class MasterTracking {
  private readonly sub: Redis;
  /** The connection CLIENT TRACKING is on: `main`, or one of our own when main is taken. */
  private control: Redis;
  /** The id of `sub`'s current connection once that connection is subscribed (undefined until then). */
  private subscribed: number | undefined;
  /** CLIENT TRACKING on `control`'s current connection: the redirect it is on with, undefined: off, null: unknown. */
  private armed: number | undefined | null;
  /** Bumped when the connection closes: a step that spans a close leaves what it did on the old one uncounted. */
  private subEpoch = 0;
  private controlEpoch = 0;
  /** Since the L1 was last cleared, a connection was away: invalidations may be lost. Cleared once tracking is on. */
  private missed = true;
  /** L1 was emptied since the gap began (a silent redirect, a refused step); it stores nothing until tracking is on. */
  private emptied = false;
  private steps: Promise<void> = Promise.resolve();
  private retry: NodeJS.Timeout | undefined;
  private closed = false;
  private heartbeat: NodeJS.Timeout | undefined;
  /** When the redirect last delivered something (a message or a PING's answer). */
  private heardAt = 0;
  /** Until start, the connections' first `ready` is start's business, not a reconnect. */
  private started = false;
  private readonly onReady = () => {
    if (this.started) this.queue(() => this.ensure(false));
  };
  private readonly onSubDown = () => {
    this.subEpoch++;
    this.subscribed = undefined;
    this.gap();
  };
  private readonly onControlDown = () => {
    this.controlEpoch++;
    this.armed = undefined; // what the next connection starts with
    this.gap();
  };

  constructor(
    private readonly connection: RedisConnection,
    private main: Redis,
    private readonly prefix: string,
    private readonly listener: TrackingListener,
  ) {
    this.sub = connection.createNodeConnection(main, `L1 tracking ${nodeKey(main)}`, {
      protocol: 2,
      autoResubscribe: false,
      connectionName: TRACKING_CONNECTION_NAME,
    });
    this.sub.on('messageBuffer', (channel: Buffer, keys: Buffer[] | null) => {
      this.heardAt = performance.now();
      if (String(channel) !== TRACKING_CHANNEL) return;
      this.listener.invalidate(keys === null ? null : keys.map((k) => k.toString()));
    });
    this.sub.on('ready', this.onReady);
    this.sub.on('close', this.onSubDown);
    this.control = this.controlFor(main);
    this.armed = trackingAtFirst(this.control);
    this.watchControl();
  }

  /** Tracking is on: every write by another client of a key under the prefix reaches the listener. */
  get live(): boolean {
    return !this.closed && !this.missed && this.subscribed !== undefined && this.armed === this.subscribed;
  }

  /** The id of the RESP2 connection invalidations are redirected to (for tests and CLIENT LIST). */
  get redirect(): number | undefined {
    return this.subscribed;
  }

  /** Subscribes and enables tracking; rejects with the server's error (e.g. NOPERM, or Redis < 6). */
  async start(): Promise<void> {
    this.started = true;
    const step = this.steps.then(() => this.ensure(true));
    this.steps = step.catch(() => undefined);
    await step;
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
    this.started = true;
    this.queue(() => this.ensure(true));
    this.beatLater();
  }

  /**
   * The cluster replaced its connection to this master (the old one ended, a new one is in its pool): tracking moves
   * to the new one (ON alone: it tracks nothing yet), and the redirect connection, still subscribed, stays.
   */
  rebind(main: Redis): void {
    if (main === this.main || this.closed) return;
    const previous = this.main;
    this.main = main;
    // A control connection of our own does not depend on the cluster's: it tracks on as it was.
    if (this.control !== previous) return;
    this.unwatchControl();
    if (trackedBy.get(previous) === this) trackedBy.delete(previous);
    this.onControlDown(); // the old one's close, which we no longer hear, ends its tracking
    this.control = this.controlFor(main);
    this.armed = trackingAtFirst(this.control);
    this.watchControl();
    this.queue(() => this.ensure(false));
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.retry);
    clearTimeout(this.heartbeat);
    this.sub.off('ready', this.onReady);
    this.sub.off('close', this.onSubDown);
    this.unwatchControl();
    if (this.control !== this.main) await this.connection.release(this.control);
    else {
      if (trackedBy.get(this.main) === this) trackedBy.delete(this.main);
      // Stop the server reporting to a connection that is going away (the main connection may well stay: the user's).
      if (this.armed !== undefined && this.main.status === 'ready') {
        await this.main.call('CLIENT', 'TRACKING', 'OFF').catch(() => undefined);
      }
    }
    this.armed = undefined;
    await this.connection.release(this.sub);
  }

  /** `main` itself when no other L1 of this process tracks on it, else a connection of our own to its server. */
  private controlFor(main: Redis): Redis {
    if (!trackedBy.has(main)) {
      trackedBy.set(main, this);
      return main;
    }
    const where = nodeKey(main);
    new Logger('RedisToolkit:Cache').log(
      `cache L1: another app of this process tracks on the cache's connection to ${where} (one { client } given to ` +
        "several apps): tracking on a connection of this app's own (its own writes leave its L1 too)",
    );
    return this.connection.createNodeConnection(main, `L1 tracking control ${where}`, {
      connectionName: TRACKING_CONTROL_NAME,
    });
  }

  private watchControl(): void {
    this.control.on('ready', this.onReady);
    this.control.on('close', this.onControlDown);
  }

  private unwatchControl(): void {
    this.control.off('ready', this.onReady);
    this.control.off('close', this.onControlDown);
  }

  private beatLater(): void {
    if (this.closed) return;
    clearTimeout(this.heartbeat);
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
        this.gap();
        this.emptied = true;
        this.listener.silent(
          `to redis://${nodeKey(this.main)} did not answer a PING within ${timeout} ms (half-open?)`,
        );
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
      const description = `redis://${nodeKey(this.main)}`;
      const lastError = () => (down ? this.connection.lastError(down) : undefined);
      this.listener.failed(
        down ? new Error(downReason({ description, status: down.status, lastError }, err)) : (err as Error),
      );
      // Both connections up and tracking refused (an ACL change): L1 would serve what it holds, unwatched, for as long
      // as that lasts. Emptied once (it stores nothing until tracking is on, then is cleared again for the reads
      // under way). During an outage it keeps serving, as documented.
      if (!down && this.missed && !this.emptied) {
        this.emptied = true;
        this.listener.resynced();
      }
      this.retryLater();
    });
  }

  /** A connection went away (or went silent): what the server reports may be lost until tracking is on again. */
  private gap(): void {
    this.missed = true;
    this.emptied = false;
  }

  /** The step again (sending its commands whatever the connections' state) in RETRY_MS. */
  private retryLater(): void {
    clearTimeout(this.retry);
    this.retry = setTimeout(() => this.queue(() => this.ensure(true)), RETRY_MS);
    this.retry.unref();
  }

  /**
   * Whatever is missing, and nothing more: subscribed redirect, tracking on with its id, the L1 cleared after a gap.
   * `force` (start, a retry): the commands are sent whatever the connections' state, so that a failure is reported;
   * else a connection on its way back leaves it to its own `ready`, and to a retry if that takes longer than RETRY_MS
   * (which then reports why tracking is still off: nothing stays off without a word).
   */
  private async ensure(force: boolean): Promise<void> {
    const epochs = this.subEpoch + this.controlEpoch;
    await this.complete(force).catch((err: unknown) => {
      // A connection closed under a reconnect's step (its 'close' is emitted before its commands' rejections are
      // handled): its `ready` runs the step again; neither a failure to report nor one to retry. (At start, or a
      // retry, a failure is reported: a refused connection, e.g. maxclients, closes too.)
      if (force || this.subEpoch + this.controlEpoch === epochs) throw err;
    });
  }

  private async complete(force: boolean): Promise<void> {
    if (this.closed) return;
    // A cluster's node connection that ended stays so: tracking waits for the one that replaces it (rebind)
    if (this.control === this.main && this.main !== this.connection.client && this.main.status === 'end') return;
    if (!force && (!usable(this.sub) || !usable(this.control))) return this.retryLater();
    const subEpoch = this.subEpoch;
    if (this.subscribed === undefined) {
      // CLIENT ID first (a RESP2 connection in subscribed mode may run nothing else), then SUBSCRIBE on that same
      // connection: one queued for the next would subscribe it under a dead id, and CLIENT ID would be refused there
      const id = Number(await this.sub.client('ID'));
      if (subEpoch !== this.subEpoch || this.sub.status !== 'ready') return; // its `ready` runs this again
      await this.sub.subscribe(TRACKING_CHANNEL);
      if (subEpoch !== this.subEpoch) return;
      this.subscribed = id;
      this.heardAt = performance.now();
    }
    const id = this.subscribed;
    const controlEpoch = this.controlEpoch;
    if (this.armed !== id) {
      const off = this.armed !== undefined; // on with the redirect that died, or not known
      this.armed = null; // until both replies are in
      if (off) await this.control.call('CLIENT', 'TRACKING', 'OFF');
      const on = ['ON', 'REDIRECT', String(id), 'BCAST', 'PREFIX', this.prefix, 'NOLOOP'];
      await this.control.call('CLIENT', 'TRACKING', ...on);
      if (controlEpoch !== this.controlEpoch) return; // that connection closed: the next one's `ready` tracks again
      this.armed = id;
    }
    // The redirect reconnected meanwhile: tracking points at a dead id; the redirect's `ready` tracks again.
    if (subEpoch !== this.subEpoch || this.closed) return;
    if (this.missed) {
      this.missed = false;
      this.listener.resynced();
    }
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
