import type { Counter, Histogram, Meter, UpDownCounter } from '@opentelemetry/api';
import type { DiagnosticsPayload } from '../common/diagnostics.js';
import { makeRoom } from '../common/bounded-map.js';

/** Bound on the locks whose hold time is being measured (one entry per held lock; the oldest is dropped past it). */
const HELD_LOCKS_MAX = 10_000;

/** Seconds, as OpenTelemetry's semantic conventions measure durations. */
const seconds = (ms: number) => ms / 1_000;

/**
 * Bucket boundaries for second-valued durations (the semantic conventions' HTTP duration buckets): the SDK's default
 * boundaries (0 … 10000) are made for milliseconds and would put every Redis call in the first bucket.
 */
// The semantic conventions' duration buckets (to 10 s), with 0.5, 1 and 2.5 ms below them: a lock wait or a cache load
// of 5-10 s (waitMs: 10_000 is a documented example) had only the +Inf bucket above 5 s until 2026-12-05.
const DURATION_BUCKETS = [
  0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10,
];
const duration = { unit: 's', advice: { explicitBucketBoundaries: DURATION_BUCKETS } };

/**
 * The toolkit's metrics (docs/observability.md), fed by the diagnostics_channel events and the traced calls.
 * Attribute values are the events' own low-cardinality fields (outcome, policy name, lock kind, command name).
 */
export class RedisToolkitMetrics {
  private readonly cacheRequests: Counter;
  private readonly cacheLoadDuration: Histogram;
  private readonly rateLimitDecisions: Counter;
  private readonly lockWaitDuration: Histogram;
  private readonly lockHeldDuration: Histogram;
  private readonly lockLost: Counter;
  private readonly sessionsActive: UpDownCounter;
  private readonly pubsubMessages: Counter;
  private readonly commandDuration: Histogram;
  /** kind + resource + fencing token of each lock held → when it was acquired (performance.now()). */
  private readonly heldSince = new Map<string, number>();

  constructor(meter: Meter) {
    this.cacheRequests = meter.createCounter('rtk.cache.requests', {
      description:
        'Cache reads (getOrSet and what is built on it) by outcome: hit, miss, stale or grace; rtk.degraded ' +
        '(fail-open) on a miss served without the cache because Redis could not be reached',
      unit: '{request}',
    });
    this.cacheLoadDuration = meter.createHistogram('rtk.cache.load.duration', {
      description: 'Time the cache loader took, by outcome (loaded or failed)',
      ...duration,
    });
    this.rateLimitDecisions = meter.createCounter('rtk.ratelimit.decisions', {
      description:
        'Charging rate-limit decisions, by policy name and outcome (allowed or refused); rtk.degraded (fail-open or ' +
        'insurance) when Redis did not decide',
      unit: '{decision}',
    });
    this.lockWaitDuration = meter.createHistogram('rtk.lock.wait.duration', {
      description: 'Time acquire and tryAcquire took (retries included), by outcome (acquired, busy or failed)',
      ...duration,
    });
    this.lockHeldDuration = meter.createHistogram('rtk.lock.held.duration', {
      description: 'Time a lock was held, from acquisition to release or loss, by kind and outcome',
      ...duration,
    });
    this.lockLost = meter.createCounter('rtk.lock.lost', {
      description: 'Locks lost while held (an extension or release refused, or expiry before an extension)',
      unit: '{lock}',
    });
    this.sessionsActive = meter.createUpDownCounter('rtk.sessions.active', {
      description: 'Sessions created minus sessions destroyed through this process (expirations are not seen)',
      unit: '{session}',
    });
    this.pubsubMessages = meter.createCounter('rtk.pubsub.messages', {
      description: 'Pub/sub messages by direction (out: published, in: received) and outcome',
      unit: '{message}',
    });
    this.commandDuration = meter.createHistogram('rtk.redis.command.duration', {
      description: 'Redis command round trips seen by ioredis, by command name and outcome',
      ...duration,
    });
  }

  /** One diagnostics_channel event (REDIS_TOOLKIT_CHANNELS). */
  event(channel: string, p: DiagnosticsPayload): void {
    switch (channel) {
      case 'rtk:cache:get':
        // rtk.degraded as on the rate-limit decisions: `outcome` stays miss, what hit-ratio queries filter on
        this.cacheRequests.add(
          1,
          p.degraded === undefined
            ? { outcome: p.outcome }
            : { outcome: p.outcome, 'rtk.degraded': p.degraded as string },
        );
        return;
      case 'rtk:cache:load':
        this.cacheLoadDuration.record(seconds(p.durationMs as number), { outcome: p.outcome });
        return;
      case 'rtk:ratelimit:decision': {
        // rtk.degraded (as on the span) only on a decision Redis did not make: `outcome` stays what dashboards filter
        const degraded = p.degraded === undefined ? undefined : { 'rtk.degraded': p.degraded as string };
        for (const policy of p.policies as string[])
          this.rateLimitDecisions.add(1, { policy, outcome: p.outcome, ...degraded });
        return;
      }
      case 'rtk:lock:acquire':
        if (p.outcome === 'acquired') this.held(p);
        return;
      case 'rtk:lock:release':
        this.released(p);
        return;
      case 'rtk:lock:lost':
        this.released(p);
        this.lockLost.add(1, { kind: p.kind as string });
        return;
      case 'rtk:session:create':
        this.sessionsActive.add(1);
        return;
      case 'rtk:session:destroy':
        if (p.outcome === 'destroyed') this.sessionsActive.add(-1);
        return;
      case 'rtk:pubsub:publish':
        this.pubsubMessages.add(1, { direction: 'out', outcome: p.outcome });
        return;
      case 'rtk:pubsub:relay':
      case 'rtk:pubsub:drop':
        this.pubsubMessages.add(1, { direction: 'in', outcome: p.outcome });
        return;
    }
  }

  /** The time one `acquire`/`tryAcquire` took (from its traced call). */
  lockWait(ms: number, outcome: string): void {
    this.lockWaitDuration.record(seconds(ms), { outcome });
  }

  /** One ioredis command (from the `ioredis:command` tracing channel). */
  command(ms: number, command: string, failed: boolean): void {
    this.commandDuration.record(seconds(ms), { 'db.operation.name': command, outcome: failed ? 'error' : 'ok' });
  }

  private held(p: DiagnosticsPayload): void {
    makeRoom(this.heldSince, HELD_LOCKS_MAX);
    this.heldSince.set(heldKey(p), performance.now());
  }

  private released(p: DiagnosticsPayload): void {
    const key = heldKey(p);
    const since = this.heldSince.get(key);
    if (since === undefined) return;
    this.heldSince.delete(key);
    this.lockHeldDuration.record(seconds(performance.now() - since), { kind: p.kind as string, outcome: p.outcome });
  }
}

const heldKey = (p: DiagnosticsPayload) => `${p.kind as string}\0${p.resource as string}\0${String(p.fencingToken)}`;
