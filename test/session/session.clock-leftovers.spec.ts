/**
 * The places sessions still met this process's clock where Redis's decides (2026-12-05), each on a single server and a
 * cluster. "Behind"/"ahead" is `Date.now` shifted in this process (for the call, unless said); the estimate of Redis's
 * clock (RedisClock) rides the monotonic clock, so it stays right. Before the fix:
 * - the store's set of a new session took its deadline from Date.now() + maxAgeMs: an hour behind with maxAgeMs
 *   30 min, the key was deleted at once (get null); an hour ahead, the deadline was an hour past maxAgeMs;
 * - an appended update (appendUpdates) capped the expiry at the deadline of the value this process last saw, which a
 *   session made again under the same id (the store's set after the key expired) does not share: capped at the old
 *   deadline (2 min) where the new session's ttl (10 min) was due, or given its ttl past the new deadline; and from an
 *   instance behind Redis's, an old deadline Redis's clock had passed deleted the new session;
 * - a read that does not touch (exists, listForUser, the store's get with disableTTL, all) and the store's set judged
 *   the deadline of a session without an idle ttl (its key has no expiry) by this process's clock only: from one
 *   behind Redis's, a session past its deadline was live, and its set kept it past its deadline.
 */
import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import type { SessionData } from 'express-session';
import { RedisSessionStore, SessionService } from '../../lib/index.js';
import { generateSessionId, RedisConnection } from '../../lib/advanced.js';
import type { RedisClient } from '../../lib/common/lua-script.js';
import { clientFor } from '../support/clients.js';
import { realNow, shifted, useClockShift } from '../support/clock-shift.js';
import { clockEstimated } from '../support/session-clock.js';
import { closeToolkitApps, createToolkitApp, type RedisTarget } from '../support/toolkit-app.js';
import { waitFor } from '../support/wait.js';

afterEach(closeToolkitApps);
const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;
const TTL = MINUTE;
useClockShift();

const uniquePrefix = (): string => `rtk-cl-${randomBytes(4).toString('hex')}:`;

const behind = <T>(run: () => Promise<T>) => shifted(-HOUR, run);

/** Redis's clock, epoch ms. */
async function redisNow(client: RedisClient): Promise<number> {
  const [s, us] = await client.time();
  return Number(s) * 1_000 + Math.floor(Number(us) / 1_000);
}

/**
 * Waits until the estimate of Redis's clock is in (the first TIME): until then it is Date.now(), so it is asked with
 * Date.now() an hour off.
 */
const estimated = (o: RedisSessionStore | SessionService) => clockEstimated(o, HOUR);

/** The stored envelope's createdAt and deadline, or null when the key is gone. */
async function timesOf(client: RedisClient, key: string): Promise<{ c: number; m: number } | null> {
  const raw = await client.get(key);
  return raw === null ? null : (JSON.parse(raw.split('\n')[0]) as { c: number; m: number });
}

/** The stored deadline rewritten to `m`, the key's expiry kept (session.clock-behind.spec.ts's setDeadline). */
async function setDeadline(client: RedisClient, key: string, m: number): Promise<void> {
  const raw = (await client.get(key))!;
  await client.set(key, raw.replace(/"m":\d+/, `"m":${m}`).replace(/"v":"\//, '"v":"/x'), 'KEEPTTL');
}

async function serviceApp(target: RedisTarget, session: Record<string, unknown>, prefix = uniquePrefix()) {
  const options = { ttl: TTL, maxAgeMs: DAY, cookie: { secret: 's3cret' }, ...session };
  const app = await createToolkitApp({ target, keyPrefix: prefix, session: options });
  const sessions = app.get(SessionService);
  await estimated(sessions);
  return { sessions, client: app.get(RedisConnection).client, prefix, keyOf: (id: string) => `${prefix}sess:{${id}}` };
}

/** A store on its own client, its estimate of Redis's clock in. */
async function storeOn(target: RedisTarget, prefix: string, options: Record<string, unknown>) {
  const store = new RedisSessionStore({ client: clientFor(target), prefix, ...options });
  await estimated(store);
  return store;
}

/** An express-session cookie made on a clock `shift` ms off, maxAge `ttl`. */
const cookieOf = (ttl: number, shift = 0) => ({
  originalMaxAge: ttl,
  expires: new Date(realNow() + shift + ttl),
  httpOnly: true,
  path: '/',
});

describe.each(['single', 'cluster'] as const)('clock leftovers on %s', (target) => {
  it.each([
    ['an hour behind', -HOUR, 30 * MINUTE],
    ['an hour ahead', HOUR, DAY],
  ])(
    "the store's set of a new session on a clock %s: createdAt Redis's now, deadline maxAgeMs later",
    async (_, shift, maxAgeMs) => {
      const prefix = uniquePrefix();
      const client = clientFor(target);
      const store = await storeOn(target, prefix, { maxAgeMs });
      const sid = generateSessionId();
      const key = `${prefix}sess:{${sid}}`;
      const before = await redisNow(client);
      const session = { cookie: cookieOf(TTL, shift), userId: 'u', n: 1 } as unknown as SessionData;
      await shifted(shift, () => store.set(sid, session));
      const after = await redisNow(client);
      // (before the fix, an hour behind: null, the key deleted at once; an hour ahead: m an hour later)
      const times = await timesOf(client, key);
      expect(times).not.toBeNull();
      // the estimate is off by at most half a TIME round trip
      expect(times!.c).toBeGreaterThanOrEqual(before - 250);
      expect(times!.c).toBeLessThanOrEqual(after + 250);
      expect(times!.m).toBe(times!.c + maxAgeMs);
      expect(Number(await client.zscore(`${prefix}sess:user:{u}`, sid))).toBe(times!.m);
      const left = await client.pttl(key);
      expect(left).toBeGreaterThan(TTL - 10_000);
      expect(left).toBeLessThanOrEqual(TTL);
      expect((await shifted(shift, () => store.get(sid)))?.n).toBe(1);
    },
  );

  // Before the store's first TIME sample (its client not ready yet) the estimate is this process's clock: the script
  // refuses a deadline Redis's clock has passed, and the set takes Redis's TIME (before: the key deleted at once).
  it("the store's set of a new session before its first TIME sample, on a clock an hour behind: Redis's times", async () => {
    const prefix = uniquePrefix();
    const client = clientFor(target);
    const store = new RedisSessionStore({ client: clientFor(target), prefix, maxAgeMs: 30 * MINUTE });
    const sid = generateSessionId();
    const key = `${prefix}sess:{${sid}}`;
    const session = { cookie: cookieOf(TTL, -HOUR), userId: 'u', n: 1 } as unknown as SessionData;
    await behind(() => store.set(sid, session));
    const after = await redisNow(client);
    const times = await timesOf(client, key);
    expect(times).not.toBeNull();
    expect(times!.c).toBeGreaterThan(after - 10_000);
    // c is the store's estimate of Redis's clock once it has Redis's TIME: off by up to half a TIME round trip, as in
    // the case above (CI on a cluster: 1 ms past \`after\`)
    expect(times!.c).toBeLessThanOrEqual(after + 250);
    expect(times!.m).toBe(times!.c + 30 * MINUTE);
    expect(Number(await client.zscore(`${prefix}sess:user:{u}`, sid))).toBe(times!.m);
    expect((await store.get(sid))?.n).toBe(1);
  });

  // A session made again under the same id: the store's set of an id whose key expired (express-session saving a
  // session that expired during its request) writes a new session, with its own deadline. An instance that saw the old
  // one appends its next update to the new one. DEL stands for Redis expiring the key.
  it('an appended update of a session made again under its id: its ttl, not capped at the old deadline', async () => {
    // the old session: deadline 2 min after its creation, its own ttl 10 min
    const { sessions, client, prefix, keyOf } = await serviceApp(target, { appendUpdates: true, maxAgeMs: 2 * MINUTE });
    const s = await sessions.create('u', { a: 1 }, { ttl: 10 * MINUTE });
    await client.del(keyOf(s.id));
    const store = await storeOn(target, prefix, { maxAgeMs: DAY });
    await store.set(s.id, { cookie: cookieOf(10 * MINUTE), userId: 'u', n: 1 } as unknown as SessionData);
    const updated = await sessions.update(s.id, { b: 2 });
    expect(updated.data).toMatchObject({ n: 1, b: 2 });
    // before the fix, PTTL about 2 min: the old deadline
    const left = await client.pttl(keyOf(s.id));
    expect(left).toBeGreaterThan(10 * MINUTE - 10_000);
    expect(left).toBeLessThanOrEqual(10 * MINUTE);
    expect(Math.abs(updated.expiresAt - (await client.pexpiretime(keyOf(s.id))))).toBeLessThanOrEqual(250);
  });

  it('an appended update of a session made again under its id: its expiry never past the new deadline', async () => {
    const { sessions, client, prefix, keyOf } = await serviceApp(target, { appendUpdates: true });
    const s = await sessions.create('u', { a: 1 });
    await client.del(keyOf(s.id));
    // the new session: deadline 30 s after its creation, ttl 60 s (its key expires at the deadline)
    const store = await storeOn(target, prefix, { maxAgeMs: 30_000 });
    await store.set(s.id, { cookie: cookieOf(TTL), userId: 'u', n: 1 } as unknown as SessionData);
    const m = (await timesOf(client, keyOf(s.id)))!.m;
    const updated = await sessions.update(s.id, { b: 2 });
    expect(updated.data).toMatchObject({ n: 1, b: 2 });
    // before the fix, about 30 s past it: the old deadline (a day away) capped nothing
    expect(await client.pexpiretime(keyOf(s.id))).toBe(m);
    expect(updated.expiresAt).toBe(m);
  });

  // The old session's deadline passed by Redis's clock (waited for: 1.5 s), not by this instance's, an hour behind.
  it("an appended update from an instance behind, of a session made again after the old one's deadline: kept", async () => {
    const { sessions, client, prefix, keyOf } = await serviceApp(target, {
      appendUpdates: true,
      ttl: 1_000,
      maxAgeMs: 1_500,
    });
    const s = await sessions.create('u', { a: 1 });
    const m = (await timesOf(client, keyOf(s.id)))!.m;
    expect(await waitFor(async () => (await redisNow(client)) > m, 5_000)).toBe(true);
    const store = await storeOn(target, prefix, { maxAgeMs: DAY });
    await store.set(s.id, { cookie: cookieOf(TTL), userId: 'u', n: 1 } as unknown as SessionData);
    // before the fix: SessionNotFoundError, and the new session deleted (capped at the old deadline, past)
    expect((await behind(() => sessions.update(s.id, { b: 2 }))).data).toMatchObject({ n: 1, b: 2 });
    expect(await client.pttl(keyOf(s.id))).toBeGreaterThan(TTL - 10_000);
    expect((await store.get(s.id))?.b).toBe(2);
  });

  // Not a bug (a check): create hands lastAccessOf this process's now, but the result is its createdAt whatever that
  // clock says (max(createdAt, min(now, expiry - ttl)), the expiry by Redis's clock). Passed before the fix too.
  it.each([-HOUR, HOUR])(
    "create on a clock %d ms off: lastAccessedAt is its createdAt (Redis's clock)",
    async (shift) => {
      const { sessions } = await serviceApp(target, {});
      const s = await shifted(shift, () => sessions.create('u', { a: 1 }));
      expect(s.lastAccessedAt - s.createdAt).toBeGreaterThanOrEqual(0);
      expect(s.lastAccessedAt - s.createdAt).toBeLessThanOrEqual(250);
      expect(Math.abs(s.createdAt - realNow())).toBeLessThan(1_000);
    },
  );

  // A session without an idle ttl (the store's disableTTL): its key has no expiry, so it stays until a read or a write
  // judges its deadline. setDeadline stands for the deadline passing.
  it("a session without an idle ttl past its deadline by Redis's clock: reads from an instance behind, null", async () => {
    const prefix = uniquePrefix();
    const client = clientFor(target);
    const store = await storeOn(target, prefix, { maxAgeMs: DAY, disableTTL: true });
    const { sessions } = await serviceApp(target, {}, prefix);
    const sids = [generateSessionId(), generateSessionId(), generateSessionId()];
    for (const sid of sids) {
      await store.set(sid, { cookie: cookieOf(TTL), userId: 'u', n: 1 } as unknown as SessionData);
      expect(await client.pexpiretime(`${prefix}sess:{${sid}}`)).toBe(-1);
      await setDeadline(client, `${prefix}sess:{${sid}}`, (await redisNow(client)) - 1_000);
    }
    // before the fix: { n: 1 }, true, [sids[2]]
    expect(await behind(() => store.get(sids[0]))).toBeNull();
    expect(await behind(() => sessions.exists(sids[1]))).toBe(false);
    expect((await behind(() => sessions.listForUser('u'))).map((x) => x.id)).toEqual([]);
    for (const sid of sids) expect(await client.exists(`${prefix}sess:{${sid}}`)).toBe(0);
  });

  it("the store's set of a session without an idle ttl past its deadline, from an instance behind: a new session", async () => {
    const prefix = uniquePrefix();
    const client = clientFor(target);
    const store = await storeOn(target, prefix, { maxAgeMs: DAY, disableTTL: true });
    const sid = generateSessionId();
    const key = `${prefix}sess:{${sid}}`;
    await store.set(sid, { cookie: cookieOf(TTL), n: 1 } as unknown as SessionData);
    await setDeadline(client, key, (await redisNow(client)) - 1_000);
    await behind(() => store.set(sid, { cookie: cookieOf(TTL, -HOUR), n: 2 } as unknown as SessionData));
    // before the fix the old deadline stayed (the write kept a dead session: null on the next read)
    expect((await timesOf(client, key))!.m).toBeGreaterThan((await redisNow(client)) + DAY - MINUTE);
    expect((await store.get(sid))?.n).toBe(2);
  });
});
