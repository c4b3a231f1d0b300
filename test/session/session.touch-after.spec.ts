import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import type { SessionData } from 'express-session';
import { InvalidOptionsError, RedisReplyError, RedisSessionStore, SessionService } from '../../lib/index.js';
import { generateSessionId, RedisConnection } from '../../lib/advanced.js';
import { recordCommands } from '../support/command-recorder.js';
import { clientFor } from '../support/clients.js';
import { closeToolkitApps, createToolkitApp, type RedisTarget } from '../support/toolkit-app.js';
import { sleep } from '../support/wait.js';

afterEach(closeToolkitApps);

const uniquePrefix = (): string => `rtk-ta-${randomBytes(4).toString('hex')}:`;
/** Commands that extend a session's expiry: the touching read (a GETEX, alone or in the batched script), PEXPIREAT. */
const TOUCHING = ['getex', 'evalsha', 'eval', 'pexpireat'];

async function sessionApp(target: RedisTarget, session: Record<string, unknown>) {
  const prefix = uniquePrefix();
  const app = await createToolkitApp({
    target,
    keyPrefix: prefix,
    session: { cookie: { secret: 's3cret' }, ...session },
  });
  return { sessions: app.get(SessionService), client: app.get(RedisConnection).client, prefix };
}

/** A RedisSessionStore with `touchAfter` (undefined: the default) and one session whose cookie's maxAge is `maxAge` ms. */
async function storeWithSession(target: RedisTarget, touchAfter: number | undefined, maxAge: number, fields = {}) {
  const client = clientFor(target);
  const prefix = uniquePrefix();
  const store = new RedisSessionStore({ client, prefix, touchAfter });
  const sid = generateSessionId();
  const cookie = { originalMaxAge: maxAge, expires: new Date(Date.now() + maxAge), httpOnly: true, path: '/' };
  await store.set(sid, { cookie, ...fields } as unknown as SessionData);
  return { client, store, sid, key: `${prefix}sess:{${sid}}` };
}

describe.each(['single', 'cluster'] as const)('touchAfter on %s', (target) => {
  it.each([
    ['touchAfter: 1000', { touchAfter: 1_000 }],
    ['the default touchAfter', {}],
  ])(
    'SessionService with %s: a get within 1 s of its last extension reads without one; past 1 s it extends',
    async (_, option) => {
      const { sessions, client, prefix } = await sessionApp(target, { ttl: 60_000, ...option });
      const s = await sessions.create('ann', { n: 1 });
      const key = `${prefix}sess:{${s.id}}`;
      const first = await sessions.get(s.id);
      expect(first!.expiresAt).toBeGreaterThan(Date.now() + 59_000);
      // Shortened by hand: a touching read would set it back to ~60 s, a plain one leaves it.
      await client.pexpire(key, 30_000);
      const reads = await recordCommands(client, () => Promise.all([sessions.get(s.id), sessions.get(s.id)]));
      expect(reads.value.map((r) => r?.data)).toEqual([{ n: 1 }, { n: 1 }]);
      // the expiry the last touch set, not one the read did not apply
      expect(reads.value[0]!.expiresAt).toBe(first!.expiresAt);
      expect(reads.commands.filter((c) => TOUCHING.includes(c))).toEqual([]);
      expect(reads.commands.filter((c) => c === 'mget' || c === 'get').length).toBeGreaterThan(0);
      expect(await client.pttl(key)).toBeLessThanOrEqual(30_000);

      // past touchAfter: the next get extends again
      await sleep(1_100);
      const later = await recordCommands(client, () => sessions.get(s.id));
      expect(later.commands.some((c) => TOUCHING.includes(c))).toBe(true);
      expect(await client.pttl(key)).toBeGreaterThan(58_000);
      expect(later.value!.expiresAt).toBeGreaterThan(first!.expiresAt);
    },
  );

  it('touchAfter: 0: every get extends, to the ms', async () => {
    const { sessions, client, prefix } = await sessionApp(target, { ttl: 60_000, touchAfter: 0 });
    const s = await sessions.create('ann');
    const key = `${prefix}sess:{${s.id}}`;
    await sessions.get(s.id);
    await client.pexpire(key, 30_000);
    await sessions.get(s.id);
    expect(await client.pttl(key)).toBeGreaterThan(58_000);
  });

  it('by default a session with a short ttl of its own reuses a touch for less than a tenth of that ttl', async () => {
    // the module's ttl is 24 h; this session's own is 2 s: a touch is reused for under 200 ms, not 1 s
    const { sessions, client, prefix } = await sessionApp(target, {});
    const s = await sessions.create('ann', {}, { ttl: 2_000 });
    const key = `${prefix}sess:{${s.id}}`;
    await sessions.get(s.id);
    await sleep(300);
    await client.pexpire(key, 1_000);
    const again = await recordCommands(client, () => sessions.get(s.id));
    expect(again.commands.some((c) => TOUCHING.includes(c))).toBe(true);
    expect(await client.pttl(key)).toBeGreaterThan(1_500);
  });

  it('a session destroyed or replaced within touchAfter is read as it is now, never from memory', async () => {
    const { sessions, client, prefix } = await sessionApp(target, { ttl: 60_000, touchAfter: 10_000 });
    const [gone, other, hashed] = await Promise.all(['a', 'b', 'c'].map((u) => sessions.create(u, { u })));
    await Promise.all([gone, other, hashed].map((s) => sessions.get(s.id)));
    // destroyed by another instance (a plain DEL here): absent
    await client.del(`${prefix}sess:{${gone.id}}`);
    expect(await sessions.get(gone.id)).toBeNull();
    // updated by another instance: the new value
    const fromElsewhere = await createToolkitApp({ target, keyPrefix: prefix, session: { cookie: { secret: 's' } } });
    await fromElsewhere.get(SessionService).update(other.id, { u: 'changed' });
    expect((await sessions.get(other.id))!.data).toEqual({ u: 'changed' });
    // the key now holds another type: the read fails with WRONGTYPE (MGET's nil is read again with a touching read)
    const key = `${prefix}sess:{${hashed.id}}`;
    await client.del(key);
    await client.hset(key, 'f', 'v');
    const err = await sessions.get(hashed.id).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RedisReplyError);
    expect(String((err as Error).message)).toContain('WRONGTYPE');
    expect(await client.hget(key, 'f')).toBe('v');
  });

  it.each([
    ['touchAfter: 1000', 1_000],
    ['the default touchAfter', undefined],
  ])(
    'RedisSessionStore with %s: a get within 1 s neither extends nor makes touch send anything',
    async (_, touchAfter) => {
      const { client, store, sid, key } = await storeWithSession(target, touchAfter, 60_000, { views: 3 });
      // the first get guesses the ttl (the store's, 24 h) and learns the session's (60 s): the second touches with it
      for (let i = 0; i < 2; i++) await store.touch(sid, (await store.get(sid))!);
      await client.pexpire(key, 30_000);
      const again = await recordCommands(client, async () => {
        const got = await store.get(sid);
        await store.touch(sid, got!);
        return got;
      });
      expect((again.value as unknown as { views: number }).views).toBe(3);
      expect(again.commands.filter((c) => TOUCHING.includes(c))).toEqual([]);
      expect(await client.pttl(key)).toBeLessThanOrEqual(30_000);
      await sleep(1_100);
      await store.get(sid);
      expect(await client.pttl(key)).toBeGreaterThan(58_000);
    },
  );

  it('RedisSessionStore: a touch is never reused past half the session ttl, whatever touchAfter says', async () => {
    // a 1.2 s session: a touch is reused for 0.6 s at most
    const { client, store, sid, key } = await storeWithSession(target, 60_000, 1_200);
    for (let i = 0; i < 6; i++) {
      await sleep(400);
      expect(await store.get(sid)).not.toBeNull();
    }
    // read every 400 ms for 2.4 s, twice its ttl: still there
    expect(await client.pttl(key)).toBeGreaterThan(0);
  });
});

describe('touchAfter options', () => {
  it('must be a duration of at most half the ttl, and only where a get extends the ttl', async () => {
    for (const [touchAfter, message] of [
      [-1, 'session.touchAfter'],
      ['1s', 'session.touchAfter'],
      [40_000, 'session.touchAfter must be at most half of session.ttl (60000 ms), got 40000'],
    ] as const) {
      const err = await createToolkitApp({
        target: 'single',
        keyPrefix: uniquePrefix(),
        session: { ttl: 60_000, touchAfter: touchAfter as number },
      }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(InvalidOptionsError);
      expect(String((err as Error).message)).toContain(message);
    }
    const rolling = await createToolkitApp({
      target: 'single',
      keyPrefix: uniquePrefix(),
      session: { rolling: false, touchAfter: 1_000 },
    }).catch((e: unknown) => e);
    expect(rolling).toBeInstanceOf(InvalidOptionsError);
    expect(String((rolling as Error).message)).toContain('session.touchAfter has no effect with rolling: false');
    const client = clientFor('single');
    expect(() => new RedisSessionStore({ client, touchAfter: -5 })).toThrow(/RedisSessionStore touchAfter/);
    for (const [off, name] of [
      [{ touchOnGet: false }, 'touchOnGet: false'],
      [{ disableTouch: true }, 'disableTouch'],
      [{ disableTTL: true }, 'disableTTL'],
    ] as const) {
      expect(() => new RedisSessionStore({ client, touchAfter: 1_000, ...off })).toThrow(
        `RedisSessionStore touchAfter has no effect with ${name}`,
      );
    }
    expect(() => new RedisSessionStore({ client, touchAfter: 0, touchOnGet: false })).not.toThrow();
    // the default is not an option given: accepted where a get does not extend, and with a ttl under 2 s
    for (const session of [{ rolling: false }, { ttl: 1_500 }]) {
      const app = await createToolkitApp({
        target: 'single',
        keyPrefix: uniquePrefix(),
        session: { cookie: { secret: 's3cret' }, ...session },
      });
      expect(app.get(SessionService)).toBeInstanceOf(SessionService);
    }
    for (const off of [{ touchOnGet: false }, { disableTouch: true }, { disableTTL: true }]) {
      expect(() => new RedisSessionStore({ client, ...off })).not.toThrow();
    }
  });
});
