import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import diagnosticsChannel from 'node:diagnostics_channel';
import {
  AggregationTemporality,
  InMemoryMetricExporter,
  MeterProvider,
  PeriodicExportingMetricReader,
} from '@opentelemetry/sdk-metrics';
import { CacheService, RedisUnavailableError } from '../../lib/index.js';
import { RedisToolkitInstrumentation } from '../../lib/otel/index.js';
import { points } from '../support/observability.js';
import { trackForCleanup } from '../support/private-servers.js';
import { startRedisServer, type RedisServerHandle } from '../support/redis-server.js';
import { closeToolkitApps, createToolkitApp, type ToolkitAppOptions } from '../support/toolkit-app.js';

/**
 * A cache read that failed open (Redis unreachable: the read, the load lock or the store of the loaded value failed,
 * and `failOpen` let the call go on with the loader's value) is told apart from a real miss, as a rate-limit decision
 * that failed open is (57e33e4): the result says `degraded: 'fail-open'`, so do the `rtk:cache:get` event and the
 * traced call's context, `rtk.cache.requests` adds `rtk.degraded=fail-open` beside `outcome=miss`, and
 * `stats().failedOpen` counts it (a `get` too). Before 2026-12-05 such a read was a plain miss everywhere
 * (docs/observability.md, Metrics).
 */

let server: RedisServerHandle;
beforeAll(async () => {
  server = trackForCleanup(await startRedisServer());
});
afterEach(async () => {
  await closeToolkitApps();
  if (server.isRunning()) server.resume();
  else await server.restart();
});

const CACHE_GET = 'rtk:cache:get';

/** A cache on the private server, with its rtk:cache:get events and the OTel metric rtk.cache.requests read from memory. */
async function boot(cache: ToolkitAppOptions['cache'] = {}) {
  const exporter = new InMemoryMetricExporter(AggregationTemporality.CUMULATIVE);
  const reader = new PeriodicExportingMetricReader({ exporter, exportIntervalMillis: 3_600_000 });
  const instrumentation = new RedisToolkitInstrumentation({ enabled: false, traces: false });
  instrumentation.setMeterProvider(new MeterProvider({ readers: [reader] }));
  instrumentation.enable();
  const events: Record<string, unknown>[] = [];
  const onEvent = (message: unknown) => events.push(message as Record<string, unknown>);
  diagnosticsChannel.subscribe(CACHE_GET, onEvent);
  const app = await createToolkitApp({
    target: { url: server.url },
    keyPrefix: `rtk-fo-${randomBytes(3).toString('hex')}:`,
    commandTimeout: 300,
    maxReconnectDelay: 100,
    cache,
  });
  const requests = async () => {
    await reader.forceFlush();
    for (const scope of exporter.getMetrics().at(-1)?.scopeMetrics ?? [])
      for (const m of scope.metrics) if (m.descriptor.name === 'rtk.cache.requests') return points(m);
    return {};
  };
  const stop = async () => {
    diagnosticsChannel.unsubscribe(CACHE_GET, onEvent);
    instrumentation.disable();
    await reader.shutdown();
  };
  return { cache: app.get(CacheService), events, requests, stop };
}

const MISS = { feature: 'cache', operation: 'get', outcome: 'miss' };
const FAILED_OPEN = { ...MISS, degraded: 'fail-open' };

describe('a cache read that failed open is marked (degraded: fail-open)', () => {
  it('Redis killed: getOrSet results, events, rtk.cache.requests and stats().failedOpen say so; reads Redis served do not', async () => {
    const { cache, events, requests, stop } = await boot();
    try {
      expect(await cache.getOrSetWithStatus('a', () => 'A')).toStrictEqual({ value: 'A', status: 'miss' });
      expect(await cache.getOrSetWithStatus('a', () => 'never')).toStrictEqual({ value: 'A', status: 'hit' });
      await server.kill();
      let loads = 0;
      const loader = () => `B${++loads}`;
      expect(await cache.getOrSetWithStatus('b', loader)).toStrictEqual({
        value: 'B1',
        status: 'miss',
        degraded: 'fail-open',
      });
      // two callers of one key in one turn: one load, two reads, each marked
      expect(await Promise.all([cache.getOrSet('c', loader), cache.getOrSet('c', loader)])).toEqual(['B2', 'B2']);
      expect(loads).toBe(2);
      expect(await cache.get('d')).toBeUndefined();
      expect(events).toEqual([MISS, { ...MISS, outcome: 'hit' }, FAILED_OPEN, FAILED_OPEN, FAILED_OPEN]);
      expect('degraded' in events[0]).toBe(false);
      expect(await requests()).toEqual({
        'outcome=miss': 1,
        'outcome=hit': 1,
        'outcome=miss,rtk.degraded=fail-open': 3,
      });
      // get publishes no event; it is counted in stats like the getOrSet reads
      expect(cache.stats()).toMatchObject({ hits: 1, misses: 5, failedOpen: 4 });
    } finally {
      await stop();
    }
  });

  it('Redis paused: a read that times out is marked, in the traced call context too', async () => {
    const { cache, events, requests, stop } = await boot();
    const contexts: Record<string, unknown>[] = [];
    const tracing = diagnosticsChannel.tracingChannel(CACHE_GET);
    const handlers = {
      start: () => undefined,
      end: () => undefined,
      asyncStart: () => undefined,
      asyncEnd: (context: unknown) => contexts.push({ ...(context as Record<string, unknown>) }),
      error: () => undefined,
    };
    tracing.subscribe(handlers);
    try {
      expect(await cache.getOrSetWithStatus('p', () => 'P0')).toStrictEqual({ value: 'P0', status: 'miss' });
      server.pause();
      expect(await cache.getOrSetWithStatus('q', () => 'Q')).toStrictEqual({
        value: 'Q',
        status: 'miss',
        degraded: 'fail-open',
      });
      expect(contexts).toEqual([MISS, FAILED_OPEN]);
      expect(events).toEqual([MISS, FAILED_OPEN]);
      expect(await requests()).toEqual({ 'outcome=miss': 1, 'outcome=miss,rtk.degraded=fail-open': 1 });
      expect(cache.stats()).toMatchObject({ misses: 2, failedOpen: 1 });
      expect(cache.stats().errors).toBeGreaterThanOrEqual(1);
    } finally {
      tracing.unsubscribe(handlers);
      server.resume();
      await stop();
    }
  });

  it('Redis killed during the load: the store failed, every caller sharing the load gets the mark', async () => {
    const { cache, events, requests, stop } = await boot();
    try {
      let loads = 0;
      const loader = async () => {
        loads++;
        await server.kill();
        return 'S';
      };
      const [first, joined] = await Promise.all([
        cache.getOrSetWithStatus('s', loader),
        // a later turn: it joins the load through single-flight, not through the first call's turn
        new Promise((r) => setImmediate(r)).then(() => cache.getOrSetWithStatus('s', loader)),
      ]);
      expect(loads).toBe(1);
      expect(first).toStrictEqual({ value: 'S', status: 'miss', degraded: 'fail-open' });
      expect(joined).toStrictEqual({ value: 'S', status: 'miss', degraded: 'fail-open' });
      expect(events).toEqual([FAILED_OPEN, FAILED_OPEN]);
      expect(await requests()).toEqual({ 'outcome=miss,rtk.degraded=fail-open': 2 });
      expect(cache.stats()).toMatchObject({ misses: 2, failedOpen: 2 });
    } finally {
      await stop();
    }
  });

  it('failOpen: false: the read throws, nothing is marked or counted as failed open', async () => {
    const { cache, events, requests, stop } = await boot({ failOpen: false });
    try {
      await server.kill();
      await expect(cache.getOrSet('f', () => 'F')).rejects.toBeInstanceOf(RedisUnavailableError);
      await expect(cache.get('f')).rejects.toBeInstanceOf(RedisUnavailableError);
      expect(events).toEqual([]);
      expect(await requests()).toEqual({});
      expect(cache.stats()).toMatchObject({ misses: 0, failedOpen: 0 });
    } finally {
      await stop();
    }
  });
});
