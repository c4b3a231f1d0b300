import 'reflect-metadata';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { jest } from '@jest/globals';
import { Body, Controller, Get, type INestApplication, Logger, Param, Post, Req } from '@nestjs/common';
import type { NestFastifyApplication } from '@nestjs/platform-fastify';
import { createClient } from '@redis/client';
import { RedisStore } from 'connect-redis';
import { Redis } from 'ioredis';
import request from 'supertest';
import {
  InvalidKeyError,
  REDIS_CLIENT,
  RedisSessionStore,
  RedisUnavailableError,
  SessionService,
} from '../../lib/index.js';
import type { RedisSessionStoreOptions } from '../../lib/advanced.js';
import { startRedisServer, type RedisServerHandle } from '../support/redis-server.js';
import { trackForCleanup, usePrivateRedis } from '../support/private-servers.js';
import { docSnippet, repoRoot } from '../support/doc-snippets.js';
import { setCookieLines } from '../support/session-http-app.js';
import { closeToolkitApps, createToolkitApp } from '../support/toolkit-app.js';

/**
 * RedisSessionStore under @fastify/session + @fastify/cookie, registered on Nest's FastifyAdapter (Nest's docs,
 * Techniques → Session), with connect-redis 9 (on node-redis) run through the same cases as the control. Each case
 * says what each store does; where they differ, the case names the difference. @fastify/session exists on Fastify
 * only: the same store under express-session on Express is test/session/session.store.spec.ts and
 * session.http.spec.ts.
 */

/*
 * @fastify/session and @fastify/cookie are loaded untyped: their declarations augment Fastify's FastifyReply and
 * FastifyRequest for every file of the build (`reply.cookie`, `request.session`), which broke the narrowing of
 * session.http.spec.ts. The few shapes used here are declared below; FastifySessionStore is @fastify/session 11's
 * `SessionStore`, copied from its index.d.ts (with `unknown` for its `any`), so the registration type-checks.
 */

/** @fastify/session's request.session: its methods, and the app's fields. */
interface FastifySessionObject {
  readonly sessionId: string;
  readonly encryptedSessionId: string;
  set(key: string, value: unknown): void;
  regenerate(): Promise<void>;
  destroy(): Promise<void>;
  [field: string]: unknown;
}

interface SessionFastifyRequest {
  session: FastifySessionObject;
}

/** The session @fastify/session hands its store (its `Fastify.Session`: express-session's cookie, then the fields). */
interface FastifySessionData {
  cookie: {
    originalMaxAge: number | null;
    maxAge?: number;
    signed?: boolean;
    expires?: Date | null;
    httpOnly?: boolean;
    path?: string;
    domain?: string;
    secure?: boolean | 'auto';
    sameSite?: boolean | 'lax' | 'strict' | 'none';
  };
}

/** @fastify/session 11's `SessionStore`: what its `store` option takes. */
interface FastifySessionStore {
  set(sessionId: string, session: FastifySessionData, callback: (err?: unknown) => void): void;
  get(sessionId: string, callback: (err: unknown, result?: FastifySessionData | null) => void): void;
  destroy(sessionId: string, callback: (err?: unknown) => void): void;
}

type FastifyPlugin = Parameters<NestFastifyApplication['register']>[0];

const loaded = async (name: string): Promise<Record<string, unknown>> =>
  (await import(name)) as Record<string, unknown>;
let fastifyCookie: FastifyPlugin;
let fastifySession: FastifyPlugin;
let sign: (id: string) => string;
beforeAll(async () => {
  const cookie = await loaded('@fastify/cookie');
  fastifyCookie = cookie.default as FastifyPlugin;
  fastifySession = (await loaded('@fastify/session')).default as FastifyPlugin;
  const Signer = cookie.Signer as new (secret: string) => { sign(value: string): string };
  const signer = new Signer(SECRET);
  sign = (id) => signer.sign(id);
});

const SECRET = 'a-fastify-session-secret-of-more-than-32-characters';
const COOKIE = 'sessionId';
type Kind = 'ours' | 'connect-redis';
const KINDS: Kind[] = ['ours', 'connect-redis'];

/** Handlers that wait for the test: entered (the session was read in onRequest) and released by hand. */
const gates = new Map<string, { entered: () => void; release: Promise<void> }>();

function gate(tag: string): { entered: Promise<void>; release: () => void } {
  let entered!: () => void;
  let release!: () => void;
  const enteredP = new Promise<void>((r) => (entered = r));
  const releaseP = new Promise<void>((r) => (release = r));
  gates.set(tag, { entered, release: releaseP });
  return { entered: enteredP, release };
}

/** The session's own fields (not the cookie), each with its type as the handler sees it. */
function fieldsOf(session: FastifySessionObject): { fields: Record<string, unknown>; types: Record<string, string> } {
  const fields: Record<string, unknown> = {};
  const types: Record<string, string> = {};
  for (const [name, value] of Object.entries(session)) {
    if (name === 'cookie') continue;
    fields[name] = value;
    types[name] = value instanceof Date ? 'Date' : typeof value;
  }
  return { fields, types };
}

@Controller()
class SessionRoutes {
  @Get('me')
  me(@Req() req: SessionFastifyRequest) {
    return { id: req.session.sessionId, ...fieldsOf(req.session) };
  }

  @Post('set')
  set(@Req() req: SessionFastifyRequest, @Body() body: Record<string, unknown>) {
    for (const [name, value] of Object.entries(body)) req.session.set(name, value);
    return { id: req.session.sessionId };
  }

  @Post('profile')
  profile(@Req() req: SessionFastifyRequest) {
    req.session.set('at', new Date('2026-12-06T10:20:30.456Z'));
    req.session.set('nested', { a: { b: [1, { c: 'x' }], d: null }, e: 'é😀' });
    return { id: req.session.sessionId };
  }

  @Post('login')
  async login(@Req() req: SessionFastifyRequest, @Body() body: { user: string }) {
    const before = req.session.sessionId;
    await req.session.regenerate();
    req.session.set('userId', body.user);
    return { before, after: req.session.sessionId };
  }

  @Post('logout')
  async logout(@Req() req: SessionFastifyRequest) {
    await req.session.destroy();
    return { ok: true };
  }

  @Post('hold/:tag')
  async hold(@Req() req: SessionFastifyRequest, @Param('tag') tag: string) {
    const g = gates.get(tag);
    if (!g) throw new Error(`no gate ${tag}`);
    g.entered();
    await g.release;
    req.session.set(tag, true);
    return { id: req.session.sessionId };
  }
}

interface App {
  http: ReturnType<typeof request>;
  /** The Redis key of session `id` in the store under test. */
  key(id: string): string;
  redis: Redis;
  store: RedisSessionStore | RedisStore;
  nest: INestApplication;
  /** The errors Fastify's onError hook saw (a hook's error reaches Nest's exception filter, which answers it). */
  errors: Error[];
}

interface AppOptions {
  rolling?: boolean;
  saveUninitialized?: boolean;
  maxAge?: number;
  idGenerator?: () => string;
  ours?: Partial<Omit<RedisSessionStoreOptions, 'client'>>;
}

const closers: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  await closeToolkitApps();
  for (const close of closers.splice(0)) await close().catch(() => undefined);
  gates.clear();
});

/**
 * The app as Nest's docs register it on Fastify: NestFactory.create with a FastifyAdapter, then @fastify/cookie and
 * @fastify/session registered before listen. Ours on the toolkit's client; connect-redis on a node-redis client
 * (`disableOfflineQueue`: without it a command sent while the server is down waits for a reconnect, and the request
 * with it: there is no command timeout in node-redis by default).
 */
async function fastifySessionApp(kind: Kind, server: RedisServerHandle, opts: AppOptions = {}): Promise<App> {
  const prefix = `fs-${randomBytes(4).toString('hex')}:`;
  let store!: RedisSessionStore | RedisStore;
  const errors: Error[] = [];
  const toolkit = await createToolkitApp({
    target: { url: server.url },
    commandTimeout: 500,
    platform: 'fastify',
    http: true,
    controllers: [SessionRoutes],
    beforeInit: async (app) => {
      if (kind === 'ours') {
        store = new RedisSessionStore({ client: app.get(REDIS_CLIENT), prefix, ...opts.ours });
      } else {
        const client = createClient({ url: server.url, disableOfflineQueue: true });
        client.on('error', () => undefined);
        await client.connect();
        closers.push(() => client.close());
        store = new RedisStore({ client, prefix });
      }
      const fastify = app as NestFastifyApplication;
      await fastify.register(fastifyCookie);
      const typedStore: FastifySessionStore = store; // both type-check as @fastify/session's store
      const options = {
        secret: SECRET,
        cookieName: COOKIE,
        store: typedStore,
        cookie: { secure: false, ...(opts.maxAge === undefined ? {} : { maxAge: opts.maxAge }) },
        ...(opts.rolling === undefined ? {} : { rolling: opts.rolling }),
        ...(opts.saveUninitialized === undefined ? {} : { saveUninitialized: opts.saveUninitialized }),
        ...(opts.idGenerator === undefined ? {} : { idGenerator: opts.idGenerator }),
      };
      await fastify.register(fastifySession, options);
      fastify
        .getHttpAdapter()
        .getInstance()
        .addHook('onError', (_req, _reply, err, done) => {
          errors.push(err);
          done();
        });
    },
  });
  const redis = trackForCleanup(new Redis(server.url));
  return {
    http: request(toolkit.app.getHttpServer()),
    key: (id) => (kind === 'ours' ? `${prefix}sess:{${id}}` : `${prefix}${id}`),
    redis,
    store,
    nest: toolkit.app,
    errors,
  };
}

/** Where the docs block is written (gitignored), as a module of this repo with the package name pointed at lib/. */
const generated = join(repoRoot, 'test/artifacts/fastify-session');
afterAll(() => rmSync(generated, { recursive: true, force: true }));

function writeSnippet(name: string, code: string): string {
  mkdirSync(generated, { recursive: true });
  const file = join(generated, `${name}.ts`);
  writeFileSync(
    file,
    code.replaceAll(`from 'nestjs-redis-toolkit'`, `from '${relative(generated, join(repoRoot, 'lib/index.js'))}'`),
  );
  return file;
}

/** tsc over `file` with the project's options, in a program of its own (@fastify/session's types stay there). */
function typeCheck(file: string): string {
  const config = join(generated, 'tsconfig.json');
  writeFileSync(
    config,
    JSON.stringify({
      extends: '../../../tsconfig.json',
      compilerOptions: { noEmit: true },
      files: [file],
      include: [],
    }),
  );
  const tsc = spawnSync(process.execPath, [join(repoRoot, 'node_modules/typescript/bin/tsc'), '-p', config], {
    encoding: 'utf8',
    timeout: 110_000,
  });
  return `${tsc.stdout}${tsc.stderr}`.trim() + (tsc.status === 0 ? '' : `\n(tsc exit ${tsc.status})`);
}

/** Every error the request met is the failure policy's RedisUnavailableError (503), none a fresh session. */
function expectUnavailable(errors: Error[]): void {
  expect(errors.length).toBeGreaterThan(0);
  for (const err of errors) {
    expect(err).toBeInstanceOf(RedisUnavailableError);
    expect(err).toMatchObject({ code: 'E_REDIS_UNAVAILABLE', status: 503 });
  }
}

/** The session cookie pair of a response, as a browser sends it back. */
function cookieOf(header: unknown): string {
  const line = setCookieLines(header, COOKIE)[0];
  if (!line) throw new Error(`no ${COOKIE} cookie in ${JSON.stringify(header)}`);
  return line.split(';')[0];
}

const idOf = (cookie: string): string => decodeURIComponent(cookie.split('=')[1]).split('.')[0];

describe.each(KINDS)('@fastify/session on Nest + FastifyAdapter with %s', (kind) => {
  const redis = usePrivateRedis();

  it('a session created, read back on the next request, modified and saved', async () => {
    const app = await fastifySessionApp(kind, redis.server, { saveUninitialized: false });
    const first = await app.http.post('/set').send({ views: 1, name: 'ada' });
    expect(first.status).toBe(201);
    const cookie = cookieOf(first.headers['set-cookie']);
    expect(idOf(cookie)).toBe(first.body.id);
    expect(await app.redis.exists(app.key(first.body.id))).toBe(1);
    const read = await app.http.get('/me').set('Cookie', cookie);
    expect(read.body).toEqual({ id: first.body.id, fields: { views: 1, name: 'ada' }, types: expect.any(Object) });
    const changed = await app.http.post('/set').set('Cookie', cookie).send({ views: 2 });
    expect(changed.body.id).toBe(first.body.id);
    const again = await app.http.get('/me').set('Cookie', cookie);
    expect(again.body.fields).toEqual({ views: 2, name: 'ada' });
  });

  it('saveUninitialized (its default, true): a request without a cookie writes a session; false: nothing', async () => {
    const saving = await fastifySessionApp(kind, redis.server);
    const res = await saving.http.get('/me');
    expect(res.status).toBe(200);
    expect(await saving.redis.exists(saving.key(res.body.id))).toBe(1);
    const lazy = await fastifySessionApp(kind, redis.server, { saveUninitialized: false });
    const none = await lazy.http.get('/me');
    expect(none.status).toBe(200);
    expect(setCookieLines(none.headers['set-cookie'], COOKIE)).toEqual([]);
    expect(await lazy.redis.exists(lazy.key(none.body.id))).toBe(0);
  });

  it('cookie maxAge is the Redis TTL; rolling (its default) extends it on each request', async () => {
    const app = await fastifySessionApp(kind, redis.server, { maxAge: 60_000 });
    const first = await app.http.post('/set').send({ n: 1 });
    const cookie = cookieOf(first.headers['set-cookie']);
    const key = app.key(first.body.id);
    const pttl = await app.redis.pttl(key);
    expect(pttl).toBeGreaterThan(50_000);
    expect(pttl).toBeLessThanOrEqual(60_000);
    await app.redis.pexpire(key, 5_000);
    const read = await app.http.get('/me').set('Cookie', cookie);
    expect(read.body.fields).toEqual({ n: 1 });
    expect(setCookieLines(read.headers['set-cookie'], COOKIE)).toHaveLength(1);
    expect(await app.redis.pttl(key)).toBeGreaterThan(50_000);
  });

  it('rolling: false — an unmodified session is not saved; what a read does to the Redis TTL', async () => {
    const app = await fastifySessionApp(kind, redis.server, { maxAge: 60_000, rolling: false });
    const first = await app.http.post('/set').send({ n: 1 });
    const cookie = cookieOf(first.headers['set-cookie']);
    const key = app.key(first.body.id);
    await app.redis.pexpire(key, 5_000);
    const read = await app.http.get('/me').set('Cookie', cookie);
    expect(read.body.fields).toEqual({ n: 1 });
    expect(setCookieLines(read.headers['set-cookie'], COOKIE)).toEqual([]);
    // DIFFERENCE: connect-redis's get is a plain GET; ours touches on get (GETEX with the stored ttl) by default.
    // @fastify/session never calls the store's touch, so `disableTouch: true` makes ours a plain read (next case).
    if (kind === 'ours') expect(await app.redis.pttl(key)).toBeGreaterThan(50_000);
    else expect(await app.redis.pttl(key)).toBeLessThanOrEqual(5_000);
  });

  if (kind === 'ours') {
    it('rolling: false with disableTouch: a read leaves the Redis TTL alone, as connect-redis does', async () => {
      const app = await fastifySessionApp(kind, redis.server, {
        maxAge: 60_000,
        rolling: false,
        ours: { disableTouch: true },
      });
      const first = await app.http.post('/set').send({ n: 1 });
      const cookie = cookieOf(first.headers['set-cookie']);
      const key = app.key(first.body.id);
      await app.redis.pexpire(key, 5_000);
      expect((await app.http.get('/me').set('Cookie', cookie)).body.fields).toEqual({ n: 1 });
      expect(await app.redis.pttl(key)).toBeLessThanOrEqual(5_000);
    });
  }

  it('a stored cookie past its expires: @fastify/session destroys the session and starts a new one', async () => {
    const app = await fastifySessionApp(kind, redis.server, { saveUninitialized: false });
    const id = randomBytes(24).toString('base64url');
    const past = new Date(Date.now() - 60_000);
    // written as an older process would have left it: the cookie expired, the key still there
    await new Promise<void>((resolve, reject) =>
      (app.store as RedisSessionStore).set(
        id,
        { cookie: { originalMaxAge: null, expires: new Date(Date.now() + 60_000) }, n: 1 } as never,
        (err) => (err ? reject(err as Error) : resolve()),
      ),
    );
    const raw = await app.redis.get(app.key(id));
    expect(raw).not.toBeNull();
    // the stored cookie's expires moved to the past, in each store's own layout
    const text = raw as string;
    await app.redis.set(
      app.key(id),
      kind === 'ours' ? rewriteOursExpires(text, past) : rewriteConnectRedisExpires(text, past),
      'KEEPTTL',
    );
    const cookie = `${COOKIE}=${encodeURIComponent(sign(id))}`;
    const res = await app.http.get('/me').set('Cookie', cookie);
    expect(res.status).toBe(200);
    expect(res.body.id).not.toBe(id);
    expect(res.body.fields).toEqual({});
    expect(await app.redis.exists(app.key(id))).toBe(0);
  });

  it('regenerate: a new id, the old session gone, its cookie starts a new session', async () => {
    const app = await fastifySessionApp(kind, redis.server, { saveUninitialized: false });
    const first = await app.http.post('/set').send({ cart: 3 });
    const oldCookie = cookieOf(first.headers['set-cookie']);
    const login = await app.http.post('/login').set('Cookie', oldCookie).send({ user: 'u1' });
    expect(login.status).toBe(201);
    expect(login.body.before).toBe(first.body.id);
    expect(login.body.after).not.toBe(first.body.id);
    const newCookie = cookieOf(login.headers['set-cookie']);
    expect(idOf(newCookie)).toBe(login.body.after);
    expect(await app.redis.exists(app.key(first.body.id))).toBe(0);
    expect((await app.http.get('/me').set('Cookie', newCookie)).body.fields).toEqual({ userId: 'u1' });
    const old = await app.http.get('/me').set('Cookie', oldCookie);
    expect(old.body.id).not.toBe(first.body.id);
    expect(old.body.fields).toEqual({});
  });

  it('destroy (logout): the key is gone and the cookie starts a new session', async () => {
    const app = await fastifySessionApp(kind, redis.server, { saveUninitialized: false });
    const first = await app.http.post('/set').send({ userId: 'u2' });
    const cookie = cookieOf(first.headers['set-cookie']);
    const out = await app.http.post('/logout').set('Cookie', cookie);
    expect(out.status).toBe(201);
    // @fastify/session sets request.session to null and leaves the browser's cookie as it is (both stores)
    expect(setCookieLines(out.headers['set-cookie'], COOKIE)).toEqual([]);
    expect(await app.redis.exists(app.key(first.body.id))).toBe(0);
    const after = await app.http.get('/me').set('Cookie', cookie);
    expect(after.body.id).not.toBe(first.body.id);
    expect(after.body.fields).toEqual({});
  });

  it('a tampered cookie and a signed unknown id: a new session, nothing read or written for them', async () => {
    const app = await fastifySessionApp(kind, redis.server, { saveUninitialized: false });
    const first = await app.http.post('/set').send({ n: 1 });
    const cookie = cookieOf(first.headers['set-cookie']);
    const tampered = `${cookie.slice(0, -3)}AAA`;
    const t = await app.http.get('/me').set('Cookie', tampered);
    expect(t.status).toBe(200);
    expect(t.body.id).not.toBe(first.body.id);
    expect(t.body.fields).toEqual({});
    const unknown = randomBytes(24).toString('base64url');
    const u = await app.http.get('/me').set('Cookie', `${COOKIE}=${encodeURIComponent(sign(unknown))}`);
    expect(u.status).toBe(200);
    expect(u.body.id).not.toBe(unknown);
    expect(await app.redis.exists(app.key(unknown))).toBe(0);
    // the real session is untouched
    expect((await app.http.get('/me').set('Cookie', cookie)).body.fields).toEqual({ n: 1 });
  });

  it('fields round-trip: a Date and nested objects', async () => {
    const app = await fastifySessionApp(kind, redis.server, { saveUninitialized: false });
    const first = await app.http.post('/profile');
    const cookie = cookieOf(first.headers['set-cookie']);
    const read = await app.http.get('/me').set('Cookie', cookie);
    expect(read.body.fields).toEqual({
      at: '2026-12-06T10:20:30.456Z',
      nested: { a: { b: [1, { c: 'x' }], d: null }, e: 'é😀' },
    });
    // DIFFERENCE: ours gives the handler the Date back (the toolkit's serializer); connect-redis (JSON) its ISO string
    expect(read.body.types).toEqual({ at: kind === 'ours' ? 'Date' : 'string', nested: 'object' });
  });

  it('concurrent requests of one session, each setting its own field: the last save wins (both stores)', async () => {
    const app = await fastifySessionApp(kind, redis.server, { saveUninitialized: false });
    const first = await app.http.post('/set').send({ base: 1 });
    const cookie = cookieOf(first.headers['set-cookie']);
    const a = gate('a');
    const b = gate('b');
    const ra = app.http
      .post('/hold/a')
      .set('Cookie', cookie)
      .then((r) => r);
    const rb = app.http
      .post('/hold/b')
      .set('Cookie', cookie)
      .then((r) => r);
    await Promise.all([a.entered, b.entered]); // both have read the session
    a.release();
    expect((await ra).status).toBe(201);
    b.release();
    expect((await rb).status).toBe(201);
    const read = await app.http.get('/me').set('Cookie', cookie);
    // the store API hands `set` the whole session, not a change: a store cannot merge it (see docs/session.md)
    expect(read.body.fields).toEqual({ base: 1, b: true });
  });

  it("a cookie maxAge past ours' maxAgeMs: connect-redis keeps it as long; ours warns once, bounded by maxAgeMs", async () => {
    const warn = jest.spyOn(Logger.prototype, 'warn');
    try {
      const days40 = 40 * 86_400_000;
      const app = await fastifySessionApp(kind, redis.server, { saveUninitialized: false, maxAge: days40 });
      const first = await app.http.post('/set').send({ n: 1 });
      const cookie = cookieOf(first.headers['set-cookie']);
      await app.http.post('/set').set('Cookie', cookie).send({ n: 2 });
      const pttl = await app.redis.pttl(app.key(first.body.id));
      const past = warn.mock.calls.map((c) => String(c[0])).filter((m) => m.includes('past maxAgeMs'));
      if (kind === 'ours') {
        // DIFFERENCE: an absolute lifetime (maxAgeMs, 30 days by default) whatever the cookie; now said at the first set
        expect(pttl).toBeLessThanOrEqual(30 * 86_400_000);
        expect(past).toEqual([
          `RedisSessionStore: a session's cookie lasts ${days40} ms, past maxAgeMs (2592000000 ms): the store ends ` +
            'every session maxAgeMs after its creation, whatever its activity and its cookie (connect-redis has no such ' +
            'bound). Give the store a maxAgeMs at least as long as the cookie to keep such sessions as long',
        ]);
      } else {
        expect(pttl).toBeGreaterThan(39 * 86_400_000);
        expect(past).toEqual([]);
      }
    } finally {
      warn.mockRestore();
    }
  });

  it('an idGenerator whose ids the store cannot key: ours fails the save with an InvalidKeyError naming it', async () => {
    const app = await fastifySessionApp(kind, redis.server, {
      saveUninitialized: false,
      idGenerator: () => `user:${randomBytes(12).toString('hex')}`,
    });
    const res = await app.http.post('/set').send({ n: 1 });
    if (kind === 'ours') {
      // DIFFERENCE: connect-redis keys any id; ours only ids of [A-Za-z0-9_-] (16 to 128), as under express-session
      expect(res.status).toBe(500);
      expect(setCookieLines(res.headers['set-cookie'], COOKIE)).toEqual([]);
      // (Fastify's onError hook sees an onSend hook's error twice)
      expect(app.errors.length).toBeGreaterThan(0);
      for (const err of app.errors) {
        expect(err).toBeInstanceOf(InvalidKeyError);
        expect(err.message).toBe(
          'session id must be 16 to 128 characters of [A-Za-z0-9_-], got 29 characters, one outside [A-Za-z0-9_-]: ' +
            "the framework's id generator (express-session's genid, @fastify/session's idGenerator) must make such " +
            'ids; its default does, and so does generateSessionId (nestjs-redis-toolkit/advanced)',
        );
      }
    } else {
      expect(res.status).toBe(201);
      const cookie = cookieOf(res.headers['set-cookie']);
      expect((await app.http.get('/me').set('Cookie', cookie)).body.fields).toEqual({ n: 1 });
    }
  });

  it('logout while another request of the session is in flight: what that request saves afterwards', async () => {
    const app = await fastifySessionApp(kind, redis.server, { saveUninitialized: false });
    const first = await app.http.post('/set').send({ userId: 'u3' });
    const cookie = cookieOf(first.headers['set-cookie']);
    const late = gate('late');
    const inFlight = app.http
      .post('/hold/late')
      .set('Cookie', cookie)
      .then((r) => r);
    await late.entered;
    expect((await app.http.post('/logout').set('Cookie', cookie)).status).toBe(201);
    late.release();
    expect((await inFlight).status).toBe(201);
    const after = await app.http.get('/me').set('Cookie', cookie);
    // DIFFERENCE: connect-redis's late SET brings the logged-out session back; ours drops it (the destroy's tombstone)
    if (kind === 'ours') {
      expect(await app.redis.exists(app.key(first.body.id))).toBe(0);
      expect(after.body.fields).toEqual({});
    } else {
      expect(await app.redis.exists(app.key(first.body.id))).toBe(1);
      expect(after.body.fields).toEqual({ userId: 'u3', late: true });
    }
  });
});

describe.each(KINDS)('@fastify/session with %s when Redis is down', (kind) => {
  async function downApp(opts: AppOptions = {}): Promise<{ app: App; server: RedisServerHandle }> {
    const server = trackForCleanup(await startRedisServer());
    const app = await fastifySessionApp(kind, server, { saveUninitialized: false, ...opts });
    return { app, server };
  }

  it('reading a session: ours answers 503 E_REDIS_UNAVAILABLE, never a fresh empty session', async () => {
    const { app, server } = await downApp();
    const first = await app.http.post('/set').send({ n: 1 });
    const cookie = cookieOf(first.headers['set-cookie']);
    await server.stop();
    const res = await app.http.get('/me').set('Cookie', cookie);
    expect(setCookieLines(res.headers['set-cookie'], COOKIE)).toEqual([]);
    // the get's error reaches @fastify/session's onRequest hook, then Nest's exception filter: its status, its text
    if (kind === 'ours') {
      expect(res.status).toBe(503);
      expect(res.body).toEqual({ statusCode: 503, message: 'Service Unavailable' });
      expectUnavailable(app.errors);
    } else {
      // node-redis's "The client is offline" (disableOfflineQueue) has no status: Nest answers 500
      expect(res.status).toBe(500);
      expect(app.errors.map((e) => e.message)).toEqual(['The client is offline']);
    }
  });

  it('saving a session read before Redis went down: ours answers 503 E_REDIS_UNAVAILABLE', async () => {
    const { app, server } = await downApp();
    const first = await app.http.post('/set').send({ n: 1 });
    const cookie = cookieOf(first.headers['set-cookie']);
    const g = gate('saving'); // (not 'save': the handler sets a field of that name, over the Session's save method)
    const inFlight = app.http
      .post('/hold/saving')
      .set('Cookie', cookie)
      .then((r) => r);
    await g.entered;
    await server.stop();
    g.release();
    const res = await inFlight;
    expect(setCookieLines(res.headers['set-cookie'], COOKIE)).toEqual([]);
    // the set's error reaches @fastify/session's onSend hook, answered by Fastify's error handler (code and message)
    if (kind === 'ours') {
      expect(res.status).toBe(503);
      expect(res.body).toMatchObject({ statusCode: 503, code: 'E_REDIS_UNAVAILABLE', error: 'Service Unavailable' });
      expectUnavailable(app.errors);
    } else {
      expect(res.status).toBe(500);
      expect(res.body).toMatchObject({ statusCode: 500, message: 'The client is offline' });
    }
  });

  it('a request without a cookie and nothing to save needs no Redis (saveUninitialized: false)', async () => {
    const { app, server } = await downApp();
    await server.stop();
    const res = await app.http.get('/me');
    expect(res.status).toBe(200);
    expect(res.body.fields).toEqual({});
  });
});

describe('@fastify/session with ours: the toolkit beside it', () => {
  const redis = usePrivateRedis();

  it("docs/session.md's registration type-checks (strict, @fastify/session's own types) and serves sessions", async () => {
    const file = writeSnippet('fastify-session-store', docSnippet('docs/session.md', 'fastify-session-store'));
    expect(typeCheck(file)).toBe('');
    const { useRedisSessions } = (await import(file)) as {
      useRedisSessions(app: NestFastifyApplication): Promise<void>;
    };
    const saved = process.env.SESSION_SECRET;
    process.env.SESSION_SECRET = SECRET;
    try {
      const toolkit = await createToolkitApp({
        target: { url: redis.server.url },
        platform: 'fastify',
        http: true,
        controllers: [SessionRoutes],
        beforeInit: (app) => useRedisSessions(app as NestFastifyApplication),
      });
      const http = request(toolkit.app.getHttpServer());
      const first = await http.post('/set').send({ userId: 'doc', at: 1 });
      expect(first.status).toBe(201);
      const cookie = cookieOf(first.headers['set-cookie']);
      const pttl = await trackForCleanup(new Redis(redis.server.url)).pttl(`rtk:sess:{${first.body.id}}`);
      expect(pttl).toBeGreaterThan(86_000_000);
      expect(pttl).toBeLessThanOrEqual(86_400_000);
      expect((await http.get('/me').set('Cookie', cookie)).body.fields).toEqual({ userId: 'doc', at: 1 });
      expect(await toolkit.get(SessionService).listForUser('doc')).toHaveLength(1);
    } finally {
      if (saved === undefined) delete process.env.SESSION_SECRET;
      else process.env.SESSION_SECRET = saved;
    }
  }, 120_000);

  it("the toolkit's start leaves @fastify/session's request.session alone, with one warning", async () => {
    const warn = jest.spyOn(Logger.prototype, 'warn');
    try {
      await fastifySessionApp('ours', redis.server, { saveUninitialized: false });
      const owned = warn.mock.calls.map((c) => String(c[0])).filter((m) => m.includes('already decorated'));
      expect(owned).toEqual([
        'request.session is already decorated by another Fastify plugin (e.g. @fastify/session, whose store may be ' +
          "RedisSessionStore): it is that plugin's; the toolkit's own session (SessionMiddleware) is read with " +
          '@CurrentSession() (or request.raw.session)',
      ]);
    } finally {
      warn.mockRestore();
    }
  });

  it('a session whose userId is set is indexed: SessionService.destroyAllForUser logs it out', async () => {
    // the store's prefix is the module's keyPrefix (default rtk:): the two share sessions and user indexes
    const app = await fastifySessionApp('ours', redis.server, { saveUninitialized: false, ours: { prefix: 'rtk:' } });
    const first = await app.http.post('/set').send({ userId: 'u9' });
    const cookie = cookieOf(first.headers['set-cookie']);
    await app.nest.get(SessionService).destroyAllForUser('u9');
    const after = await app.http.get('/me').set('Cookie', cookie);
    expect(after.body.fields).toEqual({});
  });
});

/** Our stored value with its cookie's expires replaced (the cookie is the envelope's `k`, its own JSON text). */
function rewriteOursExpires(text: string, expires: Date): string {
  const envelope = JSON.parse(text) as { k: string };
  const cookie = JSON.parse(envelope.k) as Record<string, unknown>;
  cookie.expires = expires.toISOString();
  return JSON.stringify({ ...envelope, k: JSON.stringify(cookie) });
}

function rewriteConnectRedisExpires(text: string, expires: Date): string {
  const session = JSON.parse(text) as { cookie: Record<string, unknown> };
  session.cookie.expires = expires.toISOString();
  return JSON.stringify(session);
}
