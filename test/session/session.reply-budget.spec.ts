/**
 * Sessions' reads under a bounded `client-output-buffer-limit normal` (1 MiB here): every session is under the size
 * bound (session.reply-limit.spec.ts) and one batch of touching reads stays under the limit (session-read-many.lua),
 * but the batches of consecutive turns are pipelined on the connection, and Redis builds the replies of every command
 * it read in one go before it writes any: two sessions of 500 KB read in two turns passed the limit together, and
 * Redis closed the connection, failing every call in flight on it. The reads of one connection now share a reply
 * budget with the cache's (lib/common/reply-budget.ts). The limit is read again at each reconnect. docs/session.md,
 * "Size of a session".
 */
import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { CacheService, RedisSessionStore, SessionService, SessionTooLargeError } from '../../lib/index.js';
import { CacheValueTooLargeError, RedisConnection } from '../../lib/advanced.js';
import { errorOf } from '../support/errors.js';
import { trackForCleanup, usePrivateRedis } from '../support/private-servers.js';
import { countCloses, nextTurn, ONE_MIB } from '../support/reply-limit.js';
import { closeToolkitApps, createToolkitApp, type ToolkitAppOptions } from '../support/toolkit-app.js';
import { waitFor } from '../support/wait.js';

afterEach(closeToolkitApps);

const prefix = () => `rtk-sb${randomBytes(5).toString('hex')}:`;
const KB = 1_000;
/** The bound a 1 MiB limit gives: 4/5 of it less 128 bytes. */
const BOUND_1MIB = Math.floor((1_048_576 * 4) / 5) - 128;

describe('a server with `client-output-buffer-limit normal 1mb 0 0`', () => {
  const redis = usePrivateRedis({ args: ONE_MIB });
  const boot = async (options: ToolkitAppOptions = {}) => {
    const app = await createToolkitApp({ target: { url: redis.server.url }, keyPrefix: prefix(), ...options });
    const client = app.get(RedisConnection).client as Redis;
    return { app, sessions: app.get(SessionService), client, closes: countCloses(client) };
  };

  // Before: each touching read was one script call under the limit; the two calls pipelined passed it together.
  it('touching reads of consecutive turns: every session, no connection closed', async () => {
    const { sessions, closes } = await boot();
    const a = await sessions.create('ann', { blob: 'a'.repeat(500 * KB) });
    const b = await sessions.create('bob', { blob: 'b'.repeat(500 * KB) });
    const reads: Promise<unknown>[] = [];
    for (let i = 0; i < 6; i++) {
      reads.push(sessions.get(i % 2 === 0 ? a.id : b.id).then((s) => (s?.data.blob as string | undefined)?.[0]));
      await nextTurn();
    }
    expect(await Promise.allSettled(reads)).toEqual(
      ['a', 'b', 'a', 'b', 'a', 'b'].map((value) => ({ status: 'fulfilled', value })),
    );
    expect(closes()).toBe(0);
    expect(sessions.stats()).toEqual({ unavailable: 0, replyErrors: 0 });
  });

  // Before: the reads within touchAfter and the touching ones, batched per turn, were pipelined past the limit.
  it('touchAfter: plain and touching reads of consecutive turns, no connection closed', async () => {
    const { sessions, closes } = await boot({ session: { touchAfter: 10_000 } });
    const ids: string[] = [];
    for (const c of 'abcd') ids.push((await sessions.create('ann', { blob: c.repeat(300 * KB) })).id);
    const reads: Promise<unknown>[] = [];
    for (let round = 0; round < 3; round++) {
      for (const id of ids) reads.push(sessions.get(id).then((s) => (s?.data.blob as string | undefined)?.length));
      await nextTurn();
    }
    const settled = await Promise.allSettled(reads);
    expect(settled.filter((r) => r.status === 'fulfilled' && r.value === 300 * KB)).toHaveLength(12);
    expect(closes()).toBe(0);
  });

  // Before: the store's gets of consecutive turns (express-session's requests) passed the limit together.
  it("RedisSessionStore: gets of consecutive turns on the app's client, no connection closed", async () => {
    const client = trackForCleanup(new Redis(redis.server.url));
    await client.ping();
    const closes = countCloses(client);
    const store = new RedisSessionStore({ client, prefix: prefix() });
    const cookie = { originalMaxAge: 60_000, expires: new Date(Date.now() + 60_000) };
    const set = (sid: string, blob: string) =>
      new Promise<void>((resolve, reject) =>
        store.set(sid, { cookie, blob } as never, (err) => (err ? reject(err) : resolve())),
      );
    const get = (sid: string) =>
      new Promise<string | undefined>((resolve, reject) =>
        store.get(sid, (err, s) => (err ? reject(err) : resolve((s as { blob?: string } | null)?.blob?.[0]))),
      );
    const sids = ['a', 'b'].map(() => randomBytes(24).toString('base64url'));
    // the bound read at construction: a set waits for it
    await set(sids[0], 'a'.repeat(500 * KB));
    await set(sids[1], 'b'.repeat(500 * KB));
    const reads: Promise<unknown>[] = [];
    for (let i = 0; i < 6; i++) {
      reads.push(get(sids[i % 2]));
      await nextTurn();
    }
    expect(await Promise.allSettled(reads)).toEqual(
      ['a', 'b', 'a', 'b', 'a', 'b'].map((value) => ({ status: 'fulfilled', value })),
    );
    expect(closes()).toBe(0);
  });

  // Before: SessionTooLargeError had no fields; the caller parsed its message.
  it('SessionTooLargeError carries bytes and maxBytes', async () => {
    const { sessions } = await boot();
    const refused = await errorOf(() => sessions.create('ann', { blob: 'x'.repeat(BOUND_1MIB) }));
    expect(refused).toBeInstanceOf(SessionTooLargeError);
    expect(refused).toMatchObject({ maxBytes: BOUND_1MIB });
    expect((refused as { bytes: number }).bytes).toBeGreaterThan(BOUND_1MIB);
  });
});

describe('the limit changed with CONFIG SET after start', () => {
  const redis = usePrivateRedis({ args: ONE_MIB });

  // Before: the limit was read once, at start: after a reconnect the 1 MiB bound stayed, and a 300 KB session
  // (past the new limit of 256 KiB) was stored, its every read then closing the connection.
  it('is read again at the next reconnect: the cache and the sessions take the new bound', async () => {
    const app = await createToolkitApp({ target: { url: redis.server.url }, keyPrefix: prefix() });
    const sessions = app.get(SessionService);
    const cache = app.get(CacheService);
    const client = app.get(RedisConnection).client as Redis;
    await cache.set('before', 'x'.repeat(300 * KB));
    const admin = trackForCleanup(new Redis(redis.server.url));
    await admin.config('SET', 'client-output-buffer-limit', 'normal 256kb 0 0');
    client.disconnect(true);
    expect(await waitFor(() => client.status === 'ready', 5_000)).toBe(true);
    // (the sessions answer RedisUnavailableError until they see the connection back)
    const refused = await waitFor(
      async () =>
        (await errorOf(() => sessions.create('ann', { blob: 'x'.repeat(300 * KB) }))) instanceof SessionTooLargeError,
      5_000,
    );
    expect(refused).toBe(true);
    expect(await errorOf(() => cache.set('after', 'x'.repeat(300 * KB)))).toBeInstanceOf(CacheValueTooLargeError);
  });
});
