/**
 * RedisToolkitInstrumentation built before the OpenTelemetry SDK registers its global providers (an `otel.ts` imported
 * first, a NodeSDK started later, or started in a bootstrap step that runs after the instrumentation's module):
 * OpenTelemetry's tracer API proxies a late provider, its metrics API does not (a meter taken from the no-op provider
 * stays no-op), so the instrumentation must pick up the global MeterProvider once it appears.
 */
import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import { context, metrics, trace } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import {
  AggregationTemporality,
  InMemoryMetricExporter,
  MeterProvider,
  type MetricData,
  PeriodicExportingMetricReader,
} from '@opentelemetry/sdk-metrics';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { CacheService, LockService } from '../../lib/index.js';
import { RedisToolkitInstrumentation } from '../../lib/otel/index.js';
import { points } from '../support/observability.js';
import { closeToolkitApps, createToolkitApp } from '../support/toolkit-app.js';

context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());

interface Sdk {
  readonly reader: PeriodicExportingMetricReader;
  readonly exporter: InMemoryMetricExporter;
  readonly provider: MeterProvider;
}

function meterSdk(): Sdk {
  const exporter = new InMemoryMetricExporter(AggregationTemporality.CUMULATIVE);
  const reader = new PeriodicExportingMetricReader({ exporter, exportIntervalMillis: 3_600_000 });
  return { reader, exporter, provider: new MeterProvider({ readers: [reader] }) };
}

async function collected(sdk: Sdk): Promise<Map<string, MetricData>> {
  await sdk.reader.forceFlush();
  const byName = new Map<string, MetricData>();
  for (const scope of sdk.exporter.getMetrics().at(-1)?.scopeMetrics ?? [])
    for (const m of scope.metrics) byName.set(m.descriptor.name, m);
  return byName;
}

const total = (metric: MetricData | undefined) => Object.values(points(metric)).reduce((n, v) => n + v, 0);

let instrumentation: RedisToolkitInstrumentation | undefined;
const sdks: Sdk[] = [];

afterEach(async () => {
  instrumentation?.disable();
  instrumentation = undefined;
  await closeToolkitApps();
  metrics.disable();
  trace.disable();
  for (const sdk of sdks.splice(0)) await sdk.reader.shutdown();
});
afterAll(() => {
  context.disable();
});

const app = () => createToolkitApp({ keyPrefix: `rtk-otel-late-${randomBytes(4).toString('hex')}:` });

describe('RedisToolkitInstrumentation made before the SDK registers its global providers', () => {
  it('records its metrics into the MeterProvider registered later, as it sends its spans to the later TracerProvider', async () => {
    instrumentation = new RedisToolkitInstrumentation(); // no global provider yet
    // ...the SDK starts afterwards
    const sdk = meterSdk();
    sdks.push(sdk);
    const spans = new InMemorySpanExporter();
    expect(metrics.setGlobalMeterProvider(sdk.provider)).toBe(true);
    expect(
      trace.setGlobalTracerProvider(new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(spans)] })),
    ).toBe(true);

    const toolkit = await app();
    const cache = toolkit.get(CacheService);
    for (let i = 0; i < 3; i++) await cache.getOrSet('late', async () => 1);
    const lock = await toolkit.get(LockService).acquire('late-res', { ttl: 5_000 });
    await lock.release();

    expect(spans.getFinishedSpans().filter((s) => s.name === 'rtk.cache.get')).toHaveLength(3);
    const m = await collected(sdk);
    // before: an empty map (every instrument came from the no-op meter)
    expect(points(m.get('rtk.cache.requests'))).toEqual({ 'outcome=hit': 2, 'outcome=miss': 1 });
    expect(points(m.get('rtk.lock.wait.duration'))).toEqual({ 'outcome=acquired': 1 });
    expect(points(m.get('rtk.lock.held.duration'))).toEqual({ 'kind=lock,outcome=released': 1 });
    expect(total(m.get('rtk.redis.command.duration'))).toBeGreaterThan(3);
  });

  it('a provider given with setMeterProvider keeps every metric when a global one is registered later', async () => {
    instrumentation = new RedisToolkitInstrumentation({ enabled: false });
    const mine = meterSdk();
    const global = meterSdk();
    sdks.push(mine, global);
    instrumentation.setMeterProvider(mine.provider);
    instrumentation.enable();
    metrics.setGlobalMeterProvider(global.provider);

    const cache = (await app()).get(CacheService);
    for (let i = 0; i < 2; i++) await cache.getOrSet('mine', async () => 1);

    expect(points((await collected(mine)).get('rtk.cache.requests'))).toEqual({ 'outcome=hit': 1, 'outcome=miss': 1 });
    expect((await collected(global)).has('rtk.cache.requests')).toBe(false);
  });

  it('the global MeterProvider registered first is used at once (the documented order)', async () => {
    const sdk = meterSdk();
    sdks.push(sdk);
    metrics.setGlobalMeterProvider(sdk.provider);
    instrumentation = new RedisToolkitInstrumentation({ traces: false });

    const cache = (await app()).get(CacheService);
    for (let i = 0; i < 2; i++) await cache.getOrSet('first', async () => 1);

    expect(points((await collected(sdk)).get('rtk.cache.requests'))).toEqual({ 'outcome=hit': 1, 'outcome=miss': 1 });
  });
});
