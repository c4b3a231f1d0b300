import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import express from 'express';
import session from 'express-session';
import { Cluster, Redis } from 'ioredis';
import request from 'supertest';
import { RedisSessionStore, RedisUnavailableError, SessionService, SessionTooLargeError } from '../../lib/index.js';
import { generateSessionId, RedisConnection } from '../../lib/advanced.js';
import type { RedisClient } from '../../lib/common/lua-script.js';
import { recordCommands } from '../support/command-recorder.js';
import { startRedisServer } from '../support/redis-server.js';
import { trackForCleanup } from '../support/private-servers.js';
import { sharedServers } from '../support/shared-servers.js';
import { closeToolkitApps, createToolkitApp } from '../support/toolkit-app.js';

afterEach(closeToolkitApps);

declare module 'express-session' {
  interface SessionData {
    userId?: string;
    views?: number;
  }
}

function clientFor(target: 'single' | 'cluster'): RedisClient {
  const client =
    target === 'single'
      ? new Redis(sharedServers().single.url)
      : new Cluster(sharedServers().cluster, { redisOptions: { maxRetriesPerRequest: 0 } });
  return trackForCleanup(client);
}

/** A plain Express app (no Nest) using express-session with our store, as an app using connect-redis would. */
function expressApp(store: RedisSessionStore): { app: express.Express } {
  const app = express();
  app.use(express.json());
  app.use(session({ store, secret: 'shh', resave: false, saveUninitialized: false, cookie: { maxAge: 60_000 } }));
  app.post('/login', (req, res, next) => {
    req.session.regenerate((err) => {
      if (err) return next(err);
      req.session.userId = String((req.body as { user?: string }).user);
      req.session.views = 0;
      res.json({ ok: true });
    });
  });
  app.get('/me', (req, res) => {
    if (!req.session.userId) return res.status(401).json({ error: 'no session' });
    req.session.views = (req.session.views ?? 0) + 1;
    res.json({ userId: req.session.userId, views: req.session.views });
  });
  app.get('/peek', (req, res) => res.json({ userId: req.session.userId ?? null }));
  app.post('/logout', (req, res, next) => req.session.destroy((err) => (err ? next(err) : res.json({ ok: true }))));
  return { app };
}

describe.each(['single', 'cluster'] as const)('RedisSessionStore with express-session on %s', (target) => {
  const prefix = (): string => `rtk-store-${randomBytes(4).toString('hex')}:`;

  it('login, read, logout through HTTP', async () => {
    const store = new RedisSessionStore({ client: clientFor(target), prefix: prefix() });
    const { app } = expressApp(store);
    const agent = request.agent(app);
    await agent.get('/me').expect(401);
    expect(await store.length()).toBe(0); // saveUninitialized: false
    await agent.post('/login').send({ user: 'alice' }).expect(200);
    expect((await agent.get('/me').expect(200)).body).toEqual({ userId: 'alice', views: 1 });
    expect((await agent.get('/me').expect(200)).body).toEqual({ userId: 'alice', views: 2 });
    expect((await agent.get('/peek').expect(200)).body).toEqual({ userId: 'alice' });
    const [id] = await store.ids();
    expect(id).toMatch(/^[A-Za-z0-9_-]{32}$/); // express-session's default genid
    const stored = await store.get(id);
    expect(stored).toMatchObject({ userId: 'alice', views: 2, cookie: { httpOnly: true, path: '/' } });
    // express-session derives originalMaxAge from `expires - Date.now()` when it builds the cookie, so it reads
    // 59_999 when a millisecond ticks in between: the store must keep whatever it was given, within that tick.
    expect(stored?.cookie.originalMaxAge).toBeGreaterThanOrEqual(59_990);
    expect(stored?.cookie.originalMaxAge).toBeLessThanOrEqual(60_000);
    await agent.post('/logout').expect(200);
    await agent.get('/me').expect(401);
    expect(await store.get(id)).toBeNull();
    expect(await store.length()).toBe(0);
  });

  it('implements get/set/touch/destroy/all/length/ids/clear with promises and callbacks', async () => {
    const client = clientFor(target);
    const p = prefix();
    const store = new RedisSessionStore({ client, prefix: p, ttl: 5_000 });
    const cookie = { originalMaxAge: 2_000, expires: new Date(Date.now() + 2_000), httpOnly: true, path: '/' };
    const ids = Array.from({ length: 30 }, () => randomBytes(24).toString('base64url'));
    await Promise.all(ids.map((id, i) => store.set(id, { cookie, userId: `u${i % 3}`, n: i } as never)));
    expect(await store.length()).toBe(30);
    expect((await store.ids()).sort()).toEqual([...ids].sort());
    const all = await store.all();
    expect(all).toHaveLength(30);
    expect(all.map((s) => (s as unknown as { n: number }).n).sort((a, b) => a - b)).toEqual(ids.map((_, i) => i));
    // ttl from the cookie's expiry, as connect-redis does
    const pttl = await client.pttl(`${p}sess:{${ids[0]}}`);
    expect(pttl).toBeGreaterThan(1_000);
    expect(pttl).toBeLessThanOrEqual(2_000);
    // callback style
    const viaCallback = await new Promise<unknown>((resolve, reject) =>
      store.get(ids[1], (err, s) => (err ? reject(err) : resolve(s))),
    );
    expect(viaCallback).toMatchObject({ n: 1, userId: 'u1' });
    await new Promise<void>((resolve, reject) => store.destroy(ids[1], (err) => (err ? reject(err) : resolve())));
    expect(await store.get(ids[1])).toBeNull();
    // touch: a no-op after a touching get (touchOnGet defaults to true) — it must report no error, leave the session
    // readable and not extend its ttl (the cookie's expiry still bounds it)
    const touchErr = await new Promise<unknown>((resolve) =>
      store.touch(ids[2], { cookie } as never, (err?: unknown) => resolve(err)),
    );
    expect(touchErr ?? null).toBeNull();
    expect(await store.get(ids[2])).toMatchObject({ n: 2 });
    expect(await client.pttl(`${p}sess:{${ids[2]}}`)).toBeLessThanOrEqual(2_000);
    await store.clear();
    expect(await store.length()).toBe(0);
    expect(await client.exists(`${p}sess:user:{u0}`)).toBe(0);
  });

  it('touchOnGet: false makes get a plain read and touch extend the ttl', async () => {
    const client = clientFor(target);
    const p = prefix();
    const store = new RedisSessionStore({ client, prefix: p, ttl: 1_000, touchOnGet: false });
    const id = randomBytes(24).toString('base64url');
    await store.set(id, { cookie: { originalMaxAge: null } } as never);
    await new Promise((r) => setTimeout(r, 400));
    await store.get(id);
    expect(await client.pttl(`${p}sess:{${id}}`)).toBeLessThan(700);
    await store.touch(id, { cookie: { originalMaxAge: null } } as never);
    expect(await client.pttl(`${p}sess:{${id}}`)).toBeGreaterThan(900);
  });

  it.each([true, false])(
    'touch changes the ttl: set with maxAge 60 s, touch with 3,600 s (touchOnGet %s)',
    async (touchOnGet) => {
      const client = clientFor(target);
      const p = prefix();
      const store = new RedisSessionStore({ client, prefix: p, touchOnGet });
      const id = randomBytes(24).toString('base64url');
      const cookieFor = (maxAge: number) => ({
        originalMaxAge: maxAge,
        expires: new Date(Date.now() + maxAge),
        httpOnly: true,
        path: '/',
      });
      await store.set(id, { cookie: cookieFor(60_000), n: 1 } as never);
      expect(await client.pttl(`${p}sess:{${id}}`)).toBeLessThanOrEqual(60_000);
      // resave: false — express-session gets the session, the app changes cookie.maxAge, express-session touches
      await store.get(id);
      await store.touch(id, { cookie: cookieFor(3_600_000), n: 1 } as never);
      const pttl = await client.pttl(`${p}sess:{${id}}`);
      expect(pttl).toBeGreaterThan(3_500_000);
      expect(pttl).toBeLessThanOrEqual(3_600_000);
      // the next touching read keeps the new ttl instead of resetting it to the one of the last set
      expect(await store.get(id)).toMatchObject({ n: 1, cookie: { originalMaxAge: 3_600_000 } });
      expect(await client.pttl(`${p}sess:{${id}}`)).toBeGreaterThan(3_500_000);
    },
  );

  it('concurrent requests of one session: each touch after its touching get sends nothing', async () => {
    const client = clientFor(target);
    const store = new RedisSessionStore({ client, prefix: prefix() });
    const id = randomBytes(24).toString('base64url');
    const cookie = { originalMaxAge: 60_000, expires: new Date(Date.now() + 60_000), httpOnly: true, path: '/' };
    await store.set(id, { cookie, n: 1 } as never);
    // express-session with 5 requests of one cookie in flight: 5 gets, then their 5 touches
    await Promise.all(Array.from({ length: 5 }, () => store.get(id)));
    const touched = await recordCommands(client, () =>
      Promise.all(Array.from({ length: 5 }, () => store.touch(id, { cookie } as never))),
    );
    // before: only the first touch found its get, the other 4 ran the touch script
    expect(touched.commands).toEqual([]);
    // a sixth touch has no get of its own: it extends the ttl itself
    const sixth = await recordCommands(client, () => store.touch(id, { cookie } as never));
    expect(sixth.commands.length).toBeGreaterThan(0);
  });

  it('20 concurrent sets of one session: the last wins, written in 2 scripts, the others resolve', async () => {
    const client = clientFor(target);
    const p = prefix();
    const store = new RedisSessionStore({ client, prefix: p });
    const id = randomBytes(24).toString('base64url');
    const cookie = { originalMaxAge: 60_000, expires: new Date(Date.now() + 60_000), httpOnly: true, path: '/' };
    await store.set(id, { cookie, userId: 'mia', n: -1 } as never);
    const { commands } = await recordCommands(client, () =>
      Promise.all(Array.from({ length: 20 }, (_, n) => store.set(id, { cookie, userId: 'mia', n } as never))),
    );
    // the first at once, then only the last of the 19 made meanwhile (each replaces the whole session)
    expect(commands.filter((c) => c === 'evalsha' || c === 'eval')).toHaveLength(2);
    expect(await store.get(id)).toMatchObject({ userId: 'mia', n: 19 });
    expect(await client.zscore(`${p}sess:user:{mia}`, id)).not.toBeNull();
  });

  it('what set stores comes back unchanged from get (no invented cookie)', async () => {
    const store = new RedisSessionStore({ client: clientFor(target), prefix: prefix() });
    const id = randomBytes(24).toString('base64url');
    await store.set(id, { foo: 'bar' } as never);
    expect(await store.get(id)).toStrictEqual({ foo: 'bar' });
    const cookie = { originalMaxAge: 60_000, expires: new Date(Date.now() + 60_000).toISOString(), path: '/' };
    await store.set(id, { foo: 'baz', cookie } as never);
    expect(await store.get(id)).toStrictEqual({ foo: 'baz', cookie });
  });

  it('set stores own fields only: __proto__ as a field, functions and undefined dropped, the userIdField as owner', async () => {
    const client = clientFor(target);
    const p = prefix();
    const store = new RedisSessionStore({ client, prefix: p, userIdField: 'account' });
    const id = generateSessionId();
    const data: Record<string, unknown> = JSON.parse('{"__proto__": {"admin": true}, "account": 42, "theme": "dark"}');
    Object.assign(data, { helper: () => 1, gone: undefined });
    Object.defineProperty(data, 'hidden', { value: 'not enumerable', enumerable: false });
    await store.set(id, data as never);
    const back = (await store.get(id)) as unknown as Record<string, unknown>;
    expect(Object.keys(back).sort()).toEqual(['__proto__', 'account', 'theme']);
    expect(Object.getOwnPropertyDescriptor(back, '__proto__')?.value).toEqual({ admin: true });
    expect(Object.getPrototypeOf(back)).toBe(Object.prototype);
    // the numeric account is the owner: the id is in user 42's index
    expect(await client.zscore(`${p}sess:user:{42}`, id)).not.toBeNull();
  });

  it('cookie.expires = new Date(NaN) is expired, as connect-redis treats it (no Redis error, no 503)', async () => {
    const client = clientFor(target);
    const p = prefix();
    const store = new RedisSessionStore({ client, prefix: p });
    const id = randomBytes(24).toString('base64url');
    await store.set(id, { foo: 'bar' } as never);
    await store.set(id, { foo: 'baz', cookie: { expires: new Date(Number.NaN) } } as never);
    expect(await client.exists(`${p}sess:{${id}}`)).toBe(0);
    expect(await store.get(id)).toBeNull();
    const other = randomBytes(24).toString('base64url');
    await store.set(other, { n: 1 } as never);
    const withMaxAge = { originalMaxAge: 60_000, expires: new Date(Number.NaN) };
    await store.touch(other, { cookie: withMaxAge } as never);
    expect(await store.get(other)).toStrictEqual({ n: 1 });
    await store.set(other, { n: 2, cookie: withMaxAge } as never);
    expect(await client.exists(`${p}sess:{${other}}`)).toBe(0);
  });

  it('a late set after destroy does not resurrect the session (tombstone)', async () => {
    const store = new RedisSessionStore({ client: clientFor(target), prefix: prefix() });
    const id = randomBytes(24).toString('base64url');
    const cookie = { originalMaxAge: 60_000, expires: new Date(Date.now() + 60_000) };
    await store.set(id, { cookie, userId: 'x' } as never);
    await store.destroy(id);
    await store.set(id, { cookie, userId: 'x', late: true } as never);
    expect(await store.get(id)).toBeNull();
    expect(await store.length()).toBe(0);
  });

  it('a set over maxSize fails with SessionTooLargeError (status 413) before any Redis call', async () => {
    const client = clientFor(target);
    const store = new RedisSessionStore({ client, prefix: prefix(), maxSize: 4_096 });
    const id = randomBytes(24).toString('base64url');
    const cookie = { originalMaxAge: 60_000, expires: new Date(Date.now() + 60_000) };
    const { value, commands } = await recordCommands(client, () =>
      store.set(id, { cookie, userId: 'x', blob: 'z'.repeat(5_000) } as never).catch((err: unknown) => err),
    );
    expect(value).toBeInstanceOf(SessionTooLargeError);
    expect((value as { status?: number }).status).toBe(413);
    expect(commands).toEqual([]);
    await store.set(id, { cookie, userId: 'x', blob: 'z'.repeat(3_000) } as never);
    expect(await store.get(id)).toMatchObject({ userId: 'x' });
    expect(() => new RedisSessionStore({ client, maxSize: 0 })).toThrow(/RedisSessionStore maxSize/);
  });

  it('malformed ids are rejected before Redis: get → null, destroy → no-op, set → InvalidKeyError', async () => {
    const client = clientFor(target);
    const store = new RedisSessionStore({ client, prefix: prefix() });
    const good = randomBytes(24).toString('base64url');
    await store.set(good, { cookie: { originalMaxAge: 60_000 }, userId: 'kept' } as never);
    for (const bad of ['', '*', '../x', 'x'.repeat(10_000), '{abcdefghijklmnop}']) {
      const read = await recordCommands(client, () => store.get(bad));
      expect(read).toEqual({ value: null, commands: [] });
      const destroyed = await recordCommands(client, () => store.destroy(bad));
      expect(destroyed).toEqual({ value: undefined, commands: [] });
      const viaCallback = await new Promise<unknown>((resolve) => store.destroy(bad, (err?: unknown) => resolve(err)));
      expect(viaCallback ?? null).toBeNull();
      await expect(store.set(bad, { cookie: {} } as never)).rejects.toMatchObject({ code: 'E_INVALID_KEY' });
    }
    // nothing of the store's own was touched by the malformed ids
    expect(await store.ids()).toEqual([good]);
    expect(await store.get(good)).toMatchObject({ userId: 'kept' });
  });

  it('shares keys with SessionService: each sees the other’s sessions, and destroyAllForUser logs out express sessions', async () => {
    const p = prefix();
    const nest = await createToolkitApp({ target, keyPrefix: p });
    const sessions = nest.get(SessionService);
    const store = new RedisSessionStore({ client: nest.get(RedisConnection).client as Redis, prefix: p });
    const fromService = await sessions.create('alice', { theme: 'dark' });
    expect(await store.get(fromService.id)).toMatchObject({ userId: 'alice', theme: 'dark', cookie: { path: '/' } });
    const sid = generateSessionId();
    await store.set(sid, {
      cookie: { originalMaxAge: 60_000, expires: new Date(Date.now() + 60_000) },
      userId: 'alice',
      cart: [1],
    } as never);
    expect(await sessions.get(sid)).toMatchObject({ id: sid, userId: 'alice', data: { userId: 'alice', cart: [1] } });
    expect((await sessions.listForUser('alice')).map((s) => s.id).sort()).toEqual([fromService.id, sid].sort());
    expect(await sessions.destroyAllForUser('alice')).toBe(2);
    expect(await store.get(sid)).toBeNull();
    expect(await store.get(fromService.id)).toBeNull();
  });
});

describe('RedisSessionStore when Redis is down', () => {
  it('reports errors as RedisUnavailableError with status 503 (express answers 503, not an anonymous pass)', async () => {
    const server = trackForCleanup(await startRedisServer());
    const client = trackForCleanup(new Redis(server.url, { maxRetriesPerRequest: 0, commandTimeout: 300 }));
    await client.ping();
    const store = new RedisSessionStore({ client, prefix: 'rtk-store-down:' });
    const { app } = expressApp(store);
    const agent = request.agent(app);
    await agent.post('/login').send({ user: 'alice' }).expect(200);
    await agent.get('/me').expect(200);
    await server.kill();
    const res = await agent.get('/me');
    expect(res.status).toBe(503);
    await expect(store.get(randomBytes(24).toString('base64url'))).rejects.toBeInstanceOf(RedisUnavailableError);
  });

  it('needs a client', () => {
    expect(() => new RedisSessionStore({} as never)).toThrow(/client must be an ioredis Redis or Cluster instance/);
    expect(() => new RedisSessionStore({ client: new Redis({ lazyConnect: true }), ttl: -1 })).toThrow(
      /ttl must be a positive number/,
    );
  });
});

describe('RedisSessionStore options', () => {
  it('an option it does not know (one of connect-redis 3, a typo) is an error labelled RedisSessionStore', async () => {
    const { RedisSessionStore } = await import('../../lib/index.js');
    const client = { defineCommand: () => undefined } as unknown as import('ioredis').Redis;
    let message = '';
    try {
      new RedisSessionStore({ client, prefx: 'a:', logErrors: true } as never);
    } catch (err) {
      message = (err as Error).message;
    }
    expect(message).toMatch(/^Invalid RedisSessionStore options:/);
    expect(message).toContain('prefx is not a known option (did you mean prefix?)');
    expect(message).toContain('logErrors is not a known option');
    expect(message).not.toContain('RedisToolkitModule');
  });
});
