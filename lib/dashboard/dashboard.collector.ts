import diagnosticsChannel from 'node:diagnostics_channel';
import type { CacheService } from '../cache/cache.service.js';
import { type DiagnosticsPayload, REDIS_TOOLKIT_CHANNELS } from '../common/diagnostics.js';
import type { LockService } from '../lock/lock.service.js';
import { type DashboardFrame, MAX_NAME_LENGTH, MAX_POLICIES, type RedisSample, topCounts } from './dashboard.frame.js';

/** Distinct tag names counted per interval; more are counted under OTHER_TAGS (a frame stays small and bounded). */
const MAX_TAG_NAMES = 1_000;
const OTHER_TAGS = '(other)';
const OTHER_POLICIES = '(other)';

type Channel = keyof typeof REDIS_TOOLKIT_CHANNELS;

/**
 * Counts what this instance did during one interval: from the services' own counters (`CacheService.stats()`,
 * `LockService.activity()`, read once per frame) and from the toolkit's diagnostics channels, which it subscribes to
 * only while the dashboard runs. `rtk:cache:get` is not subscribed to: the hit and miss counts come from `stats()`,
 * so the cache read path publishes nothing for the dashboard.
 */
export class DashboardCollector {
  private loads = 0;
  private loadMs = 0;
  private loadMaxMs = 0;
  private readonly tags = new Map<string, number>();
  private readonly policies = new Map<string, [number, number]>();
  /** Per policy: `[failedOpen, insurance]` among its decisions (DashboardFrame.rateLimitDegraded). */
  private readonly degraded = new Map<string, [number, number]>();
  private acquired = 0;
  private busy = 0;
  private lost = 0;
  private created = 0;
  private destroyed = 0;
  private published = 0;
  private publishFailed = 0;
  /** Frames this instance published itself, by outcome: not counted as the app's pub/sub traffic. */
  private ownSent = 0;
  private ownFailed = 0;
  private lastCache = { hits: 0, staleHits: 0, misses: 0, failedOpen: 0 };
  private lastAt: number;
  /** performance.now() at the previous frame (or the start): the interval's length, whatever the wall clock does. */
  private lastTick: number;
  private readonly subscriptions: [string, (message: unknown) => void][] = [];

  constructor(
    private readonly cache: Pick<CacheService, 'stats'>,
    private readonly locks: Pick<LockService, 'activity'>,
    now = Date.now(),
  ) {
    const { hits, staleHits, misses, failedOpen } = cache.stats();
    this.lastCache = { hits, staleHits, misses, failedOpen };
    this.lastAt = now;
    this.lastTick = performance.now();
  }

  start(): void {
    this.on('cacheLoad', (p) => {
      const ms = typeof p.durationMs === 'number' ? p.durationMs : 0;
      this.loads++;
      this.loadMs += ms;
      if (ms > this.loadMaxMs) this.loadMaxMs = ms;
    });
    this.on('cacheInvalidate', (p) => {
      if (p.outcome === 'failed' || !Array.isArray(p.tagNames)) return;
      for (const full of p.tagNames) {
        if (typeof full !== 'string') continue;
        // Cut as every instance's frame check wants it (isDashboardFrame): a longer name would drop the whole frame.
        const tag = full.slice(0, MAX_NAME_LENGTH);
        const name = this.tags.has(tag) || this.tags.size < MAX_TAG_NAMES ? tag : OTHER_TAGS;
        this.tags.set(name, (this.tags.get(name) ?? 0) + 1);
      }
    });
    this.on('rateLimitDecision', (p) => {
      const names = Array.isArray(p.policies) ? p.policies : ['default'];
      const refused = p.outcome === 'refused' ? 1 : 0;
      // Redis could not decide: allowed without counting (fail-open), or decided in process (insurance)
      const degraded = p.degraded === 'fail-open' ? 0 : p.degraded === 'insurance' ? 1 : undefined;
      for (const full of names) {
        const policy = typeof full === 'string' ? full.slice(0, MAX_NAME_LENGTH) : undefined;
        const name =
          policy !== undefined && (this.policies.has(policy) || this.policies.size < MAX_POLICIES - 1)
            ? policy
            : OTHER_POLICIES;
        const counts = this.policies.get(name) ?? [0, 0];
        counts[refused]++;
        this.policies.set(name, counts);
        if (degraded === undefined) continue;
        const degradedCounts = this.degraded.get(name) ?? [0, 0];
        degradedCounts[degraded]++;
        this.degraded.set(name, degradedCounts);
      }
    });
    this.on('lockAcquire', (p) => {
      if (p.outcome === 'acquired') this.acquired++;
      else this.busy++;
    });
    this.on('lockLost', () => this.lost++);
    this.on('sessionCreate', () => this.created++);
    this.on('sessionDestroy', (p) => {
      if (p.outcome === 'destroyed') this.destroyed++;
    });
    this.on('pubsubPublish', (p) => {
      if (p.outcome === 'sent') this.published++;
      else this.publishFailed++;
    });
  }

  stop(): void {
    for (const [name, fn] of this.subscriptions.splice(0)) diagnosticsChannel.unsubscribe(name, fn);
  }

  /**
   * One of this instance's own frames was published (`sent`), or failed with the `rtk:pubsub:publish` event of a
   * failure (`failed`: Redis could not be reached): not the app's traffic, taken out of that outcome's count.
   */
  countOwnPublish(outcome: 'sent' | 'failed'): void {
    if (outcome === 'sent') this.ownSent++;
    else this.ownFailed++;
  }

  /**
   * The frame of the interval since the previous call (or the start), and a fresh interval. Its `at` is always after
   * the previous frame's, even when two frames are made in one millisecond or the clock steps back: every instance
   * keeps only a frame newer than that instance's last (DashboardAggregator.add), so an equal `at` lost its counts.
   * Its `ms` is the time since the previous frame on the monotonic clock (`tick`, performance.now()).
   */
  frame(
    instance: string,
    sample: { redis: RedisSample | null; activeSessions: number | null },
    now = Date.now(),
    tick = performance.now(),
  ) {
    const at = Math.max(now, this.lastAt + 1);
    const { hits, staleHits, misses, failedOpen } = this.cache.stats();
    const last = this.lastCache;
    const { held, waiting } = this.locks.activity();
    const frame: DashboardFrame = {
      v: 1,
      instance,
      at,
      // measured on the monotonic clock: with the wall clock stepped back, `at - lastAt` said 1 ms (every rate of the
      // interval × intervalMs on the page), stepped forward as long as the step
      ms: Math.max(1, Math.round(tick - this.lastTick)),
      instances: 1,
      cache: {
        hits: hits - last.hits,
        staleHits: staleHits - last.staleHits,
        misses: misses - last.misses,
        loads: this.loads,
        loadMs: Math.round(this.loadMs * 100) / 100,
        loadMaxMs: Math.round(this.loadMaxMs * 100) / 100,
        failedOpen: failedOpen - last.failedOpen,
      },
      tags: topCounts(this.tags),
      rateLimit: Object.fromEntries(this.policies),
      rateLimitDegraded: Object.fromEntries(this.degraded),
      locks: { held, waiting, acquired: this.acquired, busy: this.busy, lost: this.lost },
      sessions: { active: sample.activeSessions, created: this.created, destroyed: this.destroyed },
      pubsub: {
        published: Math.max(0, this.published - this.ownSent),
        failed: Math.max(0, this.publishFailed - this.ownFailed),
      },
      redis: sample.redis,
    };
    this.lastCache = { hits, staleHits, misses, failedOpen };
    this.lastAt = at;
    this.lastTick = tick;
    this.loads = this.loadMs = this.loadMaxMs = 0;
    this.tags.clear();
    this.policies.clear();
    this.degraded.clear();
    this.acquired = this.busy = this.lost = this.created = this.destroyed = 0;
    this.published = this.publishFailed = this.ownSent = this.ownFailed = 0;
    return frame;
  }

  private on(channel: Channel, handle: (payload: DiagnosticsPayload) => void): void {
    const name = REDIS_TOOLKIT_CHANNELS[channel];
    const fn = (message: unknown) => handle(message as DiagnosticsPayload);
    diagnosticsChannel.subscribe(name, fn);
    this.subscriptions.push([name, fn]);
  }
}
