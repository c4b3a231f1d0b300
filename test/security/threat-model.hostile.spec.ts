import 'reflect-metadata';
import { Controller, Get, UseGuards } from '@nestjs/common';
import { randomBytes } from 'node:crypto';
import { inspect } from 'node:util';
import request from 'supertest';
import {
  CacheService,
  InvalidKeyError,
  LockService,
  RateLimitGuard,
  RateLimitService,
  RedisReplyError,
  RedisSessionStore,
  SessionService,
  Throttle,
} from '../../lib/index.js';
import { RedisConnection, signCookieValue } from '../../lib/advanced.js';
import type { Redis } from 'ioredis';
import { scanAll } from '../support/scan.js';
import { loginController, sessionHttpApp, userIdController } from '../support/session-http-app.js';
import { closeToolkitApps, createToolkitApp, PLATFORMS } from '../support/toolkit-app.js';

/**
 * An attacker's pass over docs/security.md's threat model (keys, sessions, rate limits; not the dashboard, terminus,
 * testing helpers or the gateway's payloads): each case attacks one claim from outside, on a real Redis, through real
 * HTTP requests where the claim is about HTTP.
 */
afterEach(closeToolkitApps);

const uid = (): string => randomBytes(4).toString('hex');
const SECRET = 'threat-model-secret-of-at-least-32-chars';

/** An app on the shared server with every keyed feature, under `keyPrefix`. */
async function featureApp(keyPrefix: string) {
  const app = await createToolkitApp({ keyPrefix, session: { cookie: { secret: SECRET } } });
  return {
    cache: app.get(CacheService),
    sessions: app.get(SessionService),
    rateLimit: app.get(RateLimitService),
    locks: app.get(LockService),
    client: app.get(RedisConnection).client as Redis, // the shared single server
  };
}

/** Writes one of everything under app `b`, and returns a check that all of it is still there, with its values. */
async function plant(b: Awaited<ReturnType<typeof featureApp>>) {
  await b.cache.set('k', { v: 'b-entry' }, { tags: ['t'] });
  const session = await b.sessions.create('bob', { secret: 'b-data' });
  const policy = { limit: 5, ttl: 60_000 };
  await b.rateLimit.consume('client', policy);
  await b.locks.acquire('res', { ttl: 60_000 });
  return async () => ({
    entry: await b.cache.get('k'),
    session: (await b.sessions.get(session.id))?.data,
    bobSessions: (await b.sessions.listForUser('bob')).length,
    remaining: (await b.rateLimit.consume('client', policy)).remaining,
    lockHeld: (await b.locks.tryAcquire('res', { ttl: 1_000 })) === null,
  });
}
const intact = { entry: { v: 'b-entry' }, session: { secret: 'b-data' }, bobSessions: 1, remaining: 3, lockHeld: true };

// ---------------------------------------------------------------------------------------------------------------
// keyPrefix collisions: "the pattern can only ever match keys under our prefix" / "a caller's key never lands in a
// feature's own sub-space". An app whose keyPrefix is another's feature prefix (tenants `<t>:` with a tenant named
// `acme:cache`) shares its key space; reads never meet (caller parts have no raw `:`), bulk deletes must not either.
// ---------------------------------------------------------------------------------------------------------------

describe('keyPrefix collisions between two apps on one Redis', () => {
  it("cache.clear() and invalidatePattern('*') of app `P` leave app `<P>cache:`'s keys alone", async () => {
    const p = `rtk-tm-${uid()}:`;
    const a = await featureApp(p);
    const b = await featureApp(`${p}cache:`);
    await a.cache.set('mine', 1);
    await a.cache.set('x:y', 2, { tags: ['t'] });
    const check = await plant(b);
    expect((await scanAll(a.client, `${p}cache:*`)).length).toBeGreaterThan(5); // A's 2 + B's cache, session, ...
    expect(await a.cache.invalidatePattern('*')).toBe(2); // app A's two entries, nothing else
    await a.cache.set('mine', 1);
    const cleared = await a.cache.clear();
    expect(await a.cache.get('mine')).toBeUndefined();
    expect(cleared).toBeGreaterThanOrEqual(1);
    expect(await check()).toEqual(intact);
  });

  it("RedisSessionStore.clear() of app `P` leaves app `<P>sess:user:`'s keys alone, and still clears its own", async () => {
    const p = `rtk-tm-${uid()}:`;
    const a = await featureApp(p);
    const b = await featureApp(`${p}sess:user:`);
    const alice = await a.sessions.create('alice');
    const check = await plant(b);
    const store = new RedisSessionStore({ client: a.client, prefix: p });
    await store.clear();
    expect(await a.sessions.get(alice.id)).toBeNull();
    expect(await a.client.exists(`${p}sess:user:{alice}`)).toBe(0);
    expect(await check()).toEqual(intact);
  });
});

// ---------------------------------------------------------------------------------------------------------------
// Session user ids: "caller braces in ... session ids ... pick a slot" / keys rejected or contained
// ---------------------------------------------------------------------------------------------------------------

describe('hostile session user ids', () => {
  it('ids that differ only by glob, brace, colon or escape characters never share an index; bad ones are refused', async () => {
    const p = `rtk-tm-${uid()}:`;
    const { sessions, client } = await featureApp(p);
    const users = ['a', 'a*', 'a?', '[a]', 'a}', 'a%7D', '{a}', 'a:new', 'a%3Anew', 'a:b', '\\a', '😀'];
    for (const user of users) await sessions.create(user, { user });
    for (const user of users) expect({ user, n: (await sessions.listForUser(user)).length }).toEqual({ user, n: 1 });
    // a destroyAllForUser of the glob-looking id destroys its own session only
    expect(await sessions.destroyAllForUser('a*')).toBe(1);
    expect(await sessions.destroyAllForUser('a}')).toBe(1);
    const left = await Promise.all(users.map(async (u) => [u, (await sessions.listForUser(u)).length]));
    expect(Object.fromEntries(left)).toEqual({ ...Object.fromEntries(users.map((u) => [u, 1])), 'a*': 0, 'a}': 0 });
    for (const bad of ['', 'a\nb', 'a\r\nDEL x', 'a\u0000', 'x'.repeat(1025), 'é'.repeat(513), 'a\uD800']) {
      await expect(sessions.create(bad)).rejects.toBeInstanceOf(InvalidKeyError);
      await expect(sessions.destroyAllForUser(bad)).rejects.toBeInstanceOf(InvalidKeyError);
    }
    // every key is under the prefix, and the only braces are the toolkit's own hash tag
    const keys = await scanAll(client, `${p}*`);
    for (const key of keys) expect(key.slice(p.length)).toMatch(/^sess:(user:)?\{[^{}]+\}(:[a-z]+)?$/);
  });
});

// ---------------------------------------------------------------------------------------------------------------
// Secrets in errors: `withCause: false` for sessions ("its command arguments may hold secrets such as session ids")
// ---------------------------------------------------------------------------------------------------------------

describe('a reply error on a session key', () => {
  it('is a typed RedisReplyError that names neither the session id nor its data, however it is printed', async () => {
    const p = `rtk-tm-${uid()}:`;
    const { sessions, client } = await featureApp(p);
    const s = await sessions.create('carol', { card: '4111-1111' });
    await client.del(`${p}sess:{${s.id}}`);
    await client.hset(`${p}sess:{${s.id}}`, 'card', '4111-1111'); // a foreign value under the session's key
    const failures: unknown[] = [];
    for (const call of [() => sessions.get(s.id), () => sessions.update(s.id, { card: '5500-0000' })]) {
      failures.push(
        await call().then(
          () => 'resolved',
          (err: unknown) => err,
        ),
      );
    }
    for (const err of failures) {
      expect(err).toBeInstanceOf(RedisReplyError);
      const shown = [String(err), (err as Error).stack, inspect(err, { depth: 10 }), JSON.stringify(err)].join('\n');
      expect(shown).toContain('WRONGTYPE');
      expect(shown).not.toContain(s.id);
      expect(shown).not.toContain('4111');
      expect(shown).not.toContain('5500');
    }
  });
});

// ---------------------------------------------------------------------------------------------------------------
// Rate limits: IPv6 rotation, route variants
// ---------------------------------------------------------------------------------------------------------------

@Controller('tm')
@UseGuards(RateLimitGuard)
class LimitedController {
  @Get('limited')
  @Throttle({ limit: 3, ttl: 60_000 })
  limited(): { ok: true } {
    return { ok: true };
  }
}

async function limitedApp(platform: (typeof PLATFORMS)[number], trustProxy: boolean) {
  const keyPrefix = `rtk-tm-${uid()}:`;
  const app = await createToolkitApp({
    platform,
    http: true,
    keyPrefix,
    rateLimit: { trustProxy },
    controllers: [LimitedController],
  });
  const client = app.get(RedisConnection).client as Redis;
  return {
    http: request(app.app.getHttpServer()),
    counters: async () => (await scanAll(client, `${keyPrefix}rl:*`)).length,
  };
}

describe.each(PLATFORMS)('rate-limit evasion on %s', (platform) => {
  it('IPv6 addresses of one /64, in any spelling, share one counter; the next /64 is another client', async () => {
    const { http, counters } = await limitedApp(platform, true);
    const sameSubnet = [
      '2001:db8:1:2::1',
      '2001:DB8:1:2:FFFF:FFFF:FFFF:FFFF',
      '2001:0db8:0001:0002:0000:0000:0000:abcd',
      '[2001:db8:1:2::5]:443',
      '2001:db8:1:2::6%eth0',
      '2001:db8:1:2::1.2.3.4',
      '203.0.113.9, 2001:db8:1:2:dead:beef:0:1',
    ];
    const statuses = [];
    for (const xff of sameSubnet) statuses.push((await http.get('/tm/limited').set('X-Forwarded-For', xff)).status);
    expect(statuses).toEqual([200, 200, 200, 429, 429, 429, 429]);
    await http.get('/tm/limited').set('X-Forwarded-For', '2001:db8:1:3::1').expect(200);
    expect(await counters()).toBe(2);
  });

  it("a route's path variants are one handler's counter (or no route at all), never a fresh quota", async () => {
    const { http, counters } = await limitedApp(platform, false);
    for (let i = 0; i < 3; i++) await http.get('/tm/limited').expect(200);
    const variants = ['/tm/limited/', '/tm/LIMITED', '/tm/Limited?x=1', '/tm/limited?a=1&b=2', '//tm/limited'];
    for (const path of [...variants, '/tm/%6Cimited', '/tm/limited;x', '/tm/limited%2F', '/tm/./limited']) {
      const { status } = await http.get(path);
      expect({ path, status }).toEqual({ path, status: status === 404 ? 404 : 429 });
    }
    expect(await counters()).toBe(1);
  });
});

// ---------------------------------------------------------------------------------------------------------------
// Session cookie signatures
// ---------------------------------------------------------------------------------------------------------------

describe.each(PLATFORMS)('session cookie signature bypass on %s', (platform) => {
  it('only the exact signature of the current secrets passes; look-alikes are anonymous (401)', async () => {
    const routes = [loginController({ answer: (s) => ({ id: s.id }) }), userIdController('me')];
    const { http } = await sessionHttpApp({ platform, secret: [SECRET, 'rotated-out-later'], withMiddleware: routes });
    const id = (await http.post('/login').send({ user: 'alice' }).expect(201)).body.id as string;
    const signed = signCookieValue(id, SECRET);
    const enc = (v: string) => `rtk.sid=${encodeURIComponent(v)}`;
    expect((await http.get('/me').set('Cookie', enc(signed))).body).toEqual({ userId: 'alice' });
    expect((await http.get('/me').set('Cookie', enc(signCookieValue(id, 'rotated-out-later')))).status).toBe(200);
    const forged = [
      `rtk.sid=${id}`, // unsigned
      enc(`s:${id}`), // no signature
      enc(`${signed}=`), // base64 padding added
      enc(`${signed}.x`), // a segment after the signature
      enc(`s:${id}x.${signed.slice(signed.lastIndexOf('.') + 1)}`), // another value, the same signature
      enc(signed.replace(/^s:/, 'S:')),
      enc(signed.toUpperCase()),
      `RTK.SID=${encodeURIComponent(signed)}`, // the name in another case
      enc(signCookieValue(id, `${SECRET} `)), // a secret one byte off
      enc(signCookieValue(id, '')),
    ];
    for (const cookie of forged) {
      const { status } = await http.get('/me').set('Cookie', cookie);
      expect({ cookie, status }).toEqual({ cookie, status: 401 });
    }
  });
});
