import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import { Command, type Redis } from 'ioredis';
import { RedisReplyError, RedisSessionStore, SessionNotFoundError, SessionService } from '../../lib/index.js';
import { RedisConnection } from '../../lib/advanced.js';
import type { RedisClient } from '../../lib/common/lua-script.js';
import { recordCommandCalls } from '../support/command-recorder.js';
import { closeToolkitApps, createToolkitApp, type RedisTarget } from '../support/toolkit-app.js';

afterEach(closeToolkitApps);

/** How every session this version writes from Node ends its JSON (lib/session/session.stamp.ts). */
const STAMP = /"v":"\/[A-Za-z0-9_-]+"\}$/;
const TTL = 3_600_000;

const uniquePrefix = (): string => `rtk-sessw-${randomBytes(4).toString('hex')}:`;

async function sessionApp(target: RedisTarget, prefix = uniquePrefix(), appendUpdates = false) {
  const app = await createToolkitApp({
    target,
    keyPrefix: prefix,
    session: { cookie: { secret: 's3cret' }, ttl: TTL, appendUpdates },
  });
  const client = app.get(RedisConnection).client;
  return { sessions: app.get(SessionService), client, prefix };
}

type Calls = { name: string; args: string[] }[];
const scriptCalls = (calls: Calls, keys: string) =>
  calls.filter((c) => (c.name === 'evalsha' || c.name === 'eval') && c.args[1] === keys);
/** The compare-and-set calls among recorded commands (2 keys: session and tombstone) and what each expected. */
const casExpectations = (calls: Calls): string[] => scriptCalls(calls, '2').map((c) => c.args[4]);
/** The arguments of each call of the change script (session-change.lua) for one session (one key). */
const changeCalls = (calls: Calls): string[][] => scriptCalls(calls, '1').map((c) => c.args.slice(3));

/** A session created (its stored value and stamp), then updated once (the commands the update sent). */
async function createAndUpdate(sessions: SessionService, client: RedisClient, key: (id: string) => string) {
  const s = await sessions.create('ann', { a: 1, text: 'x'.repeat(300) });
  const created = (await client.get(key(s.id)))!;
  const stamp = STAMP.exec(created)?.[0];
  expect(stamp).toBeDefined();
  const { value, calls } = await recordCommandCalls(client, () => sessions.update(s.id, { b: 2 }));
  expect(value.data).toEqual({ a: 1, text: 'x'.repeat(300), b: 2 });
  return { s, created, stamp, calls };
}

describe.each(['single', 'cluster'] as const)('session writes on %s', (target) => {
  it('a write sends the stamp of the value it read, not the whole value, and stamps what it writes anew', async () => {
    const { sessions, client, prefix } = await sessionApp(target);
    const key = (id: string) => `${prefix}sess:{${id}}`;
    const { s, stamp, calls } = await createAndUpdate(sessions, client, key);
    // the stamp alone: one GETRANGE of as many bytes from the end of the value
    expect(casExpectations(calls)).toEqual([stamp]);
    const written = (await client.get(key(s.id)))!;
    expect(STAMP.exec(written)?.[0]).not.toBe(stamp);
    expect(STAMP.test(written)).toBe(true);
    // the stamp is not part of the session: it reads as before, in this version and in one that ignores it
    expect(Object.keys(JSON.parse(written) as object).sort()).toEqual(['c', 'd', 'm', 't', 'u', 'v']);
  });

  it('with appendUpdates, an update appends its change behind the stamp; the 16th writes the merged session whole, stamped anew', async () => {
    const prefix = uniquePrefix();
    const { sessions, client } = await sessionApp(target, prefix, true);
    const key = (id: string) => `${prefix}sess:{${id}}`;
    const { s, created, stamp, calls } = await createAndUpdate(sessions, client, key);
    // one call of the change script (one key): the largest value, the length in bytes of the value it knew, the
    // change, the expiry it extends to (the session's idle ttl, which the script times by Redis's clock, and its
    // deadline, which caps it: session-expiry.lua), and no whole session
    const sent = changeCalls(calls);
    const m = String((JSON.parse(created) as { m: number }).m);
    expect(sent).toEqual([['1048576', String(Buffer.byteLength(created)), '\n{"d":{"b":"2"}}', String(TTL), m, '']]);
    expect(await client.get(key(s.id))).toBe(`${created}\n{"d":{"b":"2"}}`);
    // the expiry that reached Redis: the ttl from now
    const extended = await client.pttl(key(s.id));
    expect(extended).toBeGreaterThan(TTL - 60_000);
    expect(extended).toBeLessThanOrEqual(TTL);
    // within a second of that extension the next update does not extend again (as a get would not: touchAfter)
    const { calls: next } = await recordCommandCalls(client, () => sessions.update(s.id, { gone: undefined }));
    expect(changeCalls(next).map((args) => args.slice(2))).toEqual([['\n{"d":{},"x":["gone"]}', 'skip', m, '']]);
    for (let i = 0; i < 13; i++) await sessions.update(s.id, { n: i });
    const fifteen = (await client.get(key(s.id)))!;
    expect(fifteen.startsWith(created)).toBe(true);
    expect(fifteen.split('\n')).toHaveLength(16);
    // another instance reads the changes applied in order (one without appendUpdates too)
    const other = await sessionApp(target, prefix);
    expect((await other.sessions.get(s.id))!.data).toEqual({ a: 1, text: 'x'.repeat(300), b: 2, n: 12 });
    // the 16th change: the stamp of the value it knows, then the merged session, written whole
    const { calls: last } = await recordCommandCalls(client, () => sessions.update(s.id, { z: true }));
    const written = (await client.get(key(s.id)))!;
    // what it expects of the value it knows (the stamp, where the session's JSON ends, the length), then the session
    expect(changeCalls(last).map((args) => [args[1], args[5]])).toEqual([
      [
        String(Buffer.byteLength(fifteen)),
        `${stamp}@${Buffer.byteLength(created)}:${Buffer.byteLength(fifteen)} ${written}`,
      ],
    ]);
    expect(written).not.toContain('\n');
    expect(STAMP.test(written)).toBe(true);
    expect(STAMP.exec(written)?.[0]).not.toBe(stamp);
    // the stamp is not part of the session: it reads as before, in this version and in one that ignores it
    const parsed = JSON.parse(written) as { d: object };
    expect(Object.keys(parsed).sort()).toEqual(['c', 'd', 'm', 't', 'u', 'v']);
    expect(parsed.d).toEqual({ a: '1', text: JSON.stringify('x'.repeat(300)), b: '2', n: '12', z: 'true' });
    expect((await other.sessions.get(s.id))!.data).toEqual({ a: 1, text: 'x'.repeat(300), b: 2, n: 12, z: true });
    const pttl = await client.pttl(key(s.id));
    expect(pttl).toBeGreaterThan(TTL - 60_000);
    expect(pttl).toBeLessThanOrEqual(TTL);
  });

  it('a session written before stamps is compared whole, and concurrent updates of two instances all survive', async () => {
    const prefix = uniquePrefix();
    const one = await sessionApp(target, prefix);
    const two = await sessionApp(target, prefix);
    const id = randomBytes(32).toString('base64url');
    const now = Date.now();
    // the previous version's layout, as it is stored today
    const old = JSON.stringify({ u: 'bob', c: now, m: now + 86_400_000, t: TTL, d: { keep: '"yes"' } });
    await one.client.set(`${prefix}sess:{${id}}`, old, 'PX', 600_000);
    expect((await one.sessions.get(id))!.data).toEqual({ keep: 'yes' });
    expect((await two.sessions.get(id))!.data).toEqual({ keep: 'yes' });
    const { calls } = await recordCommandCalls(one.client, () =>
      Promise.all(
        Array.from({ length: 20 }, (_, i) => (i % 2 === 0 ? one : two).sessions.update(id, { [`f${i}`]: i })),
      ),
    );
    // instance one expected the old value, whole (unstamped), in its first compare-and-set
    expect(casExpectations(calls)[0]).toBe(old);
    const data = (await one.sessions.get(id))!.data;
    expect(data).toEqual({ keep: 'yes', ...Object.fromEntries(Array.from({ length: 20 }, (_, i) => [`f${i}`, i])) });
    // updates touch (rolling): the session's own ttl, not the 600 s it was stored with
    const pttl = await one.client.pttl(`${prefix}sess:{${id}}`);
    expect(pttl).toBeGreaterThan(600_000);
    expect(pttl).toBeLessThanOrEqual(TTL);
  });

  it('a value re-encoded with cjson never passes for the stamped value it was read from', async () => {
    const prefix = uniquePrefix();
    const one = await sessionApp(target, prefix);
    const s = await one.sessions.create('cid', { a: 1 });
    const key = `${prefix}sess:{${s.id}}`;
    const stamped = (await one.client.get(key))!;
    // What a cjson script of the previous version leaves when it changes the session: the stamp kept, even first,
    // but its '/' escaped (cjson writes '\/'). Instance one still remembers the stamped value.
    const reencoded = stamped.replace('"v":"/', '"v":"\\/').replace('"d":{', '"d":{"rival":"2",');
    expect(JSON.parse(reencoded)).toMatchObject({ d: { a: '1', rival: '2' } });
    await one.client.set(key, reencoded, 'KEEPTTL');
    expect((await one.sessions.update(s.id, { b: 3 })).data).toEqual({ a: 1, rival: 2, b: 3 });
    // and RedisSessionStore's touch (a cjson script) changes what a later write merges into
    const store = new RedisSessionStore({ client: one.client, prefix });
    const cookie = { originalMaxAge: 120_000, maxAge: 120_000, expires: new Date(Date.now() + 120_000) };
    await store.touch(s.id, { cookie } as never);
    const touched = await one.sessions.update(s.id, { c: 4 });
    expect(touched.data).toEqual({ a: 1, rival: 2, b: 3, c: 4 });
    expect((JSON.parse((await one.client.get(key))!) as { t: number }).t).toBe(120_000);
    // the scripts that re-encode a session drop the stamp it had (their copy is not that write)
    await store.touch(s.id, { cookie: { ...cookie, maxAge: 90_000, originalMaxAge: 90_000 } } as never);
    const retouched = JSON.parse((await one.client.get(key))!) as { t: number };
    expect(retouched.t).toBe(90_000);
    expect(retouched).not.toHaveProperty('v');
  });

  it('a session stamped at its head by an earlier version is compared by that stamp and its length', async () => {
    const prefix = uniquePrefix();
    const one = await sessionApp(target, prefix);
    const two = await sessionApp(target, prefix);
    const id = randomBytes(32).toString('base64url');
    const key = `${prefix}sess:{${id}}`;
    const now = Date.now();
    const old = JSON.stringify({ v: '/earlier1', u: 'eve', c: now, m: now + 86_400_000, t: TTL, d: { a: '1' } });
    await one.client.set(key, old, 'PX', 600_000);
    expect((await one.sessions.get(id))!.data).toEqual({ a: 1 });
    expect((await two.sessions.get(id))!.data).toEqual({ a: 1 });
    const { calls } = await recordCommandCalls(one.client, () => one.sessions.update(id, { b: 2 }));
    expect(casExpectations(calls)).toEqual([`{"v":"/earlier1"${Buffer.byteLength(old)}`]);
    // two still holds the head-stamped value: its compare-and-set fails, and it merges into one's write
    expect((await two.sessions.update(id, { c: 3 })).data).toEqual({ a: 1, b: 2, c: 3 });
    expect(STAMP.test((await one.client.get(key))!)).toBe(true);
  });

  it.each([false, true])(
    'the writes of one tick go as one script call (single server; one call each on a cluster), each with its own outcome (appendUpdates: %s)',
    async (appendUpdates) => {
      const prefix = uniquePrefix();
      const { sessions, client } = await sessionApp(target, prefix, appendUpdates);
      const other = await sessionApp(target, prefix);
      const created = await Promise.all(Array.from({ length: 12 }, (_, i) => sessions.create(`u${i}`, { n: i })));
      // one session's key now holds a hash: its write fails alone with a typed error reply, the others are written
      const broken = created[5];
      await client.del(`${prefix}sess:{${broken.id}}`);
      await client.hset(`${prefix}sess:{${broken.id}}`, 'x', '1');
      // two are gone (their writes answer nil: one read as stamped, one as a value without a stamp, which a
      // compare-and-set compares whole), one was changed by another instance (a compare-and-set answers the current value,
      // and this write merges into it; with appendUpdates its change is appended behind the other's and the script
      // answers the value now): the writes after them in the call keep their own outcomes
      const unstamped = created[1];
      const now = Date.now();
      const old = JSON.stringify({ u: 'u1', c: now, m: now + 86_400_000, t: TTL, d: { n: '1' } });
      await client.set(`${prefix}sess:{${unstamped.id}}`, old, 'PX', 600_000);
      expect((await sessions.get(unstamped.id))!.data).toEqual({ n: 1 });
      await client.del(`${prefix}sess:{${unstamped.id}}`);
      await client.del(`${prefix}sess:{${created[3].id}}`);
      await other.sessions.update(created[8].id, { o: 'other' });
      const { value: outcomes, calls } = await recordCommandCalls(client, () =>
        Promise.allSettled(created.map((s, i) => sessions.update(s.id, { m: i * 10 }))),
      );
      const scripts = calls.filter((c) => c.name === 'evalsha' || c.name === 'eval');
      // (before: 12 script calls in one pipeline on a single server); then the changed one's second try. With
      // appendUpdates, the 11 stamped ones as one call of the change script (one key each), the unstamped one as a
      // compare-and-set, and no second try; on a cluster a call each
      const keyCounts = scripts.map((c) => c.args[1]);
      if (!appendUpdates) expect(keyCounts).toEqual(target === 'single' ? ['24', '2'] : Array(13).fill('2'));
      else expect(keyCounts.sort()).toEqual(target === 'single' ? ['11', '2'] : [...Array(11).fill('1'), '2']);
      for (const [i, outcome] of outcomes.entries()) {
        if (i === 5) {
          expect(outcome.status).toBe('rejected');
          expect((outcome as PromiseRejectedResult).reason).toBeInstanceOf(RedisReplyError);
          expect(String((outcome as PromiseRejectedResult).reason.message)).toContain('WRONGTYPE');
          continue;
        }
        if (i === 1 || i === 3) {
          expect(outcome.status).toBe('rejected');
          expect((outcome as PromiseRejectedResult).reason).toBeInstanceOf(SessionNotFoundError);
          expect(await client.exists(`${prefix}sess:{${created[i].id}}`)).toBe(0);
          continue;
        }
        const data = i === 8 ? { n: i, o: 'other', m: i * 10 } : { n: i, m: i * 10 };
        expect(outcome.status).toBe('fulfilled');
        expect((outcome as PromiseFulfilledResult<{ data: object }>).value.data).toEqual(data);
        expect((await sessions.get(created[i].id))!.data).toEqual(data);
        const pttl = await client.pttl(`${prefix}sess:{${created[i].id}}`);
        expect(pttl).toBeGreaterThan(TTL - 60_000);
        expect(pttl).toBeLessThanOrEqual(TTL);
      }
      expect(await client.type(`${prefix}sess:{${broken.id}}`)).toBe('hash');
    },
  );
});

describe('session write retries (single server)', () => {
  it('a write that keeps losing its compare-and-set stops after 3 and merges atomically: nothing lost', async () => {
    const { sessions, client, prefix } = await sessionApp('single');
    const s = await sessions.create('dan', { a: 1 });
    const key = `${prefix}sess:{${s.id}}`;
    const base = JSON.parse((await client.get(key))!) as { u: string; c: number; m: number; t: number };
    // Without a stamp (as a cjson script or the previous version writes it), an update is a compare-and-set: an
    // update of a stamped session appends its change and never loses (the first test).
    await client.set(key, JSON.stringify({ u: base.u, c: base.c, m: base.m, t: base.t, d: { a: '1' } }), 'KEEPTTL');
    expect((await sessions.get(s.id))!.data).toEqual({ a: 1 });
    // Before each compare-and-set of this session reaches Redis, a rival write changes it (on the same connection,
    // so it runs first): every compare-and-set loses.
    const connection = client as Redis;
    const send = connection.sendCommand.bind(connection);
    let lost = 0;
    connection.sendCommand = ((cmd: Command, ...rest: unknown[]) => {
      const args = cmd.args.map(String);
      if ((cmd.name === 'evalsha' || cmd.name === 'eval') && args[1] === '2' && args[2] === key) {
        lost++;
        // unstamped, as a cjson script writes it (a stamped one would be appended to on the next try), with the
        // rivals' fields as changes appended to it, which the compare-and-set's merge and the Lua merge both apply
        let value = JSON.stringify({ u: base.u, c: base.c, m: base.m, t: base.t, d: { a: '1' } });
        for (let i = 1; i <= lost; i++) value += `\n{"d":{"rival${i}":"${i}"}}`;
        void send(new Command('set', [key, value, 'KEEPTTL']));
      }
      return send(cmd, ...(rest as []));
    }) as typeof connection.sendCommand;
    try {
      const updated = await sessions.update(s.id, { ours: true });
      expect(lost).toBe(3);
      expect(updated.data).toEqual({ a: 1, rival1: 1, rival2: 2, rival3: 3, ours: true });
    } finally {
      connection.sendCommand = send;
    }
    const stored = (await client.get(key))!;
    // the atomic merge (cjson) drops the stamp it read: the next write compares the whole value
    expect(JSON.parse(stored)).not.toHaveProperty('v');
    expect((await sessions.get(s.id))!.data).toEqual({ a: 1, rival1: 1, rival2: 2, rival3: 3, ours: true });
    const pttl = await client.pttl(key);
    expect(pttl).toBeGreaterThan(0);
    expect(pttl).toBeLessThanOrEqual(TTL);
  });
});

describe('store set size check (single server)', () => {
  it('a session over maxSize only once JSON-escaped is refused before any Redis command', async () => {
    const { client, prefix } = await sessionApp('single');
    const store = new RedisSessionStore({ client, prefix, maxSize: 64 * 1024 });
    const id = randomBytes(32).toString('base64url');
    // 20,000 quotes: serialized 40,002 UTF-16 units (each is \"), 80,004 bytes once the session is JSON (\\\")
    const session = { cookie: { maxAge: 60_000 }, text: '"'.repeat(20_000) };
    const { value, calls } = await recordCommandCalls(client, () =>
      store.set(id, session as never).then(
        () => 'written',
        (err: unknown) => (err as Error).constructor.name,
      ),
    );
    expect(value).toBe('SessionTooLargeError');
    expect(calls).toEqual([]);
    // 16,000 quotes (64,004 bytes and the rest of the session) are under it
    await store.set(id, { ...session, text: '"'.repeat(16_000) } as never);
    expect(((await store.get(id)) as unknown as { text: string }).text).toHaveLength(16_000);
  });
});
