/**
 * Sessions under the server's reply limit: a session whose GETEX reply passes `client-output-buffer-limit normal` could
 * be written (a write's reply is small), and every read of it made Redis close the connection, failing every call in
 * flight on it (the other sessions' reads batched in the same reply first) at each read: a poison pill. The bound on a
 * session is min(session.maxSize, 4/5 of the server's hard limit less 128 bytes), the limit read once per connection
 * with the cache's (common/reply-limit.ts). docs/session.md, "Size of a session".
 */
import 'reflect-metadata';
import { jest } from '@jest/globals';
import { randomBytes } from 'node:crypto';
import { Controller, HttpException, Logger, Post, Query, UseGuards } from '@nestjs/common';
import express from 'express';
import session from 'express-session';
import { Redis } from 'ioredis';
import request from 'supertest';
import {
  CacheService,
  CurrentSession,
  RateLimitService,
  REDIS_CLIENT,
  RedisSessionStore,
  type Session,
  SessionGuard,
  SessionService,
  SessionTooLargeError,
} from '../../lib/index.js';
import { CacheValueTooLargeError, RedisConnection } from '../../lib/advanced.js';
import type { RedisClient } from '../../lib/common/lua-script.js';
import { recordCommandCalls } from '../support/command-recorder.js';
import { commandCalls } from '../support/commandstats.js';
import { useDisposableCluster } from '../support/disposable-cluster.js';
import { errorOf } from '../support/errors.js';
import { trackForCleanup, usePrivateRedis } from '../support/private-servers.js';
import { allLines, BOUND, LIMIT, LIMITED, limitThreeMasters, noConfigUser } from '../support/reply-limit.js';
import { cookiePair, loginController, sessionHttpApp, userIdController } from '../support/session-http-app.js';
import { closeToolkitApps, createToolkitApp, PLATFORMS, type ToolkitAppOptions } from '../support/toolkit-app.js';
import { waitFor } from '../support/wait.js';

afterEach(closeToolkitApps);

const prefix = () => `rtk-rl${randomBytes(5).toString('hex')}:`;
const MiB = 1_048_576;
const policy = { limit: 1_000, ttl: 60_000 };

const about = (lines: string[]) => lines.filter((l) => /client-output-buffer-limit|maxSize|maxValueBytes/.test(l));

/** How many CONFIG GETs the server has answered since its stats were reset. */
async function configGets(admin: Redis): Promise<number> {
  return (await commandCalls(admin))['config|get'] ?? 0;
}

describe('a server with `client-output-buffer-limit normal 256kb 128kb 10`', () => {
  const redis = usePrivateRedis({ args: LIMITED });
  const boot = async (options: ToolkitAppOptions = {}) => {
    const keyPrefix = options.keyPrefix ?? prefix();
    const app = await createToolkitApp({ target: { url: redis.server.url }, keyPrefix, ...options });
    const client = app.get(RedisConnection).client as Redis;
    return { app, sessions: app.get(SessionService), client, keyPrefix };
  };

  // Before: create and update stored the ~300 KB session, and its read (batched with the other session's) made Redis
  // close the connection: both reads, the cache read and the rate-limit charge in flight beside them failed.
  it('the poison pill: a session past the limit is refused, and the calls beside its reads are not failed', async () => {
    const { app, sessions } = await boot();
    const cache = app.get(CacheService);
    const limits = app.get(RateLimitService);
    await cache.set('small', 'tiny');
    const small = await sessions.create('ann', { a: 1 });
    const grown = await sessions.create('bob', { a: 1 });
    const created = await errorOf(() => sessions.create('cid', { blob: 'x'.repeat(300_000) }));
    const updated = await errorOf(() => sessions.update(grown.id, { blob: 'x'.repeat(300_000) }));
    const [read, beside, cached, charge] = await Promise.allSettled([
      sessions.get(grown.id),
      sessions.get(small.id),
      cache.get('small'),
      limits.consume('r', policy),
    ]);
    expect(beside).toMatchObject({ status: 'fulfilled', value: { data: { a: 1 } } });
    expect(read).toMatchObject({ status: 'fulfilled', value: { data: { a: 1 } } });
    expect(cached).toEqual({ status: 'fulfilled', value: 'tiny' });
    expect(charge).toMatchObject({ status: 'fulfilled', value: { allowed: true } });
    expect((charge as PromiseFulfilledResult<{ degraded?: string }>).value.degraded).toBeUndefined();
    expect(sessions.stats()).toEqual({ unavailable: 0, replyErrors: 0 });
    expect(created).toBeInstanceOf(SessionTooLargeError);
    expect(updated).toBeInstanceOf(SessionTooLargeError);
  });

  it('the bound comes from the server: a session up to it is stored and read back, one past it is refused', async () => {
    const { logs, warnings, logger } = allLines();
    const { sessions, client, keyPrefix } = await boot({ logger });
    // what a session holds besides its blob, measured on one with an empty blob (its stamp may grow by a digit)
    const probe = await sessions.create('ann', { blob: '' });
    const overhead = await client.strlen(`${keyPrefix}sess:{${probe.id}}`);
    const near = await sessions.create('ann', { blob: 'y'.repeat(BOUND - overhead - 16) });
    const stored = await client.strlen(`${keyPrefix}sess:{${near.id}}`);
    expect(stored).toBeLessThanOrEqual(BOUND);
    expect(stored).toBeGreaterThan(BOUND - 32);
    const [read, beside] = await Promise.all([sessions.get(near.id), sessions.get(probe.id)]);
    expect(read?.data.blob).toHaveLength(BOUND - overhead - 16);
    expect(beside?.data).toEqual({ blob: '' });
    const over = await errorOf(() => sessions.update(near.id, { more: 'z'.repeat(64) }));
    expect(over).toBeInstanceOf(SessionTooLargeError);
    expect((over as Error).message).toMatch(
      new RegExp(
        `larger than ${BOUND} bytes, the bound from client-output-buffer-limit normal ${LIMIT} of redis://127\\.0\\.0\\.1`,
      ),
    );
    expect((over as Error).message).toMatch(/session\.maxSize is 1048576/);
    expect(await errorOf(() => sessions.create('ann', { blob: 'y'.repeat(BOUND) }))).toBeInstanceOf(
      SessionTooLargeError,
    );
    expect(sessions.stats()).toEqual({ unavailable: 0, replyErrors: 0 });
    // the default maxSize lowered without a word
    expect(about([...logs, ...warnings])).toEqual([]);
  });

  // Before: each ~150 KB session was under every bound, and their touching reads batched in one script call made a
  // reply of ~300 KB, past the limit: Redis closed the connection, failing all three reads.
  it('touching reads batched in one call stay under the limit together: the sessions past it are read in another', async () => {
    const { sessions, client } = await boot();
    const a = await sessions.create('ann', { blob: 'a'.repeat(150_000) });
    const b = await sessions.create('bob', { blob: 'b'.repeat(150_000) });
    const c = await sessions.create('cid', { small: 1 });
    const { value: reads, calls } = await recordCommandCalls(client, () =>
      Promise.allSettled([sessions.get(a.id), sessions.get(b.id), sessions.get(c.id)]),
    );
    expect(reads.map((r) => r.status)).toEqual(['fulfilled', 'fulfilled', 'fulfilled']);
    const data = reads.map((r) => (r as PromiseFulfilledResult<Session | null>).value?.data);
    expect(data).toEqual([{ blob: 'a'.repeat(150_000) }, { blob: 'b'.repeat(150_000) }, { small: 1 }]);
    // one script call for the three, within a guess of their size (the reply budget, reply-budget.ts), then one for
    // each it left out: the two together are past the bound
    const scripts = calls.filter((call) => call.name === 'evalsha' || call.name === 'eval');
    expect(scripts.map((call) => call.args[1])).toEqual(['3', '1', '1']);
    // read again within touchAfter (plain reads, an MGET): the large ones are read by the touching script instead
    const again = await Promise.all([sessions.get(a.id), sessions.get(b.id), sessions.get(c.id)]);
    expect(again.map((s) => Object.keys(s?.data ?? {}))).toEqual([['blob'], ['blob'], ['small']]);
    expect(sessions.stats()).toEqual({ unavailable: 0, replyErrors: 0 });
  });

  // Before: the change script's limit was maxSize (1 MiB): the append that took the session past the server's bound
  // was kept, and every later read of the session closed the connection.
  it('appendUpdates: the change script keeps nothing past the bound; the update is refused after the merge', async () => {
    const keyPrefix = prefix();
    const one = await boot({ keyPrefix, session: { appendUpdates: true } });
    const two = await boot({ keyPrefix, session: { appendUpdates: true } });
    const s = await one.sessions.create('ann', { a: 'a'.repeat(1_000) });
    const key = `${keyPrefix}sess:{${s.id}}`;
    expect((await one.sessions.get(s.id))?.data).toEqual({ a: 'a'.repeat(1_000) });
    // two grows the session to ~190 KB (under the bound); one still knows the ~1 KB value, so its 30 KB change looks
    // small enough to append: only the script, bounded by the server's limit, can refuse it
    await two.sessions.update(s.id, { a: 'A'.repeat(BOUND - 20_000) });
    const before = await one.client.strlen(key);
    const refused = await errorOf(() => one.sessions.update(s.id, { c: 'c'.repeat(30_000) }));
    expect(await one.client.strlen(key)).toBe(before);
    expect(refused).toBeInstanceOf(SessionTooLargeError);
    expect((refused as Error).message).toMatch(/after the merge/);
    const [read, readByTwo] = await Promise.all([one.sessions.get(s.id), two.sessions.get(s.id)]);
    expect(Object.keys(read?.data ?? {})).toEqual(['a']);
    expect(Object.keys(readByTwo?.data ?? {})).toEqual(['a']);
  });

  // Before: session.maxSize was the bound whatever the server's limit, and nothing was said.
  it('session.maxSize above the server limit: one warning at start naming both, and the server bound applies', async () => {
    const { warnings, logger } = allLines();
    const { sessions } = await boot({ logger, session: { maxSize: 1_000_000 } });
    const named = about(warnings);
    expect(named).toHaveLength(1);
    expect(named[0]).toMatch(
      /session\.maxSize \(1000000 bytes\) is past what redis:\/\/127\.0\.0\.1:\d+ sends in one reply/,
    );
    expect(named[0]).toContain(String(LIMIT));
    expect(named[0]).toContain(String(BOUND));
    const refused = await errorOf(() => sessions.create('ann', { blob: 'x'.repeat(250_000) }));
    expect(refused).toBeInstanceOf(SessionTooLargeError);
    expect((refused as Error).message).toMatch(new RegExp(`larger than ${BOUND} bytes`));
  });

  it('session.maxSize below the server limit is the bound, without a word', async () => {
    const { logs, warnings, logger } = allLines();
    const { sessions } = await boot({ logger, session: { maxSize: 10_000 } });
    const refused = await errorOf(() => sessions.create('ann', { blob: 'x'.repeat(10_000) }));
    expect((refused as Error).message).toMatch(/larger than session\.maxSize \(10000 bytes\)/);
    expect(about([...logs, ...warnings])).toEqual([]);
  });

  // Before: the sessions never read the limit: the sessions past it were stored.
  it('with lazyConnect the limit is read at the first ready', async () => {
    const { app, sessions } = await boot({ lazyConnect: true });
    expect(await app.get(CacheService).get('k')).toBeUndefined(); // opens the connection (sessions fail closed till then)
    const refused = await waitFor(
      async () =>
        (await errorOf(() => sessions.create('ann', { blob: 'x'.repeat(BOUND) }))) instanceof SessionTooLargeError,
      3_000,
    );
    expect(refused).toBe(true);
  });

  // Before: only the cache sent a CONFIG GET (one per app, wherever the sessions ran), and the sessions had no bound.
  it('one CONFIG GET per connection, shared by the cache, the sessions and a RedisSessionStore on its client', async () => {
    const admin = trackForCleanup(new Redis(redis.server.url));
    await admin.config('RESETSTAT');
    const shared = await boot();
    expect(await configGets(admin)).toBe(1);
    const store = new RedisSessionStore({ client: shared.app.get<Redis>(REDIS_CLIENT), prefix: shared.keyPrefix });
    expect(await configGets(admin)).toBe(1);
    // the sessions on a connection of their own: one for each connection
    const apart = await boot({
      connections: { sessions: { url: redis.server.url } },
      session: { connection: 'sessions' },
    });
    expect(await configGets(admin)).toBe(3);
    // and every one of them bounded by what was read
    const cookie = { originalMaxAge: 60_000, expires: new Date(Date.now() + 60_000) };
    await expect(store.set('s'.repeat(32), { cookie, blob: 'x'.repeat(250_000) } as never)).rejects.toBeInstanceOf(
      SessionTooLargeError,
    );
    const cache = apart.app.get(CacheService);
    expect(await errorOf(() => cache.set('big', 'x'.repeat(BOUND)))).toBeInstanceOf(CacheValueTooLargeError);
    const sessions = apart.sessions;
    expect(await errorOf(() => sessions.create('ann', { blob: 'x'.repeat(BOUND) }))).toBeInstanceOf(
      SessionTooLargeError,
    );
  });

  describe('RedisSessionStore', () => {
    const cookie = () => ({ originalMaxAge: 60_000, expires: new Date(Date.now() + 60_000) });
    const sid = () => randomBytes(24).toString('base64url');
    /** A connected client, as an app's is by the time it builds its store (a read then in flight is waited for). */
    const client = async (): Promise<RedisClient> => {
      const made = trackForCleanup(new Redis(redis.server.url));
      await made.ping();
      return made;
    };

    // Before: the store's maxSize (1 MiB by default) alone bounded a session, and nothing was said of a larger one.
    it('takes the bound from the server; a maxSize given above it is warned about once', async () => {
      const warn = jest.spyOn(Logger.prototype, 'warn').mockImplementation(() => undefined);
      try {
        const plain = new RedisSessionStore({ client: await client(), prefix: prefix() });
        const refused = await errorOf(() => plain.set(sid(), { cookie: cookie(), blob: 'x'.repeat(250_000) } as never));
        expect(refused).toBeInstanceOf(SessionTooLargeError);
        expect((refused as { status?: number }).status).toBe(413);
        expect((refused as Error).message).toMatch(/RedisSessionStore maxSize is 1048576/);
        await plain.set(sid(), { cookie: cookie(), blob: 'x'.repeat(150_000) } as never);
        const given = new RedisSessionStore({ client: await client(), prefix: prefix(), maxSize: 1_000_000 });
        expect(await waitFor(() => warn.mock.calls.length > 0, 3_000)).toBe(true);
        const lines = warn.mock.calls.map((call) => String(call[0]));
        expect(lines).toHaveLength(1);
        expect(lines[0]).toMatch(/RedisSessionStore maxSize \(1000000 bytes\) is past what 127\.0\.0\.1:\d+ sends/);
        expect(lines[0]).toContain(String(BOUND));
        const big = { cookie: cookie(), blob: 'x'.repeat(250_000) };
        expect(await errorOf(() => given.set(sid(), big as never))).toBeInstanceOf(SessionTooLargeError);
      } finally {
        warn.mockRestore();
      }
    });

    // Before: the ~300 KB session was saved (200), and the next request's get made Redis close the connection: 503.
    it('express-session: a request that grows its session past the limit gets 413; the session stays readable', async () => {
      const store = new RedisSessionStore({ client: await client(), prefix: prefix() });
      const app = express();
      app.use(session({ store, secret: 'shh', resave: false, saveUninitialized: false, cookie: { maxAge: 60_000 } }));
      const data = (req: express.Request) => req.session as unknown as Record<string, unknown>;
      app.post('/login', (req, res) => {
        data(req).userId = String(req.query.user);
        res.json({ ok: true });
      });
      // saved before answering, as an app that reports a failed save does (express-session's own save at the end
      // of the response passes its error on after the response is sent); on failure the stored session is reloaded,
      // so nothing is left to save at the end
      app.post('/grow', (req, res, next) => {
        data(req).blob = 'x'.repeat(Number(req.query.kb) * 1_000);
        req.session.save((err) => (err ? req.session.reload(() => next(err)) : res.json({ ok: true })));
      });
      app.get('/me', (req, res) => res.json({ userId: data(req).userId ?? null, blob: String(data(req).blob ?? '') }));
      app.use((err: { status?: number; code?: string }, _req: express.Request, res: express.Response, _next: unknown) =>
        res.status(err.status ?? 500).json({ code: err.code }),
      );
      const http = request(app);
      const ann = (await http.post('/login?user=ann').expect(200)).headers['set-cookie'][0].split(';')[0];
      const bob = (await http.post('/login?user=bob').expect(200)).headers['set-cookie'][0].split(';')[0];
      const grown = await http.post('/grow?kb=300').set('Cookie', ann);
      expect([grown.status, grown.body]).toEqual([413, { code: 'E_SESSION_TOO_LARGE' }]);
      const [me, other] = await Promise.all([http.get('/me').set('Cookie', ann), http.get('/me').set('Cookie', bob)]);
      expect([me.status, me.body]).toEqual([200, { userId: 'ann', blob: '' }]);
      expect([other.status, other.body]).toEqual([200, { userId: 'bob', blob: '' }]);
      expect((await http.post('/grow?kb=100').set('Cookie', ann)).status).toBe(200);
      expect((await http.get('/me').set('Cookie', ann)).body.blob).toHaveLength(100_000);
    });
  });
});

@Controller()
class GrowController {
  constructor(private readonly sessions: SessionService) {}

  @Post('grow')
  @UseGuards(SessionGuard)
  async grow(@CurrentSession() current: Session, @Query('kb') kb: string): Promise<{ stored: number }> {
    try {
      const blob = 'x'.repeat(Number(kb) * 1_000);
      return { stored: ((await this.sessions.update(current.id, { blob })).data.blob as string).length };
    } catch (err) {
      if (err instanceof SessionTooLargeError) throw new HttpException({ code: err.code }, 413);
      throw err;
    }
  }
}

describe.each(PLATFORMS)('SessionMiddleware on %s, under `normal 256kb 128kb 10`', (platform) => {
  const redis = usePrivateRedis({ args: LIMITED });

  // Before: the update stored the ~300 KB session (200), and every later request with its cookie made Redis close the
  // connection at the middleware's read: 503 for it and for the other user's request beside it.
  it('a route growing its session past the limit gets SessionTooLargeError; the next requests are served', async () => {
    const { http } = await sessionHttpApp({
      platform,
      target: { url: redis.server.url },
      secret: 'a session secret of at least 32 characters',
      withMiddleware: [loginController(), userIdController('me'), GrowController],
    });
    const ann = cookiePair((await http.post('/login').send({ user: 'ann' }).expect(201)).headers['set-cookie']);
    const bob = cookiePair((await http.post('/login').send({ user: 'bob' }).expect(201)).headers['set-cookie']);
    const grown = await http.post('/grow?kb=300').set('Cookie', ann);
    expect([grown.status, grown.body]).toEqual([413, { code: 'E_SESSION_TOO_LARGE' }]);
    const [me, other] = await Promise.all([http.get('/me').set('Cookie', ann), http.get('/me').set('Cookie', bob)]);
    expect([me.status, me.body]).toEqual([200, { userId: 'ann' }]);
    expect([other.status, other.body]).toEqual([200, { userId: 'bob' }]);
    const fits = await http.post('/grow?kb=100').set('Cookie', ann);
    expect([fits.status, fits.body]).toEqual([201, { stored: 100_000 }]);
    expect((await http.get('/me').set('Cookie', ann)).status).toBe(200);
  });
});

describe('the limit cannot be read (CONFIG refused by the ACL)', () => {
  const redis = usePrivateRedis({ args: LIMITED });

  // Before: the line spoke of the cache alone; the sessions' bound was as unknown, without a word.
  it('one log line names the cache and the sessions; session.maxSize alone bounds a session', async () => {
    const { url } = await noConfigUser(redis.server);
    const { logs, warnings, logger } = allLines();
    const app = await createToolkitApp({ target: { url }, keyPrefix: prefix(), logger });
    const named = about(logs);
    expect(named).toHaveLength(1);
    expect(named[0]).toMatch(
      /could not read client-output-buffer-limit of redis:\/\/127\.0\.0\.1:\d+ \(CONFIG GET: NOPERM/,
    );
    expect(named[0]).toMatch(/no bound on the size of a cached value/);
    expect(named[0]).toMatch(/a session is bounded by session\.maxSize's default \(1048576 bytes\) alone/);
    expect(named[0]).toMatch(
      /set (cache\.maxValueBytes and session\.maxSize|session\.maxSize and cache\.maxValueBytes),/,
    );
    expect(about(warnings)).toEqual([]);
    const sessions = app.get(SessionService);
    const s = await sessions.create('ann', { blob: 'x'.repeat(300_000) });
    expect(s.data.blob).toHaveLength(300_000);
  });
});

// Redis's default: no limit, and maxSize alone bounds a session, as before (a guard: this passed before too).
it("Redis's default (`normal 0 0 0`): session.maxSize's 1 MiB is the bound, and nothing is logged", async () => {
  const { logs, warnings, logger } = allLines();
  const app = await createToolkitApp({ keyPrefix: prefix(), logger });
  const sessions = app.get(SessionService);
  const big = await sessions.create('ann', { blob: 'x'.repeat(MiB - 1_000) });
  expect((await sessions.get(big.id))?.data.blob).toHaveLength(MiB - 1_000);
  const refused = await errorOf(() => sessions.create('ann', { blob: 'x'.repeat(MiB) }));
  expect((refused as Error).message).toMatch(/larger than session\.maxSize \(1048576 bytes\)/);
  expect(about([...logs, ...warnings])).toEqual([]);
});

describe('a cluster: the smallest limit of its masters', () => {
  const cluster = useDisposableCluster();

  // Before: the sessions read no limit: a session past the smallest master's was stored.
  it('bounds every session by the master with the smallest non-zero limit, whichever slot it lives in', async () => {
    const b = cluster().masters[1];
    await limitThreeMasters(cluster().masters);
    const { logs, warnings, logger } = allLines();
    const app = await createToolkitApp({ target: { cluster: cluster().startupNodes }, keyPrefix: prefix(), logger });
    const sessions = app.get(SessionService);
    const refused = await Promise.all(
      [1, 2, 3].map(() => errorOf(() => sessions.create('ann', { blob: 'x'.repeat(BOUND) }))),
    );
    for (const err of refused) {
      expect(err).toBeInstanceOf(SessionTooLargeError);
      expect((err as Error).message).toContain(`cluster master 127.0.0.1:${b.port}`);
    }
    const fits = await sessions.create('ann', { blob: 'x'.repeat(BOUND - 1_000) });
    expect((await sessions.get(fits.id))?.data.blob).toHaveLength(BOUND - 1_000);
    expect(about([...logs, ...warnings])).toEqual([]);
  });
});
