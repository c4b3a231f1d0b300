import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import { Cluster, Redis } from 'ioredis';
import { InvalidKeyError, RedisSessionStore, RedisToolkitError, SessionService } from '../../lib/index.js';
import { RedisConnection, generateSessionId } from '../../lib/advanced.js';
import type { RedisClient } from '../../lib/common/lua-script.js';
import {
  closeToolkitApps,
  createToolkitApp,
  type RedisTarget,
  type ToolkitAppOptions,
} from '../support/toolkit-app.js';

/**
 * Issue 17 items 10 and 11: what a session holds is always readable back (well-formed Unicode), and a user's index
 * always lists every session that exists, so destroyAllForUser cannot miss one created while it runs.
 */
afterEach(closeToolkitApps);

const uniquePrefix = (): string => `rtk-si-${randomBytes(4).toString('hex')}:`;

async function sessionApp(target: RedisTarget, prefix = uniquePrefix(), options: ToolkitAppOptions = {}) {
  const app = await createToolkitApp({
    target,
    keyPrefix: prefix,
    session: { cookie: { secret: 's3cret' } },
    ...options,
  });
  const client = app.get(RedisConnection).client;
  return { app, sessions: app.get(SessionService), client, prefix };
}

/** Every key under `prefix` on every master (SCAN; a test helper on our own prefix). */
async function keysUnder(client: RedisClient, prefix: string): Promise<string[]> {
  const nodes = client instanceof Cluster ? client.nodes('master') : [client as Redis];
  const found: string[] = [];
  for (const node of nodes) {
    let cursor = '0';
    do {
      const [next, page] = await node.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
      cursor = next;
      found.push(...page);
    } while (cursor !== '0');
  }
  return found;
}

const LONE_HIGH = 'a\uD800b';
const LONE_LOW = '\uDC00';

describe.each(['single', 'cluster'] as const)('session text is well-formed Unicode on %s', (target) => {
  it('create refuses a field name or a value with a lone surrogate (typed error, nothing stored)', async () => {
    const { sessions, client, prefix } = await sessionApp(target);
    const refused = [
      { [LONE_HIGH]: 1 },
      { [LONE_LOW]: 'x' },
      { ok: LONE_HIGH },
      { ok: { nested: [LONE_LOW] } },
      { ok: { [LONE_HIGH]: true } },
    ];
    for (const data of refused) {
      const err = await sessions.create('alice', data).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(InvalidKeyError);
      expect((err as RedisToolkitError).code).toBe('E_INVALID_KEY');
    }
    expect(await keysUnder(client, prefix)).toEqual([]);
    // A well-formed astral character (a surrogate pair) is fine, in names and values.
    const ok = await sessions.create('alice', { 'emoji😀': '😀', plain: 'é' });
    expect((await sessions.get(ok.id))?.data).toEqual({ 'emoji😀': '😀', plain: 'é' });
  });

  it('update refuses them too, and the session stays updatable afterwards (no 503 later)', async () => {
    const { sessions } = await sessionApp(target);
    const s = await sessions.create('alice', { a: 1 });
    for (const patch of [{ [LONE_HIGH]: 1 }, { b: LONE_LOW }, { b: [{ [LONE_LOW]: 1 }] }, { [LONE_LOW]: undefined }]) {
      const err = await sessions.update(s.id, patch).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(InvalidKeyError);
    }
    // Before the fix the name was stored and every later update failed in Lua ("Redis unavailable").
    expect((await sessions.update(s.id, { b: 2 })).data).toEqual({ a: 1, b: 2 });
    expect((await sessions.update(s.id, { c: '😀' })).data).toEqual({ a: 1, b: 2, c: '😀' });
  });

  it('RedisSessionStore.set refuses them with a typed error carrying status 400, and stores nothing', async () => {
    const { sessions, client: toolkitClient, prefix } = await sessionApp(target);
    const store = new RedisSessionStore({ client: toolkitClient as Redis, prefix });
    const cookie = { originalMaxAge: 60_000, expires: new Date(Date.now() + 60_000) };
    for (const data of [{ [LONE_HIGH]: 1 }, { userId: 'u', note: LONE_LOW }, { userId: LONE_HIGH }]) {
      const sid = generateSessionId();
      const err = await store.set(sid, { cookie, ...data } as never).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(InvalidKeyError);
      expect(err).toMatchObject({ status: 400, statusCode: 400 });
      expect(await store.get(sid)).toBeNull();
    }
    expect(await keysUnder(toolkitClient, prefix)).toEqual([]);
    const sid = generateSessionId();
    await store.set(sid, { cookie, userId: 'u', note: '😀' } as never);
    expect(await sessions.update(sid, { more: 1 })).toMatchObject({ data: { userId: 'u', note: '😀', more: 1 } });
  });
});

describe.each(['single', 'cluster'] as const)('destroyAllForUser with concurrent writers on %s', (target) => {
  /**
   * Writers create (and regenerate) sessions of one user without pause while destroyAllForUser runs again and again.
   * Just before each call, the sessions present in Redis are listed (SCAN): every one of them must be gone when the
   * call returns. Before the fix a session was written before its index entry, so one written just before the call
   * but indexed just after it survived the logout.
   */
  it('destroys every session that existed when it was called, whatever is created meanwhile', async () => {
    // 14 writers without pause on a busy 2-core box: a command past the default 1 s timeout failed a create once in
    // the full suite (RedisUnavailableError); the timeout is not what this test is about
    const { sessions, client, prefix } = await sessionApp(target, uniquePrefix(), { commandTimeout: 5_000 });
    const sessionKey = new RegExp(`^${prefix}sess:\\{([A-Za-z0-9_-]{43})\\}$`);
    let writing = true;
    let created = 0;
    let regenerated = 0;
    let lostCreates = 0;
    const writer = async (regenerating: boolean) => {
      while (writing) {
        const s = await sessions.create('alice', { n: created }).catch((err: unknown) => {
          // Three fresh ids in a row tombstoned by the calls below: this login lost the race to "log out everywhere".
          if (!(err instanceof RedisToolkitError) || err.code !== 'E_SESSION_NOT_FOUND') throw err;
          lostCreates++;
          return undefined;
        });
        if (!s) continue;
        created++;
        if (regenerating) {
          await sessions.regenerate(s.id).then(
            () => regenerated++,
            (err: unknown) => {
              // A destroyAllForUser got there first: the session is gone, which is what it must be.
              if (!(err instanceof RedisToolkitError) || err.code !== 'E_SESSION_NOT_FOUND') throw err;
            },
          );
        }
      }
    };
    // express-session through RedisSessionStore: a set that gives a session its owner.
    const store = new RedisSessionStore({ client: client as Redis, prefix });
    let stored = 0;
    const storeWriter = async () => {
      const cookie = { originalMaxAge: 60_000, expires: new Date(Date.now() + 60_000) };
      while (writing) {
        await store.set(generateSessionId(), { cookie, userId: 'alice' } as never);
        stored++;
      }
    };
    const writers = [...Array.from({ length: 12 }, (_, i) => writer(i % 3 === 0)), storeWriter(), storeWriter()];
    const survivors: string[] = [];
    let checked = 0;
    try {
      for (let round = 0; round < 40; round++) {
        const before = (await keysUnder(client, prefix))
          .map((k) => sessionKey.exec(k)?.[1])
          .filter((id): id is string => id !== undefined);
        await sessions.destroyAllForUser('alice');
        checked += before.length;
        const alive = await Promise.all(before.map((id) => sessions.get(id)));
        survivors.push(...before.filter((_, i) => alive[i] !== null));
      }
    } finally {
      writing = false;
      await Promise.all(writers);
    }
    expect(checked).toBeGreaterThan(100);
    expect(created).toBeGreaterThan(100);
    expect(lostCreates).toBeLessThan(created);
    expect(regenerated).toBeGreaterThan(0);
    expect(stored).toBeGreaterThan(0);
    expect(survivors).toEqual([]);
    // And the index still lists every session that exists: one more call leaves none.
    await sessions.destroyAllForUser('alice');
    const left = (await keysUnder(client, prefix)).filter((k) => sessionKey.test(k));
    expect(left).toEqual([]);
  }, 60_000);
});
