import diagnosticsChannel from 'node:diagnostics_channel';
import {
  type Attributes,
  type Context,
  context,
  createNoopMeter,
  type Meter,
  type MeterProvider,
  metrics,
  type Span,
  SpanKind,
  SpanStatusCode,
  type Tracer,
  type TracerProvider,
  trace,
} from '@opentelemetry/api';
import {
  type DiagnosticsPayload,
  REDIS_TOOLKIT_CHANNELS,
  REDIS_TOOLKIT_TRACING_CHANNELS,
  type TracingContext,
} from '../common/diagnostics.js';
import { OptionProblems } from '../common/option-checks.js';
import { otelContextStore } from './otel.context-store.js';
import { RedisToolkitMetrics } from './otel.metrics.js';

/** The instrumentation scope of every span and metric (the package's name and version). */
export const INSTRUMENTATION_NAME = 'nestjs-redis-toolkit';
export const INSTRUMENTATION_VERSION = '0.1.0';

export interface RedisToolkitInstrumentationConfig {
  /** Subscribe at construction (as OpenTelemetry instrumentations do). Default true. */
  enabled?: boolean;
  /** Spans for the traced operations. Default true. */
  traces?: boolean;
  /** The metrics of docs/observability.md. Default true. */
  metrics?: boolean;
  /**
   * `rtk.redis.command.duration` from ioredis's own `ioredis:command` tracing channel (every ioredis client of the
   * process, not only the toolkit's). Default true.
   */
  commandDuration?: boolean;
}

/** What ioredis 6 puts in the context of `tracing:ioredis:command:*` (lib/tracing in ioredis). */
interface IoredisCommandContext {
  command?: string;
  error?: unknown;
}

type Handlers = Parameters<diagnosticsChannel.TracingChannel<object, object>['subscribe']>[0];

/**
 * Turns the toolkit's diagnostics_channel events and traced calls into OpenTelemetry spans and metrics.
 *
 * ```ts
 * const instrumentation = new RedisToolkitInstrumentation();   // the global providers, even registered later
 * ```
 * or hand it to `registerInstrumentations({ instrumentations: [...] })` of `@opentelemetry/instrumentation`: it has
 * the shape of an OpenTelemetry `Instrumentation` (enable, disable, setTracerProvider, setMeterProvider, …).
 *
 * Spans: one per traced call (`rtk.cache.get`, `rtk.lock.acquire`, …), made the active context while the call runs,
 * so the spans of its Redis commands (@opentelemetry/instrumentation-ioredis) nest under it. With no instrumentation
 * the toolkit publishes nothing and builds no payload.
 */
export class RedisToolkitInstrumentation {
  readonly instrumentationName = INSTRUMENTATION_NAME;
  readonly instrumentationVersion = INSTRUMENTATION_VERSION;
  private config: Required<RedisToolkitInstrumentationConfig>;
  private tracer: Tracer;
  private metrics: RedisToolkitMetrics;
  /**
   * No MeterProvider was given and the global one was OpenTelemetry's no-op at the last look (the SDK not registered
   * yet). The tracer API proxies a provider registered later; the metrics API does not (instruments of the no-op
   * meter stay no-op), so each metric event looks again until the global provider appears.
   */
  private awaitingGlobalMeter = false;
  private enabled = false;
  private readonly unsubscribes: (() => void)[] = [];
  private readonly spans = new WeakMap<object, Span>();
  private readonly startedAt = new WeakMap<object, number>();

  constructor(config: RedisToolkitInstrumentationConfig = {}) {
    this.config = withDefaults(config);
    this.tracer = trace.getTracer(INSTRUMENTATION_NAME, INSTRUMENTATION_VERSION);
    this.metrics = new RedisToolkitMetrics(this.globalMeter());
    if (this.config.enabled) this.enable();
  }

  setTracerProvider(provider: TracerProvider): void {
    this.tracer = provider.getTracer(INSTRUMENTATION_NAME, INSTRUMENTATION_VERSION);
  }

  setMeterProvider(provider: MeterProvider): void {
    this.awaitingGlobalMeter = false;
    this.metrics = new RedisToolkitMetrics(provider.getMeter(INSTRUMENTATION_NAME, INSTRUMENTATION_VERSION));
  }

  /** The global MeterProvider's meter; notes whether it is still the no-op one. */
  private globalMeter(): Meter {
    const meter = metrics.getMeter(INSTRUMENTATION_NAME, INSTRUMENTATION_VERSION);
    this.awaitingGlobalMeter = meter === createNoopMeter();
    return meter;
  }

  /** The metrics to record into: switched to the global provider's once it is registered (see awaitingGlobalMeter). */
  private meters(): RedisToolkitMetrics {
    if (this.awaitingGlobalMeter) {
      const meter = this.globalMeter();
      if (!this.awaitingGlobalMeter) this.metrics = new RedisToolkitMetrics(meter);
    }
    return this.metrics;
  }

  getConfig(): RedisToolkitInstrumentationConfig {
    return { ...this.config };
  }

  /** Takes effect at the next enable() (subscriptions are made there). */
  setConfig(config: RedisToolkitInstrumentationConfig): void {
    this.config = withDefaults(config);
  }

  /** Subscribes to the toolkit's channels (idempotent). */
  enable(): void {
    if (this.enabled) return;
    this.enabled = true;
    if (this.config.metrics) {
      for (const name of Object.values(REDIS_TOOLKIT_CHANNELS)) {
        const onMessage = (message: unknown) => this.meters().event(name, message as DiagnosticsPayload);
        diagnosticsChannel.subscribe(name, onMessage);
        this.unsubscribes.push(() => diagnosticsChannel.unsubscribe(name, onMessage));
      }
      if (this.config.commandDuration) this.subscribeCommands();
    }
    // Without spans only lock acquisition needs its traced call (rtk.lock.wait.duration): the other operations then
    // stay on their untraced path.
    for (const name of Object.values(REDIS_TOOLKIT_TRACING_CHANNELS)) {
      const waitMetric = this.config.metrics && name === REDIS_TOOLKIT_TRACING_CHANNELS.lockAcquire;
      if (this.config.traces || waitMetric) this.subscribeTraced(name);
    }
  }

  /** Unsubscribes from every channel: the toolkit is back to publishing nothing. */
  disable(): void {
    if (!this.enabled) return;
    this.enabled = false;
    for (const unsubscribe of this.unsubscribes.splice(0)) unsubscribe();
  }

  private subscribeTraced(name: string): void {
    const channel = diagnosticsChannel.tracingChannel<Context, TracingContext>(name);
    if (this.config.traces) {
      // The span is started in the store's transform (before `start` is published) and made the active context for
      // the call through OpenTelemetry's context manager (otel.context-store.ts: how each Node enters a bound store).
      const bound = otelContextStore();
      channel.start.bindStore(bound, (message) => this.startSpan(message));
      this.unsubscribes.push(() => channel.start.unbindStore(bound));
    }
    const handlers: Handlers = {
      start: (message) => this.startedAt.set(message, performance.now()),
      end: (message) => {
        // an error before `end` is a synchronous throw: no asyncEnd follows
        if ((message as TracingContext).error !== undefined) this.finish(message as TracingContext);
      },
      asyncStart: () => undefined,
      asyncEnd: (message) => this.finish(message as TracingContext),
      error: () => undefined,
    };
    channel.subscribe(handlers);
    this.unsubscribes.push(() => channel.unsubscribe(handlers));
  }

  private startSpan(message: TracingContext): Context {
    const parent = context.active();
    const span = this.tracer.startSpan(
      `rtk.${message.feature}.${message.operation}`,
      { kind: SpanKind.INTERNAL, attributes: attributesOf(message) },
      parent,
    );
    this.spans.set(message, span);
    return trace.setSpan(parent, span);
  }

  private finish(message: TracingContext): void {
    const started = this.startedAt.get(message);
    this.startedAt.delete(message);
    if (this.config.metrics && started !== undefined && message.feature === 'lock' && message.operation === 'acquire') {
      this.meters().lockWait(performance.now() - started, message.outcome ?? 'failed');
    }
    const span = this.spans.get(message);
    if (!span) return;
    this.spans.delete(message);
    span.setAttributes(attributesOf(message));
    if (message.error !== undefined) {
      const err = message.error instanceof Error ? message.error : new Error(String(message.error));
      span.recordException(err);
      span.setStatus({ code: SpanStatusCode.ERROR, message: err.message });
    }
    span.end();
  }

  private subscribeCommands(): void {
    const channel = diagnosticsChannel.tracingChannel<IoredisCommandContext>('ioredis:command');
    const started = new WeakMap<object, number>();
    const done = (message: IoredisCommandContext) => {
      const at = started.get(message);
      if (at === undefined) return;
      started.delete(message);
      this.meters().command(performance.now() - at, message.command ?? 'unknown', message.error !== undefined);
    };
    const handlers: Handlers = {
      start: (message) => started.set(message, performance.now()),
      end: () => undefined,
      asyncStart: () => undefined,
      asyncEnd: (message) => done(message as IoredisCommandContext),
      error: () => undefined,
    };
    channel.subscribe(handlers);
    this.unsubscribes.push(() => channel.unsubscribe(handlers));
  }
}

const CONFIG_KEYS = { enabled: true, traces: true, metrics: true, commandDuration: true } as const;

/**
 * The config with its defaults; InvalidOptionsError for a key that is not one of the four (`trace` kept tracing on)
 * or a value that is not a boolean (`enabled: 'false'` subscribed).
 */
function withDefaults(config: RedisToolkitInstrumentationConfig = {}): Required<RedisToolkitInstrumentationConfig> {
  const problems = new OptionProblems('RedisToolkitInstrumentation');
  if (problems.object('config', config)) {
    problems.unknownKeys('', config, CONFIG_KEYS);
    for (const key of Object.keys(CONFIG_KEYS) as (keyof typeof CONFIG_KEYS)[]) problems.boolean(key, config[key]);
  }
  problems.throwIfAny();
  return {
    enabled: config.enabled ?? true,
    traces: config.traces ?? true,
    metrics: config.metrics ?? true,
    commandDuration: config.commandDuration ?? true,
  };
}

/** Context fields → span attributes `rtk.<field>` (`rtk.feature`, `rtk.outcome`, `rtk.fencing_token`, …). */
function attributesOf(message: TracingContext): Attributes {
  const attributes: Attributes = {};
  for (const [field, value] of Object.entries(message)) {
    if (field === 'error') continue;
    const key = `rtk.${field.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`)}`;
    if (typeof value === 'string' || typeof value === 'number' || typeof value === 'boolean') attributes[key] = value;
    else if (Array.isArray(value) && value.every((v) => typeof v === 'string')) attributes[key] = value;
  }
  return attributes;
}
