import { Inject, Injectable, Logger, type OnModuleDestroy, type OnModuleInit } from '@nestjs/common';
import { CacheService } from '../cache/cache.service.js';
import { FEATURES, KeyBuilder } from '../common/keys.js';
import { RedisUnavailableError } from '../common/errors.js';
import { ThrottledWarning } from '../common/throttled-logger.js';
import { DEFAULT_CONNECTION_NAME } from '../connection/connection.options.js';
import { RedisConnections } from '../connection/redis-connections.js';
import { LockService } from '../lock/lock.service.js';
import { PubSubService } from '../pubsub/pubsub.service.js';
import type { Unsubscribe } from '../pubsub/pubsub.types.js';
import { DashboardAggregator, type DashboardSnapshot } from './dashboard.aggregator.js';
import { DashboardCollector } from './dashboard.collector.js';
import { type DashboardFrame, readDashboardFrame } from './dashboard.frame.js';
import { DASHBOARD_OPTIONS, type ResolvedDashboardOptions } from './dashboard.options.js';
import { DashboardRedisSampler } from './dashboard.redis-sampler.js';

/** The internal pub/sub channel every instance publishes its frames on (`__rtk:dash:frames`). */
export const DASHBOARD_CHANNEL = KeyBuilder.internalChannel(FEATURES.dashboard, 'frames');

/** What the page's stream carries: a frame of one instance, or the sum of an interval. */
export type DashboardEvent = { type: 'frame'; data: DashboardFrame } | { type: 'sum'; data: DashboardFrame };

/** Pages connected at once to one instance; more are refused (503) rather than each costing a listener. */
export const MAX_VIEWERS = 50;

/**
 * Runs the dashboard of this instance: every `intervalMs` it builds its frame (DashboardCollector), publishes it on
 * DASHBOARD_CHANNEL, and sums the latest frames of every live instance heard there; connected pages get each as an
 * event. Exists only when RedisToolkitDashboardModule is imported: without it nothing subscribes to the diagnostics
 * channels and no timer runs.
 */
@Injectable()
export class DashboardService implements OnModuleInit, OnModuleDestroy {
  private readonly logger = new Logger('RedisToolkit:Dashboard');
  private readonly warning = new ThrottledWarning(this.logger);
  /** Its own throttle: a stream of foreign messages must not hide a failed publish or subscribe. */
  private readonly dropWarning = new ThrottledWarning(this.logger);
  private readonly collector: DashboardCollector;
  private readonly sampler: DashboardRedisSampler;
  private readonly aggregator: DashboardAggregator;
  /** Each connected page: its event callback, and what ends its stream when the app shuts down. */
  private readonly viewers = new Map<(event: DashboardEvent) => void, () => void>();
  private unsubscribe: Unsubscribe | undefined;
  private subscribing: Promise<void> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private sampling = false;
  private closed = false;

  constructor(
    @Inject(DASHBOARD_OPTIONS) readonly options: ResolvedDashboardOptions,
    cache: CacheService,
    locks: LockService,
    private readonly pubsub: PubSubService,
    connections: RedisConnections,
    keys: KeyBuilder,
  ) {
    this.collector = new DashboardCollector(cache, locks);
    this.sampler = new DashboardRedisSampler(
      connections.get(DEFAULT_CONNECTION_NAME),
      connections.forFeature('session'),
      keys,
    );
    this.aggregator = new DashboardAggregator(options, options.instanceId, this.logger);
  }

  async onModuleInit(): Promise<void> {
    this.collector.start();
    await this.subscribe();
    this.schedule();
  }

  async onModuleDestroy(): Promise<void> {
    this.closed = true;
    clearTimeout(this.timer);
    this.collector.stop();
    this.sampler.reset();
    // counts of suppressed warnings now, through this app's logger (a timer left would use whichever Nest has then)
    this.aggregator.close();
    this.warning.close();
    this.dropWarning.close();
    for (const end of this.viewers.values()) end();
    this.viewers.clear();
    const unsubscribe = this.unsubscribe;
    this.unsubscribe = undefined;
    await unsubscribe?.().catch(() => undefined);
  }

  /** This instance's id (as shown on the page). */
  get instanceId(): string {
    return this.options.instanceId;
  }

  snapshot(): DashboardSnapshot {
    return this.aggregator.snapshot();
  }

  /**
   * Calls `viewer` with every event until the returned function is called, and `end` when the app shuts down (so an
   * open stream does not hold the server open); undefined when MAX_VIEWERS are on.
   */
  watch(viewer: (event: DashboardEvent) => void, end: () => void = () => undefined): (() => void) | undefined {
    if (this.viewers.size >= MAX_VIEWERS || this.closed) return undefined;
    this.viewers.set(viewer, end);
    return () => {
      this.viewers.delete(viewer);
    };
  }

  /**
   * Sums the frames of the interval that just ended (every instance's, received since the last tick), then builds
   * and publishes this instance's frame of it (the timer calls it at each interval boundary; tests may too).
   */
  async tick(): Promise<DashboardFrame> {
    const now = Date.now();
    this.aggregator.expire(now);
    this.emit({ type: 'sum', data: this.aggregator.tick(now) });
    const sampling = this.aggregator.isSampling();
    if (!sampling && this.sampling) this.sampler.reset();
    this.sampling = sampling;
    const sample = sampling ? await this.sampler.sample() : { redis: null, activeSessions: null };
    const frame = this.collector.frame(this.instanceId, sample);
    this.receive(frame);
    if (!this.unsubscribe) void this.subscribe();
    try {
      await this.pubsub.publish(DASHBOARD_CHANNEL, frame);
      this.collector.countOwnPublish('sent');
    } catch (err) {
      // Redis unreachable: published as a failed rtk:pubsub:publish, which is not the app's (a reply error may have
      // been published or not, and is left in the count: this warning says whose it was)
      if (err instanceof RedisUnavailableError) this.collector.countOwnPublish('failed');
      this.warning.warn(`could not publish the dashboard frame: ${(err as Error).message}`);
    }
    return frame;
  }

  /**
   * Ticks at the wall-clock multiples of intervalMs, on every instance alike, so that each sum gets one frame of each
   * instance; a slow Redis delays a tick, never overlaps two.
   */
  private schedule(): void {
    if (this.closed) return;
    const interval = this.options.intervalMs;
    this.timer = setTimeout(
      () => {
        this.tick()
          .catch((err: unknown) => this.warning.warn(`a dashboard frame failed: ${(err as Error).message}`))
          .finally(() => this.schedule());
      },
      interval - (Date.now() % interval),
    );
    this.timer.unref();
  }

  private receive(frame: DashboardFrame): void {
    if (this.aggregator.add(frame)) this.emit({ type: 'frame', data: frame });
  }

  private emit(event: DashboardEvent): void {
    for (const viewer of this.viewers.keys()) {
      try {
        viewer(event);
      } catch (err) {
        this.warning.warn(`a dashboard viewer failed: ${(err as Error).message}`);
      }
    }
  }

  private subscribe(): Promise<void> {
    this.subscribing ??= this.pubsub
      .subscribe(DASHBOARD_CHANNEL, (payload) => {
        // rebuilt from its known fields: what else came with it is not kept (see readDashboardFrame)
        const frame = readDashboardFrame(payload);
        if (!frame) {
          this.dropWarning.warn(`dropped a message on ${DASHBOARD_CHANNEL} that is not a dashboard frame`);
          return;
        }
        if (frame.instance !== this.instanceId) this.receive(frame);
      })
      .then(
        (unsubscribe) => {
          if (this.closed) void unsubscribe().catch(() => undefined);
          else this.unsubscribe = unsubscribe;
        },
        (err: unknown) => {
          // Retried at the next frame; until then this instance shows only its own frames.
          this.warning.warn(`could not subscribe to ${DASHBOARD_CHANNEL}: ${(err as Error).message}`);
        },
      )
      .finally(() => {
        this.subscribing = undefined;
      });
    return this.subscribing;
  }
}
