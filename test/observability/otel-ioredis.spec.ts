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
import express from 'express';
import session from 'express-session';
import { Redis } from 'ioredis';
import request from 'supertest';
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

/** Every feature's common calls inside a request span; returns the secrets they handled, the session ids in `ids`. */
async function runCalls(logger = recordingLogger().logger, ids: string[] = []) {
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
    ids.push(s.id);
    await sessions.get(s.id);
    await sessions.update(s.id, { note: secrets.sessionUpdate });
    await sessions.destroy(s.id);
    const store = new RedisSessionStore({ client: app.get<Redis>(REDIS_CLIENT), prefix });
    const sid = `sid-${rnd()}${rnd()}`;
    ids.push(sid);
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

type Args = Parameters<NonNullable<Serializer>>[1];
/** What the serializer was given and wrote, for each command the instrumentation traced. */
interface Written {
  name: string;
  args: Args;
  text: string;
}

/** The toolkit's serializer wrapped to record what it is given and writes. */
function recordingSerializer(serializer: NonNullable<Serializer>, written: Written[]): NonNullable<Serializer> {
  return (name, args) => {
    const text = serializer(name, args);
    written.push({ name, args: [...args], text });
    return text;
  };
}

/** The default fallback (name and count) as the serializer has always written it. */
const nameAndCount = (name: string, args: Args) =>
  args.length === 0 ? name : `${name} [${args.length} ${args.length === 1 ? 'argument' : 'arguments'}]`;

/**
 * What the serializer wrote for a command before session ids were replaced: a toolkit script's name, number of keys
 * and keys (`actual` names the script), every other command as the fallback writes it.
 */
function writtenBefore({ name, args, text }: Written, fallback: NonNullable<Serializer>): string {
  const script = /^\S+ (rtk_\w+) /.exec(text)?.[1];
  if (script === undefined || !/^eval(sha)?(_ro)?$/i.test(name)) return fallback(name, [...args]);
  const keyCount = Number(args[1]);
  const others = args.length - 2 - keyCount;
  const parts = [name, script, String(args[1]), ...args.slice(2, 2 + keyCount).map(String)];
  return (others > 0 ? [...parts, `[${others} other arguments]`] : parts).join(' ');
}

/** A session id's stand-in in a span: `#` and 8 characters of its keyed hash. */
const STAND_IN = /#[A-Za-z0-9_-]{8}(?![A-Za-z0-9_-])/g;

/**
 * A real session flow: SessionService (create, get, exists, update, regenerate, listForUser, destroy,
 * destroyAllForUser) and RedisSessionStore under express-session (a login that regenerates, reads, a second login,
 * logout). Returns every session id it used.
 */
async function runSessionFlow(): Promise<string[]> {
  const prefix = `rtk-oi-${rnd()}:`;
  const app = await createToolkitApp({ keyPrefix: prefix, session: { cookie: { secret: 's3cret-oi-sessions' } } });
  const ids: string[] = [];
  const sessions = app.get(SessionService);
  const a = await sessions.create('alice', { n: 1 });
  ids.push(a.id);
  expect((await sessions.get(a.id))?.userId).toBe('alice');
  expect(await sessions.exists(a.id)).toBe(true);
  await sessions.update(a.id, { n: 2 });
  const moved = await sessions.regenerate(a.id);
  ids.push(moved.id);
  expect((await sessions.listForUser('alice')).map((s) => s.id)).toEqual([moved.id]);
  expect(await sessions.destroy(moved.id)).toBe(true);
  for (let i = 0; i < 3; i++) ids.push((await sessions.create('bob', { i })).id);
  expect(await sessions.destroyAllForUser('bob')).toBe(3);

  const store = new RedisSessionStore({ client: app.get<Redis>(REDIS_CLIENT), prefix });
  const web = express();
  web.use(session({ store, secret: 'shh-oi', resave: false, saveUninitialized: false, cookie: { maxAge: 60_000 } }));
  web.post('/login', (req, res, next) => {
    ids.push(req.sessionID);
    req.session.regenerate((err) => {
      if (err) return next(err);
      (req.session as unknown as Record<string, unknown>).userId = 'carol';
      ids.push(req.sessionID);
      res.json({ ok: true });
    });
  });
  web.get('/me', (req, res) => {
    const s = req.session as unknown as Record<string, unknown>;
    s.views = Number(s.views ?? 0) + 1;
    ids.push(req.sessionID);
    res.json({ user: s.userId, views: s.views });
  });
  web.post('/logout', (req, res, next) => {
    ids.push(req.sessionID);
    req.session.destroy((err) => (err ? next(err) : res.json({ ok: true })));
  });
  const agent = request.agent(web);
  await agent.post('/login').expect(200);
  expect((await agent.get('/me').expect(200)).body).toEqual({ user: 'carol', views: 1 });
  // a second login regenerates a stored session: its id leaves carol's index (ZREM)
  await agent.post('/login').expect(200);
  expect((await agent.get('/me').expect(200)).body).toEqual({ user: 'carol', views: 1 });
  await agent.post('/logout').expect(200);
  return [...new Set(ids)];
}

describe("no session id in any span, with the toolkit's serializer", () => {
  it.each([
    ['alone (name and count for other commands)', undefined],
    ["with redis-common's serializer as the fallback", defaultDbStatementSerializer],
  ] as const)(
    '%s: not in a key, an index member or anywhere; every other command written as before',
    async (_, fallback) => {
      const serializer = makeSerializer?.(fallback);
      expect(typeof serializer).toBe('function');
      const written: Written[] = [];
      // every command, also those sent outside a request span (express-session's, the timers')
      instrumentIoredis({ requireParentSpan: false, dbStatementSerializer: recordingSerializer(serializer!, written) });
      const ids = await runSessionFlow();
      await runCalls(undefined, ids);
      expect(ids.length).toBe(10);
      const leaks = ids.flatMap((id) =>
        everySpanText()
          .filter((text) => text.includes(id))
          .map((text) => `${id}: ${text.slice(0, 300)}`),
      );
      expect(leaks).toEqual([]);
      // each command written as before, but for each session id, now its stand-in
      const withoutIds = (text: string) => ids.reduce((t, id) => t.replaceAll(id, 'ID'), text);
      const before = written.map((w) => ({ ...w, before: writtenBefore(w, fallback ?? nameAndCount) }));
      const touching = before.filter((w) => withoutIds(w.before) !== w.before);
      const others = before.filter((w) => withoutIds(w.before) === w.before);
      expect(others.filter((w) => w.text !== w.before).map((w) => [w.text, w.before])).toEqual([]);
      expect(
        touching.filter((w) => w.text.replace(STAND_IN, 'ID') !== withoutIds(w.before)).map((w) => [w.text, w.before]),
      ).toEqual([]);
      expect(others.length).toBeGreaterThan(20);
      expect(touching.length).toBeGreaterThan(fallback ? 40 : 15);
      // the session commands are still there, each id by its stand-in: the scripts' keys, and with redis-common's
      // serializer the plain commands' keys and the user index's members
      const texts = touching.map((w) => w.text);
      expect(
        texts.filter((t) => /^evalsha rtk_sess_create 2 \S+:sess:\{#[\w-]{8}\} \S+:sess:\{#[\w-]{8}\}:gone /.test(t)),
      ).not.toHaveLength(0);
      expect(texts.filter((t) => t.startsWith('evalsha rtk_sess_destroy 2 '))).not.toHaveLength(0);
      if (fallback) {
        expect(texts.some((t) => /^getex \S+:sess:\{#[\w-]{8}\} PX \d+$/.test(t))).toBe(true);
        expect(texts.some((t) => /^zrem \S+:sess:user:\{bob\} #[\w-]{8} #[\w-]{8} #[\w-]{8}$/.test(t))).toBe(true);
        expect(texts.some((t) => /^zrem \S+:sess:user:\{carol\} #[\w-]{8}$/.test(t))).toBe(true);
        expect(texts.some((t) => /^exists \S+:sess:\{#[\w-]{8}\}$/.test(t))).toBe(true);
      }
    },
  );

  it("one id, one stand-in (keys, Buffers, index members), any copy's prefixes; other keys and patterns untouched", async () => {
    const prefix = `rtk-oi-${rnd()}:`;
    await createToolkitApp({ keyPrefix: prefix, session: { cookie: { secret: 's3cret-oi-stand-ins' } } });
    const serializer = makeSerializer?.(defaultDbStatementSerializer);
    expect(typeof serializer).toBe('function');
    const write = (name: string, ...args: (string | number | Buffer)[]) => serializer!(name, args);
    const id = randomBytes(32).toString('base64url');
    const other = randomBytes(32).toString('base64url');
    const key = `${prefix}sess:{${id}}`;
    const text = write('getex', key, 'PX', 100);
    const standIn = /^getex \S+:sess:\{(#[\w-]{8})\} PX 100$/.exec(text)?.[1];
    expect(standIn).toBeDefined();
    expect(write('getex', key, 'PX', 100)).toBe(text);
    expect(write('get', Buffer.from(key))).toBe(`get ${prefix}sess:{${standIn}}`);
    expect(write('del', `${key}:gone`)).toBe(`del ${prefix}sess:{${standIn}}:gone`);
    expect(write('exists', `${prefix}sess:{${other}}`)).not.toContain(standIn);
    expect(write('exists', `${prefix}sess:{${other}}`)).not.toContain(other);
    // behind a client's own keyPrefix too
    expect(write('get', `app:${key}`)).toBe(`get app:${prefix}sess:{${standIn}}`);
    // the user index: its members are session ids (not its scores and bounds)
    expect(write('zrem', `${prefix}sess:user:{alice}`, id, other)).toMatch(
      new RegExp(`^zrem ${prefix}sess:user:\\{alice\\} ${standIn} #[\\w-]{8}$`),
    );
    expect(write('zrem', `${prefix}sess:user:{alice}:new`, id)).toBe(`zrem ${prefix}sess:user:{alice}:new ${standIn}`);
    expect(write('zrangebyscore', `${prefix}sess:user:{alice}`, 1765000000000, '+inf')).toBe(
      `zrangebyscore ${prefix}sess:user:{alice} 1765000000000 +inf`,
    );
    // not session ids: another prefix's keys, a SCAN pattern, the ACL probe key, a cache key naming a session key
    for (const [name, args] of [
      ['get', [`nope-${rnd()}:sess:{${id}}`]],
      ['scan', ['0', 'MATCH', `${prefix}sess:{*}`, 'COUNT', 100]],
      ['get', [`${prefix}sess:{acl:check}`]],
      ['get', [`${prefix}cache:sess%3A%7B${id}%7D`]],
      ['zrem', [`nope-${rnd()}:sess:user:{alice}`, id]],
    ] as const) {
      expect(write(name, ...args)).toBe(defaultDbStatementSerializer(name, [...args]));
    }
    // a prefix registered by another copy of the package (its state is on globalThis): its keys are masked too
    const copyPrefix = `copy-${rnd()}:`;
    const registered = (globalThis as Record<symbol, Set<string> | undefined>)[
      Symbol.for('nestjs-redis-toolkit.session-key-prefixes')
    ];
    expect(registered?.has(prefix)).toBe(true);
    registered?.add(copyPrefix);
    expect(write('get', `${copyPrefix}sess:{${id}}`)).toBe(`get ${copyPrefix}sess:{${standIn}}`);
  });
});
