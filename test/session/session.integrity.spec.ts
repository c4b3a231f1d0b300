import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import { Cluster, Redis } from 'ioredis';
import {
  InvalidKeyError,
  RedisConnection,
  RedisSessionStore,
  RedisToolkitError,
  SessionService,
  generateSessionId,
} from '../../lib/index.js';
import type { RedisClient } from '../../lib/common/lua-script.js';
import { closeToolkitApps, createToolkitApp, type RedisTarget } from '../support/toolkit-app.js';

/**
 * Issue 17 items 10 and 11: what a session holds is always readable back (well-formed Unicode), and a user's index
 * always lists every session that exists, so destroyAllForUser cannot miss one created while it runs.
 */
afterEach(closeToolkitApps);

const uniquePrefix = (): string => `rtk-si-${randomBytes(4).toString('hex')}:`;

async function sessionApp(target: RedisTarget, prefix = uniquePrefix()) {
  const app = await createToolkitApp({ target, keyPrefix: prefix, session: { cookie: { secret: 's3cret' } } });
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
