// `npm run bench:observability` (and part of `npm run bench`): what the toolkit's instrumentation costs on the two
// hottest paths, a cache hit (L1, in process) and a rate-limit decision (one Lua call), in three modes measured
// interleaved in one run: `off` (nothing ever subscribed: today's path), `no listeners` (the OTel instrumentation
// enabled once then disabled: the channels went active and back), `OTel on` (RedisToolkitInstrumentation enabled
// with an SDK MeterProvider and a TracerProvider: metrics aggregated, one span per call, nothing exported), and
// `OTel metrics` (the same with `traces: false`).
import 'reflect-metadata';
import { NestFactory } from '@nestjs/core';
import { context } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import {
  AggregationTemporality,
  InMemoryMetricExporter,
  MeterProvider,
  PeriodicExportingMetricReader,
} from '@opentelemetry/sdk-metrics';
import { BasicTracerProvider } from '@opentelemetry/sdk-trace-base';
import { CacheService, RateLimitService, RedisToolkitModule } from '../lib/index.js';
import { RedisToolkitInstrumentation } from '../lib/otel/index.js';
import { standaloneRedis } from './support/load-profile.js';
import { type BenchRow, interleaved, type MeasureOptions, printTable, saveResults } from './support/measure.js';
import { runBench } from './support/run-bench.js';

const ROUND: MeasureOptions = { concurrency: 50, durationMs: 500, warmupMs: 100, rounds: 1 };
const ROUNDS = 5;
const MODES = ['off', 'no listeners', 'OTel metrics', 'OTel on'] as const;
type Mode = (typeof MODES)[number];
const LIBRARY: Record<Mode, string> = {
  off: 'nestjs-redis-toolkit',
  'no listeners': 'toolkit, instrumentation disabled',
  'OTel metrics': 'toolkit + OTel (metrics only)',
  'OTel on': 'toolkit + OTel (metrics, spans)',
};

async function main(): Promise<void> {
  const redis = await standaloneRedis();
  const app = await NestFactory.createApplicationContext(
    RedisToolkitModule.forRoot({
      connection: { url: redis.url },
      keyPrefix: 'bench:obs:',
      commandTimeout: 5_000,
      cache: { defaultTtl: 600_000, l1: { max: 10_000, ttl: 600_000 } },
    }),
    { logger: ['error'] },
  );
  const cache = app.get(CacheService);
  const limits = app.get(RateLimitService);
  for (let i = 0; i < 100; i++) await cache.getOrSet(`k${i}`, async () => ({ id: i, name: `item ${i}` }));

  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  const reader = new PeriodicExportingMetricReader({
    exporter: new InMemoryMetricExporter(AggregationTemporality.CUMULATIVE),
    exportIntervalMillis: 3_600_000,
  });
  const meterProvider = new MeterProvider({ readers: [reader] });
  const instrumentation = new RedisToolkitInstrumentation({ enabled: false });
  instrumentation.setMeterProvider(meterProvider);
  instrumentation.setTracerProvider(new BasicTracerProvider());
  const metricsOnly = new RedisToolkitInstrumentation({ enabled: false, traces: false });
  metricsOnly.setMeterProvider(meterProvider);
  let current: Mode = 'off';
  let everEnabled = false;
  const to = (mode: Mode): void => {
    if (mode === current) return;
    instrumentation.disable();
    metricsOnly.disable();
    if (mode === 'OTel on') instrumentation.enable();
    if (mode === 'OTel metrics') metricsOnly.enable();
    everEnabled ||= mode === 'OTel on' || mode === 'OTel metrics';
    current = mode;
  };
  // `off` runs first in each pass, so its first round comes before anything ever subscribed; its later rounds follow
  // a disable(), which in Node puts each channel back in its inactive state (the same hasSubscribers-false path).
  let n = 0;
  const hit = () => cache.getOrSet(`k${n++ % 100}`, async () => undefined);
  const policy = { limit: 10_000, ttl: 60_000 }; // the sliding window's default maximum; never reached here
  const decide = () => limits.consume(`client-${n++ % 1_000}`, policy);
  const ops = (op: () => Promise<unknown>) =>
    Object.fromEntries(
      MODES.map((mode) => [
        mode,
        () => {
          if (mode === 'no listeners' && !everEnabled) {
            to('OTel on');
            to('no listeners');
          }
          to(mode);
          return op();
        },
      ]),
    );

  const rows: BenchRow[] = [];
  for (const [operation, op] of [
    ['cache hit (L1)', hit],
    ['rate-limit decision', decide],
  ] as const) {
    const results = await interleaved(ops(op), ROUNDS, ROUND);
    const off = results.off.opsPerSec;
    for (const mode of MODES) {
      const m = results[mode];
      const cost = mode === 'off' ? '' : `${(((off - m.opsPerSec) / off) * 100).toFixed(1)}% fewer ops/s than off`;
      rows.push({ feature: 'observability', library: LIBRARY[mode], operation, ...m, notes: cost });
    }
  }
  to('off');
  printTable('Instrumentation cost (interleaved, median of 5 rounds each)', rows);
  saveResults('observability', rows);
  await reader.shutdown();
  await app.close();
  await redis.stop();
}

runBench(main);
