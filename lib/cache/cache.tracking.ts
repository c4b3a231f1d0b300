import { Cluster } from 'ioredis';
import type { RedisConnection } from '../connection/redis-connection.js';
import { nodeKey } from '../common/cluster-masters.js';
import { MasterTracking, type TrackingListener } from './cache.tracking-master.js';

export {
  TRACKING_CHANNEL,
  TRACKING_CONNECTION_NAME,
  TRACKING_CONTROL_NAME,
  type TrackingListener,
} from './cache.tracking-master.js';

/**
 * The L1's invalidations from Redis itself (CLIENT TRACKING, Redis >= 6): one MasterTracking per master of the
 * cache's connection (the one client of a single server or Sentinel setup; every master of a cluster, followed as
 * masters join and leave). See docs/cache.md, "L1 invalidation".
 *
 * Keyed by the master's address, not by the cluster's connection to it: a cluster drops a node connection that closed
 * (CLIENT KILL, a restart, `timeout`) and opens another to the same master; the tracking of that master follows it
 * (MasterTracking.rebind: one CLIENT TRACKING ON, one L1 clear) instead of being closed (an L1 clear) and started
 * again with a new redirect connection (its connect, CLIENT ID, SUBSCRIBE, OFF + ON, and a second clear).
 */
export class CacheTracking {
  /** By master address (`host:port`). */
  private readonly masters = new Map<string, MasterTracking>();
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
    for (const [address, m] of this.masters) out[address] = m.redirect;
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

  /**
   * A tracking per current master: new masters tracked (awaited only at start), a replaced connection followed,
   * departed masters closed. A master whose connection ended but that still holds slots is kept (not live) for the
   * connection the cluster opens next.
   */
  private async sync(initial = false): Promise<void> {
    if (this.closed) return;
    const client = this.connection.client;
    const now = new Map((client instanceof Cluster ? client.nodes('master') : [client]).map((n) => [nodeKey(n), n]));
    const owners = client instanceof Cluster ? new Set(client.slots.map((o) => o?.[0])) : undefined;
    if (owners) this.expected = [...owners].filter((o) => o !== undefined).length;
    const gone = [...this.masters.keys()].filter((a) => !now.has(a) && !owners?.has(a));
    for (const a of gone) {
      const m = this.masters.get(a);
      this.masters.delete(a);
      await m?.close();
    }
    // Writes on a departed master's keys went unseen since its connection closed.
    if (gone.length > 0) this.listener.resynced();
    const started: Promise<void>[] = [];
    for (const [address, node] of now) {
      const known = this.masters.get(address);
      if (known) {
        known.rebind(node);
        continue;
      }
      const m = new MasterTracking(this.connection, node, this.prefix, this.listener);
      this.masters.set(address, m);
      if (initial) started.push(m.start());
      else m.startInBackground();
    }
    await Promise.all(started);
  }
}
