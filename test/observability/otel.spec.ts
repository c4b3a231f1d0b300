import 'reflect-metadata';
import diagnosticsChannel from 'node:diagnostics_channel';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { context, trace } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import {
  AggregationTemporality,
  DataPointType,
  InMemoryMetricExporter,
  MeterProvider,
  type MetricData,
  PeriodicExportingMetricReader,
} from '@opentelemetry/sdk-metrics';
import {
  BasicTracerProvider,
  InMemorySpanExporter,
  type ReadableSpan,
  SimpleSpanProcessor,
} from '@opentelemetry/sdk-trace-base';
import {
  CacheLoadTimeoutError,
  CacheService,
  LockLostError,
  LockService,
  PubSubService,
  RateLimitService,
  SessionService,
} from '../../lib/index.js';
import { REDIS_TOOLKIT_CHANNELS, REDIS_TOOLKIT_TRACING_CHANNELS } from '../../lib/advanced.js';
import { INSTRUMENTATION_VERSION, RedisToolkitInstrumentation } from '../../lib/otel/index.js';
import { points } from '../support/observability.js';
import { closeToolkitApps, createToolkitApp } from '../support/toolkit-app.js';
import { sleep, waitFor } from '../support/wait.js';

const contextManager = new AsyncLocalStorageContextManager().enable();
context.setGlobalContextManager(contextManager);
afterAll(() => {
  context.disable();
});

let spans: InMemorySpanExporter;
let metricExporter: InMemoryMetricExporter;
let reader: PeriodicExportingMetricReader;
let instrumentation: RedisToolkitInstrumentation;
let tracerProvider: BasicTracerProvider;
let app: Awaited<ReturnType<typeof createToolkitApp>>;

beforeEach(async () => {
  spans = new InMemorySpanExporter();
  metricExporter = new InMemoryMetricExporter(AggregationTemporality.CUMULATIVE);
  reader = new PeriodicExportingMetricReader({ exporter: metricExporter, exportIntervalMillis: 3_600_000 });
  instrumentation = new RedisToolkitInstrumentation({ enabled: false });
  tracerProvider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(spans)] });
  instrumentation.setTracerProvider(tracerProvider);
  instrumentation.setMeterProvider(new MeterProvider({ readers: [reader] }));
  instrumentation.enable();
  app = await createToolkitApp({
    keyPrefix: `rtk-otel-${randomBytes(4).toString('hex')}:`,
    session: { cookie: { secret: 's3cret-otel' } },
  });
});
afterEach(async () => {
  instrumentation.disable();
  await closeToolkitApps();
  await reader.shutdown();
});

async function collected(): Promise<Map<string, MetricData>> {
  await reader.forceFlush();
  const all = metricExporter.getMetrics().at(-1);
  const byName = new Map<string, MetricData>();
  for (const scope of all?.scopeMetrics ?? []) for (const m of scope.metrics) byName.set(m.descriptor.name, m);
  return byName;
}

const named = (name: string) => spans.getFinishedSpans().filter((s) => s.name === name);
const parentOf = (s: ReadableSpan) =>
  spans.getFinishedSpans().find((p) => p.spanContext().spanId === s.parentSpanContext?.spanId);

describe('RedisToolkitInstrumentation (nestjs-redis-toolkit/otel)', () => {
  it('has the shape of an OpenTelemetry instrumentation, versioned like the package', () => {
    const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8'));
    expect(INSTRUMENTATION_VERSION).toBe(pkg.version);
    expect(instrumentation.instrumentationName).toBe('nestjs-redis-toolkit');
    for (const m of ['enable', 'disable', 'setTracerProvider', 'setMeterProvider', 'getConfig', 'setConfig']) {
      expect(typeof (instrumentation as unknown as Record<string, unknown>)[m]).toBe('function');
    }
  });

  it('spans: one per traced call, nested in the caller and each other, with outcome and errors', async () => {
    const cache = app.get(CacheService);
    const tracer = tracerProvider.getTracer('test');
    await tracer.startActiveSpan('request', async (request) => {
      await cache.getOrSet('k', async () => 1);
      await cache.getOrSet('k', async () => 1);
      await expect(cache.getOrSet('bad', async () => Promise.reject(new Error('boom')))).rejects.toThrow('boom');
      request.end();
    });
    const gets = named('rtk.cache.get');
    expect(gets.map((s) => s.attributes['rtk.outcome'])).toEqual(['miss', 'hit', 'failed']);
    for (const s of gets) expect(s.attributes).toMatchObject({ 'rtk.feature': 'cache', 'rtk.operation': 'get' });
    // the test's own span is the parent of every get, and each load is a child of its get
    expect(gets.map((s) => parentOf(s)?.name)).toEqual(['request', 'request', 'request']);
    const loads = named('rtk.cache.load');
    expect(loads.map((s) => [s.attributes['rtk.outcome'], parentOf(s)?.name])).toEqual([
      ['loaded', 'rtk.cache.get'],
      ['failed', 'rtk.cache.get'],
    ]);
    expect(loads[1].status).toMatchObject({ code: 2, message: 'boom' });
    expect(loads[1].events.map((e) => e.name)).toEqual(['exception']);
    expect(gets[0].status.code).toBe(0);
  });

  it("spans are the active context when the toolkit's Redis commands are sent (ioredis spans nest under them)", async () => {
    // What @opentelemetry/instrumentation-ioredis reads: the active span at the time a command is sent.
    const activeAtCommand: { command: string; span: string | undefined }[] = [];
    const onStart = (message: unknown) => {
      const active = trace.getActiveSpan() as unknown as { name?: string } | undefined;
      activeAtCommand.push({ command: (message as { command: string }).command, span: active?.name });
    };
    const channel = diagnosticsChannel.tracingChannel('ioredis:command');
    const handlers = { start: onStart, end() {}, asyncStart() {}, asyncEnd() {}, error() {} };
    channel.subscribe(handlers);
    try {
      const session = await app.get(SessionService).create('u-1');
      await app.get(SessionService).destroy(session.id);
      const lock = await app.get(LockService).acquire('nest', { ttl: 5_000 });
      await lock.release();
    } finally {
      channel.unsubscribe(handlers);
    }
    const by = (span: string) => activeAtCommand.filter((c) => c.span === span).map((c) => c.command);
    expect(by('rtk.session.create').length).toBeGreaterThanOrEqual(2);
    expect(by('rtk.session.destroy').length).toBeGreaterThanOrEqual(1);
    expect(by('rtk.lock.acquire').filter((c) => /^eval/.test(c)).length).toBeGreaterThanOrEqual(1);
    expect(by('rtk.lock.release').length).toBeGreaterThanOrEqual(1);
    expect(named('rtk.lock.acquire')[0].attributes).toMatchObject({
      'rtk.resource': 'nest',
      'rtk.kind': 'lock',
      'rtk.outcome': 'acquired',
      'rtk.fencing_token': expect.any(Number),
    });
  });

  it('metrics: every name of docs/observability.md, with its attributes and values', async () => {
    const cache = app.get(CacheService);
    await cache.getOrSet('m', async () => 1);
    await cache.getOrSet('m', async () => 1);
    await cache.getOrSet('m', async () => 1);
    const limits = app.get(RateLimitService);
    const policy = { limit: 1, ttl: 60_000 };
    await limits.consume('client-a', policy);
    await limits.consume('client-a', policy);
    await limits.consumeAll([{ key: 'client-b', policy, name: 'burst' }]);
    const locks = app.get(LockService);
    const held = await locks.acquire('m-res', { ttl: 5_000 });
    await held.release();
    expect(await locks.tryAcquire('busy-res')).not.toBeNull();
    expect(await locks.tryAcquire('busy-res')).toBeNull();
    const short = await locks.acquire('lost-res', { ttl: 100 });
    await sleep(300);
    await expect(short.extend(1_000)).rejects.toBeInstanceOf(LockLostError);
    const sessions = app.get(SessionService);
    const a = await sessions.create('u');
    await sessions.create('u');
    await sessions.destroy(a.id);
    const pubsub = app.get(PubSubService);
    let got = 0;
    await pubsub.subscribe('m-news', () => {
      got++;
    });
    await pubsub.publish('m-news', 1);
    expect(await waitFor(() => got === 1, 5_000)).toBe(true);

    const m = await collected();
    expect(points(m.get('rtk.cache.requests'))).toEqual({ 'outcome=hit': 2, 'outcome=miss': 1 });
    expect(m.get('rtk.cache.load.duration')?.dataPointType).toBe(DataPointType.HISTOGRAM);
    expect(m.get('rtk.cache.load.duration')?.descriptor.unit).toBe('s');
    expect(points(m.get('rtk.cache.load.duration'))).toEqual({ 'outcome=loaded': 1 });
    expect(points(m.get('rtk.ratelimit.decisions'))).toEqual({
      'outcome=allowed,policy=default': 1,
      'outcome=refused,policy=default': 1,
      'outcome=allowed,policy=burst': 1,
    });
    expect(points(m.get('rtk.lock.wait.duration'))).toEqual({ 'outcome=acquired': 3, 'outcome=busy': 1 });
    expect(points(m.get('rtk.lock.held.duration'))).toEqual({
      'kind=lock,outcome=released': 1,
      'kind=lock,outcome=lost': 1,
    });
    expect(points(m.get('rtk.lock.lost'))).toEqual({ 'kind=lock': 1 });
    expect(points(m.get('rtk.sessions.active'))).toEqual({ '': 1 });
    expect(points(m.get('rtk.pubsub.messages'))).toEqual({
      'direction=out,outcome=sent': 2, // ours, and the revocation that destroy announces
      'direction=in,outcome=relayed': 1,
    });
    const commands = points(m.get('rtk.redis.command.duration'));
    const evals = Object.entries(commands).filter(([k]) => /name=eval/.test(k));
    expect(evals.reduce((n, [, v]) => n + v, 0)).toBeGreaterThan(3);
    expect(Object.keys(commands).every((k) => /^db\.operation\.name=[a-z]+,outcome=(ok|error)$/.test(k))).toBe(true);
  });

  it('no span attribute, event or metric attribute carries the session id, cookie or lock token', async () => {
    const sessions = app.get(SessionService);
    const s = await sessions.create('secret-user');
    const cookie = sessions.signedCookieValue(s.id);
    await app.get(RateLimitService).consume(s.id, { limit: 5, ttl: 1_000 });
    const lock = await app.get(LockService).acquire('secret-res', { ttl: 5_000 });
    await lock.release();
    await expect(lock.extend(1_000)).rejects.toBeInstanceOf(LockLostError);
    await sessions.destroy(s.id);
    const exported = JSON.stringify({
      spans: spans.getFinishedSpans().map((x) => ({ name: x.name, attributes: x.attributes, events: x.events })),
      metrics: [...(await collected()).values()].map((x) => x.dataPoints.map((p) => p.attributes)),
    });
    expect(exported).toContain('secret-res');
    for (const secret of [s.id, cookie, encodeURIComponent(cookie), lock.token]) expect(exported).not.toContain(secret);
  });

  it('a cache load that times out fails its spans with the typed error, without the cache key', async () => {
    // cache spans carry no key (it may hold a user id or an email); until 2026-12-03 the timeout's message named it,
    // and the message is the spans' status and exception event
    const cache = app.get(CacheService);
    const key = 'user:alice@example.com:profile';
    const hang = new Promise<number>(() => undefined);
    const err = await cache.getOrSet(key, () => hang, { hardTimeout: 100 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CacheLoadTimeoutError);
    expect((err as CacheLoadTimeoutError).message).toBe('a cache loader did not settle within 100 ms (hardTimeout)');
    expect((err as CacheLoadTimeoutError).key).toBe('user%3Aalice@example.com%3Aprofile'); // as stored: for the caller
    const failed = [...named('rtk.cache.get'), ...named('rtk.cache.load')];
    expect(failed.map((s) => [s.name, s.attributes['rtk.outcome'], s.status.code])).toEqual([
      ['rtk.cache.get', 'failed', 2],
      ['rtk.cache.load', 'failed', 2],
    ]);
    const exported = JSON.stringify(
      failed.map((x) => ({ status: x.status, attributes: x.attributes, events: x.events })),
    );
    expect(exported).toContain('E_CACHE_LOAD_TIMEOUT');
    expect(exported).not.toContain('alice');
  });

  it('disable() removes every subscription: the toolkit is back to publishing nothing', async () => {
    instrumentation.disable();
    for (const name of Object.values(REDIS_TOOLKIT_CHANNELS)) {
      expect(diagnosticsChannel.channel(name).hasSubscribers).toBe(false);
    }
    for (const name of Object.values(REDIS_TOOLKIT_TRACING_CHANNELS)) {
      expect(diagnosticsChannel.tracingChannel(name).hasSubscribers).toBe(false);
    }
    await app.get(CacheService).getOrSet('d', async () => 1);
    expect(spans.getFinishedSpans()).toEqual([]);
    instrumentation.enable();
    await app.get(CacheService).getOrSet('d', async () => 1);
    expect(named('rtk.cache.get')).toHaveLength(1);
  });
});
