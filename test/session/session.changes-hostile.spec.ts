import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import {
  InvalidKeyError,
  RedisReplyError,
  RedisUnavailableError,
  RedisSessionStore,
  SessionNotFoundError,
  SessionService,
  SessionTooLargeError,
} from '../../lib/index.js';
import { RedisConnection } from '../../lib/advanced.js';
import { updateInLua } from '../../lib/session/session.lua-writes.js';
import { recordCommandCalls } from '../support/command-recorder.js';
import { errorOf } from '../support/errors.js';
import { closeToolkitApps, createToolkitApp, type RedisTarget } from '../support/toolkit-app.js';
import { sleep } from '../support/wait.js';
import { startRedisServer } from '../support/redis-server.js';
import { trackForCleanup } from '../support/private-servers.js';
import { ownedBy, useDisposableCluster } from '../support/disposable-cluster.js';

afterEach(closeToolkitApps);

/**
 * Another instance's whole rewrite of `known` (a session `{ a: 'aaaa', ... }`), with its own stamp and exactly as long:
 * `a` changed to 'zzzz'.
 */
function equalLengthRewrite(known: string): string {
  const stamp = /"v":"\/([A-Za-z0-9_-]+)"\}$/.exec(known)!;
  return `${known.slice(0, stamp.index)}"v":"/${'Q'.repeat(stamp[1].length)}"}`.replace(
    '"a":"\\"aaaa\\""',
    '"a":"\\"zzzz\\""',
  );
}

/**
 * An adversarial review of `session.appendUpdates` (lib/session/session-change.lua, session.appends.ts): concurrent
 * instances, instances with and without the option side by side, hostile field names and values, maxSize edges,
 * expiry, Redis failures and clusters. Every test asserts the exact data stored, read by a process that never saw
 * the session (no kept value) as well as by the writers.
 */
const TTL = 3_600_000;
const uniquePrefix = (): string => `rtk-sessh-${randomBytes(4).toString('hex')}:`;

interface AppOptions {
  appendUpdates?: boolean;
  maxSize?: number;
  touchAfter?: number;
  rolling?: boolean;
  commandTimeout?: number;
}

async function sessionApp(target: RedisTarget, prefix: string, options: AppOptions = {}) {
  const { appendUpdates = true, commandTimeout, ...session } = options;
  const app = await createToolkitApp({
    target,
    keyPrefix: prefix,
    session: { cookie: { secret: 's3cret' }, ttl: TTL, appendUpdates, ...session },
    ...(commandTimeout === undefined ? {} : { commandTimeout, maxReconnectDelay: 100 }),
  });
  const client = app.get(RedisConnection).client;
  return { sessions: app.get(SessionService), client };
}

const keyOf = (prefix: string, id: string): string => `${prefix}sess:{${id}}`;
/** The changes appended to a stored value (its line feeds). */
const changesIn = (raw: string): number => raw.split('\n').length - 1;

/** The data of a session as a process that never saw it reads it (a new app on the same prefix, no kept value). */
async function freshData(target: RedisTarget, prefix: string, id: string, appendUpdates = true) {
  const { sessions } = await sessionApp(target, prefix, { appendUpdates });
  return (await sessions.get(id))?.data;
}

describe.each(['single', 'cluster'] as const)('appendUpdates, two instances on %s', (target) => {
  it('concurrent updates of one session from two appending instances lose no field, across the rewrites', async () => {
    const prefix = uniquePrefix();
    const one = await sessionApp(target, prefix);
    const two = await sessionApp(target, prefix);
    const s = await one.sessions.create('ann', { base: 'b', gone1: 1, gone2: 2 });
    expect((await two.sessions.get(s.id))!.data).toEqual({ base: 'b', gone1: 1, gone2: 2 });
    const expected: Record<string, unknown> = { base: 'b' };
    // 40 rounds, each an update from both instances in the same tick: each instance passes its 16th change twice
    for (let i = 0; i < 40; i++) {
      const patchOne: Record<string, unknown> = { [`one${i}`]: i, shared: `one${i}` };
      const patchTwo: Record<string, unknown> = { [`two${i}`]: { n: i } };
      if (i === 5) patchOne.gone1 = undefined;
      if (i === 21) patchTwo.gone2 = undefined;
      await Promise.all([one.sessions.update(s.id, patchOne), two.sessions.update(s.id, patchTwo)]);
      expected[`one${i}`] = i;
      expected[`two${i}`] = { n: i };
      expected.shared = `one${i}`;
    }
    expect(await freshData(target, prefix, s.id)).toEqual(expected);
    expect(await freshData(target, prefix, s.id, false)).toEqual(expected);
    expect((await one.sessions.get(s.id))!.data).toEqual(expected);
    expect((await two.sessions.get(s.id))!.data).toEqual(expected);
  });

  // Two instances updating one session in turn, with no read between (a read brings the kept value up to date), never
  // rewrote it whole: the changes piled up until the value reached maxSize (1 MiB by default), and every read parsed
  // all of them (2,000 such updates: 2,000 changes, 35.9 kB for a 127-byte session). Each rewrite was sent with the
  // value its instance knows, which always missed the other's latest append, and was refused. A rewrite is now made
  // when the value still begins with the known one: the merged session, the other's changes, this change again; a
  // field both set ends as the later update set it.
  it('two instances updating one session in turn still get it rewritten whole every 16 changes', async () => {
    const prefix = uniquePrefix();
    const one = await sessionApp(target, prefix);
    const two = await sessionApp(target, prefix);
    const s = await one.sessions.create('ann', { base: 'b' });
    await two.sessions.get(s.id);
    const expected: Record<string, unknown> = { base: 'b' };
    const counts: number[] = [];
    for (let i = 0; i < 40; i++) {
      await one.sessions.update(s.id, { [`one${i}`]: i, shared: `one${i}` });
      await two.sessions.update(s.id, { [`two${i}`]: i, shared: `two${i}` });
      Object.assign(expected, { [`one${i}`]: i, [`two${i}`]: i, shared: `two${i}` });
      counts.push(changesIn((await one.client.get(keyOf(prefix, s.id)))!));
    }
    // before: 2, 4, ... 80 changes, one per update
    expect(Math.max(...counts)).toBeLessThanOrEqual(17);
    expect(await freshData(target, prefix, s.id)).toEqual(expected);
    expect(await freshData(target, prefix, s.id, false)).toEqual(expected);
    expect((await one.sessions.get(s.id))!.data).toEqual(expected);
  });

  it('after an equal-length whole rewrite by another instance, an update loses nothing stored', async () => {
    const prefix = uniquePrefix();
    const one = await sessionApp(target, prefix);
    const key = keyOf(prefix, (await one.sessions.create('ann', { a: 'aaaa', b: 1 })).id);
    const id = key.slice(key.indexOf('{') + 1, -1);
    expect((await one.sessions.get(id))!.data).toEqual({ a: 'aaaa', b: 1 });
    const known = (await one.client.get(key))!;
    const other = equalLengthRewrite(known);
    expect(other.length).toBe(known.length);
    expect(other).not.toBe(known);
    await one.client.set(key, other, 'KEEPTTL');
    // the documented caveat: the Session returned may miss the other write; what is stored has both
    await one.sessions.update(id, { c: 3 });
    expect(await freshData(target, prefix, id)).toEqual({ a: 'zzzz', b: 1, c: 3 });
    expect((await one.sessions.get(id))!.data).toEqual({ a: 'zzzz', b: 1, c: 3 });
  });

  // After such a rewrite, the process's rewrite at its 16th change was refused (the stamp differs) and
  // session-change.lua appended the change instead, answering the new length as for an append: session.appends.ts
  // took the number for a rewrite done and kept the merged JSON (whose stamp was never stored) as the value, so the
  // process never learnt of the other write until it read the session (every Session its updates returned missed it,
  // each later rewrite was refused). A refused rewrite now answers the value there now.
  it('after an equal-length rewrite by another instance, the next rewrite catches up', async () => {
    const prefix = uniquePrefix();
    const one = await sessionApp(target, prefix);
    const id = (await one.sessions.create('ann', { a: 'aaaa', b: 1 })).id;
    const key = keyOf(prefix, id);
    expect((await one.sessions.get(id))!.data).toEqual({ a: 'aaaa', b: 1 });
    await one.client.set(key, equalLengthRewrite((await one.client.get(key))!), 'KEEPTTL');
    let last: Record<string, unknown> = {};
    for (let i = 0; i < 40; i++) last = (await one.sessions.update(id, { [`n${i}`]: i })).data;
    expect(last.a).toBe('zzzz');
    expect(changesIn((await one.client.get(key))!)).toBeLessThan(16);
  });

  // The same case reached through the public API: express-session's set (RedisSessionStore) of a session whose data
  // changes at the same length (a counter 10 -> 11), as a request does, between two updates of an appending instance.
  it("after express-session's set at the same length, the appending instance's rewrites catch up", async () => {
    const prefix = uniquePrefix();
    const appending = await sessionApp(target, prefix);
    const store = new RedisSessionStore({ client: appending.client, prefix });
    const sid = randomBytes(32).toString('base64url');
    const cookie = { originalMaxAge: 600_000, maxAge: 600_000, httpOnly: true, path: '/' };
    let n = 10;
    let sameLength = false;
    // the stamp's write counter (base 36, per process) can gain a digit between the two sets (z -> 10): then again
    for (let attempt = 0; attempt < 3 && !sameLength; attempt++) {
      await store.set(sid, { cookie, userId: 'sam', n } as never);
      expect((await appending.sessions.get(sid))!.data).toEqual({ userId: 'sam', n });
      const before = await appending.client.strlen(keyOf(prefix, sid));
      n++;
      await store.set(sid, { cookie, userId: 'sam', n } as never);
      sameLength = (await appending.client.strlen(keyOf(prefix, sid))) === before;
    }
    expect(sameLength).toBe(true);
    let last: Record<string, unknown> = {};
    for (let i = 0; i < 20; i++) last = (await appending.sessions.update(sid, { [`x${i}`]: i })).data;
    expect(await store.get(sid)).toMatchObject({ n, x19: 19 }); // nothing stored is lost
    expect(last.n).toBe(n);
  });

  it('an instance without the option reads, updates, regenerates, lists, destroys an appended session', async () => {
    const prefix = uniquePrefix();
    const appending = await sessionApp(target, prefix);
    const plain = await sessionApp(target, prefix, { appendUpdates: false });
    const s = await appending.sessions.create('mix', { a: 1, b: 'two' });
    const key = keyOf(prefix, s.id);
    await appending.sessions.update(s.id, { c: [3] });
    await appending.sessions.update(s.id, { a: undefined, d: { e: null } });
    expect(changesIn((await plain.client.get(key))!)).toBe(2);
    expect((await plain.sessions.get(s.id))!.data).toEqual({ b: 'two', c: [3], d: { e: null } });
    expect(await plain.sessions.exists(s.id)).toBe(true);
    expect((await plain.sessions.listForUser('mix')).map((x) => [x.id, x.data])).toEqual([
      [s.id, { b: 'two', c: [3], d: { e: null } }],
    ]);
    // plain's compare-and-set writes the merged session whole
    expect((await plain.sessions.update(s.id, { f: 'plain' })).data).toEqual({
      b: 'two',
      c: [3],
      d: { e: null },
      f: 'plain',
    });
    expect(changesIn((await plain.client.get(key))!)).toBe(0);
    // appended again behind plain's value, then plain regenerates it: the new id has every change
    await appending.sessions.update(s.id, { g: 'appended' });
    expect(changesIn((await plain.client.get(key))!)).toBe(1);
    const moved = await plain.sessions.regenerate(s.id);
    const all = { b: 'two', c: [3], d: { e: null }, f: 'plain', g: 'appended' };
    expect(moved.data).toEqual(all);
    expect(await plain.client.exists(key)).toBe(0);
    await expect(appending.sessions.update(s.id, { late: 1 })).rejects.toBeInstanceOf(SessionNotFoundError);
    expect(await plain.client.exists(key)).toBe(0);
    // the moved session appended to, then destroyed by plain: its owner's index emptied
    await appending.sessions.update(moved.id, { h: 1 });
    expect(changesIn((await plain.client.get(keyOf(prefix, moved.id)))!)).toBe(1);
    expect(await plain.sessions.destroy(moved.id)).toBe(true);
    expect(await plain.client.exists(keyOf(prefix, moved.id))).toBe(0);
    expect(await plain.client.zcard(`${prefix}sess:user:{mix}`)).toBe(0);
    expect(await plain.sessions.listForUser('mix')).toEqual([]);
  });

  it('RedisSessionStore (no appendUpdates) gets, sets, touches and destroys an appended session', async () => {
    const prefix = uniquePrefix();
    const appending = await sessionApp(target, prefix);
    const store = new RedisSessionStore({ client: appending.client, prefix });
    const SID = randomBytes(32).toString('base64url');
    const cookie = { originalMaxAge: 600_000, maxAge: 600_000, httpOnly: true, path: '/' };
    await store.set(SID, { cookie, userId: 'sam', cart: [1] } as never);
    const key = keyOf(prefix, SID);
    await appending.sessions.update(SID, { cart: [1, 2], note: 'n' });
    await appending.sessions.update(SID, { note: undefined, more: true });
    expect(changesIn((await appending.client.get(key))!)).toBe(2);
    expect(await store.get(SID)).toEqual({ cookie, userId: 'sam', cart: [1, 2], more: true });
    await store.touch(SID, { cookie: { ...cookie, originalMaxAge: 300_000, maxAge: 300_000 } } as never);
    expect(await appending.client.pttl(key)).toBeLessThanOrEqual(300_000);
    expect((await appending.sessions.get(SID))!.data).toEqual({ userId: 'sam', cart: [1, 2], more: true });
    await appending.sessions.update(SID, { after: 'touch' });
    await appending.sessions.update(SID, { after2: 'touch' });
    expect(await store.get(SID)).toMatchObject({ userId: 'sam', cart: [1, 2], more: true, after2: 'touch' });
    // express-session's set replaces the data whole: what it was given, nothing appended survives
    await store.set(SID, { cookie, userId: 'sam', only: 'this' } as never);
    expect(await store.get(SID)).toEqual({ cookie, userId: 'sam', only: 'this' });
    await appending.sessions.update(SID, { x: 1 });
    await store.destroy(SID);
    expect(await appending.client.exists(key)).toBe(0);
    await expect(appending.sessions.update(SID, { y: 1 })).rejects.toBeInstanceOf(SessionNotFoundError);
    expect(await appending.client.exists(key)).toBe(0);
    expect(await appending.client.zcard(`${prefix}sess:user:{sam}`)).toBe(0);
  });
});

/** Field names and values chosen to break the appended changes' text, the envelope or the Lua scripts' cjson. */
const HOSTILE: Record<string, unknown> = {
  'a\nb': 'line\nfeed',
  '"': '"quoted"',
  '\\': '\\back\\slash\\',
  constructor: { prototype: { polluted: true } },
  toString: 'not a function',
  hasOwnProperty: 1,
  '': 'empty name',
  ' ': 'space name',
  'é日本🎉': '🎉 é 日本 \u2028 \u2029',
  '\u0000nul': '\u0000',
  '}\n{"d":{"evil":"1"}}': '\n{"d":{"evil":"\\"1\\""},"x":["base"]}',
  '\n{"d"': { nested: { deeper: ['\n{"d":{}}', null, true, 1.5, 0] } },
  '"v":"/': '"v":"/tokenlike"}',
  // the names of the change's and the envelope's own fields
  d: { d: 'd' },
  x: ['x'],
  v: '/v',
  u: 'u',
  c: 1,
  m: 2,
  t: 3,
  k: '{"cookie":1}',
  nullish: null,
  zero: 0,
  falsy: false,
  emptyArray: [],
  emptyObject: {},
  long: 'L'.repeat(10_000),
  ['k'.repeat(5_000)]: 'a very long field name',
};

describe.each(['single', 'cluster'] as const)('appendUpdates, hostile fields on %s', (target) => {
  it('hostile names and values round-trip through appends, rewrites, plain instances, Lua scripts', async () => {
    const prefix = uniquePrefix();
    const appending = await sessionApp(target, prefix);
    const plain = await sessionApp(target, prefix, { appendUpdates: false });
    const other = await appending.sessions.create('eve', { base: 'kept' });
    // large enough that the hostile patch is appended (a change past half the value is written whole)
    const pad = 'p'.repeat(40_000);
    const s = await appending.sessions.create('eve', { base: 'kept', pad });
    const key = keyOf(prefix, s.id);
    const protoBefore = Object.getOwnPropertyNames(Object.prototype).sort();
    // the patch appended: `__proto__` given as an own field of the patch
    const patch = { ...HOSTILE };
    Object.defineProperty(patch, '__proto__', {
      value: { p: 1 },
      enumerable: true,
      configurable: true,
      writable: true,
    });
    const expected: Record<string, unknown> = { base: 'kept', pad, ...patch };
    Object.defineProperty(expected, '__proto__', {
      value: { p: 1 },
      enumerable: true,
      configurable: true,
      writable: true,
    });
    const written = await appending.sessions.update(s.id, patch);
    expect(changesIn((await appending.client.get(key))!)).toBe(1);
    expect(written.data).toEqual(expected);
    expect(Object.getPrototypeOf(written.data)).toBe(Object.prototype);
    expect(Object.hasOwn(written.data, '__proto__')).toBe(true);
    const fresh = (await freshData(target, prefix, s.id))!;
    expect(fresh).toEqual(expected);
    expect(Object.hasOwn(fresh, '__proto__')).toBe(true);
    expect((await plain.sessions.get(s.id))!.data).toEqual(expected);
    // deleting fields that do not exist, and hostile ones, appended
    const deletes = { missing: undefined, 'a\nb': undefined, '"': undefined, __proto__: undefined } as Record<
      string,
      unknown
    >;
    Object.defineProperty(deletes, '__proto__', { value: undefined, enumerable: true });
    for (const name of ['a\nb', '"', '__proto__']) delete expected[name];
    expect((await appending.sessions.update(s.id, deletes)).data).toEqual(expected);
    expect(changesIn((await appending.client.get(key))!)).toBe(2);
    expect(await freshData(target, prefix, s.id)).toEqual(expected);
    // 16 more changes: the session rewritten whole, then appended to again
    for (let i = 0; i < 16; i++) {
      const value = `\n{"d":{"n${i}":"x"}}`;
      await appending.sessions.update(s.id, { [`n${i}\n`]: value });
      expected[`n${i}\n`] = value;
    }
    expect(changesIn((await appending.client.get(key))!)).toBeLessThan(16);
    expect(await freshData(target, prefix, s.id)).toEqual(expected);
    // the Lua scripts that decode the envelope with cjson: express-session's touch keeps the changes
    await appending.sessions.update(s.id, { touched: 'before' });
    expected.touched = 'before';
    const store = new RedisSessionStore({ client: appending.client, prefix });
    await store.touch(s.id, { cookie: { originalMaxAge: 600_000, maxAge: 600_000 } } as never);
    expect(await freshData(target, prefix, s.id)).toEqual(expected);
    // the compare-and-set of a plain instance on the cjson-written envelope with changes behind
    expect((await plain.sessions.update(s.id, { plain: '\n' })).data).toEqual({ ...expected, plain: '\n' });
    expected.plain = '\n';
    expect(await freshData(target, prefix, s.id)).toEqual(expected);
    expect((await appending.sessions.get(s.id))!.data).toEqual(expected);
    // nothing leaked: the other session and Object.prototype as they were
    expect((await appending.sessions.get(other.id))!.data).toEqual({ base: 'kept' });
    expect(Object.getOwnPropertyNames(Object.prototype).sort()).toEqual(protoBefore);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    expect(({} as Record<string, unknown>).p).toBeUndefined();
    // destroy's cjson finds the owner behind hostile changes
    expect(await appending.sessions.destroy(s.id)).toBe(true);
    expect((await appending.sessions.listForUser('eve')).map((x) => x.id)).toEqual([other.id]);
  });

  it('a lone surrogate in a name or value is refused with InvalidKeyError before anything is sent', async () => {
    const prefix = uniquePrefix();
    const { sessions, client } = await sessionApp(target, prefix);
    const s = await sessions.create('eve', { a: 1 });
    await sessions.update(s.id, { b: 2 });
    const key = keyOf(prefix, s.id);
    const before = (await client.get(key))!;
    for (const patch of [
      { '\ud800': 1 },
      { ok: 'x\udc00y' },
      { ok: { deep: ['\udbff'] } },
      { '\udfff': undefined },
    ] as Record<string, unknown>[]) {
      const { value: err, calls } = await recordCommandCalls(client, () => errorOf(() => sessions.update(s.id, patch)));
      expect(err).toBeInstanceOf(InvalidKeyError);
      expect(calls).toEqual([]);
    }
    expect(await client.get(key)).toBe(before);
    // well-formed pairs are fine
    expect((await sessions.update(s.id, { '\ud83c\udf89': '\ud83d\ude00' })).data).toEqual({ a: 1, b: 2, '🎉': '😀' });
    expect(await freshData(target, prefix, s.id)).toEqual({ a: 1, b: 2, '🎉': '😀' });
  });

  it('undefined deletes, null is stored, an empty patch changes nothing but is harmless', async () => {
    const prefix = uniquePrefix();
    const { sessions, client } = await sessionApp(target, prefix);
    const s = await sessions.create('eve', { a: 1, b: 2 });
    expect((await sessions.update(s.id, { a: undefined, b: null, c: undefined })).data).toEqual({ b: null });
    expect((await sessions.update(s.id, {})).data).toEqual({ b: null });
    expect(await freshData(target, prefix, s.id)).toEqual({ b: null });
    const raw = (await client.get(keyOf(prefix, s.id)))!;
    for (const line of raw.split('\n')) expect(() => JSON.parse(line) as unknown).not.toThrow();
  });
});

/** The change session-change.lua appends for one string field (the default serializer: JSON). */
const changeFor = (name: string, value: string): string =>
  `\n{"d":{${JSON.stringify(name)}:${JSON.stringify(JSON.stringify(value))}}}`;

describe.each(['single', 'cluster'] as const)('appendUpdates and maxSize on %s', (target) => {
  const maxSize = 4_096;

  it('a change appended to exactly maxSize is kept; one more byte rewrites the merged session whole', async () => {
    const prefix = uniquePrefix();
    const one = await sessionApp(target, prefix, { maxSize });
    const s = await one.sessions.create('max', { a: 'a'.repeat(2_900) });
    const key = keyOf(prefix, s.id);
    const length = await one.client.strlen(key);
    // a change of the bytes left: appended, the value exactly maxSize
    const fill = 'b'.repeat(maxSize - length - changeFor('b', '').length);
    const pttl = await one.client.pttl(key);
    expect((await one.sessions.update(s.id, { b: fill })).data).toEqual({ a: 'a'.repeat(2_900), b: fill });
    expect(await one.client.strlen(key)).toBe(maxSize);
    expect(changesIn((await one.client.get(key))!)).toBe(1);
    // another instance, which knows the value before that change, appends 1 byte past it: taken back in its script,
    // then merged into the value there now and written whole
    const two = await sessionApp(target, prefix, { maxSize });
    expect((await two.sessions.get(s.id))!.data).toEqual({ a: 'a'.repeat(2_900), b: fill });
    expect((await two.sessions.update(s.id, { c: 1 })).data).toEqual({ a: 'a'.repeat(2_900), b: fill, c: 1 });
    const rewritten = (await one.client.get(key))!;
    expect(changesIn(rewritten)).toBe(0);
    expect(Buffer.byteLength(rewritten)).toBeLessThanOrEqual(maxSize);
    expect(await one.client.pttl(key)).toBeGreaterThan(pttl - 60_000);
    // two's session is exactly maxSize now (a, b and c): one more field is too large, and nothing changes
    expect(await one.client.strlen(key)).toBe(maxSize);
    const before = (await one.client.get(key))!;
    expect(await errorOf(() => one.sessions.update(s.id, { d: 'd' }))).toBeInstanceOf(SessionTooLargeError);
    expect(await errorOf(() => two.sessions.update(s.id, { d: 'd' }))).toBeInstanceOf(SessionTooLargeError);
    expect(await one.client.get(key)).toBe(before);
    // one, which knows the value before c, removes b: written whole, c kept
    expect((await one.sessions.update(s.id, { b: undefined, d: 'd' })).data).toEqual({
      a: 'a'.repeat(2_900),
      c: 1,
      d: 'd',
    });
    expect(await freshData(target, prefix, s.id)).toEqual({ a: 'a'.repeat(2_900), c: 1, d: 'd' });
  });

  // The size check ran on the merge into the value this process last saw, before anything was sent: when another
  // instance had since made the session smaller, an update that fits the session as stored was refused (with and
  // without appendUpdates). It is made again from the value there now before SessionTooLargeError.
  it.each([true, false])(
    'an update that fits the session as stored is not refused for the larger value last seen (appendUpdates %s)',
    async (appendUpdates) => {
      const prefix = uniquePrefix();
      const one = await sessionApp(target, prefix, { maxSize, appendUpdates });
      const two = await sessionApp(target, prefix, { maxSize, appendUpdates });
      const s = await one.sessions.create('max', { big: 'b'.repeat(3_000) });
      expect((await two.sessions.get(s.id))!.data).toEqual({ big: 'b'.repeat(3_000) });
      await one.sessions.update(s.id, { big: undefined }); // the session is ~100 bytes now
      // two merges into the 3 kB value it saw: 3 kB + 1.5 kB is past maxSize, 0.1 + 1.5 kB is not
      expect((await two.sessions.update(s.id, { c: 'c'.repeat(1_500) })).data).toEqual({ c: 'c'.repeat(1_500) });
    },
  );

  it('a merged session of exactly maxSize is written; one byte more: SessionTooLargeError, no change', async () => {
    const prefix = uniquePrefix();
    const { sessions, client } = await sessionApp(target, prefix, { maxSize });
    const s = await sessions.create('max', { a: 'a'.repeat(2_000), b: '' });
    const key = keyOf(prefix, s.id);
    const length = await client.strlen(key);
    const fits = 'b'.repeat(maxSize - length); // b's value '\"\"' in the stored JSON becomes '\"bbb…\"'
    const written = await sessions.update(s.id, { b: fits });
    expect(written.data).toEqual({ a: 'a'.repeat(2_000), b: fits });
    // the change was past half the value: the merged session written whole, maxSize bytes
    expect(changesIn((await client.get(key))!)).toBe(0);
    expect(await client.strlen(key)).toBe(maxSize);
    const before = (await client.get(key))!;
    const expiry = await client.pexpiretime(key);
    for (const patch of [{ b: `${fits}b` }, { c: 1 }, { huge: 'h'.repeat(maxSize) }]) {
      expect(await errorOf(() => sessions.update(s.id, patch))).toBeInstanceOf(SessionTooLargeError);
      expect(await client.get(key)).toBe(before);
      expect(await client.pexpiretime(key)).toBe(expiry);
    }
    // a single patch over maxSize is refused before any command
    const { value: err, calls } = await recordCommandCalls(client, () =>
      errorOf(() => sessions.update(s.id, { huge: 'h'.repeat(maxSize + 1) })),
    );
    expect(err).toBeInstanceOf(SessionTooLargeError);
    expect(calls).toEqual([]);
    // smaller again: fine, read back exactly
    expect((await sessions.update(s.id, { b: 'small' })).data).toEqual({ a: 'a'.repeat(2_000), b: 'small' });
    expect(await freshData(target, prefix, s.id)).toEqual({ a: 'a'.repeat(2_000), b: 'small' });
  });

  it('two updates of one tick that fit alone but not together: the first is written, the second refused', async () => {
    const prefix = uniquePrefix();
    const { sessions, client } = await sessionApp(target, prefix, { maxSize });
    const s = await sessions.create('max', { a: 'a'.repeat(1_500) });
    const first = 'x'.repeat(1_200);
    const second = 'y'.repeat(1_500);
    const [one, two] = await Promise.allSettled([
      sessions.update(s.id, { x: first }),
      sessions.update(s.id, { y: second }),
    ]);
    expect(one).toMatchObject({ status: 'fulfilled', value: { data: { a: 'a'.repeat(1_500), x: first } } });
    expect(two.status).toBe('rejected');
    expect((two as PromiseRejectedResult).reason).toBeInstanceOf(SessionTooLargeError);
    expect(await freshData(target, prefix, s.id)).toEqual({ a: 'a'.repeat(1_500), x: first });
    expect(Buffer.byteLength((await client.get(keyOf(prefix, s.id)))!)).toBeLessThanOrEqual(maxSize);
  });
});

describe.each(['single', 'cluster'] as const)('appendUpdates and expiry on %s', (target) => {
  it('an update after the session expired, at an append or at a rewrite, brings nothing back', async () => {
    const prefix = uniquePrefix();
    const { sessions, client } = await sessionApp(target, prefix);
    const appended = await sessions.create('exp', { a: 1 }, { ttl: 300 });
    const rewriting = await sessions.create('exp', { a: 1, pad: 'p'.repeat(2_000) }, { ttl: 300 });
    // rewriting: 15 changes appended, its next update is a rewrite
    for (let i = 0; i < 15; i++) await sessions.update(rewriting.id, { [`n${i}`]: i });
    expect(changesIn((await client.get(keyOf(prefix, rewriting.id)))!)).toBe(15);
    await sessions.get(appended.id);
    await sleep(450);
    for (const s of [appended, rewriting]) {
      expect(await errorOf(() => sessions.update(s.id, { late: true }))).toBeInstanceOf(SessionNotFoundError);
      expect(await client.exists(keyOf(prefix, s.id))).toBe(0);
      expect(await client.pttl(keyOf(prefix, s.id))).toBe(-2);
    }
  });

  it('updates and a destroy of one session in one tick: the session is gone after, in any order', async () => {
    const prefix = uniquePrefix();
    const { sessions, client } = await sessionApp(target, prefix);
    for (let round = 0; round < 5; round++) {
      const s = await sessions.create('race', { a: 1 });
      await sessions.update(s.id, { b: 1 });
      const outcomes = await Promise.allSettled([
        sessions.update(s.id, { c: 1 }),
        sessions.destroy(s.id),
        sessions.update(s.id, { d: 1 }),
      ]);
      expect(outcomes[1]).toEqual({ status: 'fulfilled', value: true });
      for (const o of [outcomes[0], outcomes[2]])
        if (o.status === 'rejected') expect(o.reason).toBeInstanceOf(SessionNotFoundError);
      expect(await client.exists(keyOf(prefix, s.id))).toBe(0);
      expect(await sessions.get(s.id)).toBeNull();
    }
  });

  it('an update after another instance destroyed the session brings nothing back, the tombstone stays', async () => {
    const prefix = uniquePrefix();
    const one = await sessionApp(target, prefix);
    const two = await sessionApp(target, prefix, { appendUpdates: false });
    const s = await one.sessions.create('gone', { a: 1 });
    const t = await one.sessions.create('gone', { a: 1, pad: 'p'.repeat(2_000) });
    for (let i = 0; i < 15; i++) await one.sessions.update(t.id, { [`n${i}`]: i });
    await one.sessions.update(s.id, { b: 2 });
    expect(await two.sessions.destroy(s.id)).toBe(true);
    expect(await two.sessions.destroy(t.id)).toBe(true);
    for (const id of [s.id, t.id]) {
      const outcomes = await Promise.allSettled([
        one.sessions.update(id, { late: 1 }),
        one.sessions.update(id, { later: 2 }),
      ]);
      for (const o of outcomes) expect((o as PromiseRejectedResult).reason).toBeInstanceOf(SessionNotFoundError);
      expect(await one.client.exists(keyOf(prefix, id))).toBe(0);
      expect(await one.client.exists(`${keyOf(prefix, id)}:gone`)).toBe(1);
      expect(await one.sessions.get(id)).toBeNull();
    }
    expect(await one.sessions.listForUser('gone')).toEqual([]);
  });

  it('with touchAfter, an update returns the expiry Redis has, extends it only once past touchAfter', async () => {
    const prefix = uniquePrefix();
    const { sessions, client } = await sessionApp(target, prefix, { touchAfter: 500 });
    const s = await sessions.create('ttl', { a: 1, pad: 'p'.repeat(1_000) });
    const key = keyOf(prefix, s.id);
    const first = await sessions.update(s.id, { b: 1 });
    expect(first.expiresAt).toBe(await client.pexpiretime(key));
    const second = await sessions.update(s.id, { c: 1 });
    // within touchAfter of the first update's extension: not extended again
    expect(second.expiresAt).toBe(first.expiresAt);
    expect(await client.pexpiretime(key)).toBe(first.expiresAt);
    await sleep(600);
    const third = await sessions.update(s.id, { d: 1 });
    expect(third.expiresAt).toBeGreaterThan(first.expiresAt);
    expect(await client.pexpiretime(key)).toBe(third.expiresAt);
    // across the rewrite (16 changes): the expiry Redis has is the one returned
    let last: { expiresAt: number } = third;
    for (let i = 0; i < 16; i++) last = await sessions.update(s.id, { [`n${i}`]: i });
    expect(changesIn((await client.get(key))!)).toBeLessThan(16);
    expect(await client.pexpiretime(key)).toBe(last.expiresAt);
    expect(await client.pttl(key)).toBeGreaterThan(TTL - 2_000);
  });

  it('without rolling, updates and their rewrite keep the expiry of the session', async () => {
    const prefix = uniquePrefix();
    const { sessions, client } = await sessionApp(target, prefix, { rolling: false });
    const s = await sessions.create('ttl', { a: 1 });
    const key = keyOf(prefix, s.id);
    const expiry = await client.pexpiretime(key);
    await sleep(20);
    for (let i = 0; i < 20; i++) {
      const updated = await sessions.update(s.id, { [`n${i}`]: i });
      expect(updated.expiresAt).toBe(expiry);
    }
    expect(await client.pexpiretime(key)).toBe(expiry);
  });

  it('a session without an idle ttl (store disableTTL) keeps no expiry through appends, rewrite', async () => {
    const prefix = uniquePrefix();
    const { sessions, client } = await sessionApp(target, prefix);
    const store = new RedisSessionStore({ client, prefix, disableTTL: true });
    const sid = randomBytes(32).toString('base64url');
    await store.set(sid, { cookie: { originalMaxAge: 60_000 }, userId: 'nottl' } as never);
    const key = keyOf(prefix, sid);
    expect(await client.pttl(key)).toBe(-1);
    for (let i = 0; i < 20; i++) await sessions.update(sid, { [`n${i}`]: i });
    expect(await client.pttl(key)).toBe(-1);
    const data = (await sessions.get(sid))!.data;
    expect(Object.keys(data)).toHaveLength(21);
    expect(await client.pttl(key)).toBe(-1);
  });
});

describe.each(['single', 'cluster'] as const)('appendUpdates and a key of another type on %s', (target) => {
  it('WRONGTYPE fails only its own update of the tick, at an append and at a rewrite', async () => {
    const prefix = uniquePrefix();
    const { sessions, client } = await sessionApp(target, prefix);
    const created = await Promise.all(
      Array.from({ length: 6 }, (_, i) => sessions.create('wt', { i, pad: 'p'.repeat(2_000) })),
    );
    // sessions 0 and 1 will be lists; 1 (and 4) are at their 16th change: a rewrite
    for (const at of [1, 4]) for (let n = 0; n < 15; n++) await sessions.update(created[at].id, { [`n${n}`]: n });
    for (const s of created) await sessions.get(s.id);
    for (const at of [0, 1]) {
      await client.del(keyOf(prefix, created[at].id));
      await client.rpush(keyOf(prefix, created[at].id), 'not a session');
    }
    const outcomes = await Promise.allSettled(created.map((s) => sessions.update(s.id, { tick: s.id })));
    for (const [i, o] of outcomes.entries()) {
      if (i < 2) {
        expect(o.status).toBe('rejected');
        const reason = (o as PromiseRejectedResult).reason as RedisReplyError;
        expect(reason).toBeInstanceOf(RedisReplyError);
        expect(reason.message).toMatch(/WRONGTYPE/);
        expect(await client.lrange(keyOf(prefix, created[i].id), 0, -1)).toEqual(['not a session']);
      } else {
        expect(o.status).toBe('fulfilled');
        expect((o as PromiseFulfilledResult<{ data: unknown }>).value.data).toMatchObject({ i, tick: created[i].id });
      }
    }
    expect(changesIn((await client.get(keyOf(prefix, created[4].id)))!)).toBe(0);
    expect(await freshData(target, prefix, created[4].id)).toEqual({
      i: 4,
      pad: 'p'.repeat(2_000),
      tick: created[4].id,
      ...Object.fromEntries(Array.from({ length: 15 }, (_, n) => [`n${n}`, n])),
    });
  });
});

describe('appendUpdates when Redis runs out of memory (maxmemory, noeviction)', () => {
  it('an update refused for memory fails with RedisReplyError (OOM) and leaves every session as it was', async () => {
    const server = trackForCleanup(await startRedisServer({ args: ['--maxmemory-policy', 'noeviction'] }));
    const prefix = uniquePrefix();
    const { sessions, client } = await sessionApp({ url: server.url }, prefix);
    const created = await Promise.all(
      Array.from({ length: 4 }, (_, i) => sessions.create('oom', { i, pad: 'p'.repeat(2_000) })),
    );
    // session 3 at its 16th change: a rewrite
    for (let n = 0; n < 15; n++) await sessions.update(created[3].id, { [`n${n}`]: n });
    for (const s of created) await sessions.get(s.id);
    const values = await Promise.all(created.map((s) => client.get(keyOf(prefix, s.id))));
    // maxmemory 1mb, then filled until a write is refused
    await client.config('SET', 'maxmemory', '1mb');
    let filler = 0;
    for (;;) {
      const err = await errorOf(() => client.set(`${prefix}fill:${filler++}`, 'f'.repeat(32_768)));
      if (err !== undefined) {
        expect(String(err)).toMatch(/OOM/);
        break;
      }
    }
    const outcomes = await Promise.allSettled(created.map((s) => sessions.update(s.id, { more: 'x'.repeat(100) })));
    for (const o of outcomes) {
      expect(o.status).toBe('rejected');
      const reason = (o as PromiseRejectedResult).reason as RedisReplyError;
      expect(reason).toBeInstanceOf(RedisReplyError);
      expect(reason.message).toMatch(/OOM/);
    }
    expect(await Promise.all(created.map((s) => client.get(keyOf(prefix, s.id))))).toEqual(values);
    // memory back: the updates go through, exactly
    await client.config('SET', 'maxmemory', '0');
    const again = await Promise.all(created.map((s) => sessions.update(s.id, { more: 'y' })));
    for (const [i, s] of again.entries()) expect(s.data).toMatchObject({ i, more: 'y' });
    expect(await freshData({ url: server.url }, prefix, created[3].id)).toEqual({
      i: 3,
      pad: 'p'.repeat(2_000),
      more: 'y',
      ...Object.fromEntries(Array.from({ length: 15 }, (_, n) => [`n${n}`, n])),
    });
  });
});

describe('appendUpdates when Redis forgets its scripts or its data', () => {
  it('SCRIPT FLUSH between updates: the next tick of updates loads the script again and loses none', async () => {
    const server = trackForCleanup(await startRedisServer());
    const prefix = uniquePrefix();
    const { sessions, client } = await sessionApp({ url: server.url }, prefix);
    const created = await Promise.all(Array.from({ length: 5 }, (_, i) => sessions.create('flush', { i })));
    await Promise.all(created.map((s) => sessions.update(s.id, { a: 1 })));
    await client.script('FLUSH');
    await Promise.all(created.map((s) => sessions.update(s.id, { b: 2 })));
    await client.script('FLUSH');
    await sessions.update(created[0].id, { c: 3 });
    for (const [i, s] of created.entries())
      expect(await freshData({ url: server.url }, prefix, s.id)).toEqual(
        i === 0 ? { i, a: 1, b: 2, c: 3 } : { i, a: 1, b: 2 },
      );
  });

  it('Redis restarted with its data (AOF): updates go on; restarted empty: an update brings nothing back', async () => {
    const server = trackForCleanup(
      await startRedisServer({ args: ['--appendonly', 'yes', '--appendfsync', 'always'] }),
    );
    const prefix = uniquePrefix();
    const { sessions, client } = await sessionApp({ url: server.url }, prefix);
    const s = await sessions.create('restart', { a: 1, pad: 'p'.repeat(1_000) });
    await sessions.update(s.id, { b: 2 });
    await server.stop();
    await server.restart();
    let updated: Record<string, unknown> | undefined;
    for (let i = 0; i < 50 && updated === undefined; i++) {
      updated = await sessions.update(s.id, { c: 3 }).then(
        (x) => x.data,
        () => undefined,
      );
      if (updated === undefined) await sleep(100);
    }
    expect(updated).toEqual({ a: 1, pad: 'p'.repeat(1_000), b: 2, c: 3 });
    expect(await freshData({ url: server.url }, prefix, s.id)).toEqual({ a: 1, pad: 'p'.repeat(1_000), b: 2, c: 3 });
    // the data lost (FLUSHALL, as a restart without persistence): this process still knows the value
    await client.flushall();
    expect(await errorOf(() => sessions.update(s.id, { d: 4 }))).toBeInstanceOf(SessionNotFoundError);
    expect(await client.exists(keyOf(prefix, s.id))).toBe(0);
  });
});

describe('appendUpdates on a cluster', () => {
  it('the updates of one tick to sessions on every master each get their own change, rewrites included', async () => {
    const prefix = uniquePrefix();
    const { sessions } = await sessionApp('cluster', prefix);
    const created = await Promise.all(
      Array.from({ length: 24 }, (_, i) => sessions.create(`c${i % 4}`, { i, pad: 'p'.repeat(500) })),
    );
    // every third session at its 16th change
    for (const [i, s] of created.entries())
      if (i % 3 === 0) for (let n = 0; n < 15; n++) await sessions.update(s.id, { [`n${n}`]: n });
    const expected = created.map((_, i) => ({
      i,
      pad: 'p'.repeat(500),
      ...(i % 3 === 0 ? Object.fromEntries(Array.from({ length: 15 }, (_, n) => [`n${n}`, n])) : {}),
      tick: `t${i}`,
    }));
    const updated = await Promise.all(created.map((s, i) => sessions.update(s.id, { tick: `t${i}` })));
    expect(updated.map((s) => s.data)).toEqual(expected);
    const reader = await sessionApp('cluster', prefix);
    expect((await Promise.all(created.map((s) => reader.sessions.get(s.id)))).map((s) => s?.data)).toEqual(expected);
  });

  describe('a master paused', () => {
    const cluster = useDisposableCluster();

    it('fails only the updates of its sessions (RedisUnavailableError); the others are written exactly', async () => {
      const prefix = uniquePrefix();
      const target = { cluster: cluster().startupNodes };
      const { sessions } = await sessionApp(target, prefix, { commandTimeout: 1_000 });
      const victim = cluster().masters[1];
      const created = await Promise.all(Array.from({ length: 18 }, (_, i) => sessions.create(`p${i}`, { i })));
      for (const s of created) await sessions.update(s.id, { before: true });
      const onVictim = await ownedBy(
        victim,
        created.map((s) => keyOf(prefix, s.id)),
      );
      expect(onVictim.filter(Boolean).length).toBeGreaterThan(0);
      expect(onVictim.filter(Boolean).length).toBeLessThan(created.length);
      victim.pause();
      let outcomes: PromiseSettledResult<{ data: unknown }>[];
      try {
        outcomes = await Promise.allSettled(created.map((s, i) => sessions.update(s.id, { during: i })));
      } finally {
        victim.resume();
      }
      for (const [i, o] of outcomes.entries()) {
        if (onVictim[i]) {
          expect(o.status).toBe('rejected');
          expect((o as PromiseRejectedResult).reason).toBeInstanceOf(RedisUnavailableError);
        } else expect(o).toMatchObject({ status: 'fulfilled', value: { data: { i, before: true, during: i } } });
      }
      // after the resume: every session readable, the failed ones with their change or without it, nothing else
      const reader = await sessionApp(target, prefix, { commandTimeout: 5_000 });
      for (const [i, s] of created.entries()) {
        const data = (await reader.sessions.get(s.id))?.data;
        if (onVictim[i])
          expect([
            { i, before: true },
            { i, before: true, during: i },
          ]).toContainEqual(data);
        else expect(data).toEqual({ i, before: true, during: i });
      }
    }, 30_000);
  });
});

describe.each(['single', 'cluster'] as const)('appendUpdates, more shapes of stored values on %s', (target) => {
  it('the atomic Lua fallback (cjson) merges the hostile changes appended to a session exactly', async () => {
    const prefix = uniquePrefix();
    const { sessions, client } = await sessionApp(target, prefix);
    const pad = 'p'.repeat(40_000);
    const s = await sessions.create('lua', { base: 'kept', pad, gone: 1 });
    const key = keyOf(prefix, s.id);
    await sessions.update(s.id, HOSTILE);
    await sessions.update(s.id, { gone: undefined, '\\': undefined, '\n{"d"': 'replaced' });
    expect(changesIn((await client.get(key))!)).toBe(2);
    // what SessionRecords falls back to after three lost compare-and-sets in a row
    const merged = await updateInLua(client, key, 1_048_576, true, [['z', '"z\\n"']], ['base']);
    expect(merged).not.toBeNull();
    const expected: Record<string, unknown> = { pad, ...HOSTILE, '\n{"d"': 'replaced', z: 'z\n' };
    delete expected['\\'];
    expect(changesIn((await client.get(key))!)).toBe(0);
    expect(await freshData(target, prefix, s.id)).toEqual(expected);
    // and appended to again after it (the value has no stamp now: a compare-and-set first, then appends)
    await sessions.update(s.id, { after: 1 });
    await sessions.update(s.id, { after: 2 });
    expect(await freshData(target, prefix, s.id)).toEqual({ ...expected, after: 2 });
  });

  it('a session stamped at its head (versions before 2026-12-05) is appended to and rewritten', async () => {
    const prefix = uniquePrefix();
    const { sessions, client } = await sessionApp(target, prefix);
    const s = await sessions.create('old', { a: 1 });
    const key = keyOf(prefix, s.id);
    const now = Date.now();
    const pad = `"\\"${'p'.repeat(2_000)}\\""`;
    const legacy = `{"v":"/legacy01","u":"old","c":${now},"m":${now + TTL},"t":${TTL},"d":{"a":"1","pad":${pad}}}`;
    await client.set(key, legacy, 'PX', TTL);
    const expected: Record<string, unknown> = { a: 1, pad: 'p'.repeat(2_000) };
    for (let i = 0; i < 20; i++) {
      expect((await sessions.update(s.id, { [`n${i}`]: i })).data).toEqual({ ...expected, [`n${i}`]: i });
      expected[`n${i}`] = i;
      if (i === 3) expect((await client.get(key))!.startsWith(`${legacy}\n`)).toBe(true);
    }
    const stored = (await client.get(key))!;
    expect(stored.startsWith('{"v":"/legacy01"')).toBe(false);
    expect(changesIn(stored)).toBeLessThan(16);
    expect(await freshData(target, prefix, s.id)).toEqual(expected);
  });

  it('updates of one session in one tick from one process: merged in call order, set/delete', async () => {
    const prefix = uniquePrefix();
    const { sessions } = await sessionApp(target, prefix);
    const s = await sessions.create('tick', { keep: 1, x: 'old', pad: 'p'.repeat(2_000) });
    const expected: Record<string, unknown> = { keep: 1, pad: 'p'.repeat(2_000) };
    for (let round = 0; round < 5; round++) {
      const patches: Record<string, unknown>[] = [
        { x: undefined },
        { x: `r${round}` },
        { y: round },
        { y: undefined },
        ...Array.from({ length: 40 }, (_, i) => ({ [`f${i}`]: round * 100 + i })),
      ];
      await Promise.all(patches.map((p) => sessions.update(s.id, p)));
      expected.x = `r${round}`;
      for (let i = 0; i < 40; i++) expected[`f${i}`] = round * 100 + i;
      expect(await freshData(target, prefix, s.id)).toEqual(expected);
    }
  });

  it('a session too large to be kept in memory (over 64 KiB) is appended to and rewritten', async () => {
    const prefix = uniquePrefix();
    const one = await sessionApp(target, prefix);
    const two = await sessionApp(target, prefix);
    const pad = 'p'.repeat(100_000);
    const s = await one.sessions.create('big', { pad });
    const expected: Record<string, unknown> = { pad };
    for (let i = 0; i < 20; i++) {
      await one.sessions.update(s.id, { [`one${i}`]: i });
      await two.sessions.update(s.id, { [`two${i}`]: i });
      expected[`one${i}`] = i;
      expected[`two${i}`] = i;
    }
    expect(changesIn((await one.client.get(keyOf(prefix, s.id)))!)).toBeLessThan(16);
    expect(await freshData(target, prefix, s.id)).toEqual(expected);
    expect((await one.sessions.regenerate(s.id)).data).toEqual(expected);
  });
});
