import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import { RedisSessionStore, SessionService } from '../../lib/index.js';
import { RedisConnection } from '../../lib/advanced.js';
import { recordCommandCalls } from '../support/command-recorder.js';
import { closeToolkitApps, createToolkitApp, type RedisTarget } from '../support/toolkit-app.js';

afterEach(closeToolkitApps);

/**
 * An update appends its change to the stored session (lib/session/session-change.lua); what else reads or rewrites a
 * session must take the changes into account.
 */
const TTL = 3_600_000;
const uniquePrefix = (): string => `rtk-sessc-${randomBytes(4).toString('hex')}:`;

async function sessionApp(target: RedisTarget, prefix: string, maxSize?: number, appendUpdates = true) {
  const app = await createToolkitApp({
    target,
    keyPrefix: prefix,
    session: {
      cookie: { secret: 's3cret' },
      ttl: TTL,
      appendUpdates,
      ...(maxSize === undefined ? {} : { maxSize }),
    },
  });
  const client = app.get(RedisConnection).client;
  return { sessions: app.get(SessionService), client };
}

describe.each(['single', 'cluster'] as const)('session changes appended on %s', (target) => {
  it("a process that read a session reads another instance's appended changes, and its own update returns them", async () => {
    const prefix = uniquePrefix();
    const one = await sessionApp(target, prefix);
    const two = await sessionApp(target, prefix);
    const s = await one.sessions.create('ann', { a: 1 });
    expect((await one.sessions.get(s.id))!.data).toEqual({ a: 1 });
    await two.sessions.update(s.id, { b: 2 });
    await two.sessions.update(s.id, { a: undefined, c: [3] });
    expect((await one.sessions.get(s.id))!.data).toEqual({ b: 2, c: [3] });
    // one's update appends to a value it no longer knows: the script answers the value now, so what it returns is
    // the session as written, the other instance's changes included
    await two.sessions.update(s.id, { d: 'two' });
    const updated = await one.sessions.update(s.id, { e: 'one' });
    expect(updated.data).toEqual({ b: 2, c: [3], d: 'two', e: 'one' });
    expect((await two.sessions.get(s.id))!.data).toEqual({ b: 2, c: [3], d: 'two', e: 'one' });
    const stored = (await one.client.get(`${prefix}sess:{${s.id}}`))!;
    expect(stored.split('\n')).toHaveLength(5);
  });

  it('an instance without appendUpdates does not write over a change appended since it read the session', async () => {
    const prefix = uniquePrefix();
    const appending = await sessionApp(target, prefix);
    const plain = await sessionApp(target, prefix, undefined, false);
    const s = await plain.sessions.create('fay', { a: 1 });
    expect((await plain.sessions.get(s.id))!.data).toEqual({ a: 1 });
    // appended behind the value plain knows, which keeps its stamp: plain's compare-and-set must see it
    await appending.sessions.update(s.id, { b: 2 });
    expect((await plain.sessions.update(s.id, { c: 3 })).data).toEqual({ a: 1, b: 2, c: 3 });
    expect((await appending.sessions.get(s.id))!.data).toEqual({ a: 1, b: 2, c: 3 });
    // and the other way round: what plain rewrote whole, appending appends to
    await appending.sessions.update(s.id, { a: undefined });
    expect((await plain.sessions.get(s.id))!.data).toEqual({ b: 2, c: 3 });
  });

  it('a change that would take the stored value past maxSize is not appended: the merged session is written whole', async () => {
    const prefix = uniquePrefix();
    const maxSize = 8 * 1024;
    const one = await sessionApp(target, prefix, maxSize);
    const two = await sessionApp(target, prefix, maxSize);
    const key = `${prefix}sess:{${(await one.sessions.create('bob', { a: 'a'.repeat(3_000) })).id}}`;
    const id = key.slice(key.indexOf('{') + 1, -1);
    expect((await one.sessions.get(id))!.data).toEqual({ a: 'a'.repeat(3_000) });
    // two replaces `a`: appended, the stored value is ~6.1 kB where the session is ~3.1 kB
    await two.sessions.update(id, { a: 'A'.repeat(3_000) });
    expect((await one.client.strlen(key)) > 6_000).toBe(true);
    // one knows the ~3.1 kB value, so its change of 2.5 kB looks small enough to append: the script refuses it (6.1 +
    // 2.5 kB would pass 8 kB) and one merges into the value now and writes the 5.6 kB session whole
    const { value: updated, calls } = await recordCommandCalls(one.client, () =>
      one.sessions.update(id, { c: 'c'.repeat(2_500) }),
    );
    expect(updated.data).toEqual({ a: 'A'.repeat(3_000), c: 'c'.repeat(2_500) });
    const scripts = calls.filter((c) => c.name === 'evalsha' || c.name === 'eval').map((c) => c.args[1]);
    expect(scripts).toEqual(['1', '2']); // the change refused, then a compare-and-set of the whole session
    const stored = (await one.client.get(key))!;
    expect(stored).not.toContain('\n');
    expect(Buffer.byteLength(stored)).toBeLessThan(maxSize);
    expect((await two.sessions.get(id))!.data).toEqual({ a: 'A'.repeat(3_000), c: 'c'.repeat(2_500) });
  });

  it("express-session's touch keeps the appended changes, and destroy finds the owner behind them", async () => {
    const prefix = uniquePrefix();
    const { sessions, client } = await sessionApp(target, prefix);
    const s = await sessions.create('cid', { a: 1 });
    const key = `${prefix}sess:{${s.id}}`;
    await sessions.update(s.id, { b: 2 });
    await sessions.update(s.id, { a: undefined });
    expect((await client.get(key))!.split('\n')).toHaveLength(3);
    const store = new RedisSessionStore({ client, prefix });
    const cookie = { originalMaxAge: 120_000, maxAge: 120_000, expires: new Date(Date.now() + 120_000) };
    await store.touch(s.id, { cookie } as never);
    const touched = (await client.get(key))!;
    // the envelope rewritten by the touch script (its new idle ttl), the changes behind it as they were
    expect((JSON.parse(touched.split('\n')[0]) as { t: number }).t).toBe(120_000);
    expect(touched.split('\n').slice(1)).toEqual(['{"d":{"b":"2"}}', '{"d":{},"x":["a"]}']);
    expect((await sessions.get(s.id))!.data).toEqual({ b: 2 });
    expect(await client.pttl(key)).toBeLessThanOrEqual(120_000);
    // an update of the touched session (no stamp now) merges and writes it whole, then appends again
    expect((await sessions.update(s.id, { c: 3 })).data).toEqual({ b: 2, c: 3 });
    expect(await client.get(key)).not.toContain('\n');
    await sessions.update(s.id, { d: 4 });
    expect(await client.get(key)).toContain('\n');
    expect((await sessions.listForUser('cid')).map((x) => x.id)).toEqual([s.id]);
    expect(await sessions.destroy(s.id)).toBe(true);
    expect(await sessions.listForUser('cid')).toEqual([]);
    expect(await client.zcard(`${prefix}sess:user:{cid}`)).toBe(0);
  });
});

describe('session.appendUpdates', () => {
  it('is a boolean, checked at startup', async () => {
    await expect(createToolkitApp({ session: { appendUpdates: 'yes' as unknown as boolean } })).rejects.toThrow(
      /session\.appendUpdates must be true or false, got "yes"/,
    );
  });
});
