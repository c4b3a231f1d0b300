/**
 * Hostile positional arguments of RedisSessionStore, SessionService.create / update and the cookie-header helpers,
 * beyond test/foundation/arguments-everywhere.hostile.spec.ts: a session `set` cannot store, a callback that is not a
 * function and errors that are not Redis's are typed (or passed on) before any Redis command, never stored as what
 * Object.keys makes of them nor reported as an outage; what express-session really hands the store still goes through.
 */
import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import express from 'express';
import session from 'express-session';
import { Redis } from 'ioredis';
import request from 'supertest';
import {
  InvalidKeyError,
  InvalidOptionsError,
  RedisSessionStore,
  RedisUnavailableError,
  SerializationError,
  SessionService,
} from '../../lib/index.js';
import { recordCommands } from '../support/command-recorder.js';
import { trackForCleanup } from '../support/private-servers.js';
import { sharedServers } from '../support/shared-servers.js';
import { closeToolkitApps, createToolkitApp } from '../support/toolkit-app.js';

afterAll(closeToolkitApps);

const any = (v: unknown) => v as never;
const sid = (): string => randomBytes(24).toString('base64url');
const stored = { cookie: { originalMaxAge: 60_000 }, a: 1 };

function newStore(options: Partial<ConstructorParameters<typeof RedisSessionStore>[0]> = {}) {
  const client = trackForCleanup(new Redis(sharedServers().single.url));
  const store = new RedisSessionStore({ client, prefix: `rtk-sha${randomBytes(4).toString('hex')}:`, ...options });
  return { client, store };
}

/** The commands `fn` sent, but the store clock's TIME samples (an unref'd timer of its own). */
async function commandsOf(client: Redis, fn: () => Promise<unknown>): Promise<string[]> {
  const { commands } = await recordCommands(client, () => fn().catch(() => undefined));
  return commands.filter((c) => c !== 'time');
}

class Payload {
  cookie = { originalMaxAge: 60_000 };
  a = 1;
}

describe('RedisSessionStore.set: the session argument', () => {
  const refused: [string, unknown][] = [
    ['undefined', undefined],
    ['null', null],
    ['42', 42],
    ['a string', 'x'.repeat(2_000)],
    ['10n', 10n],
    ['a Symbol', Symbol('s')],
    ['an array', ['a']],
    ['a function', () => 1],
    ['a Map', new Map([['a', 1]])],
    ['a Set', new Set([1])],
    ['a Date', new Date(0)],
    ['a boxed string', Object('ab')],
    ['a Promise', Promise.resolve({ a: 1 })],
    ['an Error', new Error('e')],
    ['a Uint8Array', new Uint8Array(3)],
  ];

  it.each(refused)('%s: InvalidKeyError before any Redis command, the stored session kept', async (_l, v) => {
    const { client, store } = newStore();
    const id = sid();
    await store.set(id, any(stored));
    const attempt = store.set(id, any(v));
    await expect(attempt).rejects.toBeInstanceOf(InvalidKeyError);
    await expect(attempt).rejects.not.toBeInstanceOf(RedisUnavailableError);
    await expect(attempt).rejects.toThrow(/^session must be an object of its fields/);
    expect(await commandsOf(client, () => store.set(id, any(v)))).toEqual([]);
    // the callback form gets the same error
    const error = await new Promise((resolve) => void store.set(id, any(v), resolve));
    expect(error).toBeInstanceOf(InvalidKeyError);
    expect(await store.get(id)).toEqual(stored);
  });

  it('an object literal, a prototype-less object and a class instance are stored, fields as given', async () => {
    const { store } = newStore();
    const bare = Object.assign(Object.create(null) as object, stored);
    for (const value of [{ ...stored }, bare, new Payload()]) {
      const id = sid();
      await store.set(id, any(value));
      expect(await store.get(id)).toEqual(stored);
    }
  });

  it("express-session's Session (from the store's own createSession) is stored", async () => {
    const { store } = newStore();
    const id = sid();
    const req = { sessionID: id } as unknown as IncomingMessage & { session?: object };
    store.createSession(req, any({ cookie: { originalMaxAge: 60_000, path: '/' }, a: 1 }));
    expect(Object.getPrototypeOf(req.session)).toBe(session.Session.prototype);
    await store.set(id, any(req.session));
    expect(await store.get(id)).toMatchObject({ a: 1, cookie: { originalMaxAge: 60_000, path: '/' } });
  });

  it('through express-session over HTTP: login, a counter, logout', async () => {
    const { store } = newStore();
    const app = express();
    app.use(session({ store, secret: 'shh', resave: false, saveUninitialized: false, cookie: { maxAge: 60_000 } }));
    app.post('/login', (req, res) => {
      (req.session as unknown as Record<string, unknown>).user = 'alice';
      res.json({ ok: true });
    });
    app.get('/me', (req, res) => {
      const s = req.session as unknown as Record<string, number | string | undefined>;
      s.views = Number(s.views ?? 0) + 1;
      res.json({ user: s.user ?? null, views: s.views });
    });
    const agent = request.agent(app);
    await agent.post('/login').expect(200);
    expect((await agent.get('/me').expect(200)).body).toEqual({ user: 'alice', views: 1 });
    expect((await agent.get('/me').expect(200)).body).toEqual({ user: 'alice', views: 2 });
    const [id] = await store.ids();
    expect(await store.get(id)).toMatchObject({ user: 'alice', views: 2 });
  });
});

describe('RedisSessionStore: errors that are not Redis’s are not an outage', () => {
  it("a ttl function's error is passed on as it is (promise and callback), not RedisUnavailableError", async () => {
    for (const thrown of [new TypeError('app bug'), new Error('app says no')]) {
      const { store } = newStore({
        ttl: () => {
          throw thrown;
        },
      });
      await expect(store.set(sid(), any(stored))).rejects.toBe(thrown);
      expect(await new Promise((resolve) => void store.set(sid(), any(stored), resolve))).toBe(thrown);
      await expect(store.touch(sid(), any(stored))).rejects.toBe(thrown);
    }
  });

  it('express answers 500 for a ttl function that throws, not 503', async () => {
    const { store } = newStore({
      ttl: () => {
        throw new TypeError('app bug');
      },
    });
    const app = express();
    app.use(session({ store, secret: 'shh', resave: false, saveUninitialized: false }));
    app.get('/', (req, res, next) => {
      (req.session as unknown as Record<string, unknown>).x = 1;
      req.session.save((err) => (err ? next(err) : res.json({ ok: true })));
    });
    app.use((err: { status?: number }, _req: express.Request, res: express.Response, _next: express.NextFunction) => {
      res.status(err.status ?? 500).json({ status: err.status ?? null });
    });
    expect((await request(app).get('/')).status).toBe(500);
  });

  it('a cookie JSON cannot write (a BigInt in it): SerializationError, the stored session kept', async () => {
    const { store } = newStore();
    const id = sid();
    await store.set(id, any(stored));
    const attempt = store.set(id, any({ cookie: { originalMaxAge: 60_000, n: 1n }, a: 2 }));
    await expect(attempt).rejects.toBeInstanceOf(SerializationError);
    await expect(store.touch(id, any({ cookie: { originalMaxAge: 30_000, n: 1n } }))).rejects.toBeInstanceOf(
      SerializationError,
    );
    expect(await store.get(id)).toEqual(stored);
  });
});

describe('RedisSessionStore: a callback that is not a function', () => {
  it.each([
    ["'cb'", 'cb'],
    ['42', 42],
    ['{ }', {}],
    ['true', true],
  ])('%s: InvalidOptionsError from every method, before any Redis command', async (_l, cb) => {
    const { client, store } = newStore();
    const id = sid();
    await store.set(id, any(stored));
    const calls: [string, () => Promise<unknown>][] = [
      ['get', () => store.get(id, any(cb))],
      ['set', () => store.set(id, any({ ...stored, a: 2 }), any(cb))],
      ['touch', () => store.touch(id, any(stored), any(cb))],
      ['destroy', () => store.destroy(id, any(cb))],
      ['all', () => store.all(any(cb))],
      ['ids', () => store.ids(any(cb))],
      ['length', () => store.length(any(cb))],
      ['clear', () => store.clear(any(cb))],
    ];
    for (const [name, call] of calls) {
      await expect(call()).rejects.toThrow(InvalidOptionsError);
      expect([name, await commandsOf(client, call)]).toEqual([name, []]);
    }
    expect(await store.get(id)).toEqual(stored);
  });
});

describe('SessionService: data and patch', () => {
  let sessions: SessionService;
  beforeAll(async () => {
    const app = await createToolkitApp({
      keyPrefix: `rtk-sha${randomBytes(4).toString('hex')}:`,
      session: { cookie: { secret: 'hostile-arguments-secret-0123456789' } },
    });
    sessions = app.get(SessionService);
  });

  it.each([
    ['a Map', new Map([['a', 1]])],
    ['a Set', new Set([1])],
    ['a Date', new Date(0)],
    ['a class instance', new Payload()],
    ['a boxed number', Object(1)],
  ])('%s: InvalidKeyError from create and update; the session kept', async (label, v) => {
    await expect(sessions.create('sha-u', any(v))).rejects.toThrow(InvalidKeyError);
    await expect(sessions.create('sha-u', any(v))).rejects.toThrow(/^session data must be a plain object, not a /);
    const made = await sessions.create('sha-u', { kept: 1 });
    await expect(sessions.update(made.id, any(v))).rejects.toThrow(/^session patch must be a plain object, not a /);
    expect((await sessions.get(made.id))?.data).toEqual({ kept: 1 });
    expect(label).toBeTruthy();
  });

  it('a prototype-less object is plain: created and merged', async () => {
    const data = Object.assign(Object.create(null) as object, { a: 1 });
    const made = await sessions.create('sha-u', any(data));
    expect(made.data).toEqual({ a: 1 });
    const patch = Object.assign(Object.create(null) as object, { b: 2 });
    expect((await sessions.update(made.id, any(patch))).data).toEqual({ a: 1, b: 2 });
  });

  it('no data (undefined, null) is an empty session, as before', async () => {
    expect((await sessions.create('sha-u')).data).toEqual({});
    expect((await sessions.create('sha-u', any(null))).data).toEqual({});
  });

  it.each([
    ['null', null],
    ['42', 42],
    ['an object', { cookie: 'x' }],
    ['10n', 10n],
    ['a Symbol', Symbol('c')],
    ['a function', () => 'rtk.sid=x'],
    ['an array holding a number', ['a=b', 42]],
    ['an array holding a Symbol', [Symbol('c')]],
  ])('cookie header %s: no cookie (null / []), never a TypeError', (_l, header) => {
    expect(sessions.idFromCookieHeader(any(header))).toBeNull();
    expect(sessions.idsFromCookieHeader(any(header))).toEqual([]);
  });

  it('a string and an array of strings still give the session id', async () => {
    const made = await sessions.create('sha-u');
    const cookie = `rtk.sid=${encodeURIComponent(sessions.signedCookieValue(made.id))}`;
    expect(sessions.idFromCookieHeader(cookie)).toBe(made.id);
    expect(sessions.idFromCookieHeader(['a=b', cookie])).toBe(made.id);
    expect(sessions.idsFromCookieHeader(['a=b', cookie])).toEqual([made.id]);
  });
});
