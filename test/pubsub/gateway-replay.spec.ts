import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import { FEATURES, KeyBuilder, RedisConnection } from '../../lib/advanced.js';
import { PubSubService } from '../../lib/index.js';
import { compareStreamIds } from '../../lib/notifications/notifications.durable-replay.js';
import { closeClients, connectClient, createGatewayApp, type TestClient } from '../support/pubsub-gateway.js';
import { closeToolkitApps } from '../support/toolkit-app.js';
import { sleep, waitFor } from '../support/wait.js';

/** Durable replay in the gateway: what a socket receives around a replay that has not caught up yet. */
afterEach(async () => {
  closeClients();
  await closeToolkitApps();
});

const uid = (): string => randomBytes(5).toString('hex');

/** Publishes on `channel` and waits until `witness` (a socket that stays subscribed) has it: delivery has happened. */
async function publishSeen(pubsub: PubSubService, witness: TestClient, channel: string, data: unknown) {
  const before = witness.got.length;
  await pubsub.publish(channel, data);
  expect(await waitFor(() => witness.got.length === before + 1, 3_000)).toBe(true);
  // The witness and the socket under test are served by the same emit: a short wait covers the other socket.
  await sleep(100);
}

describe.each(['single', 'cluster'] as const)('durable replay on %s', (target) => {
  it('a socket unsubscribed while catching up after a replay gets nothing more, and once per publish after resubscribing', async () => {
    const app = await createGatewayApp({
      target,
      keyPrefix: `grp${uid()}:`,
      pubsub: { durable: { maxLen: 100 }, gateway: { subscribeRateLimit: false } },
    });
    const pubsub = app.get(PubSubService);
    // Another tab of carol's keeps the channel's relay, so the live copy of 'old' has gone by before c replays it.
    const tab2 = await connectClient(app.url, { token: 'u:carol' });
    expect(await tab2.subscribe('user:carol')).toEqual({ ok: true });
    await pubsub.notifyUser('carol', { n: 'old' });
    expect(await waitFor(() => tab2.got.length === 1, 3_000)).toBe(true);

    const c = await connectClient(app.url, { token: 'u:carol' });
    // Replayed 'old', whose live copy never comes: c catches up message by message for up to 2 s.
    expect(await c.subscribe('user:carol', '0-0')).toEqual({ ok: true, replayed: 1 });
    expect(c.got.map((m) => m.data)).toEqual([{ n: 'old' }]);
    expect(await c.unsubscribe('user:carol')).toEqual({ ok: true });
    await publishSeen(pubsub, tab2, 'user:carol', { n: 'after-unsub' });
    // Before the fix: c still received 'after-unsub' (a publish id is no stream id, so it went straight to c).
    expect(c.got.map((m) => m.data)).toEqual([{ n: 'old' }]);

    expect(await c.subscribe('user:carol')).toEqual({ ok: true });
    c.got.length = 0;
    await publishSeen(pubsub, tab2, 'user:carol', { n: 'once' });
    await publishSeen(pubsub, tab2, 'user:carol', { n: 'twice' });
    // Before the fix: each came twice, through the room and straight from the stale catch-up.
    expect(c.got.map((m) => m.data)).toEqual([{ n: 'once' }, { n: 'twice' }]);
    expect(tab2.got.map((m) => m.data)).toEqual([{ n: 'old' }, { n: 'after-unsub' }, { n: 'once' }, { n: 'twice' }]);
  });

  it('a live message whose stream sequence differs from the last replayed one only past 2^53 is delivered', async () => {
    const keyPrefix = `grp${uid()}:`;
    const app = await createGatewayApp({
      target,
      keyPrefix,
      pubsub: { durable: { maxLen: 100 }, gateway: { subscribeRateLimit: false } },
    });
    const pubsub = app.get(PubSubService);
    const tab2 = await connectClient(app.url, { token: 'u:erin' });
    expect(await tab2.subscribe('user:erin')).toEqual({ ok: true });
    // An entry with a later ms and a sequence of 2^53 - 1: XADD * continues that ms, so the next ids are 2^53, 2^53+1.
    const ms = '4102444800000';
    const stream = app.get(KeyBuilder).tagged(FEATURES.pubsubStream, 'erin');
    await app.get(RedisConnection).client.xadd(stream, `${ms}-9007199254740991`, 'd', '"seed"', 'ts', '0');
    await pubsub.notifyUser('erin', 'm1');
    expect(await waitFor(() => tab2.got.length === 1, 3_000)).toBe(true);
    expect(tab2.got[0].id).toBe(`${ms}-9007199254740992`);

    const c = await connectClient(app.url, { token: 'u:erin' });
    // m1 is replayed; its live copy has gone by, so c catches up message by message.
    expect(await c.subscribe('user:erin', `${ms}-9007199254740991`)).toEqual({ ok: true, replayed: 1 });
    await pubsub.notifyUser('erin', 'm2'); // id ...993: as a Number, the same as ...992
    await pubsub.notifyUser('erin', 'm3');
    expect(await waitFor(() => tab2.got.length === 3, 3_000)).toBe(true);
    await sleep(100);
    expect(tab2.got.map((m) => m.id)).toEqual([2, 3, 4].map((n) => `${ms}-900719925474099${n}`));
    // Before the fix: m2 was taken for the live copy of m1 and skipped ([m1, m3]).
    expect(c.got.map((m) => m.data)).toEqual(['m1', 'm2', 'm3']);
  });
});

describe('compareStreamIds', () => {
  it('compares stream ids as Redis does: each part a number, whatever its leading zeros or size', () => {
    // Redis takes '0001-0' for 1-0: it was judged larger than 2-0 (a longer ms part).
    expect(compareStreamIds('0001-0', '2-0')).toBeLessThan(0);
    expect(compareStreamIds('2-0', '0001-0')).toBeGreaterThan(0);
    expect(compareStreamIds('0001-0', '1-0')).toBe(0);
    expect(compareStreamIds('0001700000000000-0', '1700000000001-0')).toBeLessThan(0);
    expect(compareStreamIds('1-007', '1-7')).toBe(0);
    expect(compareStreamIds('1-10', '1-9')).toBeGreaterThan(0);
    // Past 2^53 a Number cannot tell neighbouring sequences apart.
    expect(compareStreamIds('5-9007199254740993', '5-9007199254740992')).toBeGreaterThan(0);
    expect(compareStreamIds('5-9007199254740992', '5-9007199254740993')).toBeLessThan(0);
    expect(compareStreamIds('5-18446744073709551615', '5-18446744073709551614')).toBeGreaterThan(0);
    expect(compareStreamIds('18446744073709551615-0', '18446744073709551614-18446744073709551615')).toBeGreaterThan(0);
    expect(compareStreamIds('1700000000000-3', '1700000000000-3')).toBe(0);
  });
});
