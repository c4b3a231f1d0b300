import 'reflect-metadata';
import { Controller, Post, UseGuards } from '@nestjs/common';
import { randomBytes } from 'node:crypto';
import {
  CurrentSession,
  RedisReplyError,
  RedisSessionStore,
  SessionGuard,
  SessionNotFoundError,
  SessionService,
  SessionTooLargeError,
} from '../../lib/index.js';
import { generateSessionId, RedisConnection } from '../../lib/advanced.js';
import type { RedisClient } from '../../lib/common/lua-script.js';
import { underOom } from '../support/out-of-memory.js';
import { usePrivateRedis } from '../support/private-servers.js';
import { loginController, sessionHttpApp } from '../support/session-http-app.js';
import { closeToolkitApps, createToolkitApp, PLATFORMS, type RedisTarget } from '../support/toolkit-app.js';

/**
 * docs/session.md's behavioural prose (Guarantees, Failure policy, Choices), reviewed claim by claim from outside: one
 * case per claim no other spec of test/session proved, and a lost compare-and-set race where the value the write meets
 * is not the session it read (written since by express-session's store with another ttl, or none). A write tried on
 * 2026-12-06 (one SET … XX PXAT … GET, a lost race put back in the same script) failed the first two: the value put
 * back got the ttl and deadline of the one this instance had read (docs/session.md, *Update, 2026-12-06*).
 */

afterEach(closeToolkitApps);

const HOUR = 3_600_000;
const uniquePrefix = (): string => `rtk-sess-g-${randomBytes(4).toString('hex')}:`;

async function service(target: RedisTarget, prefix: string, session: Record<string, unknown> = {}) {
  const app = await createToolkitApp({
    target,
    keyPrefix: prefix,
    session: { cookie: { secret: 's3cret' }, ttl: HOUR, ...session },
  });
  return { sessions: app.get(SessionService), client: app.get(RedisConnection).client as RedisClient };
}

/** The stored envelope of a session (its `t`, `m`, ...). */
async function stored(client: RedisClient, key: string): Promise<{ t: number; m: number; c: number }> {
  return JSON.parse(((await client.get(key)) ?? 'null').split('\n')[0]) as { t: number; m: number; c: number };
}

describe.each(['single', 'cluster'] as const)('a lost compare-and-set race on %s', (target) => {
  it('"SessionService … updates … [a disableTTL session] without giving its key an expiry": also when the store set it so after this instance read it', async () => {
    const prefix = uniquePrefix();
    const { sessions, client } = await service(target, prefix);
    const forever = new RedisSessionStore({ client, prefix, disableTTL: true });
    const s = await sessions.create('ann', { a: 1 });
    const key = `${prefix}sess:{${s.id}}`;
    expect((await sessions.get(s.id))!.data).toEqual({ a: 1 }); // this instance now knows the session (t: 1 h)
    // express-session on a disableTTL store saves it behind this instance's back: t 0, no expiry, same deadline
    await forever.set(s.id, { userId: 'ann', a: 1, b: 2 } as never);
    const { m } = await stored(client, key);
    expect([await client.pttl(key), (await stored(client, key)).t]).toEqual([-1, 0]);
    const updated = await sessions.update(s.id, { c: 3 });
    expect(updated.data).toEqual({ userId: 'ann', a: 1, b: 2, c: 3 }); // (the store keeps its userIdField as a field)
    expect(updated.expiresAt).toBe(m);
    // the session still has no idle expiry (the SET … GET write's put-back: now + 1 h, this instance's ttl, kept)
    expect(await client.pttl(key)).toBe(-1);
    expect((await stored(client, key)).t).toBe(0);
  });

  it('"an update whose merged session would pass [maxSize] is refused …, and nothing is written": after a lost race, not even the expiry', async () => {
    const prefix = uniquePrefix();
    const { sessions, client } = await service(target, prefix, { maxSize: 20_000 });
    const store = new RedisSessionStore({ client, prefix });
    const s = await sessions.create('bea', { a: 1 });
    const key = `${prefix}sess:{${s.id}}`;
    expect((await sessions.get(s.id))!.data).toEqual({ a: 1 });
    // the store saves it with a larger field and a 2 h cookie: its own idle ttl
    const cookie = { originalMaxAge: 2 * HOUR, expires: new Date(Date.now() + 2 * HOUR) };
    await store.set(s.id, { cookie, userId: 'bea', big: 'x'.repeat(12_000) } as never);
    const before = await client.get(key);
    expect((await stored(client, key)).t).toBe(2 * HOUR);
    // merged into what this instance knew it fits; into what is there it does not
    await expect(sessions.update(s.id, { more: 'y'.repeat(10_000) })).rejects.toBeInstanceOf(SessionTooLargeError);
    expect(await client.get(key)).toBe(before);
    // the store's 2 h stand (the SET … GET write's put-back: 1 h, the ttl of the value this instance had read)
    expect(await client.pttl(key)).toBeGreaterThan(2 * HOUR - 60_000);
  });

  it('"A deadline Redis\'s clock has passed deletes the key at once": a value met after a lost race included', async () => {
    const prefix = uniquePrefix();
    const { sessions, client } = await service(target, prefix);
    const s = await sessions.create('ida', { a: 1 });
    const key = `${prefix}sess:{${s.id}}`;
    expect((await sessions.get(s.id))!.data).toEqual({ a: 1 });
    // written behind this instance's back with no idle ttl (no key expiry) and a deadline already past
    const { c } = await stored(client, key);
    await client.set(key, JSON.stringify({ u: 'ida', c, m: Date.now() - 1_000, t: 0, d: { a: '2' } }));
    await expect(sessions.update(s.id, { b: 1 })).rejects.toBeInstanceOf(SessionNotFoundError);
    expect(await client.exists(key)).toBe(0);
  });

  it('"A merge past maxSize made into the value this process last saw is made again from a GET before SessionTooLargeError"', async () => {
    const prefix = uniquePrefix();
    const one = await service(target, prefix, { maxSize: 20_000 });
    const two = await service(target, prefix, { maxSize: 20_000 });
    const s = await one.sessions.create('cy', { a: 1, big: 'x'.repeat(12_000) });
    expect((await one.sessions.get(s.id))!.data.a).toBe(1);
    await two.sessions.update(s.id, { big: undefined }); // made smaller behind one's back
    const updated = await one.sessions.update(s.id, { more: 'y'.repeat(10_000) });
    expect(Object.keys(updated.data).sort()).toEqual(['a', 'more']);
    expect((await two.sessions.get(s.id))!.data.more).toHaveLength(10_000);
  });

  it('"regenerate keeps the deadline: rotating an id does not extend a session\'s life"', async () => {
    const prefix = uniquePrefix();
    const { sessions, client } = await service(target, prefix, { ttl: 60_000, maxAgeMs: 120_000 });
    const s = await sessions.create('dee', { a: 1 });
    const { m, c } = await stored(client, `${prefix}sess:{${s.id}}`);
    const r = await sessions.regenerate(s.id);
    const moved = await stored(client, `${prefix}sess:{${r.id}}`);
    expect([moved.m, moved.c]).toEqual([m, c]);
    expect(r.expiresAt).toBeLessThanOrEqual(m);
    expect(await client.pexpiretime(`${prefix}sess:{${r.id}}`)).toBe(r.expiresAt);
  });

  it('"listForUser also removes the dead ids it meets" (no login needed)', async () => {
    const prefix = uniquePrefix();
    const { sessions, client } = await service(target, prefix);
    const user = `u-${randomBytes(3).toString('hex')}`;
    const a = await sessions.create(user, { n: 1 });
    const b = await sessions.create(user, { n: 2 });
    await client.del(`${prefix}sess:{${b.id}}`); // gone behind the toolkit's back (eviction, FLUSH)
    expect((await sessions.listForUser(user)).map((x) => x.id)).toEqual([a.id]);
    expect(await client.zrange(`${prefix}sess:user:{${user}}`, '0', '-1')).toEqual([a.id]);
  });

  it('"exists(id) … never touches the session"; "listForUser … read without touching them"', async () => {
    const prefix = uniquePrefix();
    const { sessions, client } = await service(target, prefix);
    const s = await sessions.create('eve', { n: 1 });
    const key = `${prefix}sess:{${s.id}}`;
    const expiry = await client.pexpiretime(key);
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(await sessions.exists(s.id)).toBe(true);
    expect((await sessions.listForUser('eve')).map((x) => [x.id, x.expiresAt])).toEqual([[s.id, expiry]]);
    expect(await client.pexpiretime(key)).toBe(expiry);
  });
});

describe('a compare-and-set write refused for memory (single server, no appendUpdates)', () => {
  const redis = usePrivateRedis();

  it('"a write that fails, e.g. WRONGTYPE or OOM, fails alone" as a RedisReplyError: the value and expiry stay', async () => {
    const prefix = uniquePrefix();
    const one = await service({ url: redis.server.url }, prefix);
    const two = await service({ url: redis.server.url }, prefix);
    const a = await one.sessions.create('fay', { n: 1 });
    const b = await one.sessions.create('gus', { n: 2 });
    for (const s of [a, b]) await one.sessions.get(s.id);
    await two.sessions.update(b.id, { other: true }); // one's write of b will lose its race
    const keys = [a, b].map((s) => `${prefix}sess:{${s.id}}`);
    const before = await Promise.all(keys.map(async (k) => [await one.client.get(k), await one.client.pexpiretime(k)]));
    await underOom(redis.server.port, async () => {
      const outcomes = await Promise.allSettled([a, b].map((s) => one.sessions.update(s.id, { n: 9 })));
      for (const outcome of outcomes) {
        expect(outcome.status).toBe('rejected');
        expect((outcome as PromiseRejectedResult).reason).toBeInstanceOf(RedisReplyError);
        expect(String((outcome as PromiseRejectedResult).reason.message)).toMatch(/OOM/);
      }
      const after = await Promise.all(
        keys.map(async (k) => [await one.client.get(k), await one.client.pexpiretime(k)]),
      );
      expect(after).toEqual(before);
    });
    expect((await one.sessions.update(b.id, { n: 9 })).data).toEqual({ n: 9, other: true });
  });
});

@Controller()
class RacingLogoutController {
  constructor(private readonly sessions: SessionService) {}

  /** A logout in another tab between the guard and the handler's write. */
  @Post('cart')
  @UseGuards(SessionGuard)
  async add(@CurrentSession('id') id: string) {
    await this.sessions.destroy(id);
    return (await this.sessions.update(id, { item: 1 })).data;
  }
}

describe.each(PLATFORMS)('SessionNotFoundError from a route handler on %s', (platform) => {
  it('"Thrown from a route handler …, Nest answers it 401 Unauthorized, as the guard would have a moment later"', async () => {
    const { http, sessions } = await sessionHttpApp({
      platform,
      secret: 's3cret',
      withMiddleware: [loginController({ user: 'hal' }), RacingLogoutController],
    });
    const login = await http.post('/login').send({}).expect(201);
    const cookie = String(login.headers['set-cookie']).split(';')[0];
    const res = await http.post('/cart').set('Cookie', cookie);
    expect([res.status, res.body]).toEqual([401, { statusCode: 401, message: 'Unauthorized' }]);
    expect(await sessions.listForUser('hal')).toEqual([]);
    await expect(sessions.update(generateSessionId(), { x: 1 })).rejects.toBeInstanceOf(SessionNotFoundError);
  });
});
