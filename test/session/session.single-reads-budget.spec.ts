/**
 * The sessions' reads that are not batched, under a bounded `client-output-buffer-limit normal` (1 MiB here): the
 * read without rolling (MULTI GET + PEXPIRETIME: `rolling: false`, `exists`, `listForUser`, the store's `all`), the
 * GETs of an update of a session this process has not seen, and the replies of the writes that answer a session's
 * value on a conflict (the compare-and-set, the change of `appendUpdates`). Each carries one session under the size
 * bound, but several in one turn, or beside the budgeted reads in flight, passed the limit together: Redis closed the
 * connection, failing every call on it. They now take their share of the connection's reply budget
 * (lib/common/reply-budget.ts) before they are sent. docs/session.md, "Size of a session".
 */
import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import { type Cluster, Redis } from 'ioredis';
import { RedisSessionStore, SessionService } from '../../lib/index.js';
import { RedisConnection } from '../../lib/advanced.js';
import { recordCommandCalls } from '../support/command-recorder.js';
import { ownedBy, useDisposableCluster } from '../support/disposable-cluster.js';
import { trackForCleanup, usePrivateRedis } from '../support/private-servers.js';
import { asleep, countCloses, DEBUG_ALLOWED, nextTurn, ONE_MIB } from '../support/reply-limit.js';
import { rawCommand } from '../support/resp.js';
import { closeToolkitApps, createToolkitApp, type ToolkitAppOptions } from '../support/toolkit-app.js';

afterEach(closeToolkitApps);

const prefix = () => `rtk-sr${randomBytes(5).toString('hex')}:`;
const KB = 1_000;
/** Sessions of 60 KB changed under the second instance: 1.44 MB together, past the 1 MiB limit. */
const CONFLICTS = 24;
const letter = (i: number) => String.fromCharCode(97 + i); // a..x
const blobOf = (s: { data: Record<string, unknown> } | null | undefined) => s?.data.blob as string | undefined;
/** What a read found: the first letter of its blob and its length. */
const seen = (s: { data: Record<string, unknown> } | null | undefined) => {
  const blob = blobOf(s);
  return blob === undefined ? 'none' : `${blob[0]}${blob.length}`;
};

describe('a server with `client-output-buffer-limit normal 1mb 0 0`', () => {
  const redis = usePrivateRedis({ args: [...ONE_MIB, ...DEBUG_ALLOWED] });
  /** The server asleep for 300 ms: the calls sent meanwhile are read together (see asleep). */
  const sleeping = () => asleep(trackForCleanup(new Redis(redis.server.url)), 300);
  const boot = async (options: ToolkitAppOptions = {}) => {
    const keyPrefix = options.keyPrefix ?? prefix();
    const app = await createToolkitApp({ target: { url: redis.server.url }, keyPrefix, ...options });
    const client = app.get(RedisConnection).client as Redis;
    return { keyPrefix, sessions: app.get(SessionService), client, closes: countCloses(client) };
  };

  // Before: each read was a MULTI of its own, under the limit alone; three in one turn passed it together.
  it('reads without rolling in one turn and in consecutive turns: every session, no connection closed', async () => {
    const { sessions, closes } = await boot({ session: { rolling: false } });
    const ids: string[] = [];
    for (const c of 'abcdef') ids.push((await sessions.create('ann', { blob: c.repeat(300 * KB) })).id);
    const reads: Promise<string>[] = [];
    const woken = await sleeping();
    for (let round = 0; round < 2; round++) {
      for (const id of ids) reads.push(sessions.get(id).then(seen));
      await nextTurn();
    }
    await woken();
    const settled = await Promise.allSettled(reads);
    expect(settled.map((r) => (r.status === 'fulfilled' ? r.value : 'failed'))).toEqual(
      [0, 1].flatMap(() => [...'abcdef'].map((c) => `${c}300000`)),
    );
    expect(closes()).toBe(0);
    expect(sessions.stats()).toEqual({ unavailable: 0, replyErrors: 0 });
  });

  // Before: `exists` (a read without rolling) was sent beside the touching reads in flight, outside their budget.
  it('a read without rolling beside the touching reads of the same turn: no connection closed', async () => {
    const { sessions, closes } = await boot();
    const a = await sessions.create('ann', { blob: 'a'.repeat(450 * KB) });
    const b = await sessions.create('bob', { blob: 'b'.repeat(450 * KB) });
    const answers: Promise<unknown>[] = [];
    const woken = await sleeping();
    for (let round = 0; round < 3; round++) {
      answers.push(
        sessions.get(a.id).then(seen),
        sessions.exists(b.id),
        sessions.listForUser('bob').then((l) => l.length),
      );
      await nextTurn();
    }
    await woken();
    const settled = await Promise.allSettled(answers);
    expect(settled.map((r) => (r.status === 'fulfilled' ? r.value : 'failed'))).toEqual(
      [0, 1, 2].flatMap(() => ['a450000', true, 1]),
    );
    expect(closes()).toBe(0);
  });

  // Before: the sessions an instance had not seen were read with a GET each, all in the same turn.
  it('updates of sessions this instance has not seen, in one turn: every update, no connection closed', async () => {
    const { sessions: creator, keyPrefix } = await boot();
    const ids: string[] = [];
    for (const c of 'abcdef') ids.push((await creator.create('ann', { blob: c.repeat(300 * KB) })).id);
    const other = await boot({ keyPrefix });
    const woken = await sleeping();
    const updates = ids.map((id, i) => other.sessions.update(id, { n: i }).then((s) => `${seen(s)}:${s?.data.n}`));
    await woken();
    const settled = await Promise.allSettled(updates);
    expect(settled.map((r) => (r.status === 'fulfilled' ? r.value : 'failed'))).toEqual(
      [...'abcdef'].map((c, i) => `${c}300000:${i}`),
    );
    expect(other.closes()).toBe(0);
    expect((await creator.get(ids[5]))?.data.n).toBe(5);
  });

  /** `update(id, { n: 1 })` of each session by `second` while the server sleeps (read in one go): each `seen:by`. */
  const updatesInOneTurn = (second: Awaited<ReturnType<typeof boot>>, ids: string[]) =>
    recordCommandCalls(second.client, async () => {
      const woken = await sleeping();
      const updates = ids.map((id) =>
        second.sessions.update(id, { n: 1 }).then((s) => `${seen(s)}:${(s?.data as { by?: string } | undefined)?.by}`),
      );
      await woken();
      return Promise.allSettled(updates);
    });

  // Before: the compare-and-sets of one turn went in one script call, and each one that found its session changed
  // answered that session whole: 24 sessions of 60 KB in one reply (1.44 MB). The sessions are under 64 Ki UTF-16 units
  // (RecentValues' LARGEST_KEPT), so the second instance keeps the values it read and sends them as expected: a larger
  // one is not kept, its update reads the session first (a GET) and its compare-and-set finds no change.
  it('compare-and-sets that find their sessions changed, in one turn: no connection closed', async () => {
    const { sessions: first, keyPrefix } = await boot();
    const ids: string[] = [];
    for (let i = 0; i < CONFLICTS; i++) ids.push((await first.create('ann', { blob: letter(i).repeat(60 * KB) })).id);
    const second = await boot({ keyPrefix });
    for (const id of ids) await second.sessions.get(id); // the second instance knows each value
    for (const id of ids) await first.update(id, { by: 'first' }); // and each changes under it
    const { value: settled, calls } = await updatesInOneTurn(second, ids);
    // the conflict path: the values kept were sent as expected (the turn's one compare-and-set call, 2 keys a
    // session), with no GET before it
    const sent = calls.findIndex((c) => c.name === 'evalsha');
    expect(calls[sent]?.args[1]).toBe(String(2 * CONFLICTS));
    expect(calls.slice(0, sent).map((c) => c.name)).not.toContain('get');
    expect(settled.map((r) => (r.status === 'fulfilled' ? r.value : 'failed'))).toEqual(
      ids.map((_, i) => `${letter(i)}60000:first`),
    );
    expect(second.closes()).toBe(0);
    for (const id of ids) expect((await first.get(id))?.data).toMatchObject({ by: 'first', n: 1 });
  });

  // Before: with appendUpdates, a change appended behind another instance's answered the session whole (24 sessions
  // of 60 KB in one reply; values the second instance keeps, as above).
  it('appendUpdates: changes appended behind another instance, in one turn: no connection closed', async () => {
    const { sessions: first, keyPrefix } = await boot({ session: { appendUpdates: true } });
    const ids: string[] = [];
    for (let i = 0; i < CONFLICTS; i++) ids.push((await first.create('ann', { blob: letter(i).repeat(60 * KB) })).id);
    const second = await boot({ keyPrefix, session: { appendUpdates: true } });
    for (const id of ids) await second.sessions.update(id, { n: 0 }); // the second instance knows each value
    for (const id of ids) await first.update(id, { by: 'first' });
    const { value: settled, calls } = await updatesInOneTurn(second, ids);
    // the conflict path: the values kept were sent as expected (the turn's one change call, a key a session), with no
    // GET before it
    const sent = calls.findIndex((c) => c.name === 'evalsha');
    expect(calls[sent]?.args[1]).toBe(String(CONFLICTS));
    expect(calls.slice(0, sent).map((c) => c.name)).not.toContain('get');
    expect(settled.map((r) => (r.status === 'fulfilled' ? r.value : 'failed'))).toEqual(
      ids.map((_, i) => `${letter(i)}60000:first`),
    );
    expect(second.closes()).toBe(0);
    for (const id of ids) expect((await first.get(id))?.data).toMatchObject({ by: 'first', n: 1 });
  });

  // Before: all() read each page's sessions at once, a MULTI each. Its reads go once its SCAN is answered (a server
  // put to sleep would be awake by then): eight sessions of 300 KB, 2.4 MB, past the limit even when the first
  // MULTI was read alone.
  it("RedisSessionStore.all(): every session, no connection closed on the app's client", async () => {
    const { client } = await boot();
    const closes = countCloses(client);
    const store = new RedisSessionStore({ client, prefix: prefix() });
    const cookie = { originalMaxAge: 60_000, expires: new Date(Date.now() + 60_000) };
    for (const c of 'abcdefgh') {
      const sid = randomBytes(24).toString('base64url');
      await new Promise<void>((resolve, reject) =>
        store.set(sid, { cookie, blob: c.repeat(300 * KB) } as never, (err) => (err ? reject(err) : resolve())),
      );
    }
    // (a connection closed under it failed the call: its error, compared as text)
    const all = await store.all().then(
      (list) => (list as unknown as { blob: string }[]).map((s) => `${s.blob[0]}${s.blob.length}`).sort(),
      (err: unknown) => String(err),
    );
    expect(all).toEqual([...'abcdefgh'].map((c) => `${c}300000`));
    expect(closes()).toBe(0);
  });
});

describe('a cluster whose masters have `client-output-buffer-limit normal 1mb 0 0`', () => {
  const cluster = useDisposableCluster();

  // Before: each read without rolling was a MULTI of its own, sent to its master in the same turn as the others: eight
  // sessions of 300 KB on one master (2.4 MB), and the master closed the connection. Now each reserves its share of
  // that master's budget (the account of the master that owns its slot).
  it('reads without rolling of sessions on one master, in one turn: every session, no connection closed', async () => {
    for (const master of cluster().masters)
      await rawCommand(master.port, ['CONFIG', 'SET', 'client-output-buffer-limit', 'normal 1mb 0 0']);
    const keyPrefix = prefix();
    const app = await createToolkitApp({
      target: { cluster: cluster().startupNodes },
      keyPrefix,
      session: { rolling: false },
    });
    const sessions = app.get(SessionService);
    // eight sessions whose slots the first master owns (a session key is `<prefix>sess:{<id>}`)
    const ids: string[] = [];
    for (let n = 0; ids.length < 8 && n < 200; n++) {
      const c = String.fromCharCode(97 + ids.length);
      const { id } = await sessions.create('ann', { blob: c.repeat(300 * KB) });
      const [owned] = await ownedBy(cluster().masters[0], [`${keyPrefix}sess:{${id}}`]);
      if (owned) ids.push(id);
      else await sessions.destroy(id);
    }
    expect(ids).toHaveLength(8);
    const closes = countCloses(app.get(RedisConnection).client as Cluster);
    const reads = await Promise.allSettled(ids.map((id) => sessions.get(id).then(seen)));
    expect(reads.map((r) => (r.status === 'fulfilled' ? r.value : 'failed'))).toEqual(
      [...'abcdefgh'].map((c) => `${c}300000`),
    );
    expect(closes()).toBe(0);
    expect(sessions.stats()).toEqual({ unavailable: 0, replyErrors: 0 });
  });
});

describe('without a server limit (Redis default)', () => {
  const redis = usePrivateRedis();

  // Pinned: with the budget off, a read without rolling is one MULTI of GET and PEXPIRETIME, nothing more.
  it('a read without rolling sends exactly MULTI, GET, PEXPIRETIME, EXEC', async () => {
    const app = await createToolkitApp({
      target: { url: redis.server.url },
      keyPrefix: prefix(),
      session: { rolling: false },
    });
    const sessions = app.get(SessionService);
    const client = app.get(RedisConnection).client as Redis;
    const { id } = await sessions.create('ann', { blob: 'x'.repeat(10 * KB) });
    const { value, calls } = await recordCommandCalls(client, () => sessions.get(id));
    expect(blobOf(value)?.length).toBe(10 * KB);
    expect(calls.map((c) => c.name)).toEqual(['multi', 'get', 'pexpiretime', 'exec']);
  });
});
