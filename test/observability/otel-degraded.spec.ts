import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import {
  AggregationTemporality,
  InMemoryMetricExporter,
  MeterProvider,
  PeriodicExportingMetricReader,
} from '@opentelemetry/sdk-metrics';
import { RateLimitService, type RateLimitPolicy } from '../../lib/index.js';
import { RedisToolkitInstrumentation } from '../../lib/otel/index.js';
import { points } from '../support/observability.js';
import { createToolkitApp, type ToolkitAppOptions } from '../support/toolkit-app.js';
import { useKillableRedis } from '../support/toolkit-boot.js';

/**
 * An operator reading `rtk.ratelimit.decisions` on a dashboard must see the decisions Redis did not make: a fail-open
 * decision is `outcome=allowed` (dashboards filter on it) with `rtk.degraded=fail-open` beside it, one decided by the
 * insurance limiter `rtk.degraded=insurance`; a decision Redis made has no `rtk.degraded`. Before 2026-12-05 a
 * fail-open decision was a plain `outcome=allowed` point, told apart by nothing (docs/observability.md, Metrics).
 */

const policy: RateLimitPolicy = { limit: 1, ttl: 60_000 };

const redis = useKillableRedis();

/** A rate limiter on the private server, with the OTel metrics of the instrumentation read from memory. */
async function boot(rateLimit: ToolkitAppOptions['rateLimit'] = {}) {
  const exporter = new InMemoryMetricExporter(AggregationTemporality.CUMULATIVE);
  const reader = new PeriodicExportingMetricReader({ exporter, exportIntervalMillis: 3_600_000 });
  const instrumentation = new RedisToolkitInstrumentation({ enabled: false, traces: false });
  instrumentation.setMeterProvider(new MeterProvider({ readers: [reader] }));
  instrumentation.enable();
  const app = await createToolkitApp({
    target: { url: redis.server.url },
    keyPrefix: `rtk-od-${randomBytes(3).toString('hex')}:`,
    commandTimeout: 300,
    maxReconnectDelay: 100,
    rateLimit,
  });
  const decisions = async () => {
    await reader.forceFlush();
    for (const scope of exporter.getMetrics().at(-1)?.scopeMetrics ?? [])
      for (const m of scope.metrics) if (m.descriptor.name === 'rtk.ratelimit.decisions') return points(m);
    return {};
  };
  const stop = async () => {
    instrumentation.disable();
    await reader.shutdown();
  };
  return { rl: app.get(RateLimitService), decisions, stop };
}

describe('rtk.ratelimit.decisions tells the decisions Redis did not make apart (rtk.degraded)', () => {
  it('fail-open: outcome=allowed with rtk.degraded=fail-open, once per policy of each call; Redis decisions have none', async () => {
    const { rl, decisions, stop } = await boot();
    try {
      expect((await rl.consume('a', policy)).allowed).toBe(true);
      expect((await rl.consume('a', policy)).allowed).toBe(false);
      await redis.server.kill();
      for (let i = 0; i < 3; i++) expect(await rl.consume('a', policy)).toMatchObject({ degraded: 'fail-open' });
      const both = await rl.consumeAll([
        { key: 'ip:203.0.113.7', policy, name: 'ip' },
        { key: 'user:42', policy, name: 'user' },
      ]);
      expect(both).toMatchObject({ allowed: true, degraded: 'fail-open' });
      expect(await decisions()).toEqual({
        'outcome=allowed,policy=default': 1,
        'outcome=refused,policy=default': 1,
        'outcome=allowed,policy=default,rtk.degraded=fail-open': 3,
        'outcome=allowed,policy=ip,rtk.degraded=fail-open': 1,
        'outcome=allowed,policy=user,rtk.degraded=fail-open': 1,
      });
      expect(rl.stats()).toMatchObject({ allowed: 1, denied: 1, failedOpen: 4, insurance: 0 });
    } finally {
      await stop();
    }
  });

  it('insurance: its admissions and refusals carry rtk.degraded=insurance', async () => {
    const { rl, decisions, stop } = await boot({ insurance: { divideLimitBy: 1 } });
    try {
      expect((await rl.consume('warm', policy)).allowed).toBe(true);
      await redis.server.kill();
      expect(await rl.consume('b', policy)).toMatchObject({ allowed: true, degraded: 'insurance' });
      expect(await rl.consume('b', policy)).toMatchObject({ allowed: false, degraded: 'insurance' });
      expect(await decisions()).toEqual({
        'outcome=allowed,policy=default': 1,
        'outcome=allowed,policy=default,rtk.degraded=insurance': 1,
        'outcome=refused,policy=default,rtk.degraded=insurance': 1,
      });
      expect(rl.stats()).toMatchObject({ allowed: 1, denied: 0, failedOpen: 0, insurance: 2 });
    } finally {
      await stop();
    }
  });
});
