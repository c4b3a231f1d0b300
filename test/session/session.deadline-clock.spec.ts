/**
 * The absolute deadline (`maxAgeMs`) is judged by Redis's clock (session.deadline.ts): an instance whose clock runs an
 * hour ahead neither ends nor deletes a session within its maxAgeMs (it warns once that its clock runs ahead), nor gives
 * it its deadline as its expiry in place of its idle ttl (before 2026-12-05 a touching read did: PEXPIREAT m), while a
 * session whose deadline Redis's clock has passed is gone and deleted, for every read and write path, on a single
 * server and a cluster. "Ahead" is `Date.now` shifted in this process for the one call (the toolkit reads the clock at
 * call time). Before the fix, the instance ahead read null and DELeted the key.
 */
import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import type { SessionData } from 'express-session';
import { jest } from '@jest/globals';
import { Logger } from '@nestjs/common';
import { RedisSessionStore, SessionNotFoundError, SessionService } from '../../lib/index.js';
import { generateSessionId, RedisConnection } from '../../lib/advanced.js';
import type { RedisClient } from '../../lib/common/lua-script.js';
import { realNow, shifted, useClockShift } from '../support/clock-shift.js';
import { clientFor } from '../support/clients.js';
import { recordingLogger } from '../support/recording-logger.js';
import { closeToolkitApps, createToolkitApp, type RedisTarget } from '../support/toolkit-app.js';

afterEach(closeToolkitApps);
const HOUR = 3_600_000;
const MAX_AGE = 30 * 60_000;
useClockShift();
afterEach(() => {
  jest.restoreAllMocks();
});

const uniquePrefix = (): string => `rtk-dl-${randomBytes(4).toString('hex')}:`;
const clockWarnings = (warnings: string[]) => warnings.filter((w) => /clock runs ahead of Redis's/.test(w));

/** `run` with this process's clock an hour ahead. */
const ahead = <T>(run: () => Promise<T>): Promise<T> => shifted(HOUR, run);

/** The stored deadline of a session rewritten to `m` (its expiry kept: a key that outlives it, as no write leaves). */
async function setDeadline(client: RedisClient, key: string, m: number): Promise<void> {
  const raw = (await client.get(key))!;
  // a new stamp too, as every write makes (session.stamp.ts): else a compare-and-set would take it for its own
  await client.set(key, raw.replace(/"m":\d+/, `"m":${m}`).replace(/"v":"\//, '"v":"/x'), 'KEEPTTL');
}

async function serviceApp(target: RedisTarget, session: Record<string, unknown> = {}) {
  const prefix = uniquePrefix();
  const log = recordingLogger();
  const options = { ttl: 60_000, maxAgeMs: MAX_AGE, cookie: { secret: 's3cret' }, ...session };
  const app = await createToolkitApp({ target, keyPrefix: prefix, session: options, logger: log.logger });
  const client = app.get(RedisConnection).client;
  return { sessions: app.get(SessionService), client, log, keyOf: (id: string) => `${prefix}sess:{${id}}` };
}

async function storeWithSession(target: RedisTarget, options: Record<string, unknown> = {}) {
  const client = clientFor(target);
  const prefix = uniquePrefix();
  const store = new RedisSessionStore({ client, prefix, maxAgeMs: MAX_AGE, ...options });
  const sid = generateSessionId();
  const cookie = { originalMaxAge: 60_000, expires: new Date(Date.now() + 60_000), httpOnly: true, path: '/' };
  await store.set(sid, { cookie, n: 1 } as unknown as SessionData);
  return { client, store, sid, cookie, key: `${prefix}sess:{${sid}}` };
}

const deadlineOf = async (client: RedisClient, key: string) =>
  (JSON.parse((await client.get(key))!.split('\n')[0]) as { c: number; m: number }).m;

describe.each(['single', 'cluster'] as const)('a clock an hour ahead on %s', (target) => {
  it('touching read, plain read, touchAfter read, update, regenerate: live, nothing deleted, one warning', async () => {
    const { sessions, client, log, keyOf } = await serviceApp(target, { touchAfter: 1_000 });
    const s = await sessions.create('u', { a: 1 });
    const m = await deadlineOf(client, keyOf(s.id));
    const read = await ahead(() => sessions.get(s.id));
    expect(read?.data).toEqual({ a: 1 });
    // the key keeps the idle expiry the read gave it by Redis's clock (at most the deadline), and the read reports it;
    // before 2026-12-05 it was given the deadline (PEXPIREAT m): 30 minutes of life for a session idle one. The read
    // (GETEX PX) reports TIME + ttl as this process estimates Redis's clock (RedisClock), not as Redis read it: equal
    // within the estimate's error (half a sample's round trip) plus the read's own latency, 1 ms apart in CI once
    const expireTime = await client.pexpiretime(keyOf(s.id));
    expect(Math.abs((read?.expiresAt ?? 0) - expireTime)).toBeLessThanOrEqual(250);
    expect(expireTime).toBeGreaterThan(realNow() + 50_000);
    expect(expireTime).toBeLessThanOrEqual(Math.min(realNow() + 60_000, m));
    expect(await ahead(() => sessions.exists(s.id))).toBe(true);
    expect((await ahead(() => sessions.get(s.id)))?.data).toEqual({ a: 1 }); // touched lately: the touchAfter path
    expect((await ahead(() => sessions.update(s.id, { b: 2 }))).data).toEqual({ a: 1, b: 2 });
    const moved = await ahead(() => sessions.regenerate(s.id));
    expect(moved.data).toEqual({ a: 1, b: 2 });
    expect(await deadlineOf(client, keyOf(moved.id))).toBe(m);
    expect((await sessions.get(moved.id))?.data).toEqual({ a: 1, b: 2 }); // and on an instance with a right clock
    // listed on the instance ahead; a login there prunes the user's index by Redis's clock: the moved one stays
    expect((await ahead(() => sessions.listForUser('u'))).map((x) => x.id)).toEqual([moved.id]);
    await ahead(() => sessions.create('u'));
    expect(await sessions.destroyAllForUser('u')).toBe(2);
    expect(clockWarnings(log.warnings)).toHaveLength(1);
    expect(log.warnings.join('\n')).not.toContain(s.id);
  });

  it('a session this clock sees in its last ttl before the deadline keeps its idle expiry, not the deadline', async () => {
    // by this clock the deadline comes 30 s after the read, before the idle ttl (60 s); by Redis's, in an hour
    const { sessions, client, keyOf } = await serviceApp(target, { maxAgeMs: HOUR + 30_000 });
    const s = await sessions.create('u', { a: 1 });
    expect((await ahead(() => sessions.get(s.id)))?.data).toEqual({ a: 1 });
    // before 2026-12-05 the read sent PEXPIREAT <deadline>: an hour and 30 s of life for a session idle one minute
    const left = await client.pttl(keyOf(s.id));
    expect(left).toBeGreaterThan(50_000);
    expect(left).toBeLessThanOrEqual(60_000);
  });

  it('the store: get, set (createdAt and deadline kept) and touch of a live session', async () => {
    const warn = jest.spyOn(Logger.prototype, 'warn').mockImplementation(() => undefined);
    const { client, store, sid, cookie, key } = await storeWithSession(target);
    const m = await deadlineOf(client, key);
    expect((await ahead(() => store.get(sid)))?.n).toBe(1);
    // (express-session on the instance ahead sets the cookie's expires from its own clock)
    const aheadCookie = { ...cookie, expires: new Date(realNow() + HOUR + 60_000) };
    await ahead(() => store.set(sid, { cookie: aheadCookie, n: 2 } as unknown as SessionData));
    expect(await deadlineOf(client, key)).toBe(m);
    // another maxAge: the touch script runs (session-store-touch.lua), and keeps the session
    const longer = { ...aheadCookie, originalMaxAge: 120_000 };
    await ahead(() => store.touch(sid, { cookie: longer } as unknown as SessionData));
    expect((await store.get(sid))?.n).toBe(2);
    expect(await client.pexpiretime(key)).toBeLessThanOrEqual(m);
    const said = warn.mock.calls.map((c) => String(c[0]));
    expect(clockWarnings(said)).toHaveLength(1);
  });

  it('a session without an idle ttl (store disableTTL): live, and given its deadline as its expiry', async () => {
    const { client, store, sid, key } = await storeWithSession(target, { disableTTL: true });
    jest.spyOn(Logger.prototype, 'warn').mockImplementation(() => undefined);
    expect(await client.pexpiretime(key)).toBe(-1);
    const m = await deadlineOf(client, key);
    expect((await ahead(() => store.get(sid)))?.n).toBe(1);
    expect(await client.pexpiretime(key)).toBe(m);
    expect((await store.get(sid))?.n).toBe(1);
  });
});

describe.each(['single', 'cluster'] as const)('a deadline Redis’s clock has passed on %s', (target) => {
  it('the touching read: null, deleted', async () => {
    const { sessions, client, keyOf, log } = await serviceApp(target);
    const s = await sessions.create('u', { a: 1 });
    await setDeadline(client, keyOf(s.id), realNow() - 1_000);
    expect(await sessions.get(s.id)).toBeNull();
    expect(await client.exists(keyOf(s.id))).toBe(0);
    expect(clockWarnings(log.warnings)).toEqual([]);
  });

  it('the plain read (exists, rolling off): false / null, deleted', async () => {
    const { sessions, client, keyOf } = await serviceApp(target, { rolling: false });
    const s = await sessions.create('u', { a: 1 });
    await setDeadline(client, keyOf(s.id), realNow() - 1_000);
    expect(await sessions.exists(s.id)).toBe(false);
    expect(await client.exists(keyOf(s.id))).toBe(0);
    const t = await sessions.create('u', { a: 1 });
    await setDeadline(client, keyOf(t.id), realNow() - 1_000);
    expect(await sessions.get(t.id)).toBeNull();
    expect(await client.exists(keyOf(t.id))).toBe(0);
  });

  it('the touchAfter read of a session touched lately: null, deleted', async () => {
    const { sessions, client, keyOf } = await serviceApp(target, { touchAfter: 5_000 });
    const s = await sessions.create('u', { a: 1 });
    expect((await sessions.get(s.id))?.data).toEqual({ a: 1 });
    await setDeadline(client, keyOf(s.id), realNow() - 1_000);
    expect(await sessions.get(s.id)).toBeNull();
    expect(await client.exists(keyOf(s.id))).toBe(0);
  });

  it('update: SessionNotFoundError, deleted, nothing written', async () => {
    const { sessions, client, keyOf } = await serviceApp(target);
    const s = await sessions.create('u', { a: 1 });
    await setDeadline(client, keyOf(s.id), realNow() - 1_000);
    await expect(sessions.update(s.id, { b: 2 })).rejects.toBeInstanceOf(SessionNotFoundError);
    expect(await client.exists(keyOf(s.id))).toBe(0);
  });

  it('the store: get null and deleted; set writes a new session (new deadline)', async () => {
    const { client, store, sid, cookie, key } = await storeWithSession(target);
    await setDeadline(client, key, realNow() - 1_000);
    expect(await store.get(sid)).toBeNull();
    expect(await client.exists(key)).toBe(0);
    await store.set(sid, { cookie, n: 1 } as unknown as SessionData);
    await setDeadline(client, key, realNow() - 1_000);
    await store.set(sid, { cookie, n: 2 } as unknown as SessionData);
    expect(await deadlineOf(client, key)).toBeGreaterThan(realNow() + MAX_AGE - 60_000);
    expect((await store.get(sid))?.n).toBe(2);
  });

  it('a session without an idle ttl (store disableTTL): get null, deleted', async () => {
    const { client, store, sid, key } = await storeWithSession(target, { disableTTL: true });
    await setDeadline(client, key, realNow() - 1_000);
    expect(await client.pexpiretime(key)).toBe(-1);
    expect(await store.get(sid)).toBeNull();
    expect(await client.exists(key)).toBe(0);
  });
});
