import 'reflect-metadata';
import diagnosticsChannel from 'node:diagnostics_channel';
import { randomBytes } from 'node:crypto';
import { type Context, type ContextManager, context, trace } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import {
  BasicTracerProvider,
  InMemorySpanExporter,
  type ReadableSpan,
  SimpleSpanProcessor,
} from '@opentelemetry/sdk-trace-base';
import { CacheService, LockService, SessionService } from '../../lib/index.js';
import { RedisToolkitInstrumentation } from '../../lib/otel/index.js';
import { recordingLogger } from '../support/recording-logger.js';
import { closeToolkitApps, createToolkitApp } from '../support/toolkit-app.js';

// How diagnostics_channel enters a store bound to a channel differs by Node version: `run(store, fn)` up to Node 24,
// `withScope(store)` (a Disposable) from Node 26 on. The instrumentation binds a store of its own that stands for
// OpenTelemetry's context manager; these cases hold on every Node the package supports.

/** Whether this Node's diagnostics_channel enters bound stores with `withScope` (Node 26) rather than `run`. */
function storesEnteredByScope(): boolean {
  const channel = diagnosticsChannel.channel(`rtk-probe-${randomBytes(4).toString('hex')}`);
  let scoped = false;
  const probe = {
    run: (_store: unknown, fn: () => unknown) => fn(),
    withScope: () => {
      scoped = true;
      return { [Symbol.dispose]: () => undefined };
    },
  };
  channel.bindStore(probe as never);
  channel.runStores({}, () => undefined);
  channel.unbindStore(probe as never);
  return scoped;
}

/** A context manager that keeps contexts (through OpenTelemetry's own) but has no `attach`, as older ones. */
function withoutAttach(inner: ContextManager): ContextManager {
  return {
    active: () => inner.active(),
    with: (ctx, fn, thisArg, ...args) => inner.with(ctx, fn, thisArg, ...args),
    bind: <T>(ctx: Context, target: T) => inner.bind(ctx, target),
    enable() {
      inner.enable();
      return this;
    },
    disable() {
      inner.disable();
      return this;
    },
  };
}

let spans: InMemorySpanExporter;
let tracerProvider: BasicTracerProvider;
let instrumentation: RedisToolkitInstrumentation;

beforeEach(() => {
  spans = new InMemorySpanExporter();
  tracerProvider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(spans)] });
  instrumentation = new RedisToolkitInstrumentation({ enabled: false, metrics: false });
  instrumentation.setTracerProvider(tracerProvider);
  instrumentation.enable();
});
afterEach(async () => {
  instrumentation.disable();
  await closeToolkitApps();
  context.disable();
});

const named = (name: string) => spans.getFinishedSpans().filter((s) => s.name === name);
const parentOf = (s: ReadableSpan) =>
  spans.getFinishedSpans().find((p) => p.spanContext().spanId === s.parentSpanContext?.spanId);

/** Cache, lock and session calls inside a request span; returns the span active as each Redis command was sent. */
async function tracedCalls(logger: ReturnType<typeof recordingLogger>['logger']) {
  const app = await createToolkitApp({
    keyPrefix: `rtk-otel-cm-${randomBytes(4).toString('hex')}:`,
    session: { cookie: { secret: 's3cret-otel-cm' } },
    logger,
  });
  const activeAtCommand: (string | undefined)[] = [];
  const channel = diagnosticsChannel.tracingChannel('ioredis:command');
  const onStart = () => {
    activeAtCommand.push((trace.getActiveSpan() as unknown as { name?: string } | undefined)?.name);
  };
  const handlers = { start: onStart, end() {}, asyncStart() {}, asyncEnd() {}, error() {} };
  channel.subscribe(handlers);
  const results: unknown[] = [];
  try {
    await tracerProvider.getTracer('test').startActiveSpan('request', async (request) => {
      results.push(await app.get(CacheService).getOrSet('k', async () => 'v'));
      const lock = await app.get(LockService).acquire('res', { ttl: 5_000 });
      results.push(lock.fencingToken > 0);
      await lock.release();
      const session = await app.get(SessionService).create('u-1');
      results.push(await app.get(SessionService).destroy(session.id));
      request.end();
    });
  } finally {
    channel.unsubscribe(handlers);
  }
  return { results, activeAtCommand };
}

describe('RedisToolkitInstrumentation and the context manager, on this Node', () => {
  it("with OpenTelemetry's AsyncLocalStorageContextManager: every traced call resolves, its span is the active context for its Redis commands", async () => {
    context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
    const { warnings, logger } = recordingLogger();
    const { results, activeAtCommand } = await tracedCalls(logger);
    expect(results).toEqual(['v', true, true]);
    expect(named('rtk.cache.get').map((s) => parentOf(s)?.name)).toEqual(['request']);
    expect(named('rtk.cache.load').map((s) => parentOf(s)?.name)).toEqual(['rtk.cache.get']);
    for (const name of ['rtk.lock.acquire', 'rtk.lock.release', 'rtk.session.create', 'rtk.session.destroy']) {
      expect(activeAtCommand).toContain(name);
    }
    expect(warnings.filter((w) => w.includes('attach'))).toEqual([]);
  });

  it('with a context manager without attach(): every traced call resolves and is recorded; where Node enters stores by withScope, one warning names attach()', async () => {
    context.setGlobalContextManager(withoutAttach(new AsyncLocalStorageContextManager()).enable());
    const { warnings, logger } = recordingLogger();
    const { results, activeAtCommand } = await tracedCalls(logger);
    expect(results).toEqual(['v', true, true]);
    expect(named('rtk.cache.get').map((s) => parentOf(s)?.name)).toEqual(['request']);
    for (const name of ['rtk.cache.load', 'rtk.lock.acquire', 'rtk.session.create'])
      expect(named(name)).toHaveLength(1);
    const attachWarnings = warnings.filter((w) => w.includes('attach()'));
    if (storesEnteredByScope()) {
      // the span cannot be made active: the commands are sent in the request's context, and the app is told why
      expect(attachWarnings).toHaveLength(1);
      expect(attachWarnings[0]).toMatch(/context-async-hooks/);
      expect(activeAtCommand).not.toContain('rtk.lock.acquire');
    } else {
      expect(attachWarnings).toEqual([]);
      expect(activeAtCommand).toContain('rtk.lock.acquire');
    }
  });

  it('without a registered context manager (no SDK): every traced call resolves, no warning', async () => {
    const { warnings, logger } = recordingLogger();
    const { results } = await tracedCalls(logger);
    expect(results).toEqual(['v', true, true]);
    expect(named('rtk.cache.get')).toHaveLength(1);
    expect(warnings.filter((w) => w.includes('attach'))).toEqual([]);
  });
});
