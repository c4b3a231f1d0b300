/**
 * `npm run bench:sizing`: the measured numbers behind docs/sizing.md, re-runnable.
 *
 * 1. Memory per key of each feature: `MEMORY USAGE <key> SAMPLES 0` of every key a feature writes for one item (a
 *    cache entry with tags, a rate-limit key per algorithm, a session with its index entry, a lock with its fence).
 *    A structure shared by many items (a tag set, a user's session index, the fence counters) is counted per item:
 *    its size with ITEMS items ÷ ITEMS.
 * 2. Per HTTP request of the sample app's routes: commands sent by clients (MONITOR, commands inside scripts not
 *    counted), commands Redis executed (INFO commandstats, those inside scripts included) and Redis CPU (INFO cpu:
 *    used_cpu_sys + used_cpu_user), over REQUESTS sequential requests per route.
 *
 * Writes bench/results/sizing.json and prints markdown tables. A private redis-server, nothing shared.
 */
import 'reflect-metadata';
import type { INestApplicationContext } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { mkdirSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { Redis } from 'ioredis';
import { CacheService, LockService, RateLimitService, RedisToolkitModule, SessionService } from '../lib/index.js';
import { startRedisServer } from '../test/support/redis-server.js';
import { machineInfo, resultsDir } from './support/measure.js';
import { startApp } from './support/sample-app.js';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { PRODUCT } from './support/payloads.js';
import { runBench } from './support/run-bench.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
/** Items per shared structure (tag set, user index) when its per-item share is measured. */
const ITEMS = 100;
/** Requests per route and pass (one pass counts commands with MONITOR, another reads CPU without it). */
const REQUESTS = 400;
/** Requests in flight at once in the CPU pass (so Redis's own background work is shared by many requests). */
const CONCURRENCY = 8;

const VALUE = PRODUCT;
/** The session payload of the session benchmark (~400 bytes of JSON). */
const SESSION_DATA = {
  roles: ['reader', 'writer'],
  locale: 'en-GB',
  theme: 'dark',
  cart: [
    { sku: 'SKU-1', qty: 2 },
    { sku: 'SKU-42', qty: 1 },
  ],
  csrf: '0123456789abcdef0123456789abcdef',
  views: 0,
  lastPage: '/products/123?ref=home',
  flags: { beta: true, newsletter: false },
};

interface MemoryRow {
  item: string;
  bytes: number;
  keys: string;
  notes: string;
}

async function allKeys(redis: Redis): Promise<Set<string>> {
  const out = new Set<string>();
  let cursor = '0';
  do {
    const [next, keys] = await redis.scan(cursor, 'COUNT', 1000);
    cursor = next;
    for (const k of keys) out.add(k);
  } while (cursor !== '0');
  return out;
}

const usage = async (redis: Redis, key: string): Promise<number> =>
  Number((await redis.call('MEMORY', 'USAGE', key, 'SAMPLES', '0')) ?? 0);

/** The keys `action` creates, with their MEMORY USAGE; the key names shown with the item's own part as `<…>`. */
async function newKeys(redis: Redis, action: () => Promise<unknown>): Promise<Map<string, number>> {
  const before = await allKeys(redis);
  await action();
  const out = new Map<string, number>();
  for (const key of await allKeys(redis)) if (!before.has(key)) out.set(key, await usage(redis, key));
  return out;
}

async function memory(redis: Redis, app: INestApplicationContext): Promise<MemoryRow[]> {
  const rows: MemoryRow[] = [];
  const cache = app.get(CacheService);
  const rl = app.get(RateLimitService);
  const sessions = app.get(SessionService);
  const locks = app.get(LockService);
  const sum = (m: Map<string, number>) => [...m.values()].reduce((a, b) => a + b, 0);
  const names = (m: Map<string, number>) => [...m.keys()].join(', ');

  // cache: one entry with two tags; the tag sets are shared, so their share is (size with ITEMS entries) ÷ ITEMS
  const one = await newKeys(redis, () => cache.set('sizing:product:0', VALUE, { ttl: 600_000, tags: ['t:a', 't:b'] }));
  // tag sets end in `:tag`; the rest is the entry (its key name is percent-encoded)
  const entryKeys = [...one.keys()].filter((k) => !k.endsWith(':tag'));
  const entryBytes = entryKeys.reduce((s, k) => s + (one.get(k) ?? 0), 0);
  for (let i = 1; i < ITEMS; i++) await cache.set(`sizing:product:${i}`, VALUE, { ttl: 600_000, tags: ['t:a', 't:b'] });
  const tagKeys = [...one.keys()].filter((k) => k.endsWith(':tag'));
  let tagBytes = 0;
  for (const k of tagKeys) tagBytes += await usage(redis, k);
  rows.push({
    item: 'cache entry (1 KB JSON) with 2 tags',
    bytes: Math.round(entryBytes + tagBytes / ITEMS),
    keys: names(one),
    notes: `entry ${entryBytes} B + its share of the 2 tag sets (${tagBytes} B with ${ITEMS} entries)`,
  });

  // rate limiting
  const consumeMany = async (key: string, algorithm: 'sliding-window' | 'fixed-window' | 'token-bucket', n: number) => {
    for (let i = 0; i < n; i += 50)
      await Promise.all(
        Array.from({ length: Math.min(50, n - i) }, () => rl.consume(key, { limit: n, ttl: 60_000, algorithm })),
      );
  };
  for (const limit of [100, 1_000]) {
    const m = await newKeys(redis, () => consumeMany(`sizing:sw:${limit}`, 'sliding-window', limit));
    rows.push({
      item: `rate limit, sliding window at its limit ${limit.toLocaleString('en-US')}`,
      bytes: sum(m),
      keys: names(m),
      notes: `${limit} requests admitted in the window (the log holds one member per request)`,
    });
  }
  for (const algorithm of ['fixed-window', 'token-bucket'] as const) {
    const m = await newKeys(redis, () => consumeMany(`sizing:${algorithm}`, algorithm, 10));
    rows.push({ item: `rate limit, ${algorithm.replace('-', ' ')}`, bytes: sum(m), keys: names(m), notes: '' });
  }

  // sessions: the session key, and its share of the user's index (ITEMS sessions of one user)
  let firstId = '';
  const s1 = await newKeys(redis, async () => {
    firstId = (await sessions.create('sizing-user', SESSION_DATA)).id;
  });
  const sessionKey = [...s1.keys()].find((k) => k.includes(firstId)) ?? '';
  const indexKeys = [...s1.keys()].filter((k) => k !== sessionKey);
  for (let i = 1; i < ITEMS; i++) await sessions.create('sizing-user', SESSION_DATA);
  let indexBytes = 0;
  for (const k of indexKeys) indexBytes += await usage(redis, k);
  // the pending set (`…:new`) empties as writes settle: wait for it, then count what stays
  await new Promise((r) => setTimeout(r, 200));
  indexBytes = 0;
  for (const k of indexKeys) indexBytes += await usage(redis, k);
  const sessionBytes = s1.get(sessionKey) ?? 0;
  rows.push({
    item: 'session (~400 B of data) with its user-index entry',
    bytes: Math.round(sessionBytes + indexBytes / ITEMS),
    keys: names(s1),
    notes: `session ${sessionBytes} B + its share of the user's index (${indexBytes} B with ${ITEMS} sessions)`,
  });

  // locks: the lock key while held, and the fence counter (one per resource, kept)
  const l = await newKeys(redis, () => locks.acquire('sizing:order:1'));
  rows.push({
    item: 'lock (held) with its fencing counter',
    bytes: sum(l),
    keys: names(l),
    notes: 'the lock key exists while held; the fence counter stays per resource',
  });
  return rows;
}

interface RouteRow {
  route: string;
  sent: number;
  executed: number;
  redisCpuUs: number;
  statuses: string;
}

/** Commands Redis executed so far (those inside scripts included), this INFO call not yet counted. */
async function commandCalls(admin: Redis): Promise<number> {
  const text = await admin.info('commandstats');
  let n = 0;
  for (const m of text.matchAll(/^cmdstat_([\w|]+):calls=(\d+)/gm)) n += Number(m[2]);
  return n;
}

async function cpuMicros(admin: Redis): Promise<number> {
  const info = await admin.info('cpu');
  const read = (name: string): number => Number(new RegExp(`^${name}:([\\d.]+)`, 'm').exec(info)?.[1] ?? 0);
  return (read('used_cpu_sys') + read('used_cpu_user')) * 1e6;
}

async function routes(url: string): Promise<RouteRow[]> {
  const candidates = ['dist-bench/sample/main.js', 'dist/sample/main.js'].map((p) => join(ROOT, p));
  const sampleMain = candidates.find((p) => existsSync(p));
  if (!sampleMain) throw new Error('the sample is not built: run npm run bench:build');
  const app = await startApp(
    sampleMain,
    {
      REDIS_URL: url,
      REDIS_KEY_PREFIX: 'rtk-sizing:',
      RATE_LIMIT_LIMIT: '10000',
      LOGIN_LIMIT_PER_MINUTE: '10000',
      REDIS_COMMAND_TIMEOUT_MS: '1000',
    },
    '/health',
  );
  const admin = new Redis(url);
  const monitorClient = new Redis(url);
  const request = async (method: string, path: string, init: RequestInit = {}): Promise<Response> =>
    fetch(`${app.url}${path}`, { method, ...init });
  const login = async (): Promise<string> => {
    const res = await request('POST', '/auth/login', {
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ username: 'sizing-user' }),
    });
    return (res.headers.get('set-cookie') ?? '').split(';')[0];
  };
  const cookie = await login();
  const json = { 'content-type': 'application/json' };
  const cases: [string, (i: number) => Promise<Response>][] = [
    ['GET /products (cache hit, sliding-window limit)', () => request('GET', '/products')],
    ['GET /products/:id (cache hit)', (i) => request('GET', `/products/${1 + (i % 3)}`)],
    [
      'PUT /products/:id (write + evict by tag)',
      (i) => request('PUT', `/products/${1 + (i % 3)}`, { headers: json, body: JSON.stringify({ price: 100 + i }) }),
    ],
    ['GET /me (session read + touch)', () => request('GET', '/me', { headers: { cookie } })],
    [
      'POST /auth/login (limit + new session)',
      (i) => request('POST', '/auth/login', { headers: json, body: JSON.stringify({ username: `sizing-${i}` }) }),
    ],
    [
      'POST /orders/:id/pay (lock + fenced write)',
      (i) => request('POST', `/orders/${i}-${pass}/pay`, { headers: json, body: JSON.stringify({ amount: 1990 }) }),
    ],
    ['GET /api/status (fixed api limit)', () => request('GET', '/api/status')],
    ['GET /health', () => request('GET', '/health')],
  ];
  const out: RouteRow[] = [];
  let pass = 0;
  try {
    for (const [route, call] of cases) {
      for (let i = 0; i < 5; i++) await (await call(100_000 + i)).arrayBuffer(); // warm: cache filled, scripts loaded
      // pass 1: commands the app sent (MONITOR; it slows Redis down, so no CPU is read here)
      pass = 1;
      await new Promise((r) => setTimeout(r, 100));
      let sent = 0;
      const monitor = await monitorClient.monitor();
      monitor.on('monitor', (_time: string, _args: string[], source: string) => {
        if (source !== 'lua') sent++;
      });
      await new Promise((r) => setTimeout(r, 100));
      for (let i = 0; i < REQUESTS; i++) await (await call(i)).arrayBuffer();
      await new Promise((r) => setTimeout(r, 200));
      monitor.disconnect();
      const sentPerRequest = sent / REQUESTS;
      await new Promise((r) => setTimeout(r, 100));
      // pass 2: commands executed and Redis CPU, CONCURRENCY requests at a time, MONITOR paused
      pass = 2;
      const statuses = new Map<number, number>();
      const calls0 = await commandCalls(admin);
      const cpu0 = await cpuMicros(admin);
      for (let i = 0; i < REQUESTS; i += CONCURRENCY)
        await Promise.all(
          Array.from({ length: CONCURRENCY }, async (_, j) => {
            const res = await call(REQUESTS + i + j);
            await res.arrayBuffer();
            statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
          }),
        );
      const cpu1 = await cpuMicros(admin);
      const calls1 = await commandCalls(admin);
      out.push({
        route,
        sent: sentPerRequest,
        // minus this probe's own INFO calls: calls0 (counted after its reply), cpu0 and cpu1
        executed: (calls1 - calls0 - 3) / REQUESTS,
        redisCpuUs: (cpu1 - cpu0) / REQUESTS,
        statuses: [...statuses].map(([s, n]) => `${n}× ${s}`).join(', '),
      });
    }
  } finally {
    monitorClient.disconnect();
    admin.disconnect();
    await app.stop();
  }
  return out;
}

async function main(): Promise<void> {
  const server = await startRedisServer();
  const redis = new Redis(server.url);
  const app = await NestFactory.createApplicationContext(
    RedisToolkitModule.forRoot({
      connection: { url: server.url },
      keyPrefix: 'rtk:',
      cache: { defaultTtl: 600_000 },
      rateLimit: { maxSlidingWindowLimit: 1_000 },
      session: { cookie: { secret: 'sizing-secret' } },
      lock: { ttl: 600_000 },
    }),
    { logger: ['error'] },
  );
  try {
    const mem = await memory(redis, app);
    await redis.flushall();
    const perRoute = await routes(server.url);
    const lines = [
      '### Memory per item (MEMORY USAGE, bytes)',
      '',
      '| item | bytes | keys | notes |',
      '| --- | ---: | --- | --- |',
      ...mem.map((r) => `| ${r.item} | ${r.bytes.toLocaleString('en-US')} | ${r.keys} | ${r.notes} |`),
      '',
      `### Redis work per HTTP request of the sample app (${REQUESTS} requests per route and pass)`,
      '',
      '| route | commands sent | commands executed | Redis CPU µs | answers |',
      '| --- | ---: | ---: | ---: | --- |',
      ...perRoute.map(
        (r) =>
          `| ${r.route} | ${r.sent.toFixed(2)} | ${r.executed.toFixed(2)} | ${r.redisCpuUs.toFixed(1)} | ${r.statuses} |`,
      ),
      '',
    ];
    process.stdout.write(`${lines.join('\n')}\n`);
    const dir = resultsDir('quiet');
    mkdirSync(dir, { recursive: true });
    writeFileSync(
      new URL('sizing.json', dir),
      `${JSON.stringify(
        {
          date: new Date().toISOString(),
          machine: machineInfo(),
          loadAverage: loadavg()
            .map((v) => v.toFixed(2))
            .join(' '),
          memory: mem,
          routes: perRoute,
        },
        null,
        2,
      )}\n`,
    );
  } finally {
    await app.close();
    redis.disconnect();
    await server.stop();
  }
}

runBench(main);
