import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import { PubSubService } from '../../lib/index.js';
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
});
