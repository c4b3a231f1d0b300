/**
 * An operator's redis.conf: settings a production Redis may have that no other spec tries, each on a private server
 * (started with the setting, or given it with CONFIG SET): `timeout` (idle clients closed), a low `maxclients`,
 * `min-replicas-to-write` on a master without replicas (NOREPLICAS), `stop-writes-on-bgsave-error` after a failed save
 * (MISCONF), and `client-output-buffer-limit normal`. Each case says what it proves; docs/connections.md, "Redis
 * settings an operator may have", says what the toolkit does with each.
 */
import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import {
  CacheService,
  LockService,
  PubSubService,
  RateLimitService,
  RedisReplyError,
  RedisToolkitHealth,
  RedisUnavailableError,
  SessionService,
} from '../../lib/index.js';
import { RedisConnection } from '../../lib/advanced.js';
import { FEATURES, KeyBuilder } from '../../lib/common/keys.js';
import { IDLE_MS, idleRounds, outcome, roundServices } from '../support/idle-timeout.js';
import { trackForCleanup, usePrivateRedis } from '../support/private-servers.js';
import { closeClients, connectClient, createGatewayApp } from '../support/pubsub-gateway.js';
import { recordingLogger } from '../support/recording-logger.js';
import { startRedisServer } from '../support/redis-server.js';
import { cookieLine, loginController, sessionHttpApp, userIdController } from '../support/session-http-app.js';
import { closeToolkitApps, createToolkitApp, type ToolkitApp } from '../support/toolkit-app.js';
import { sleep, waitFor } from '../support/wait.js';

afterEach(async () => {
  closeClients();
  await closeToolkitApps();
});

const rand = () => randomBytes(4).toString('hex');
const policy = { limit: 1_000, ttl: 60_000 };

/**
 * An outage of writes (`reply`: NOREPLICAS, MISCONF): the rate limit (failOpen: true) allows, counted as failed open
 * and not as a reply error; sessions fail closed with RedisUnavailableError (HTTP 503) naming it, never a
 * RedisReplyError (500).
 */
async function expectWritesOutage(app: ToolkitApp, reply: string): Promise<void> {
  const limits = app.get(RateLimitService);
  expect(await outcome(limits.consume('r', policy))).toMatchObject({ value: { allowed: true, degraded: 'fail-open' } });
  expect(limits.stats()).toMatchObject({ failedOpen: 1, replyErrors: 0 });
  const session = await app
    .get(SessionService)
    .create('u')
    .catch((e: unknown) => e);
  expect(session).toBeInstanceOf(RedisUnavailableError);
  expect(session).not.toBeInstanceOf(RedisReplyError);
  expect((session as Error).message).toContain(reply);
}

/** The bytes the cache stores for `value` under `key` (what a plain client writes to change an entry). */
async function rawEntry(cache: CacheService, plain: Redis, keyPrefix: string, value: unknown): Promise<Buffer> {
  const key = `raw-${rand()}`;
  await cache.set(key, value);
  const raw = await plain.getBuffer(new KeyBuilder(keyPrefix).key(FEATURES.cache, key));
  if (raw === null) throw new Error('the raw entry was not stored');
  return raw;
}

/** CLIENT TRACKINGINFO of a connection: whether tracking is on, and its redirect id. */
async function tracking(conn: Redis): Promise<{ on: boolean; redirect: number }> {
  const raw = (await conn.call('CLIENT', 'TRACKINGINFO').catch(() => [])) as unknown[];
  const info = new Map<string, unknown>();
  for (let i = 0; i < raw.length; i += 2) info.set(String(raw[i]), raw[i + 1]);
  const flags = ((info.get('flags') as unknown[] | undefined) ?? []).map(String);
  return { on: flags.includes('on'), redirect: Number(info.get('redirect')) };
}

/** Connected clients of a server (CLIENT LIST), and how many connections it refused (INFO stats). */
async function clientsOf(admin: Redis): Promise<{ connected: number; rejected: number }> {
  const list = String(await admin.client('LIST'))
    .split('\n')
    .filter((l) => l.trim() !== '');
  const rejected = Number(/rejected_connections:(\d+)/.exec(await admin.info('stats'))?.[1]);
  return { connected: list.length, rejected };
}

describe('redis.conf `timeout 1`: Redis closes a client connection idle for 1 s (pub/sub connections exempt)', () => {
  const redis = usePrivateRedis({ args: ['--timeout', '1'] });

  it('after the first idle close the connections stay open: no call fails open, health never says down, one warning names the setting', async () => {
    const { warnings, errors, logger } = recordingLogger();
    const p = `to${rand()}:`;
    const app = await createToolkitApp({
      target: { url: redis.server.url },
      keyPrefix: p,
      logger,
      cache: { l1: { max: 100, ttl: 60_000, invalidation: 'tracking' } },
    });
    const { cache, limits, sessions, locks, pubsub, health } = roundServices(app);
    const main = app.get(RedisConnection).client as Redis;
    const heard: unknown[] = [];
    await pubsub.subscribe('news', (m) => void heard.push(m));
    const session = await sessions.create('alice', { plan: 'pro' });
    await cache.set('k', 'v1');
    // The first idle close: the toolkit cannot know the setting before it (CONFIG is not in its ACL line).
    let closes = 0;
    main.on('close', () => closes++);
    expect(await waitFor(() => closes === 1, 4_000)).toBe(true);
    expect(await waitFor(() => main.status === 'ready', 2_000)).toBe(true);
    // From then on: a call made at each close would meet the reconnect (fail open, 503, health down).
    const atClose: unknown[] = [];
    main.on('close', () => {
      atClose.push(
        limits.consume('at-close', policy),
        health.check().then((h) => h.status),
      );
    });
    const failures = await idleRounds((round) => [
      ['cache get', cache.get('k'), 'v1'],
      ['cache getOrSet', cache.getOrSet(`miss-${round}`, async () => 'loaded'), 'loaded'],
      ['rate limit', limits.consume('r', policy).then((d) => d.allowed), true],
      ['session get', sessions.get(session.id).then((s) => s?.data), { plan: 'pro' }],
      ['lock', locks.acquire(`res-${round}`, { ttl: 5_000 }).then((l) => l.release()), undefined],
      ['publish', pubsub.publish('news', round), 1],
      ['health', health.check().then((h) => h.status), 'up'],
    ]);
    expect(failures).toEqual([]);
    // no close after the first, so no call met a reconnect (each close: a charge failed open, health down)
    expect(await Promise.all(atClose)).toEqual([]);
    expect(closes).toBe(1);
    expect(limits.stats().failedOpen).toBe(0);
    expect(cache.stats()).toMatchObject({ failedOpen: 0, errors: 0 });
    expect(await waitFor(() => heard.length === 3, 2_000)).toBe(true);
    // Said once, naming the setting and what the toolkit does about it; nothing logged per idle second.
    const said = warnings.filter((w) => /idle/.test(w));
    expect(said).toHaveLength(1);
    expect(said[0]).toMatch(/closed a connection idle for [\d.]+ s.*`timeout`.*PING/);
    expect(errors).toEqual([]);
  }, 40_000);

  it("cache L1 with invalidation 'tracking': emptied when its data connection reconnects after an idle close, tracking re-armed (a plain client's write after 2.5 s idle is a miss)", async () => {
    const p = `tl${rand()}:`;
    const app = await createToolkitApp({
      target: { url: redis.server.url },
      keyPrefix: p,
      cache: { l1: { max: 100, ttl: 60_000, invalidation: 'tracking' } },
    });
    const cache = app.get(CacheService);
    const main = app.get(RedisConnection).client as Redis;
    const plain = trackForCleanup(new Redis(redis.server.url));
    const v2 = await rawEntry(cache, plain, p, 'v2');
    const v3 = await rawEntry(cache, plain, p, 'v3');
    const key = new KeyBuilder(p).key(FEATURES.cache, 'k');
    await cache.set('k', 'v1');
    expect(await cache.get('k')).toBe('v1');
    let closes = 0;
    let readies = 0;
    main.on('close', () => closes++);
    main.on('ready', () => readies++);
    // Written through the app's own data connection: NOLOOP keeps it unreported, so L1 alone still answers v1.
    await main.set(key, v2, 'PX', 60_000);
    expect(await cache.get('k')).toBe('v1');
    // Redis closes the idle data connection; it reconnects.
    expect(await waitFor(() => closes >= 1 && readies >= 1, 4_000)).toBe(true);
    expect(await waitFor(async () => (await tracking(main)).on, 2_000)).toBe(true);
    // Invalidations sent while it was closed are lost: L1 was emptied on the reconnect (Redis answers v2).
    expect(await cache.get('k')).toBe('v2');
    expect(await cache.get('k')).toBe('v2');
    // Idle again, then a plain client writes: the re-armed tracking reports it and L1 drops the entry.
    await sleep(IDLE_MS);
    await plain.set(key, v3, 'PX', 60_000);
    expect(await waitFor(async () => (await cache.get('k')) === 'v3', 3_000)).toBe(true);
    expect((await tracking(main)).on).toBe(true);
    expect(cache.stats()).toMatchObject({ errors: 0, failedOpen: 0 });
  }, 30_000);

  it('a lock waiter woken after 3 s of idleness gets the lock; sessions through SessionMiddleware after 2.5 s idle', async () => {
    // The two parts run side by side (they ran one after the other, 3 s then 2 x 2.5 s): each has an app and
    // connections of its own, and Redis's `timeout` counts each connection's own idleness, so each is idle as long.
    const lockPart = async () => {
      const app = await createToolkitApp({ target: { url: redis.server.url }, keyPrefix: `lw${rand()}:` });
      const locks = app.get(LockService);
      const held = await locks.acquire('res', { ttl: 20_000 });
      const waiter = outcome(locks.acquire('res', { ttl: 5_000, waitMs: 10_000 }));
      await sleep(3_000);
      await held.release();
      const got = (await waiter) as { value?: { resource: string } };
      expect(got.value?.resource).toBe('res');
      expect(locks.stats()).toEqual({ unavailable: 0, replyErrors: 0 });
    };
    const sessionPart = async () => {
      const { http } = await sessionHttpApp({
        target: { url: redis.server.url },
        secret: 'operator-settings-secret',
        withMiddleware: [loginController(), userIdController('me')],
      });
      const login = await http.post('/login').send({ user: 'bob' }).expect(201);
      const pair = cookieLine(login.headers['set-cookie']).split(';')[0];
      for (let round = 0; round < 2; round++) {
        await sleep(IDLE_MS);
        expect((await http.get('/me').set('Cookie', pair).expect(200)).body).toEqual({ userId: 'bob' });
      }
    };
    await Promise.all([lockPart(), sessionPart()]);
  }, 30_000);

  it('the notifications gateway delivers after 2.5 s of idleness, twice; the socket stays connected', async () => {
    const app = await createGatewayApp({ target: { url: redis.server.url }, keyPrefix: `gw${rand()}:` });
    const alice = await connectClient(app.url, { token: 'u:alice' });
    expect(await alice.subscribe('user:alice')).toEqual({ ok: true });
    const pubsub = app.get(PubSubService);
    for (let round = 0; round < 2; round++) {
      await sleep(IDLE_MS);
      await pubsub.notifyUser('alice', { round });
      expect(await waitFor(() => alice.got.length === round + 1, 3_000)).toBe(true);
    }
    expect(alice.got.map((m) => m.data)).toEqual([{ round: 0 }, { round: 1 }]);
    expect(alice.socket.connected).toBe(true);
    expect(pubsub.stats()).toEqual({ unavailable: 0, replyErrors: 0 });
  }, 30_000);
});

describe('`maxclients`: Redis refuses a connection past it (`-ERR max number of clients reached`, then closes)', () => {
  const redis = usePrivateRedis();
  let admin: Redis;
  beforeEach(async () => {
    admin = trackForCleanup(new Redis(redis.server.url));
    await admin.config('SET', 'maxclients', '10000');
  });
  afterEach(async () => {
    await admin.config('SET', 'maxclients', '10000');
  });

  it('a full server at start: RedisUnavailableError naming the connection and maxclients, after one attempt (no retry loop)', async () => {
    await admin.config('SET', 'maxclients', '1'); // the admin's connection is the one
    const before = await clientsOf(admin);
    const err = await createToolkitApp({ target: { url: redis.server.url } }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RedisUnavailableError);
    expect((err as Error).message).toContain(`Cannot connect to Redis at ${redis.server.url}`);
    expect((err as Error).message).toContain('ERR max number of clients reached');
    expect((err as Error).message).toMatch(/maxclients/);
    expect((err as Error).message).not.toMatch(/Check that the server is running/);
    // the start's connection and at most one more to read why: not a loop of attempts until a timeout
    expect((await clientsOf(admin)).rejected - before.rejected).toBeLessThanOrEqual(2);
  });

  it("room for all of the toolkit's connections but one: the one refused (the pub/sub subscriber) names maxclients", async () => {
    const options = { target: { url: redis.server.url }, cache: { l1: { max: 10, ttl: 60_000 } } } as const;
    const base = (await clientsOf(admin)).connected;
    const probe = await createToolkitApp(options);
    await probe.get(PubSubService).subscribe('c', () => undefined);
    const opened = (await clientsOf(admin)).connected - base;
    await probe.close();
    expect(await waitFor(async () => (await clientsOf(admin)).connected === base, 2_000)).toBe(true);
    await admin.config('SET', 'maxclients', String(base + opened - 1));
    const app = await createToolkitApp(options);
    const err = await app
      .get(PubSubService)
      .subscribe('c', () => undefined)
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RedisUnavailableError);
    expect((err as Error).message).toContain('subscriber');
    expect((err as Error).message).toContain('ERR max number of clients reached');
    expect((err as Error).message).toMatch(/maxclients/);
  });

  it("room for the main connection only: the cache L1's tracking connection refused at start stops the start naming maxclients (not an empty L1 retried every 2 s)", async () => {
    const options = { target: { url: redis.server.url }, cache: { l1: { max: 10, ttl: 60_000 } } } as const;
    const base = (await clientsOf(admin)).connected;
    const probe = await createToolkitApp(options);
    const opened = (await clientsOf(admin)).connected - base;
    await probe.close();
    expect(await waitFor(async () => (await clientsOf(admin)).connected === base, 2_000)).toBe(true);
    // the main connection, then the L1's RESP2 tracking connection: the second is refused
    expect(opened).toBe(2);
    await admin.config('SET', 'maxclients', String(base + 1));
    const { warnings, logger } = recordingLogger();
    const err = await createToolkitApp({ ...options, logger }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RedisUnavailableError);
    expect((err as Error).message).toContain(`Cannot connect to Redis at ${redis.server.url}`);
    expect((err as Error).message).toContain('L1 tracking');
    expect((err as Error).message).toContain('ERR max number of clients reached');
    expect((err as Error).message).toMatch(/Raise maxclients/);
    expect(warnings.filter((w) => /retrying/.test(w))).toEqual([]);
    // nothing of the failed start is left connecting: room again, and no connection of it comes back
    await admin.config('SET', 'maxclients', '10000');
    await sleep(2_500);
    expect((await clientsOf(admin)).connected).toBe(base);
  });

  it('the L1 tracking connection refused while reconnecting (after start): the app runs on, the warning names maxclients, tracking comes back when there is room', async () => {
    const { warnings, logger } = recordingLogger();
    const p = `mt${rand()}:`;
    const app = await createToolkitApp({
      target: { url: redis.server.url },
      keyPrefix: p,
      logger,
      cache: { l1: { max: 10, ttl: 60_000, invalidation: 'tracking' } },
    });
    const cache = app.get(CacheService);
    const main = app.get(RedisConnection).client as Redis;
    const list = String(await admin.client('LIST'));
    const trackingId = /id=(\d+) [^\n]*name=rtk-l1-tracking/.exec(list)?.[1];
    expect(trackingId).toBeDefined();
    const full = (await clientsOf(admin)).connected;
    await admin.config('SET', 'maxclients', String(full));
    await admin.client('KILL', 'ID', String(trackingId));
    // another client takes the place the tracking connection left
    const other = trackForCleanup(new Redis(redis.server.url));
    await other.ping();
    const named = (w: string) => /L1 tracking.*max number of clients reached/.test(w);
    expect(await waitFor(() => warnings.some(named), 5_000)).toBe(true);
    expect(warnings.some((w) => /L1 tracking.*max number of clients reached.*maxclients/.test(w))).toBe(true);
    await cache.set('k', 'v1');
    expect(await cache.get('k')).toBe('v1');
    await other.quit();
    await admin.config('SET', 'maxclients', '10000');
    expect(await waitFor(async () => (await tracking(main)).on, 6_000)).toBe(true);
  });

  it('a reconnect refused at run time: fails open where transport failures do, counted, and the warning and health name maxclients', async () => {
    const { warnings, logger } = recordingLogger();
    const app: ToolkitApp = await createToolkitApp({ target: { url: redis.server.url }, logger });
    const limits = app.get(RateLimitService);
    const health = app.get(RedisToolkitHealth);
    const main = app.get(RedisConnection).client as Redis;
    const full = (await clientsOf(admin)).connected;
    await admin.config('SET', 'maxclients', String(full));
    await admin.client('KILL', 'ID', String(await main.client('ID')));
    // another client takes the place the app's connection left
    const other = trackForCleanup(new Redis(redis.server.url));
    await other.ping();
    expect(await waitFor(async () => /max number of clients/.test((await health.check()).error ?? ''), 5_000)).toBe(
      true,
    );
    const h = await health.check();
    expect(h.status).toBe('down');
    expect(h.error).toMatch(/maxclients/);
    expect((await limits.consume('r', policy)).degraded).toBe('fail-open');
    expect(limits.stats().failedOpen).toBeGreaterThanOrEqual(1);
    await expect(app.get(SessionService).create('u')).rejects.toThrow(/max number of clients reached/);
    expect(warnings.some((w) => /max number of clients reached.*maxclients/.test(w))).toBe(true);
    // room again: the app reconnects by itself
    await other.quit();
    await admin.config('SET', 'maxclients', '10000');
    expect(await waitFor(async () => (await health.check()).status === 'up', 5_000)).toBe(true);
  });
});

describe('`min-replicas-to-write 1` on a master without replicas: every write answers NOREPLICAS', () => {
  const redis = usePrivateRedis();

  it('an outage of writes, like READONLY in a failover: each feature follows its failure policy, counted, logged; health degraded', async () => {
    const { warnings, logger } = recordingLogger();
    const app = await createToolkitApp({ target: { url: redis.server.url }, keyPrefix: `nr${rand()}:`, logger });
    const cache = app.get(CacheService);
    const limits = app.get(RateLimitService);
    const pubsub = app.get(PubSubService);
    await cache.set('hit', 'cached');
    const heard: unknown[] = [];
    await pubsub.subscribe('news', (m) => void heard.push(m));
    const admin = trackForCleanup(new Redis(redis.server.url));
    await admin.config('SET', 'min-replicas-to-write', '1');
    try {
      // cache (failOpen: true): a hit is served, a miss serves the loader's value uncached, set does not throw
      expect(await outcome(cache.get('hit'))).toEqual({ value: 'cached' });
      expect(await outcome(cache.getOrSet('miss', async () => 'loaded'))).toEqual({ value: 'loaded' });
      expect(await outcome(cache.set('other', 1))).toEqual({ value: undefined });
      // the miss's failed open, and the set: each counted once
      expect(cache.stats()).toMatchObject({ failedOpen: 1, errors: 2 });
      await expectWritesOutage(app, 'NOREPLICAS');
      // locks fail closed too
      const lock = await app
        .get(LockService)
        .acquire('x')
        .catch((e: unknown) => e);
      expect(lock).toBeInstanceOf(RedisUnavailableError);
      expect((lock as Error).message).toContain('NOREPLICAS');
      // PUBLISH is no write: delivered
      expect(await pubsub.publish('news', 1)).toBe(1);
      expect(await waitFor(() => heard.length === 1, 2_000)).toBe(true);
      // health: PING answers, writes are refused
      const h = await app.get(RedisToolkitHealth).check();
      expect(h.status).toBe('degraded');
      expect(h.reason).toMatch(/NOREPLICAS.*min-replicas-to-write/);
      expect(warnings.some((w) => /NOREPLICAS/.test(w) && /allowing requests/.test(w))).toBe(true);
    } finally {
      await admin.config('SET', 'min-replicas-to-write', '0');
    }
    // a replica back (here: the setting off): writes work again, nothing to reset
    expect(await limits.consume('r', policy)).toMatchObject({ allowed: true, remaining: policy.limit - 1 });
    expect((await app.get(RedisToolkitHealth).check()).status).toBe('up');
  });
});

describe('`stop-writes-on-bgsave-error yes` after a failed save: every write (and PING) answers MISCONF', () => {
  it('an outage like NOREPLICAS: rate limit fails open, sessions 503, health down naming MISCONF', async () => {
    const server = trackForCleanup(
      await startRedisServer({ args: ['--save', '3600 1', '--enable-protected-configs', 'yes'] }),
    );
    const app = await createToolkitApp({ target: { url: server.url }, keyPrefix: `mc${rand()}:` });
    const admin = trackForCleanup(new Redis(server.url));
    const dir = String(((await admin.config('GET', 'dir')) as string[])[1]);
    // a directory no dump can be written to, as root too
    await admin.config('SET', 'dir', '/proc');
    await admin.bgsave();
    try {
      expect(await waitFor(async () => /rdb_last_bgsave_status:err/.test(await admin.info('persistence')), 5_000)).toBe(
        true,
      );
      await expectWritesOutage(app, 'MISCONF');
      const h = await app.get(RedisToolkitHealth).check();
      expect(h.status).toBe('down');
      expect(h.error).toContain('MISCONF');
    } finally {
      await admin.config('SET', 'dir', dir);
      await admin.bgsave().catch(() => undefined);
    }
  });
});

describe('`client-output-buffer-limit normal 256kb 128kb 10`: Redis closes a connection whose reply passes 256 KB', () => {
  const redis = usePrivateRedis();

  it('an oversized cache value: its read and every call in flight on the connection fail as an outage, counted, and the warning names the cause', async () => {
    const { warnings, logger } = recordingLogger();
    const app = await createToolkitApp({ target: { url: redis.server.url }, keyPrefix: `ob${rand()}:`, logger });
    const cache = app.get(CacheService);
    const limits = app.get(RateLimitService);
    const main = app.get(RedisConnection).client as Redis;
    const big = 'x'.repeat(400_000);
    await cache.set('big', big); // a write's reply is small: it is stored, and reported so
    await cache.set('small', 'tiny');
    const admin = trackForCleanup(new Redis(redis.server.url));
    await admin.config('SET', 'client-output-buffer-limit', 'normal 256kb 128kb 10');
    try {
      // one turn: the two reads share one MGET, the charge goes on the same connection
      const [read, beside, charge] = await Promise.all([
        cache.get('big'),
        cache.get('small'),
        limits.consume('r', policy),
      ]);
      expect([read, beside]).toEqual([undefined, undefined]);
      expect(charge).toMatchObject({ allowed: true, degraded: 'fail-open' });
      expect(cache.stats().failedOpen).toBe(2);
      expect(limits.stats().failedOpen).toBe(1);
      const named = warnings.filter((w) => /client-output-buffer-limit/.test(w));
      expect(named.length).toBeGreaterThanOrEqual(1);
      expect(named[0]).toMatch(/awaiting (their )?repl/);
      // again, once reconnected: the same value breaks the connection again (no hang; the loader answers)
      expect(await waitFor(() => main.status === 'ready', 3_000)).toBe(true);
      let loads = 0;
      expect(await cache.getOrSet('big', async () => (loads++, 'loaded'))).toBe('loaded');
      expect(loads).toBe(1);
      expect(await waitFor(() => main.status === 'ready', 3_000)).toBe(true);
      expect(await cache.get('small')).toBe('tiny');
    } finally {
      await admin.config('SET', 'client-output-buffer-limit', 'normal 0 0 0');
    }
    expect(((await cache.get('big')) as string | undefined)?.length).toBe(big.length);
  });

  it('a session past the limit: reading it is a 503 naming the cause, never a hang; an update whose reply is past it is a 503 too, never reported done', async () => {
    const { warnings, logger } = recordingLogger();
    const app = await createToolkitApp({ target: { url: redis.server.url }, keyPrefix: `os${rand()}:`, logger });
    const sessions = app.get(SessionService);
    const main = app.get(RedisConnection).client as Redis;
    const session = await sessions.create('carol', { blob: 'y'.repeat(300_000) });
    const admin = trackForCleanup(new Redis(redis.server.url));
    await admin.config('SET', 'client-output-buffer-limit', 'normal 256kb 128kb 10');
    let updated: unknown;
    try {
      const read = await outcome(sessions.get(session.id));
      expect(read).toBeInstanceOf(RedisUnavailableError);
      expect((read as Error).message).toMatch(/client-output-buffer-limit/);
      expect(await waitFor(() => main.status === 'ready', 3_000)).toBe(true);
      updated = await outcome(sessions.update(session.id, { plan: 'pro' }));
      expect(sessions.stats().unavailable).toBeGreaterThanOrEqual(1);
      expect(warnings.some((w) => /client-output-buffer-limit/.test(w))).toBe(true);
    } finally {
      await admin.config('SET', 'client-output-buffer-limit', 'normal 0 0 0');
    }
    expect(await waitFor(() => main.status === 'ready', 3_000)).toBe(true);
    const after = await sessions.get(session.id);
    // Its reply (the whole session) is past the limit too: a 503 (it may have run, as any call whose connection is lost
    // in flight), never reported done; the session is intact either way.
    expect(updated).toBeInstanceOf(RedisUnavailableError);
    expect([undefined, 'pro']).toContain(after?.data.plan);
    expect(String(after?.data.blob).length).toBe(300_000);
  });
});
