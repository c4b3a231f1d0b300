/**
 * An instance whose clock runs an hour behind Redis's (or whose wall clock was stepped back an hour) keeps its
 * sessions alive: the idle expiry reaches Redis as a duration, timed from Redis's clock, and only the absolute deadline
 * (maxAgeMs, far here) as an epoch. "Behind" is `Date.now` shifted in this process for the one call (the toolkit reads
 * the clock at call time), as in session.deadline-clock.spec.ts. Before the fix (2026-12-05), every write sent
 * `min(now + ttl, deadline)` from this process's clock as PXAT/PEXPIREAT: an hour in Redis's past, so Redis deleted
 * the key at once (create, update with and without appendUpdates, regenerate, the store's set and touch, the atomic
 * Lua fallbacks of update and of the store's set, and the correcting PEXPIREAT of a touching read of a session with
 * its own ttl): every test here failed at its first PTTL (-2). Now the write scripts get the ttl and the deadline
 * and set min(TIME + ttl, deadline) (lib/session/session-expiry.lua; the fallbacks add the ttl to the TIME they
 * read), and the touching read sends GETEX PX <its ttl>.
 */
import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import type { SessionData } from 'express-session';
import { RedisSessionStore, SessionNotFoundError, SessionService } from '../../lib/index.js';
import { generateSessionId, RedisConnection } from '../../lib/advanced.js';
import type { RedisClient } from '../../lib/common/lua-script.js';
import { storeSetInLua, updateInLua } from '../../lib/session/session.lua-writes.js';
import { SessionRecords } from '../../lib/session/session.records.js';
import { realNow, shiftDateNow, shifted, useClockShift } from '../support/clock-shift.js';
import { clientFor } from '../support/clients.js';
import { closeToolkitApps, createToolkitApp, type RedisTarget } from '../support/toolkit-app.js';

afterEach(closeToolkitApps);
const HOUR = 3_600_000;
const DAY = 24 * HOUR;
const TTL = 60_000;
useClockShift();

const uniquePrefix = (): string => `rtk-cb-${randomBytes(4).toString('hex')}:`;

/** `run` with this process's clock an hour behind. */
const behind = <T>(run: () => Promise<T>): Promise<T> => shifted(-HOUR, run);

/** The key's PTTL is `ttl`, give or take the test's own latency (a key deleted: -2). */
async function expectTtl(client: RedisClient, key: string, ttl: number): Promise<void> {
  const left = await client.pttl(key);
  expect(left).toBeGreaterThan(ttl - 10_000);
  expect(left).toBeLessThanOrEqual(ttl);
}

/** The stored deadline of a session rewritten to `m`, its expiry kept (session.deadline-clock.spec.ts's setDeadline). */
async function setDeadline(client: RedisClient, key: string, m: number): Promise<void> {
  const raw = (await client.get(key))!;
  // a new stamp too, as every write makes (session.stamp.ts): else a compare-and-set would take it for its own
  await client.set(key, raw.replace(/"m":\d+/, `"m":${m}`).replace(/"v":"\//, '"v":"/x'), 'KEEPTTL');
}

const deadlineOf = async (client: RedisClient, key: string) =>
  (JSON.parse((await client.get(key))!.split('\n')[0]) as { m: number }).m;

async function serviceApp(target: RedisTarget, session: Record<string, unknown> = {}, prefix = uniquePrefix()) {
  const options = { ttl: TTL, maxAgeMs: DAY, cookie: { secret: 's3cret' }, ...session };
  const app = await createToolkitApp({ target, keyPrefix: prefix, session: options });
  const client = app.get(RedisConnection).client;
  return { sessions: app.get(SessionService), client, prefix, keyOf: (id: string) => `${prefix}sess:{${id}}` };
}

/**
 * A store on its own client (maxAgeMs a day), a new session id and its key, and the cookie express-session on the
 * instance behind gives it (`expires` from that instance's clock).
 */
function storeBehind(target: RedisTarget) {
  const client = clientFor(target);
  const prefix = uniquePrefix();
  const store = new RedisSessionStore({ client, prefix, maxAgeMs: DAY });
  const sid = generateSessionId();
  const key = `${prefix}sess:{${sid}}`;
  const cookie = { originalMaxAge: TTL, expires: new Date(realNow() - HOUR + TTL), httpOnly: true, path: '/' };
  return { client, store, sid, key, cookie };
}

describe.each(['single', 'cluster'] as const)('a clock an hour behind on %s', (target) => {
  it.each([false, true])(
    'create, touching read, update (appendUpdates %s), regenerate: live, PTTL the ttl',
    async (appendUpdates) => {
      const { sessions, client, keyOf } = await serviceApp(target, { appendUpdates });
      const s = await behind(() => sessions.create('u', { a: 1 }));
      await expectTtl(client, keyOf(s.id), TTL);
      expect((await behind(() => sessions.get(s.id)))?.data).toEqual({ a: 1 });
      await expectTtl(client, keyOf(s.id), TTL);
      expect((await behind(() => sessions.update(s.id, { b: 2 }))).data).toEqual({ a: 1, b: 2 });
      await expectTtl(client, keyOf(s.id), TTL);
      // enough updates that appendUpdates writes the merged session whole (its rewrite, session-change.lua)
      for (let i = 0; i < 17; i++) await behind(() => sessions.update(s.id, { n: i }));
      await expectTtl(client, keyOf(s.id), TTL);
      const moved = await behind(() => sessions.regenerate(s.id));
      expect(moved.data).toEqual({ a: 1, b: 2, n: 16 });
      await expectTtl(client, keyOf(moved.id), TTL);
      // and on an instance with a right clock
      expect((await sessions.get(moved.id))?.data).toEqual({ a: 1, b: 2, n: 16 });
    },
  );

  it('a session with its own ttl: the touching read corrects its expiry to that ttl', async () => {
    const { sessions, client, keyOf } = await serviceApp(target);
    const s = await sessions.create('u', { a: 1 }, { ttl: 2 * TTL });
    expect((await behind(() => sessions.get(s.id)))?.data).toEqual({ a: 1 });
    await expectTtl(client, keyOf(s.id), 2 * TTL);
  });

  it("the atomic Lua fallbacks of update and of the store's set (existing and new session): live, PTTL the ttl", async () => {
    const { sessions, client, prefix, keyOf } = await serviceApp(target);
    const s = await sessions.create('u', { a: 1 });
    // what SessionRecords falls back to after three lost compare-and-sets in a row (session-update.lua)
    const merged = await behind(() => updateInLua(client, keyOf(s.id), 1_048_576, true, [['b', '2']], []));
    expect(merged !== null && merged !== 'too large' && merged.envelope.d).toEqual({ a: '1', b: '2' });
    await expectTtl(client, keyOf(s.id), TTL);
    // and what the store's set falls back to (session-store-set.lua)
    const records = new SessionRecords(client, prefix);
    const fields = { u: 'u', t: TTL, d: { n: '1' } };
    for (const id of [s.id, generateSessionId()]) {
      const keys: [string, string] = [records.sessionKey(id), records.tombstoneKey(id)];
      const set = await behind(() => storeSetInLua(client, records.index, id, keys, fields, DAY, Date.now(), true));
      expect(set).toMatchObject({ previousUserId: id === s.id ? 'u' : '' });
      await expectTtl(client, keyOf(id), TTL);
    }
    expect((await sessions.get(s.id))?.data).toEqual({ n: 1 });
  });

  // A key past its deadline by Redis's clock but not by this one's: what this instance's touching reads leave (their
  // GETEX PX ttl; the cap PEXPIREAT m LT is sent only when this clock sees the deadline near). Before 2026-12-05 an
  // update answered as written (expiry: the deadline) while its PXAT, in Redis's past, deleted the key. (touchAfter 0:
  // else an appended update within touchAfter of this instance's read keeps the key's expiry, 'skip', and the key
  // lives on with the change until the read's expiry: nothing deleted.)
  it.each([false, true])(
    "update (appendUpdates %s) of a session past its deadline by Redis's clock only: SessionNotFoundError, deleted",
    async (appendUpdates) => {
      const { sessions, client, prefix, keyOf } = await serviceApp(target, { appendUpdates, touchAfter: 0 });
      // made by another instance: this one reads what is stored (the deadline set below), as its touching read did
      const s = await (await serviceApp(target, {}, prefix)).sessions.create('u', { a: 1 });
      // past its deadline by Redis's clock, its key still there (as an instance's touching reads left it before the
      // deadline was judged by Redis's clock; setDeadline keeps the key's expiry)
      await setDeadline(client, keyOf(s.id), realNow() - 1_000);
      expect(await client.exists(keyOf(s.id))).toBe(1);
      await expect(behind(() => sessions.update(s.id, { b: 2 }))).rejects.toBeInstanceOf(SessionNotFoundError);
      expect(await client.exists(keyOf(s.id))).toBe(0);
      expect(await sessions.get(s.id)).toBeNull();
    },
  );

  it("the store's set of a session past its deadline by Redis's clock only: a new session, as for one expired", async () => {
    const { client, store, sid, key, cookie } = storeBehind(target);
    await behind(() => store.set(sid, { cookie, n: 1 } as unknown as SessionData));
    await setDeadline(client, key, realNow() - 1_000);
    await behind(() => store.set(sid, { cookie, n: 2 } as unknown as SessionData));
    // the new session's deadline: this clock's now + maxAgeMs (a day less an hour ahead by Redis's)
    expect(await deadlineOf(client, key)).toBeGreaterThan(realNow() + DAY - 2 * HOUR);
    await expectTtl(client, key, TTL);
    expect((await store.get(sid))?.n).toBe(2);
  });

  // The instance behind for its whole life: its RedisClock measures the offset (an hour) at start. Before 2026-12-05 a
  // touching read judged the deadline on this clock: a deadline 20 s away by Redis's was an hour away, so the read
  // gave the key its full ttl (PEXPIRETIME now + 60 s), and one past by Redis's clock was live and extended again.
  it("touching reads judge the deadline by Redis's clock: capped at it, and past it null and deleted", async () => {
    shiftDateNow(-HOUR);
    const { sessions, client, keyOf } = await serviceApp(target);
    const s = await sessions.create('u', { a: 1 });
    const m = realNow() + 20_000;
    await setDeadline(client, keyOf(s.id), m);
    expect((await sessions.get(s.id))?.data).toEqual({ a: 1 });
    expect(await client.pexpiretime(keyOf(s.id))).toBe(m);
    // and once Redis's clock has passed it (within touchAfter of this instance's touch: the plain read defers)
    await setDeadline(client, keyOf(s.id), realNow() - 1_000);
    expect(await sessions.get(s.id)).toBeNull();
    expect(await client.exists(keyOf(s.id))).toBe(0);
  });

  // regenerate copies with create's script. Before 2026-12-05 neither judged the deadline by Redis's clock: the copy of
  // a session past it (kept live by this instance's touching reads) was written with PXAT in Redis's past, deleted at
  // once, the old id destroyed, and regenerate resolved with the id of a session that did not exist.
  it("regenerate of a session past its deadline by Redis's clock only: SessionNotFoundError, old key deleted, no copy", async () => {
    const { sessions, client, prefix, keyOf } = await serviceApp(target, { touchAfter: 0 });
    const s = await sessions.create('u', { a: 1 });
    await setDeadline(client, keyOf(s.id), realNow() - 1_000);
    expect(await client.exists(keyOf(s.id))).toBe(1);
    // behind for this call only (the deadline then is an hour away by this process's clock)
    await expect(behind(() => sessions.regenerate(s.id))).rejects.toBeInstanceOf(SessionNotFoundError);
    expect(await client.exists(keyOf(s.id))).toBe(0);
    // nothing copied: the user's index holds no other id than the old one
    expect((await client.zrange(`${prefix}sess:user:{u}`, '0', '-1')).filter((id) => id !== s.id)).toEqual([]);
    expect(await sessions.listForUser('u')).toEqual([]);
  });

  it('regenerate from an instance behind for its whole life (its estimate in): SessionNotFoundError, deleted', async () => {
    shiftDateNow(-HOUR);
    const { sessions, client, keyOf } = await serviceApp(target);
    const s = await sessions.create('u', { a: 1 });
    await setDeadline(client, keyOf(s.id), realNow() - 1_000);
    await expect(sessions.regenerate(s.id)).rejects.toBeInstanceOf(SessionNotFoundError);
    expect(await client.exists(keyOf(s.id))).toBe(0);
  });

  // maxAgeMs (30 min) below the skew (an hour): a deadline from this clock has passed by Redis's. Before 2026-12-05
  // create resolved and its key, written with PXAT in Redis's past, was gone (PTTL -2).
  it.each([
    ['behind for its whole life (its estimate in)', true],
    ['behind for the call only (its estimate off: the script answers TIME)', false],
  ])('create with maxAgeMs below the skew, %s: live, deadline maxAgeMs from now by Redis', async (_, whole) => {
    if (whole) shiftDateNow(-HOUR);
    const { sessions, client, keyOf } = await serviceApp(target, { maxAgeMs: HOUR / 2 });
    const s = await (whole ? sessions.create('u', { a: 1 }) : behind(() => sessions.create('u', { a: 1 })));
    await expectTtl(client, keyOf(s.id), TTL);
    expect(s.expiresAt).toBe(await client.pexpiretime(keyOf(s.id)));
    const m = await deadlineOf(client, keyOf(s.id));
    expect(m).toBeGreaterThan(realNow() + HOUR / 2 - 10_000);
    expect(m).toBeLessThanOrEqual(realNow() + HOUR / 2 + 1_000);
    expect((await sessions.get(s.id))?.data).toEqual({ a: 1 });
    expect((await sessions.listForUser('u')).map((x) => x.id)).toEqual([s.id]);
  });

  it("the store's touching get judges the deadline by Redis's clock: capped at it", async () => {
    shiftDateNow(-HOUR);
    const { client, store, sid, key, cookie } = storeBehind(target);
    await store.set(sid, { cookie, n: 1 } as unknown as SessionData);
    const m = realNow() + 20_000;
    await setDeadline(client, key, m);
    expect((await store.get(sid))?.n).toBe(1);
    expect(await client.pexpiretime(key)).toBe(m);
  });

  it('the store: set (new and existing session) and touch: live, PTTL the cookie maxAge', async () => {
    // express-session on the instance behind sets the cookie's expires from its own clock
    const { client, store, sid, key, cookie } = storeBehind(target);
    await behind(() => store.set(sid, { cookie, n: 1 } as unknown as SessionData));
    await expectTtl(client, key, TTL);
    await behind(() => store.set(sid, { cookie, n: 2 } as unknown as SessionData));
    await expectTtl(client, key, TTL);
    expect((await behind(() => store.get(sid)))?.n).toBe(2);
    // another maxAge: the touch script runs (session-store-touch.lua)
    await behind(() => store.touch(sid, { cookie: { ...cookie, originalMaxAge: 2 * TTL } } as unknown as SessionData));
    await expectTtl(client, key, 2 * TTL);
    expect((await store.get(sid))?.n).toBe(2);
  });
});
