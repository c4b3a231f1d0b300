import { scanKeys } from '../common/bulk-keys.js';
import { FEATURES, KeyBuilder } from '../common/keys.js';
import type { RedisConnection } from '../connection/redis-connection.js';
import { parseInfo } from '../connection/redis-info.js';
import type { RedisSample } from './dashboard.frame.js';

/** SCAN pages (of 500 keys) the session count may read per frame: the count spreads over frames, never blocks one. */
const SESSION_PAGES_PER_FRAME = 4;
/** A new session count starts this many frames after the previous one finished. */
const SESSION_COUNT_EVERY = 10;

/**
 * What the dashboard reads from Redis itself, done by one instance at a time (the sampling instance, see
 * DashboardPublisher): PING + INFO once per frame, and the number of stored sessions by a SCAN spread over frames
 * (at most SESSION_PAGES_PER_FRAME pages each, one pass every SESSION_COUNT_EVERY frames). Every call is bounded by
 * the connection's commandTimeout; a failure leaves the previous reading out (null), it is never retried in a loop.
 */
export class DashboardRedisSampler {
  private scan: AsyncGenerator<string[]> | undefined;
  private counted = 0;
  private framesSinceCount = SESSION_COUNT_EVERY;
  private activeSessions: number | null = null;
  private readonly sessionPattern: string;
  private readonly sessionHead: string;

  /**
   * `connection`: the one PING and INFO go to (the default connection); `sessions`: the one sessions are stored on
   * (they differ with named connections).
   */
  constructor(
    private readonly connection: RedisConnection,
    private readonly sessions: RedisConnection,
    keys: KeyBuilder,
  ) {
    this.sessionHead = keys.tagHead(FEATURES.session);
    this.sessionPattern = `${KeyBuilder.globEscape(this.sessionHead)}*`;
  }

  /** Forgets a count in progress (this instance stopped sampling: another one counts now). */
  reset(): void {
    void this.scan?.return(undefined).catch(() => undefined);
    this.scan = undefined;
    this.activeSessions = null;
    this.framesSinceCount = SESSION_COUNT_EVERY;
  }

  async sample(): Promise<{ redis: RedisSample | null; activeSessions: number | null }> {
    const [redis] = await Promise.all([this.redis().catch(() => null), this.countSessions().catch(() => this.reset())]);
    return { redis, activeSessions: this.activeSessions };
  }

  private async redis(): Promise<RedisSample> {
    const masters = await this.connection.masters();
    const replies = await Promise.all(
      masters.map(async (node) => {
        const started = performance.now();
        await node.ping();
        const latencyMs = performance.now() - started;
        return { latencyMs, info: parseInfo(await node.info()) };
      }),
    );
    const sum = (field: string) => replies.reduce((s, r) => s + Number(r.info[field] ?? 0), 0);
    return {
      latencyMs: Math.round(Math.max(...replies.map((r) => r.latencyMs)) * 100) / 100,
      usedMemory: sum('used_memory'),
      opsPerSec: sum('instantaneous_ops_per_sec'),
      clients: sum('connected_clients'),
    };
  }

  /** One step of the running count (or starts one when due). Session records are `<prefix>sess:{<id>}`. */
  private async countSessions(): Promise<void> {
    if (!this.scan) {
      if (++this.framesSinceCount < SESSION_COUNT_EVERY) return;
      this.scan = scanKeys(this.sessions.client, this.sessionPattern);
      this.counted = 0;
    }
    for (let page = 0; page < SESSION_PAGES_PER_FRAME; page++) {
      const next = await this.scan.next();
      if (next.done) {
        this.activeSessions = this.counted;
        this.scan = undefined;
        this.framesSinceCount = 0;
        return;
      }
      for (const key of next.value) if (key.endsWith('}')) this.counted++;
    }
  }
}
