/**
 * Beside OpenTelemetry's ioredis instrumentation (docs/observability.md): what `@opentelemetry/instrumentation-ioredis`
 * records of the toolkit's commands. Its default `dbStatementSerializer` (@opentelemetry/redis-common's) keeps every
 * argument of EVAL / EVALSHA, and the toolkit's scripts carry session contents, cached values, lock tokens and
 * published messages in ARGV: with `redisToolkitDbStatementSerializer()` (the documented setup) none of them is in any
 * span; without it the toolkit warns at start, once. Commands that are not the toolkit's are serialized as the
 * default does.
 *
 * The instrumentation is applied the way its require hook does (its module definition's `patch` on the loaded ioredis),
 * since Jest loads modules through its own runtime, not through Node's require: the same wrapping of
 * `Redis.prototype.sendCommand`, with the instrumentation's default config (`requireParentSpan: true`: the calls run
 * inside an active span, as in a request).
 */
import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { context } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { IORedisInstrumentation } from '@opentelemetry/instrumentation-ioredis';
import { defaultDbStatementSerializer } from '@opentelemetry/redis-common';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { Redis } from 'ioredis';
import {
  CacheService,
  LockService,
  PubSubService,
  RateLimitService,
  REDIS_CLIENT,
  RedisSessionStore,
  SessionService,
} from '../../lib/index.js';
import * as otel from '../../lib/otel/index.js';
import { recordingLogger } from '../support/recording-logger.js';
import { sharedServers } from '../support/shared-servers.js';
import { closeToolkitApps, createToolkitApp } from '../support/toolkit-app.js';

type Serializer = NonNullable<ConstructorParameters<typeof IORedisInstrumentation>[0]>['dbStatementSerializer'];
/** The fix as documented; read by name so that this file also runs (and fails on its assertions) without it. */
const makeSerializer = (otel as Record<string, unknown>).redisToolkitDbStatementSerializer as
  | ((fallback?: Serializer) => Serializer)
  | undefined;

context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
afterAll(() => context.disable());

const spans = new InMemorySpanExporter();
const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(spans)] });
const appTracer = provider.getTracer('app');
let instrumentation: IORedisInstrumentation | undefined;

/** OpenTelemetry's ioredis instrumentation with `config`, wrapping the loaded ioredis as its require hook would. */
function instrumentIoredis(config: ConstructorParameters<typeof IORedisInstrumentation>[0] = {}): void {
  instrumentation = new IORedisInstrumentation({ ...config, enabled: false });
  instrumentation.setTracerProvider(provider);
  for (const definition of instrumentation.getModuleDefinitions()) definition.patch?.(Redis, '6.0.0');
}

afterEach(async () => {
  await closeToolkitApps();
  for (const definition of instrumentation?.getModuleDefinitions() ?? []) definition.unpatch?.(Redis, '6.0.0');
  instrumentation = undefined;
  spans.reset();
});

const rnd = () => randomBytes(6).toString('hex');

/** Every feature's common calls inside a request span; returns the secrets they handled. */
async function runCalls(logger = recordingLogger().logger) {
  const prefix = `rtk-oi-${rnd()}:`;
  const app = await createToolkitApp({ keyPrefix: prefix, session: { cookie: { secret: 's3cret-oi' } }, logger });
  const secrets = {
    sessionPayload: `SESSION-PAYLOAD-${rnd()}`,
    sessionUpdate: `SESSION-UPDATE-${rnd()}`,
    storePayload: `STORE-PAYLOAD-${rnd()}`,
    cachedValue: `CACHED-VALUE-${rnd()}`,
    loadedValue: `LOADED-VALUE-${rnd()}`,
    published: `PUBLISHED-${rnd()}`,
    lockToken: '',
  };
  await appTracer.startActiveSpan('request', async (request) => {
    const sessions = app.get(SessionService);
    const s = await sessions.create('alice', { card: secrets.sessionPayload });
    await sessions.get(s.id);
    await sessions.update(s.id, { note: secrets.sessionUpdate });
    await sessions.destroy(s.id);
    const store = new RedisSessionStore({ client: app.get<Redis>(REDIS_CLIENT), prefix });
    const sid = `sid-${rnd()}${rnd()}`;
    const cookie = { originalMaxAge: 60_000, expires: new Date(Date.now() + 60_000) };
    await store.set(sid, { cookie, card: secrets.storePayload } as never);
    await store.get(sid);
    await store.touch(sid, { cookie } as never);
    await store.destroy(sid);
    const cache = app.get(CacheService);
    await cache.set('profile:1', { v: secrets.cachedValue }, { ttl: 60_000 });
    await cache.get('profile:1');
    await cache.getOrSet('profile:2', async () => ({ v: secrets.loadedValue }), { ttl: 60_000 });
    const lock = await app.get(LockService).acquire('invoice:7', { ttl: 5_000 });
    secrets.lockToken = lock.token;
    await lock.extend(5_000);
    await lock.release();
    await app.get(RateLimitService).consume('ip:203.0.113.7', { limit: 10, ttl: 60_000 });
    const pubsub = app.get(PubSubService);
    await pubsub.publish('orders', { secret: secrets.published });
    // two in one tick: one publish-many script call (a single one is a plain PUBLISH)
    await Promise.all([pubsub.publish('orders', { secret: secrets.published }), pubsub.publish('audit', { n: 2 })]);
    request.end();
  });
  return secrets;
}

/** The ioredis instrumentation's spans: name and db.query.text. */
function commandSpans(): { name: string; text: string }[] {
  return spans
    .getFinishedSpans()
    .filter((s) => s.instrumentationScope.name === '@opentelemetry/instrumentation-ioredis')
    .map((s) => ({ name: s.name, text: String(s.attributes['db.query.text'] ?? s.attributes['db.statement'] ?? '') }));
}

/** Every attribute and event of every finished span, as one string per span. */
function everySpanText(): string[] {
  return spans.getFinishedSpans().map((s) => JSON.stringify([s.name, s.attributes, s.events]));
}

describe('OpenTelemetry ioredis instrumentation beside the toolkit', () => {
  // first in the file: the serializer, once made, silences the warning for the whole process
  it('with its default serializer: the toolkit warns once at start naming the fix (and the spans do hold the secrets)', async () => {
    instrumentIoredis();
    const { warnings, logger } = recordingLogger();
    const secrets = await runCalls(logger);
    const traced = warnings.filter((w) => w.includes('instrumentation-ioredis'));
    expect(traced).toHaveLength(1);
    expect(traced[0]).toContain('redisToolkitDbStatementSerializer()');
    expect(traced[0]).toContain("Beside OpenTelemetry's ioredis instrumentation");
    // a second app of the same process, same wrapping: not said again
    const again = recordingLogger();
    await createToolkitApp({ keyPrefix: `rtk-oi-${rnd()}:`, logger: again.logger });
    expect(again.warnings.filter((w) => w.includes('instrumentation-ioredis'))).toEqual([]);
    if (process.env.OTEL_IOREDIS_DUMP) writeFileSync(process.env.OTEL_IOREDIS_DUMP, JSON.stringify(commandSpans()));
    // what the warning is about (and proof that the instrumentation traced the calls here)
    const all = everySpanText().join('\n');
    expect(all).toContain(secrets.sessionPayload);
    expect(all).toContain(secrets.lockToken);
  });

  it('with redisToolkitDbStatementSerializer() as documented: no session payload, cached value, lock token or message in any span', async () => {
    instrumentIoredis({ dbStatementSerializer: makeSerializer?.() });
    const toolkitSpans = new otel.RedisToolkitInstrumentation({ enabled: false, metrics: false });
    toolkitSpans.setTracerProvider(provider);
    toolkitSpans.enable();
    const { warnings, logger } = recordingLogger();
    const secrets = await runCalls(logger).finally(() => toolkitSpans.disable());
    const leaks = Object.entries(secrets).flatMap(([what, secret]) =>
      everySpanText()
        .filter((text) => text.includes(secret))
        .map((text) => `${what}: ${text.slice(0, 300)}`),
    );
    if (process.env.OTEL_IOREDIS_DUMP)
      writeFileSync(`${process.env.OTEL_IOREDIS_DUMP}.fixed`, JSON.stringify(commandSpans()));
    expect(leaks).toEqual([]);
    expect(warnings.filter((w) => w.includes('instrumentation-ioredis'))).toEqual([]);
    // the commands are still there: each script call by its name and keys, no Lua text, no sha
    const texts = commandSpans().map((s) => s.text);
    expect(texts.length).toBeGreaterThan(10);
    const create = texts.find((t) => t.startsWith('evalsha rtk_sess_create 2 '));
    expect(create).toMatch(/^evalsha rtk_sess_create 2 rtk-oi-[0-9a-f]+:sess:\{[^ ]+\} [^ ]+ \[\d+ other arguments\]$/);
    expect(texts.filter((t) => t.startsWith('evalsha rtk_sess_compare_and_set 2 '))).toHaveLength(2);
    expect(
      texts.some((t) =>
        /^evalsha rtk_lock_acquire_many 3 \S+:lock:\{invoice%3A7\} .* \[\d+ other arguments\]$/.test(t),
      ),
    ).toBe(true);
    expect(texts.some((t) => /^evalsha rtk_ps_publish_many 0 \[\d+ other arguments\]$/.test(t))).toBe(true);
    expect(texts.filter((t) => /^eval(sha)? [0-9a-f]{40} /.test(t))).toEqual([]);
    expect(Math.max(...texts.map((t) => t.length))).toBeLessThan(400);
  });

  it("commands that are not the toolkit's: by default their name and count only; as redis-common writes them when given its serializer", async () => {
    expect(makeSerializer?.()?.('set', ['k', 'v', 'PX', 100])).toBe('set [4 arguments]');
    expect(makeSerializer?.()?.('auth', ['secret'])).toBe('auth [1 argument]');
    expect(makeSerializer?.()?.('ping', [])).toBe('ping');
    const serializer = makeSerializer?.(defaultDbStatementSerializer);
    expect(typeof serializer).toBe('function');
    const foreignLua = "return redis.call('SET', KEYS[1], ARGV[1])";
    const commands: [string, (string | number | Buffer)[]][] = [
      ['set', ['k', 'v', 'PX', 100]],
      ['get', ['k']],
      ['getex', ['k', 'PX', 100]],
      ['hset', ['h', 'f', 'v', 'f2', 'v2']],
      ['publish', ['chan', 'message']],
      ['eval', [foreignLua, 1, 'k', 'value']],
      ['evalsha', ['0123456789abcdef0123456789abcdef01234567', 1, 'k', 'value']],
      ['evalsha', [Buffer.from('aa'.repeat(20)), 0, 'value']],
      ['script', ['load', foreignLua]],
      ['mset', ['a', '1', 'b', '2']],
      ['echo', ['hi']],
      ['ping', []],
      ['xadd', ['s', '*', 'f', 'v']],
      ['zadd', ['z', 1, 'm']],
    ];
    for (const [name, args] of commands) {
      expect(serializer?.(name, [...args])).toBe(defaultDbStatementSerializer(name, [...args]));
      expect(serializer?.(name.toUpperCase(), [...args])).toBe(
        defaultDbStatementSerializer(name.toUpperCase(), [...args]),
      );
    }
    // a fallback of the app's own gets every command that is not the toolkit's
    const own = makeSerializer?.((name) => `own ${name}`);
    expect(own?.('evalsha', ['0123456789abcdef0123456789abcdef01234567', 0])).toBe('own evalsha');
    // and through the instrumentation: the app's own script keeps its arguments, as before
    instrumentIoredis({ dbStatementSerializer: serializer });
    const client = new Redis(sharedServers().single.url);
    try {
      await appTracer.startActiveSpan('request', async (request) => {
        await client.eval(foreignLua, 1, `own-${rnd()}`, 'app-value');
        request.end();
      });
    } finally {
      client.disconnect();
    }
    expect(commandSpans().find((s) => s.name === 'eval')?.text).toMatch(/^eval return redis.*own-[0-9a-f]+ app-value$/);
  });
});
