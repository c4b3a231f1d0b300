/**
 * Sessions from outside, as an attacker: 12,000 requests with no cookie or a forged one (random values,
 * valid-looking ids with a tampered or missing signature, over-long values, validly signed ids of sessions that do not
 * exist), through SessionMiddleware and through express-session on RedisSessionStore, on Express and on Fastify; and
 * SessionService asked for 100,000 ids that do not exist. Every long-lived collection of lib/session stays at or under
 * its cap (read through the objects), and nothing is written to Redis (DBSIZE of the test's own server) for a request
 * that stored no data.
 */
import 'reflect-metadata';
import { jest } from '@jest/globals';
import { Controller, Get, type INestApplication } from '@nestjs/common';
import { randomBytes } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import session from 'express-session';
import { Redis } from 'ioredis';
import { RedisSessionStore, SessionService } from '../../lib/index.js';
import { generateSessionId, signCookieValue } from '../../lib/advanced.js';
import { usePrivateRedis } from '../support/private-servers.js';
import { sessionHttpApp } from '../support/session-http-app.js';
import { closeToolkitApps, createToolkitApp, PLATFORMS } from '../support/toolkit-app.js';

jest.setTimeout(300_000);

const redis = usePrivateRedis();
let admin: Redis;
beforeAll(() => {
  admin = new Redis(redis.server.url, { lazyConnect: false });
});
afterAll(() => admin.disconnect());
afterEach(() => closeToolkitApps());

const SECRET = 'an-attacker-never-sees-this-secret-0123456789';
/**
 * Per case (was 4,000): each collection checked after a flood must hold nothing (one request kept fails it), but for
 * the values express-session's default writes, capped at RecentValues' 1,000: 2,000 writes are twice past that cap.
 */
const REQUESTS = 2_000;
/** What the sessions' in-process records hold after requests or calls that stored nothing. */
const NOTHING_KEPT = {
  batched: 0,
  recentValues: 0,
  recentUnits: 0,
  recentTouches: 0,
  updateQueues: 0,
  storeSetQueues: 0,
};
const b64 = (n: number) => randomBytes(n).toString('base64url');

/** The Cookie header of request `i`: none, or one of the forgeries an attacker can make without the secret. */
function forgedCookie(i: number, name: string): string | undefined {
  const id = generateSessionId();
  switch (i % 7) {
    case 0:
      return undefined;
    case 1:
      return `${name}=${b64(24)}`; // a random value
    case 2:
      return `${name}=${encodeURIComponent(`s:${id}.${b64(32)}`)}`; // an id of the right shape, a made-up signature
    case 3: {
      const signed = signCookieValue(id, SECRET);
      const flipped = signed.slice(0, -1) + (signed.endsWith('A') ? 'B' : 'A');
      return `${name}=${encodeURIComponent(flipped)}`; // a tampered signature
    }
    case 4:
      return `${name}=s:${'x'.repeat(8_000)}.${b64(32)}`; // over-long
    case 5:
      return `${name}=${encodeURIComponent(signCookieValue(id, 'another-secret-of-the-same-length-0123456789'))}`;
    default:
      // validly signed (a cookie of a session since destroyed, or stolen): its id is looked up, and it does not exist
      return `${name}=${encodeURIComponent(signCookieValue(id, SECRET))}`;
  }
}

/** `count` GETs of `path` with the forged cookies, `concurrency` at a time, over keep-alive connections. */
async function flood(url: string, path: string, count: number, cookieName: string): Promise<Map<number, number>> {
  const statuses = new Map<number, number>();
  let next = 0;
  const worker = async () => {
    while (next < count) {
      const i = next++;
      const cookie = forgedCookie(i, cookieName);
      const res = await fetch(`${url}${path}`, { headers: cookie === undefined ? {} : { cookie } });
      await res.arrayBuffer();
      statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
    }
  };
  await Promise.all(Array.from({ length: 32 }, worker));
  return statuses;
}

function urlOf(app: INestApplication): string {
  return `http://127.0.0.1:${(app.getHttpServer().address() as AddressInfo).port}`;
}

/** The long-lived collections of a SessionRecords (SessionService's or a store's), by name: their sizes. */
function recordSizes(records: unknown): Record<string, number> {
  const r = records as {
    recent: { kept: Map<string, unknown>; units: number };
    touches?: { touches: Map<string, unknown> };
    updates: { queues: Map<string, unknown> };
    storeSets: { queues: Map<string, unknown> };
    touchReads: { pending: unknown[] };
    plainReads?: { pending: unknown[] };
    writes: { pending: unknown[] };
  };
  return {
    batched: r.touchReads.pending.length + (r.plainReads?.pending.length ?? 0) + r.writes.pending.length,
    recentValues: r.recent.kept.size,
    recentUnits: r.recent.units,
    recentTouches: r.touches?.touches.size ?? 0,
    updateQueues: r.updates.queues.size,
    storeSetQueues: r.storeSets.queues.size,
  };
}

@Controller()
class PageController {
  @Get('page')
  page() {
    return { ok: true };
  }
}

describe.each(PLATFORMS)('forged and missing cookies on %s', (platform) => {
  it(`${REQUESTS} requests through SessionMiddleware: nothing kept, nothing written`, async () => {
    const app = await sessionHttpApp({
      platform,
      target: { url: redis.server.url },
      secret: SECRET,
      session: { touchAfter: 1_000 },
      withMiddleware: [PageController],
    });
    const before = await admin.dbsize();
    const statuses = await flood(urlOf(app.app.app), '/page', REQUESTS, 'rtk.sid');
    expect(Object.fromEntries(statuses)).toEqual({ 200: REQUESTS });
    // not one key: a request that stored nothing writes nothing
    expect((await admin.dbsize()) - before).toBe(0);
    const records = (app.sessions as unknown as { records: unknown }).records;
    expect(recordSizes(records)).toEqual(NOTHING_KEPT);
  });

  it.each([
    ['saveUninitialized: false', false],
    ["express-session's default (saveUninitialized: true)", undefined],
  ] as const)(`${REQUESTS} requests through express-session on RedisSessionStore, %s`, async (_, save) => {
    let store!: RedisSessionStore;
    const app = await createToolkitApp({
      platform,
      target: { url: redis.server.url },
      keyPrefix: `churn${b64(4)}:`,
      http: true,
      controllers: [PageController],
      beforeInit: (nest) => {
        store = new RedisSessionStore({ client: new Redis(redis.server.url), prefix: `es${b64(4)}:` });
        nest.use(
          session({
            store,
            secret: SECRET,
            resave: false,
            ...(save === undefined ? {} : { saveUninitialized: save }),
            genid: () => generateSessionId(),
          }),
        );
      },
    });
    const before = await admin.dbsize();
    const statuses = await flood(urlOf(app.app), '/page', REQUESTS, 'connect.sid');
    expect(Object.fromEntries(statuses)).toEqual({ 200: REQUESTS });
    const written = (await admin.dbsize()) - before;
    // express-session's own default saves a session for every request that came without one (docs/session.md says
    // so); saveUninitialized: false writes nothing for a request that stored no data
    expect(written).toBe(save === false ? 0 : REQUESTS);
    const s = store as unknown as { records: unknown; touchedOnGet: Map<string, unknown> };
    expect(s.touchedOnGet.size).toBe(0);
    const sizes = recordSizes(s.records);
    expect(sizes.recentTouches).toBe(0);
    expect(sizes.updateQueues + sizes.storeSetQueues).toBe(0);
    // the values the store wrote are kept, at most RecentValues' cap (1,000), ~8 MB of text in all
    expect(sizes.recentValues).toBeLessThanOrEqual(1_000);
    expect(sizes.recentUnits).toBeLessThanOrEqual(4 * 1_024 * 1_024);
    if (save === false) expect(sizes.recentValues).toBe(0);
    (store as unknown as { records: { client: Redis } }).records.client.disconnect();
  });
});

it('SessionService with 15,000 ids that do not exist (past every 10,000 cap): get, update, destroy keep nothing and write nothing', async () => {
  const app = await createToolkitApp({ target: { url: redis.server.url }, keyPrefix: `svc${b64(4)}:`, session: {} });
  const sessions = app.get(SessionService);
  const records = (sessions as unknown as { records: unknown }).records;
  const before = await admin.dbsize();
  const ids = Array.from({ length: 15_000 }, () => generateSessionId());
  for (let i = 0; i < ids.length; i += 1_000) {
    const slice = ids.slice(i, i + 1_000);
    const got = await Promise.all(slice.map((id) => sessions.get(id)));
    expect(got.every((s) => s === null)).toBe(true);
    const updated = await Promise.all(
      slice.map((id) =>
        sessions.update(id, { a: 1 }).then(
          () => 'ok',
          (e: Error) => e.name,
        ),
      ),
    );
    expect(new Set(updated)).toEqual(new Set(['SessionNotFoundError']));
    const destroyed = await Promise.all(slice.map((id) => sessions.destroy(id)));
    expect(destroyed.every((d) => d === false)).toBe(true);
  }
  // and the rest of the API, for ids and users that do not exist
  const few = ids.slice(0, 1_000);
  const regenerated = await Promise.all(
    few.map((id) =>
      sessions.regenerate(id).then(
        () => 'ok',
        (e: Error) => e.name,
      ),
    ),
  );
  expect(new Set(regenerated)).toEqual(new Set(['SessionNotFoundError']));
  expect((await Promise.all(few.map((id) => sessions.exists(id)))).every((e) => e === false)).toBe(true);
  const users = few.map((_, i) => `nobody${i}`);
  expect((await Promise.all(users.map((u) => sessions.listForUser(u)))).every((l) => l.length === 0)).toBe(true);
  expect((await Promise.all(users.map((u) => sessions.destroyAllForUser(u)))).every((n) => n === 0)).toBe(true);
  expect((await admin.dbsize()) - before).toBe(0);
  expect(recordSizes(records)).toEqual(NOTHING_KEPT);
});

it('past their caps with real sessions: recent values 1,000, recent touches and the store get/touch bookkeeping 10,000', async () => {
  const app = await createToolkitApp({
    target: { url: redis.server.url },
    keyPrefix: `cap${b64(4)}:`,
    session: { touchAfter: 1_000 },
  });
  const sessions = app.get(SessionService);
  const records = (sessions as unknown as { records: unknown }).records;
  const ids: string[] = [];
  for (let i = 0; i < 12_000; i += 500) {
    const made = await Promise.all(Array.from({ length: 500 }, (_, j) => sessions.create(`u${i + j}`, { n: i + j })));
    ids.push(...made.map((s) => s.id));
  }
  for (let i = 0; i < ids.length; i += 500) await Promise.all(ids.slice(i, i + 500).map((id) => sessions.get(id)));
  const sizes = recordSizes(records);
  expect(sizes.recentValues).toBe(1_000);
  expect(sizes.recentTouches).toBe(10_000);
  expect(sizes.recentUnits).toBeLessThanOrEqual(4 * 1_024 * 1_024);

  const client = new Redis(redis.server.url);
  const store = new RedisSessionStore({ client, prefix: `cap${b64(4)}:` });
  const sids = Array.from({ length: 12_000 }, () => generateSessionId());
  const data = { cookie: { originalMaxAge: 60_000, httpOnly: true, path: '/' }, n: 1 };
  for (let i = 0; i < sids.length; i += 500) {
    const slice = sids.slice(i, i + 500);
    await Promise.all(slice.map((sid) => store.set(sid, data)));
    await Promise.all(slice.map((sid) => store.get(sid)));
  }
  const s = store as unknown as { records: unknown; touchedOnGet: Map<string, unknown> };
  expect(s.touchedOnGet.size).toBe(10_000);
  expect(recordSizes(s.records).recentValues).toBe(1_000);
  client.disconnect();
});
