import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import express from 'express';
import session from 'express-session';
import { Cluster, Command, Redis } from 'ioredis';
import request from 'supertest';
import { InvalidKeyError, RedisSessionStore, SessionService } from '../../lib/index.js';
import { generateSessionId, RedisConnection } from '../../lib/advanced.js';
import type { RedisClient } from '../../lib/common/lua-script.js';
import { MAX_DURATION_MS } from '../../lib/common/option-checks.js';
import { recordCommands } from '../support/command-recorder.js';
import { trackForCleanup } from '../support/private-servers.js';
import { sharedServers } from '../support/shared-servers.js';
import { closeToolkitApps, createToolkitApp, type RedisTarget } from '../support/toolkit-app.js';

/**
 * The edges of a session's idle ttl (`t`) in RedisSessionStore and SessionService: a per-session ttl past Redis's
 * range (a ttl function returning Infinity, a huge cookie maxAge), a session without one (t 0, written with
 * disableTTL), and a userId that cannot be a key.
 */

afterEach(closeToolkitApps);

const DAY = 86_400_000;
const prefix = (): string => `rtk-ttl-edges-${randomBytes(4).toString('hex')}:`;

function clientFor(target: 'single' | 'cluster'): RedisClient {
  const client =
    target === 'single'
      ? new Redis(sharedServers().single.url)
      : new Cluster(sharedServers().cluster, { redisOptions: { maxRetriesPerRequest: 0 } });
  return trackForCleanup(client);
}

/** The stored envelope of a session (its `t`, `m`, ...). */
async function stored(client: RedisClient, p: string, id: string): Promise<{ t: unknown; m: number; c: number }> {
  return JSON.parse((await client.get(`${p}sess:{${id}}`)) ?? 'null') as { t: unknown; m: number; c: number };
}

/** express-session on our store, no cookie maxAge: the store's ttl function decides each session's idle ttl. */
function rememberMeApp(store: RedisSessionStore): express.Express {
  const app = express();
  app.use(session({ store, secret: 'x', resave: false, saveUninitialized: false }));
  app.get('/login', (req, res) => {
    const s = req.session as unknown as Record<string, unknown>;
    s.user = req.query.u;
    if (req.query.remember) s.remember = true;
    res.send('ok');
  });
  app.get('/me', (req, res) => {
    res.send(String((req.session as unknown as Record<string, unknown>).user));
  });
  app.use((err: { status?: number; message: string }, _req: express.Request, res: express.Response, _next: unknown) => {
    res.status(err.status ?? 500).send(`ERR ${err.message}`);
  });
  return app;
}

async function login(app: express.Express, query: string): Promise<string> {
  const res = await request(app).get(`/login?${query}`).expect(200);
  const cookie = (res.headers['set-cookie'] as unknown as string[] | undefined)?.[0]?.split(';')[0];
  expect(cookie).toBeDefined();
  return cookie!;
}

/** A ttl function giving the session with `n: 1` a `huge` idle ttl and the others 60 s. */
const hugeFor =
  (huge: number) =>
  (s: unknown): number =>
    (s as { n?: number }).n === 1 ? huge : 60_000;

describe.each(['single', 'cluster'] as const)('a per-session idle ttl past the 100-year bound on %s', (target) => {
  it('ttl: remember ? Infinity : 1 h — alice, then mallory with remember, then alice and a new bob: all 200', async () => {
    const client = clientFor(target);
    const p = prefix();
    const store = new RedisSessionStore({
      client,
      prefix: p,
      ttl: (s) => ((s as unknown as { remember?: boolean }).remember ? Number.POSITIVE_INFINITY : 3_600_000),
    });
    const app = rememberMeApp(store);
    const alice = await login(app, 'u=alice');
    expect((await request(app).get('/me').set('Cookie', alice)).text).toBe('alice');
    const mallory = await login(app, 'u=mallory&remember=1');
    const malloryMe = await request(app).get('/me').set('Cookie', mallory);
    expect([malloryMe.status, malloryMe.text]).toEqual([200, 'mallory']);
    const aliceAgain = await request(app).get('/me').set('Cookie', alice);
    expect([aliceAgain.status, aliceAgain.text]).toEqual([200, 'alice']);
    const bob = await login(app, 'u=bob');
    const bobMe = await request(app).get('/me').set('Cookie', bob);
    expect([bobMe.status, bobMe.text]).toEqual([200, 'bob']);
    // mallory's session: the 100-year idle ttl, so it lives until its absolute deadline (maxAgeMs, 30 days)
    const malloryId = decodeURIComponent(mallory.split('=')[1]).slice(2).split('.')[0];
    const envelope = await stored(client, p, malloryId);
    expect(envelope.t).toBe(MAX_DURATION_MS);
    const pttl = await client.pttl(`${p}sess:{${malloryId}}`);
    expect(pttl).toBeGreaterThan(29 * DAY);
    expect(pttl).toBeLessThanOrEqual(30 * DAY);
  });

  it('a session set with an Infinity ttl is readable from a second store instance', async () => {
    const client = clientFor(target);
    const p = prefix();
    const writer = new RedisSessionStore({ client, prefix: p, ttl: () => Number.POSITIVE_INFINITY });
    const id = generateSessionId();
    await writer.set(id, { userId: 'alice', n: 1 } as never);
    expect((await stored(client, p, id)).t).toBe(MAX_DURATION_MS);
    const reader = new RedisSessionStore({ client, prefix: p, ttl: () => Number.POSITIVE_INFINITY });
    expect(await reader.get(id)).toStrictEqual({ userId: 'alice', n: 1 });
    expect(await client.exists(`${p}sess:{${id}}`)).toBe(1);
  });

  it.each([
    ['a ttl function returning 1e19', { ttl: hugeFor(1e19) }, {}],
    ['a ttl function returning Number.MAX_VALUE', { ttl: hugeFor(Number.MAX_VALUE) }, {}],
    ['a plain-object cookie with originalMaxAge 1e19', {}, { cookie: { originalMaxAge: 1e19 } }],
  ])('%s: set, touch and get of it, then every other session of the store still reads', async (_, options, extra) => {
    const client = clientFor(target);
    const p = prefix();
    const store = new RedisSessionStore({ client, prefix: p, ...options });
    const other = generateSessionId();
    await store.set(other, { n: 0, cookie: { originalMaxAge: 60_000 } } as never);
    const huge = generateSessionId();
    await store.set(huge, { n: 1, ...extra } as never);
    expect((await stored(client, p, huge)).t).toBe(MAX_DURATION_MS);
    expect(await store.get(huge)).toMatchObject({ n: 1 });
    await store.touch(huge, { n: 1, ...extra } as never);
    expect(await store.get(other)).toMatchObject({ n: 0 });
    expect(await store.get(other)).toMatchObject({ n: 0 });
    const fresh = generateSessionId();
    await store.set(fresh, { n: 2, cookie: { originalMaxAge: 60_000 } } as never);
    expect(await store.get(fresh)).toMatchObject({ n: 2 });
    const pttl = await client.pttl(`${p}sess:{${fresh}}`);
    expect(pttl).toBeGreaterThan(50_000);
    expect(pttl).toBeLessThanOrEqual(60_000);
  });

  it('a t = 0 session (written with disableTTL) and one stored with t 1e19, read by a store without disableTTL: the other sessions still read', async () => {
    const client = clientFor(target);
    const p = prefix();
    const forever = new RedisSessionStore({ client, prefix: p, disableTTL: true });
    const normal = new RedisSessionStore({ client, prefix: p });
    const zero = generateSessionId();
    await forever.set(zero, { n: 0 } as never);
    expect((await stored(client, p, zero)).t).toBe(0);
    const other = generateSessionId();
    await normal.set(other, { n: 1, cookie: { originalMaxAge: 3_600_000 } } as never);
    expect(await normal.get(zero)).toStrictEqual({ n: 0 });
    // no idle expiry: the read leaves the key without one
    expect(await client.pttl(`${p}sess:{${zero}}`)).toBe(-1);
    for (let i = 0; i < 3; i++) expect(await normal.get(other)).toMatchObject({ n: 1 });
    // a session an earlier version stored with a ttl past Redis's range: read, and the others still read after it
    const legacy = generateSessionId();
    const now = Date.now();
    const legacyJson = `{"u":"","c":${now},"m":${now + DAY},"t":1e19,"d":{"n":"3"},"k":"null"}`;
    await client.set(`${p}sess:{${legacy}}`, legacyJson, 'PX', DAY);
    expect(await normal.get(legacy)).toStrictEqual({ n: 3 });
    for (let i = 0; i < 3; i++) expect(await normal.get(other)).toMatchObject({ n: 1 });
    const pttl = await client.pttl(`${p}sess:{${other}}`);
    expect(pttl).toBeGreaterThan(3_500_000);
  });
});

async function serviceAndStore(target: RedisTarget) {
  const p = prefix();
  const app = await createToolkitApp({ target, keyPrefix: p, session: { cookie: { secret: 's3cret' } } });
  const client = app.get(RedisConnection).client;
  const forever = new RedisSessionStore({ client, prefix: p, disableTTL: true });
  return { sessions: app.get(SessionService), client, p, forever };
}

describe.each(['single', 'cluster'] as const)(
  'SessionService and a disableTTL store session (t = 0) on %s',
  (target) => {
    const cookie = () => ({ originalMaxAge: 3_600_000, expires: new Date(Date.now() + 3_600_000) });

    it('get, update, exists and listForUser keep it, without an expiry; its expiresAt is the absolute deadline', async () => {
      const { sessions, client, p, forever } = await serviceAndStore(target);
      const id = generateSessionId();
      const key = `${p}sess:{${id}}`;
      await forever.set(id, { cookie: cookie(), userId: 'u1', cart: [1] } as never);
      const { m } = await stored(client, p, id);
      expect(await client.pttl(key)).toBe(-1);
      const got = await sessions.get(id);
      expect(got).toMatchObject({ id, userId: 'u1', data: { cart: [1] }, expiresAt: m });
      expect(await client.pttl(key)).toBe(-1);
      expect(await sessions.get(id)).toMatchObject({ data: { cart: [1] }, expiresAt: m });
      const updated = await sessions.update(id, { cart: [1, 2] });
      expect(updated).toMatchObject({ data: { cart: [1, 2] }, expiresAt: m });
      expect(await client.pttl(key)).toBe(-1);
      expect(await sessions.exists(id)).toBe(true);
      expect((await sessions.listForUser('u1')).map((s) => [s.id, s.expiresAt])).toEqual([[id, m]]);
      expect((await forever.get(id)) as unknown).toMatchObject({ userId: 'u1', cart: [1, 2] });
      expect(await client.pttl(key)).toBe(-1);
    });

    it('regenerate moves it to a new id that keeps no expiry either', async () => {
      const { sessions, client, p, forever } = await serviceAndStore(target);
      const id = generateSessionId();
      await forever.set(id, { cookie: cookie(), userId: 'u2', n: 1 } as never);
      const { m } = await stored(client, p, id);
      const moved = await sessions.regenerate(id);
      expect(moved).toMatchObject({ userId: 'u2', expiresAt: m });
      expect(await client.pttl(`${p}sess:{${moved.id}}`)).toBe(-1);
      expect(await sessions.get(moved.id)).toMatchObject({ userId: 'u2', data: { n: 1 } });
    });
  },
);

describe('a disableTTL store session updated through the atomic fallback (single server)', () => {
  it('after 3 lost compare-and-sets the Lua merge keeps it, without an expiry', async () => {
    const { sessions, client, p, forever } = await serviceAndStore('single');
    const id = generateSessionId();
    const key = `${p}sess:{${id}}`;
    await forever.set(id, { userId: 'u3', a: 1 } as never);
    const base = await stored(client, p, id);
    // Before each compare-and-set of this session reaches Redis, a rival write changes it (same connection, so it
    // runs first): every compare-and-set loses and the update falls back to session-update.lua.
    const connection = client as Redis;
    const send = connection.sendCommand.bind(connection);
    let lost = 0;
    connection.sendCommand = ((cmd: Command, ...rest: unknown[]) => {
      const args = cmd.args.map(String);
      if ((cmd.name === 'evalsha' || cmd.name === 'eval') && args[1] === '2' && args[2] === key) {
        lost++;
        // (v after the spread: the stored stamp must not stand for the rival's value)
        const value = JSON.stringify({ ...base, v: `/rival${lost}`, d: { a: '1', [`r${lost}`]: String(lost) } });
        void send(new Command('set', [key, value]));
      }
      return send(cmd, ...(rest as []));
    }) as typeof connection.sendCommand;
    const updated = await sessions.update(id, { ours: true }).finally(() => {
      connection.sendCommand = send;
    });
    expect(lost).toBe(3);
    expect(updated).toMatchObject({ data: { a: 1, r3: 3, ours: true }, expiresAt: base.m });
    expect(await client.pttl(key)).toBe(-1);
    expect((await sessions.get(id))?.data).toEqual({ a: 1, r3: 3, ours: true });
  });
});

describe.each(['single', 'cluster'] as const)(
  'RedisSessionStore set with a userId that cannot be a key on %s',
  (target) => {
    it.each([
      ['longer than 1024 bytes', 'a'.repeat(2_000), /session userId is longer than 1024 bytes/],
      ['with a control character', 'x\u0001y', /session userId must not contain control characters/],
    ])(
      '%s: InvalidKeyError with status 400 naming userId, before any Redis command; Express answers 400',
      async (_, userId, message) => {
        const client = clientFor(target);
        const store = new RedisSessionStore({ client, prefix: prefix() });
        const { value, commands } = await recordCommands(client, () =>
          store
            .set(generateSessionId(), { cookie: { originalMaxAge: 60_000 }, userId } as never)
            .catch((e: unknown) => e),
        );
        expect(value).toBeInstanceOf(InvalidKeyError);
        expect(value).toMatchObject({ status: 400, statusCode: 400, message: expect.stringMatching(message) });
        expect(commands).toEqual([]);
        const app = express();
        app.use(session({ store, secret: 'x', resave: false, saveUninitialized: false }));
        // saved before the answer (a login then redirects), so the store's error can still set the status
        app.get('/login', (req, res, next) => {
          (req.session as unknown as Record<string, unknown>).userId = userId;
          req.session.save((err) => (err ? next(err) : res.send('ok')));
        });
        app.use((err: { status?: number }, _req: express.Request, res: express.Response, _next: unknown) => {
          res.status(err.status ?? 500).send('ERR');
        });
        await request(app).get('/login').expect(400);
        expect(await store.length()).toBe(0);
      },
    );
  },
);
