import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import { InvalidOptionsError, PubSubService } from '../../lib/index.js';
import { closeClients, connectClient, createGatewayApp } from '../support/pubsub-gateway.js';
import { closeToolkitApps } from '../support/toolkit-app.js';
import { waitFor } from '../support/wait.js';

/**
 * A client that subscribes with `lastId` after missing more than `maxReplay` durable messages gets the newest
 * `maxReplay` of them, in order, and the ack says older ones were left out (`skipped: true`). Before the fix it got the
 * oldest `maxReplay` after `lastId` (XRANGE COUNT), the newest never reached it, and the ack said nothing of the gap.
 */
afterEach(async () => {
  closeClients();
  await closeToolkitApps();
});

const uid = (): string => randomBytes(5).toString('hex');
const range = (from: number, to: number): number[] => Array.from({ length: to - from }, (_, i) => from + i);

describe.each(['single', 'cluster'] as const)('a replay of more than maxReplay missed messages on %s', (target) => {
  async function setUp(user: string, sent: number) {
    const app = await createGatewayApp({
      target,
      keyPrefix: `grn${uid()}:`,
      pubsub: { durable: { maxLen: 100 }, gateway: { maxReplay: 10, subscribeRateLimit: false } },
    });
    const pubsub = app.get(PubSubService);
    for (const n of range(0, sent)) await pubsub.notifyUser(user, n);
    // The ids of what was sent, oldest first (the stream holds all of it: maxLen 100).
    const ids = (await pubsub.replay(user, '0-0', 1_000)).map((m) => m.id);
    expect(ids).toHaveLength(sent);
    return { app, pubsub, ids };
  }

  it('missed 25 with maxReplay 10: the newest 10 in order, the ack says skipped; live ones follow', async () => {
    const user = `ann${uid()}`;
    const { app, pubsub, ids } = await setUp(user, 30);
    const c = await connectClient(app.url, { token: `u:${user}` });
    // Before: { ok: true, replayed: 10 } and messages 5-14 (the oldest after lastId), never 15-29.
    expect(await c.subscribe(`user:${user}`, ids[4])).toEqual({ ok: true, replayed: 10, skipped: true });
    expect(c.got.map((m) => m.data)).toEqual(range(20, 30));
    expect(c.got.map((m) => m.id)).toEqual(ids.slice(20));
    for (const n of range(30, 33)) await pubsub.notifyUser(user, n);
    expect(await waitFor(() => c.got.length === 13, 3_000)).toBe(true);
    expect(c.got.map((m) => m.data)).toEqual(range(20, 33));
  });

  it("lastId '0-0' (all 30 missed): the newest 10, skipped", async () => {
    const user = `bob${uid()}`;
    const { app } = await setUp(user, 30);
    const c = await connectClient(app.url, { token: `u:${user}` });
    expect(await c.subscribe(`user:${user}`, '0-0')).toEqual({ ok: true, replayed: 10, skipped: true });
    expect(c.got.map((m) => m.data)).toEqual(range(20, 30));
  });

  it('missed exactly maxReplay (10) or fewer (5, 0): all of them, the ack unchanged (no skipped field)', async () => {
    const user = `cy${uid()}`;
    const { app, ids } = await setUp(user, 30);
    for (const [lastId, from] of [
      [ids[19], 20],
      [ids[24], 25],
      [ids[29], 30],
    ] as const) {
      const c = await connectClient(app.url, { token: `u:${user}` });
      expect(await c.subscribe(`user:${user}`, lastId)).toEqual({ ok: true, replayed: 30 - from });
      expect(c.got.map((m) => m.data)).toEqual(range(from, 30));
    }
  });

  it('messages sent while a cut replay runs: what the client gets is gapless, no duplicate, ends with the last', async () => {
    const user = `dee${uid()}`;
    const { app, pubsub } = await setUp(user, 30);
    const c = await connectClient(app.url, { token: `u:${user}` });
    const sending = (async () => {
      for (const n of range(30, 80)) await pubsub.notifyUser(user, n);
    })();
    const ack = await c.subscribe(`user:${user}`, '0-0');
    await sending;
    expect(ack).toMatchObject({ ok: true, skipped: true });
    expect(await waitFor(() => c.got.at(-1)?.data === 79, 3_000)).toBe(true);
    const got = c.got.map((m) => m.data as number);
    expect(got).toEqual(range(got[0], 80));
    expect(got.length).toBeGreaterThanOrEqual(10);
  });

  it('PubSubService.replay: the first `limit` after afterId by default, the last `limit` with { newest: true }', async () => {
    const user = `eve${uid()}`;
    const { pubsub, ids } = await setUp(user, 30);
    expect((await pubsub.replay(user, ids[4], 10)).map((m) => m.data)).toEqual(range(5, 15));
    expect((await pubsub.replay(user, ids[4], 10, { newest: true })).map((m) => m.data)).toEqual(range(20, 30));
    expect((await pubsub.replay(user, ids[24], 10, { newest: true })).map((m) => m.data)).toEqual(range(25, 30));
    expect((await pubsub.replay(user, ids[29], 10, { newest: true })).map((m) => m.data)).toEqual([]);
    expect((await pubsub.replay(user, ids[4], 10, { newest: false })).map((m) => m.data)).toEqual(range(5, 15));
    for (const bad of [null, 'newest', { newest: 'yes' }, [true]]) {
      await expect(pubsub.replay(user, '0-0', 10, bad as never)).rejects.toThrow(InvalidOptionsError);
    }
  });
});
