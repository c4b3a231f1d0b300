/**
 * Sessions: get-with-touch and update throughput, ours vs connect-redis (+ express-session), on one Redis in one run:
 * directly through the store API and through HTTP (plain Express on both sides; autocannon). Also counts the round
 * trips each get+touch costs (MONITOR, commands issued by clients, not those run inside our Lua scripts).
 *
 * npm run bench:session   (uses BENCH_REDIS_URL when set, else starts a private redis-server)
 */
import 'reflect-metadata';
import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import { randomBytes } from 'node:crypto';
import { NestFactory } from '@nestjs/core';
import { createClient } from '@redis/client';
import autocannon from 'autocannon';
import { RedisStore } from 'connect-redis';
import express from 'express';
import session from 'express-session';
import { Redis } from 'ioredis';
import {
  RedisSessionStore,
  RedisToolkitModule,
  SessionMiddleware,
  SessionService,
  type SessionRequest,
} from '../lib/index.js';
import { RedisConnection, generateSessionId, signCookieValue } from '../lib/advanced.js';
import { standaloneRedis } from './support/load-profile.js';
import {
  measure,
  medianOf,
  printTable,
  redisCpuMicros,
  saveResults,
  redisCpuPerOp,
  SLOW_OP_MS,
  withNote,
  type BenchRow,
  type Measurement,
} from './support/measure.js';
import { runBench } from './support/run-bench.js';

const OURS = 'nestjs-redis-toolkit';
const OURS_STORE = 'nestjs-redis-toolkit RedisSessionStore';
const PEER = 'connect-redis 9 (node-redis 5)';
/**
 * The rows above use the default `touchAfter` (a get within 1 s of this process's last extension of the session is a
 * plain read: the precision connect-redis's expiry in whole seconds has); these extend the expiry on every get.
 */
const OURS_EXACT = 'nestjs-redis-toolkit, touchAfter 0 (every get extends)';
const OURS_STORE_EXACT = 'nestjs-redis-toolkit RedisSessionStore, touchAfter 0 (every get extends)';
const OURS_AUTO = 'nestjs-redis-toolkit, own client with enableAutoPipelining';
/** `session.appendUpdates`: an update appends its change instead of a compare-and-set of the whole session. */
const OURS_APPEND = 'nestjs-redis-toolkit, appendUpdates (changes appended)';
/** Over HTTP the like-for-like row is RedisSessionStore under express-session (OURS); this one is a variant. */
const OURS_MIDDLEWARE = 'nestjs-redis-toolkit SessionMiddleware (no express-session)';
const CONTROL = 'control: GET + EXPIRE on ioredis 6';
const SECRET = 'bench-secret';
const SESSIONS = 1_000;
const MEASURE = { concurrency: 50, durationMs: 600, warmupMs: 200, rounds: 3 };
const HTTP_SECONDS = 1;
const HTTP_ROUNDS = 3;

/** A typical session: a user id and a handful of small fields (~400 bytes as JSON). */
function payload(i: number): Record<string, unknown> {
  return {
    userId: `user-${i % 100}`,
    roles: ['reader', 'writer'],
    locale: 'en-GB',
    theme: 'dark',
    cart: [
      { sku: `SKU-${i}`, qty: 2 },
      { sku: 'SKU-42', qty: 1 },
    ],
    csrf: randomBytes(16).toString('hex'),
    views: 0,
    lastPage: '/products/123?ref=home',
    flags: { beta: true, newsletter: false },
  };
}

const cookieFor = (maxAge: number) => ({
  originalMaxAge: maxAge,
  expires: new Date(Date.now() + maxAge),
  httpOnly: true,
  path: '/',
});

async function main(): Promise<void> {
  const redis = await standaloneRedis();
  const url = redis.url;
  const prefix = `bench-sess-${randomBytes(3).toString('hex')}:`;
  const nest = await NestFactory.createApplicationContext(
    RedisToolkitModule.forRoot({ connection: { url }, keyPrefix: prefix, session: { cookie: { secret: SECRET } } }),
    { logger: ['error'] },
  );
  const sessions = nest.get(SessionService);
  const nestExact = await NestFactory.createApplicationContext(
    RedisToolkitModule.forRoot({
      connection: { url },
      keyPrefix: prefix,
      session: { touchAfter: 0, cookie: { secret: SECRET } },
    }),
    { logger: ['error'] },
  );
  const sessionsExact = nestExact.get(SessionService);
  const nestAppend = await NestFactory.createApplicationContext(
    RedisToolkitModule.forRoot({
      connection: { url },
      keyPrefix: prefix,
      session: { appendUpdates: true, cookie: { secret: SECRET } },
    }),
    { logger: ['error'] },
  );
  const sessionsAppend = nestAppend.get(SessionService);
  // The same library with a client the user passes in ({ client }): ioredis with auto-pipelining.
  const autoClient = new Redis(url, { enableAutoPipelining: true, commandTimeout: 1_000, maxRetriesPerRequest: 0 });
  const nestAuto = await NestFactory.createApplicationContext(
    RedisToolkitModule.forRoot({
      connection: { client: autoClient },
      keyPrefix: prefix,
      session: { cookie: { secret: SECRET } },
    }),
    { logger: ['error'] },
  );
  const sessionsAuto = nestAuto.get(SessionService);
  const ioredis = nest.get(RedisConnection).client as Redis;
  const ourStore = new RedisSessionStore({ client: ioredis, prefix });
  const exactStore = new RedisSessionStore({ client: ioredis, prefix, touchAfter: 0 });
  const nodeRedis = createClient({ url });
  await nodeRedis.connect();
  const peerStore = new RedisStore({ client: nodeRedis, prefix: `${prefix}cr:` });

  const rows: BenchRow[] = [];
  const servers: Server[] = [];
  try {
    // ---- data: the same sessions for every library --------------------------------------------------------------
    // written 50 at a time: the set-up is not a load test (1,000 at once overran the command timeout on a busy box)
    const inChunks = async <T>(n: number, write: (i: number) => Promise<T>): Promise<T[]> => {
      const out: T[] = [];
      for (let i = 0; i < n; i += 50)
        out.push(...(await Promise.all(Array.from({ length: Math.min(50, n - i) }, (_, j) => write(i + j)))));
      return out;
    };
    const serviceIds = (await inChunks(SESSIONS, (i) => sessions.create(`user-${i % 100}`, payload(i)))).map(
      (s) => s.id,
    );
    // sessions of their own: the compare-and-set rows would otherwise rewrite the changes this row appends
    const appendIds = (await inChunks(SESSIONS, (i) => sessionsAppend.create(`user-${i % 100}`, payload(i)))).map(
      (s) => s.id,
    );
    const storeIds = Array.from({ length: SESSIONS }, () => generateSessionId());
    const peerIds = Array.from({ length: SESSIONS }, () => generateSessionId());
    // Each session's data built once: a store update spreads it (what express-session hands a store), and the
    // random token in it is not drawn again per operation (randomBytes was ~30 % of a store update's CPU here).
    const storedData = Array.from(
      { length: SESSIONS },
      (_, i) => ({ cookie: cookieFor(86_400_000), ...payload(i) }) as unknown as session.SessionData,
    );
    const stored = (i: number) => storedData[i];
    await inChunks(SESSIONS, (i) => ourStore.set(storeIds[i], stored(i)));
    await inChunks(SESSIONS, (i) => peerStore.set(peerIds[i], stored(i)));
    const pick = (ids: string[]) => ids[Math.floor(Math.random() * ids.length)];
    /** express-session's calls for an unmodified request: get, then touch. */
    const storeGetTouch = (store: RedisSessionStore) => async () => {
      const id = pick(storeIds);
      const s = await store.get(id);
      await store.touch(id, s!);
    };
    const pickIndex = () => Math.floor(Math.random() * SESSIONS);
    let counter = 0;

    // ---- round trips per get+touch ------------------------------------------------------------------------------
    const getAndTouch = {
      [OURS]: async () => void (await sessions.get(pick(serviceIds))),
      [OURS_EXACT]: async () => void (await sessionsExact.get(pick(serviceIds))),
      [OURS_STORE]: storeGetTouch(ourStore),
      [OURS_STORE_EXACT]: storeGetTouch(exactStore),
      [PEER]: async () => {
        const id = pick(peerIds);
        const s = (await peerStore.get(id)) as session.SessionData;
        await peerStore.touch(id, s);
      },
    };
    const roundTrips = await countRoundTrips(url, getAndTouch);
    const redisCpu = await redisCpuPerOps(getAndTouch);

    const redisCpuUpdate = await redisCpuPerOps({
      [OURS]: async () => void (await sessions.update(pick(serviceIds), { views: ++counter })),
      [OURS_APPEND]: async () => void (await sessionsAppend.update(pick(appendIds), { views: ++counter })),
      [OURS_STORE]: async () => {
        const i = pickIndex();
        await ourStore.set(storeIds[i], { ...stored(i), views: ++counter } as session.SessionData);
      },
      [PEER]: async () => {
        const i = pickIndex();
        await peerStore.set(peerIds[i], { ...stored(i), views: ++counter } as session.SessionData);
      },
    });

    // ---- store API ---------------------------------------------------------------------------------------------
    const controlKeys = peerIds.map((id) => `${prefix}cr:${id}`);
    const api: [string, string, () => Promise<unknown>][] = [
      [OURS, 'get+touch (store API)', () => sessions.get(pick(serviceIds))],
      [OURS_EXACT, 'get+touch (store API)', () => sessionsExact.get(pick(serviceIds))],
      [OURS_AUTO, 'get+touch (store API)', () => sessionsAuto.get(pick(serviceIds))],
      [
        CONTROL,
        'get+touch (store API)',
        async () => {
          const key = pick(controlKeys);
          JSON.parse((await ioredis.get(key))!);
          await ioredis.expire(key, 86_400);
        },
      ],
      [OURS_STORE, 'get+touch (store API)', storeGetTouch(ourStore)],
      [OURS_STORE_EXACT, 'get+touch (store API)', storeGetTouch(exactStore)],
      [
        PEER,
        'get+touch (store API)',
        async () => {
          const id = pick(peerIds);
          const s = (await peerStore.get(id)) as session.SessionData;
          await peerStore.touch(id, s);
        },
      ],
      [OURS, 'update (store API)', () => sessions.update(pick(serviceIds), { views: ++counter })],
      [OURS_AUTO, 'update (store API)', () => sessionsAuto.update(pick(serviceIds), { views: ++counter })],
      [OURS_APPEND, 'update (store API)', () => sessionsAppend.update(pick(appendIds), { views: ++counter })],
      [
        OURS_STORE,
        'update (store API)',
        () => {
          const i = pickIndex();
          return ourStore.set(storeIds[i], { ...stored(i), views: ++counter } as session.SessionData);
        },
      ],
      [
        PEER,
        'update (store API)',
        () => {
          const i = pickIndex();
          return peerStore.set(peerIds[i], { ...stored(i), views: ++counter } as session.SessionData);
        },
      ],
    ];
    // Rounds interleave the libraries (A B C A B C ...) so a burst of load on this shared machine hits all of them.
    const results = new Map<number, Measurement[]>();
    for (let round = 0; round < MEASURE.rounds; round++) {
      for (const [i, [, , op]] of api.entries()) {
        const m = await measure(op, { ...MEASURE, rounds: 1, warmupMs: round === 0 ? MEASURE.warmupMs : 0 });
        results.set(i, [...(results.get(i) ?? []), m]);
      }
    }
    for (const [i, [library, operation]] of api.entries()) {
      const m = medianOf(results.get(i)!);
      const rt =
        library === CONTROL
          ? "what connect-redis does, on the toolkit's client library"
          : !operation.startsWith('get')
            ? redisCpuUpdate[library] === undefined
              ? '1 round trip'
              : `1 round trip, ${redisCpuUpdate[library]} µs Redis CPU per update`
            : roundTrips[library] === undefined
              ? '1 round trip'
              : `${roundTrips[library]} round trip(s), ${redisCpu[library]} µs Redis CPU per get+touch`;
      // the default touchAfter's share: here every session is read many times a second, more than in most apps
      const reuses = operation.startsWith('get') && [OURS, OURS_AUTO, OURS_STORE].includes(library);
      const perSession = Math.round(m.opsPerSec / SESSIONS);
      const notes = reuses
        ? withNote(
            rt,
            `touchAfter 1 s (default): each session read ${perSession}× a second here, most reads not extending`,
          )
        : rt;
      rows.push({ feature: 'session', library, operation, ...m, notes });
    }

    // ---- HTTP: plain Express, GET reads (and touches), POST modifies ---------------------------------------------
    const middleware = new SessionMiddleware(sessions);
    const ours = express();
    ours.use((req, res, next) => {
      middleware.use(req as unknown as SessionRequest, res, next).catch(next);
    });
    ours.get('/me', (req, res) => {
      const s = (req as unknown as SessionRequest).session;
      if (!s) return void res.status(401).end();
      res.json({ userId: s.userId, views: s.data.views });
    });
    ours.post('/me', async (req, res, next) => {
      const s = (req as unknown as SessionRequest).session;
      if (!s) return void res.status(401).end();
      try {
        const updated = await sessions.update(s.id, { views: Number(s.data.views) + 1 });
        res.json({ views: updated.data.views });
      } catch (err) {
        next(err);
      }
    });
    const oursCookie = `rtk.sid=${encodeURIComponent(signCookieValue(serviceIds[0], SECRET))}`;

    const withExpressSession = (store: session.Store) => {
      const app = express();
      app.use(
        session({ store, secret: SECRET, resave: false, saveUninitialized: false, cookie: { maxAge: 86_400_000 } }),
      );
      app.post('/login', (req, res) => {
        Object.assign(req.session, payload(7));
        res.json({ ok: true });
      });
      app.get('/me', (req, res) => {
        const s = req.session as unknown as { userId?: string; views?: number };
        if (!s.userId) return void res.status(401).end();
        res.json({ userId: s.userId, views: s.views });
      });
      app.post('/me', (req, res) => {
        const s = req.session as unknown as { userId?: string; views?: number };
        if (!s.userId) return void res.status(401).end();
        s.views = (s.views ?? 0) + 1;
        res.json({ views: s.views });
      });
      return app;
    };

    const targets: [string, express.Express, string | undefined][] = [
      [OURS, withExpressSession(ourStore), undefined],
      [PEER, withExpressSession(peerStore), undefined],
      [OURS_MIDDLEWARE, ours, oursCookie],
    ];
    const endpoints: { library: string; base: string; cookie: string }[] = [];
    for (const [library, app, fixedCookie] of targets) {
      const srv = await listen(app);
      servers.push(srv);
      const base = `http://127.0.0.1:${(srv.address() as AddressInfo).port}`;
      endpoints.push({ library, base, cookie: fixedCookie ?? (await login(base)) });
    }
    const httpOps = [
      ['GET /me: read+touch (HTTP)', 'GET'],
      ['POST /me: update (HTTP)', 'POST'],
    ] as const;
    const httpResults = new Map<string, Measurement[]>();
    for (let round = 0; round < HTTP_ROUNDS; round++) {
      for (const { library, base, cookie } of endpoints) {
        for (const [operation, method] of httpOps) {
          const r = await load(`${base}/me`, method, cookie, round === 0);
          const key = `${library}\u0000${operation}`;
          httpResults.set(key, [...(httpResults.get(key) ?? []), r]);
        }
      }
    }
    for (const { library } of endpoints) {
      for (const [operation] of httpOps) {
        const m = medianOf(httpResults.get(`${library}\u0000${operation}`)!);
        rows.push({
          feature: 'session',
          library,
          operation,
          ...m,
          notes:
            library === OURS_MIDDLEWARE
              ? 'SessionMiddleware + SessionService, no express-session'
              : library === OURS
                ? 'RedisSessionStore under express-session'
                : 'express-session',
        });
      }
    }

    const table = printTable('Sessions: ours vs connect-redis (same Redis, same run)', rows);
    const ratio = (library: string, operation: string) => {
      const a = rows.find((r) => r.library === library && r.operation === operation)?.opsPerSec;
      const b = rows.find((r) => r.library === PEER && r.operation === operation)?.opsPerSec;
      return a === undefined || b === undefined ? null : Number((a / b).toFixed(2));
    };
    const summary = Object.fromEntries(
      [...new Set(rows.map((r) => r.operation))]
        .flatMap((op) => [
          [
            `${op} — SessionService (store API) / RedisSessionStore under express-session (HTTP) ÷ connect-redis`,
            ratio(OURS, op),
          ],
          [`${op} — SessionMiddleware ÷ connect-redis under express-session`, ratio(OURS_MIDDLEWARE, op)],
          [`${op} — RedisSessionStore ÷ connect-redis`, ratio(OURS_STORE, op)],
          [`${op} — SessionService with touchAfter 0 (every get extends) ÷ connect-redis`, ratio(OURS_EXACT, op)],
          [`${op} — RedisSessionStore with touchAfter 0 ÷ connect-redis`, ratio(OURS_STORE_EXACT, op)],
          [`${op} — SessionService with enableAutoPipelining ÷ connect-redis`, ratio(OURS_AUTO, op)],
          [`${op} — SessionService with appendUpdates ÷ connect-redis`, ratio(OURS_APPEND, op)],
          [`${op} — control (GET+EXPIRE on ioredis) ÷ connect-redis`, ratio(CONTROL, op)],
        ])
        .filter(([, value]) => value !== null),
    );
    const extra = {
      stalls: stallsOfGetTouch(rows),
      roundTripsPerGetTouch: roundTrips,
      redisCpuUsecPerGetTouch: redisCpu,
      redisCpuUsecPerUpdate: redisCpuUpdate,
      ratios: summary,
    };
    process.stdout.write(`${JSON.stringify(extra, null, 2)}\n`);
    // the stall line goes to BENCHMARKS.md's notes (for each profile): the table's notes are the quiet run's only
    saveResults('session', rows, { ...extra, table, summary: extra.stalls });
  } finally {
    await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
    await nodeRedis.quit().catch(() => undefined);
    await nestAuto.close();
    await nestExact.close();
    await nestAppend.close();
    autoClient.disconnect();
    await nest.close();
    await redis.stop();
  }
}

/**
 * How much of the store-API get+touch time went to stalls (operations slower than SLOW_OP_MS), ours and connect-redis,
 * and the mean of the other operations: in a closed loop of 50 callers throughput is 50 ÷ the mean latency, so a
 * library can be faster on most operations and still slower overall when more of its operations stall.
 */
function stallsOfGetTouch(rows: BenchRow[]): string {
  const describe = (library: string, name: string): string => {
    const r = rows.find((row) => row.library === library && row.operation === 'get+touch (store API)');
    if (r?.slowShare === undefined || r.slowTimeShare === undefined || r.meanMs === undefined) return `${name}: –`;
    const pct = (share: number) => `${(share * 100).toFixed(1)} %`;
    const others = r.slowShare < 1 ? (r.meanMs * (1 - r.slowTimeShare)) / (1 - r.slowShare) : Number.NaN;
    return (
      `${name} ${pct(r.slowShare)} of operations over ${SLOW_OP_MS} ms holding ${pct(r.slowTimeShare)} of the time, ` +
      `the others ${others.toFixed(3)} ms on average`
    );
  };
  return (
    `get+touch (store API), medians of the rounds: ${describe(OURS, 'ours')}; ` +
    `${describe(OURS_EXACT, 'ours with touchAfter 0')}; ${describe(PEER, 'connect-redis')}`
  );
}

/** Counts the commands clients send (MONITOR; commands inside our Lua scripts are reported as 'lua' and skipped). */
async function countRoundTrips(url: string, ops: Record<string, () => Promise<void>>): Promise<Record<string, number>> {
  const N = 200;
  const out: Record<string, number> = {};
  const admin = new Redis(url);
  const monitor = await admin.monitor();
  let count = 0;
  monitor.on('monitor', (_time: string, _args: string[], source: string) => {
    if (source !== 'lua') count++;
  });
  try {
    for (const [name, op] of Object.entries(ops)) {
      await op(); // scripts loaded, connections warm
      await new Promise((r) => setTimeout(r, 100));
      count = 0;
      for (let i = 0; i < N; i++) await op();
      await new Promise((r) => setTimeout(r, 200));
      out[name] = Number((count / N).toFixed(2));
    }
  } finally {
    monitor.disconnect();
    admin.disconnect();
  }
  return out;
}

/**
 * Redis CPU time per operation (µs) of each op, run N times, 30 at once: measure.ts's INFO cpu delta of the bench
 * Redis (I/O included). Not INFO commandstats: a command a script runs is counted there on its own AND inside the
 * script's EVALSHA time, so summing commandstats counts a script's work twice.
 */
async function redisCpuPerOps(ops: Record<string, () => Promise<void>>): Promise<Record<string, number>> {
  const N = 10_000;
  const out: Record<string, number> = {};
  for (const [name, op] of Object.entries(ops)) {
    await op();
    const perOp = await redisCpuPerOp(async () => {
      for (let i = 0; i < N; i += 30) await Promise.all(Array.from({ length: 30 }, op));
      return N;
    });
    if (perOp !== undefined) out[name] = Number(perOp.toFixed(2));
  }
  return out;
}

function listen(app: express.Express): Promise<Server> {
  return new Promise((resolve) => {
    const srv = app.listen(0, '127.0.0.1', () => resolve(srv));
  });
}

async function login(base: string): Promise<string> {
  const res = await fetch(`${base}/login`, { method: 'POST' });
  const set = res.headers.get('set-cookie');
  if (!set) throw new Error('login did not set a cookie');
  return set.split(';')[0];
}

async function load(url: string, method: 'GET' | 'POST', cookie: string, warmUp: boolean): Promise<Measurement> {
  const opts = { url, method, connections: 50, headers: { cookie } } as const;
  if (warmUp) await autocannon({ ...opts, duration: 0.5 });
  const before = await redisCpuMicros();
  const r = await autocannon({ ...opts, duration: HTTP_SECONDS });
  const after = await redisCpuMicros();
  const errors = r.errors + r.timeouts + r.non2xx;
  // successful requests only: a failed one is counted in errors, not as throughput
  const ok = Math.max(0, r.requests.total - r.non2xx);
  return {
    opsPerSec: ok / HTTP_SECONDS,
    p50Ms: r.latency.p50,
    p99Ms: r.latency.p99,
    errors,
    ...(before !== undefined && after !== undefined && ok > 0 && { redisCpuUsPerOp: (after - before) / ok }),
  };
}

runBench(main);
