import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import type { Socket } from 'socket.io';
import { PubSubService } from '../../lib/index.js';
import { streamIdBefore } from '../../lib/notifications/notifications.durable-replay.js';
import { NotificationsGateway } from '../../lib/notifications/index.js';
import {
  closeClients,
  connectClient,
  connectRawClient,
  createGatewayApp,
  type TestClient,
} from '../support/pubsub-gateway.js';
import { closeToolkitApps } from '../support/toolkit-app.js';
import { sleep, waitFor } from '../support/wait.js';

/**
 * What a socket gets around the window of its durable replay: a `lastId` past the stream's end (a cursor no stream
 * gave out, e.g. far in the future) must not hide the messages published meanwhile, and a socket that unsubscribes or
 * leaves while its replay waits for a drain gets nothing more of it (and is not counted as slow).
 */
afterEach(async () => {
  closeClients();
  await closeToolkitApps();
});

const uid = (): string => randomBytes(5).toString('hex');
const data = (c: TestClient) => c.got.map((m) => m.data);
const NS = '/notifications';

describe.each(['a new subscription', 'a resync of one held'] as const)('a lastId past the stream end, %s', (mode) => {
  it('a message published while the replay reads the stream reaches the socket, and so do later ones', async () => {
    const app = await createGatewayApp({
      keyPrefix: `gwf${uid()}:`,
      pubsub: { durable: { maxLen: 100 }, gateway: { subscribeRateLimit: false } },
    });
    const pubsub = app.get(PubSubService);
    await pubsub.notifyUser('fay', 'old');
    // Another tab of fay's holds the relay: once it has a message, the gateway has handed it to c's replay too.
    const tab2 = await connectClient(app.url, { token: 'u:fay' });
    expect(await tab2.subscribe('user:fay')).toEqual({ ok: true });
    const c = await connectClient(app.url, { token: 'u:fay' });
    if (mode === 'a resync of one held') expect(await c.subscribe('user:fay')).toEqual({ ok: true });
    // 'during' is published after c asked for its replay, while the gateway reads the stream for it.
    const replay = pubsub.replay.bind(pubsub);
    pubsub.replay = (async (...args: Parameters<PubSubService['replay']>) => {
      await pubsub.notifyUser('fay', 'during');
      expect(await waitFor(() => tab2.got.length === 1, 3_000)).toBe(true);
      return replay(...args);
    }) as PubSubService['replay'];
    expect(await c.subscribe('user:fay', '99999999999999-0')).toEqual({ ok: true, replayed: 0 });
    pubsub.replay = replay;
    await pubsub.notifyUser('fay', 'after');
    expect(await waitFor(() => tab2.got.length === 2, 3_000)).toBe(true);
    await sleep(100); // one emit serves both tabs: a short wait covers c
    // Before the fix: ['after']: 'during' (an id below lastId) was taken for one the client had seen.
    expect(data(c)).toEqual(['during', 'after']);
    expect(data(tab2)).toEqual(['during', 'after']);
  });
});

/**
 * A raw socket.io v4 client over `ws` whose reading can be paused (the server's buffers for it fill up, as with a slow
 * link) and resumed; `events` lists what it got in order: 'n' for a notification, 'ack <id> <json>' for an ack.
 */
async function pausableClient(url: string, token: string) {
  const events: string[] = [];
  const ws = await connectRawClient(url, token, (text) => {
    const ack = /^43\/notifications,(\d+)(\[.*)$/s.exec(text);
    if (ack) events.push(`ack ${ack[1]} ${JSON.stringify((JSON.parse(ack[2]) as unknown[])[0])}`);
    if (text.startsWith(`42${NS},["notification"`)) events.push('n');
  });
  const tcp = (ws as unknown as { _socket: { pause(): void; resume(): void } })._socket;
  let id = 0;
  return {
    events,
    /** Sends a request; returns its ack id. */
    send: (event: string, body: unknown): number => {
      ws.send(`42${NS},${++id}${JSON.stringify([event, body])}`);
      return id;
    },
    pause: () => tcp.pause(),
    resume: () => tcp.resume(),
    close: () => ws.terminate(),
  };
}

describe('a socket whose replay waits for a drain', () => {
  const cap = 5;

  /** An app whose rate limiter holds the second request (the unsubscribe) until `open()`, and 500 x 32 KB to replay. */
  async function replayingApp(userId: string) {
    let calls = 0;
    let open!: () => void;
    const gate = new Promise<void>((resolve) => (open = resolve));
    const app = await createGatewayApp({
      keyPrefix: `gwd${uid()}:`,
      // Not a test of timeouts: the 500 durable publishes of the setup can outlast 1 s on a busy box.
      commandTimeout: 10_000,
      pubsub: {
        durable: { maxLen: 1_000 },
        gateway: {
          slowClient: { policy: 'drop', maxBufferedMessages: cap },
          rateLimiter: async () => {
            if (++calls === 2) await gate;
            return { allowed: true, retryAfterMs: 0 };
          },
        },
      },
    });
    const pubsub = app.get(PubSubService);
    // 16 MB: more than the loopback socket buffers hold, so a client that stops reading makes the replay wait.
    const blob = 'x'.repeat(32 * 1024);
    for (let i = 0; i < 500; i += 50) {
      await Promise.all(Array.from({ length: 50 }, (_, j) => pubsub.notifyUser(userId, { i: i + j, blob })));
    }
    const gateway = app.get(NotificationsGateway);
    return { app, gateway, open, calls: () => calls };
  }

  it('unsubscribed meanwhile: nothing more of the replay after the unsubscribe ack', async () => {
    const { app, gateway, open, calls } = await replayingApp('una');
    const c = await pausableClient(app.url, 'u:una');
    const [serverSocket] = [...gateway.server.sockets.values()];
    const conn = serverSocket.conn as unknown as { writeBuffer?: unknown[] };
    const subscribed = () =>
      (gateway as unknown as { sockets: WeakMap<Socket, { subscriptions: Map<string, unknown> }> }).sockets
        .get(serverSocket)
        ?.subscriptions.has('user:una');
    const subscribing = c.send('subscribe', { channel: 'user:una', lastId: '0-0' });
    // Read while the socket is not slow; answered once the rate limiter lets it go (open()).
    const unsubscribing = c.send('unsubscribe', { channel: 'user:una' });
    c.pause();
    // The replay waits for a drain that does not come, the unsubscribe in the rate limiter.
    expect(await waitFor(() => (conn.writeBuffer?.length ?? 0) >= cap, 10_000)).toBe(true);
    expect(calls()).toBe(2);
    open();
    expect(await waitFor(() => subscribed() === false, 1_000)).toBe(true);
    c.resume();
    expect(await waitFor(() => c.events.some((e) => e.startsWith(`ack ${subscribing} `)), 10_000)).toBe(true);
    await sleep(200);
    const unsubscribed = c.events.indexOf(`ack ${unsubscribing} {"ok":true}`);
    expect(unsubscribed).toBeGreaterThan(0);
    const before = c.events.slice(0, unsubscribed).filter((e) => e === 'n').length;
    const after = c.events.slice(unsubscribed).filter((e) => e === 'n').length;
    // Before the fix: the replay went on after the drain: 'after' was the rest of the 500 (369 in one run).
    expect({ after, stoppedEarly: before < 500 }).toEqual({ after: 0, stoppedEarly: true });
    expect(c.events.at(-1)).toBe(
      `ack ${subscribing} ${JSON.stringify({ ok: false, code: 'E_BAD_REQUEST', error: 'unsubscribed during replay' })}`,
    );
    expect(gateway.stats().droppedSlow).toBe(0);
    c.close();
  }, 60_000);

  it('gone meanwhile (the client leaves): its replay stops and it is not counted as slow', async () => {
    const { app, gateway, open } = await replayingApp('gus');
    open(); // no request of this test waits in the rate limiter
    const c = await pausableClient(app.url, 'u:gus');
    const [serverSocket] = [...gateway.server.sockets.values()];
    const conn = serverSocket.conn as unknown as { writeBuffer?: unknown[] };
    c.send('subscribe', { channel: 'user:gus', lastId: '0-0' });
    c.pause();
    expect(await waitFor(() => (conn.writeBuffer?.length ?? 0) >= cap, 10_000)).toBe(true);
    c.close();
    expect(await waitFor(() => gateway.stats().connections === 0 && gateway.stats().relays === 0, 5_000)).toBe(true);
    await sleep(200); // the replay has seen the close
    // Before the fix: 1, with a warning 'dropped the replay of user:gus for 1 slow client(s)'.
    expect(gateway.stats().droppedSlow).toBe(0);
  }, 60_000);
});

describe('streamIdBefore', () => {
  it('is the id just before, as Redis orders ids (so a read after it starts at the id itself); none before 0-0', () => {
    expect(streamIdBefore('1700000000000-5')).toBe('1700000000000-4');
    expect(streamIdBefore('1700000000000-0')).toBe('1699999999999-18446744073709551615');
    expect(streamIdBefore('0001-0')).toBe('0-18446744073709551615');
    expect(streamIdBefore('5-18446744073709551615')).toBe('5-18446744073709551614');
    expect(streamIdBefore('18446744073709551615-0')).toBe('18446744073709551614-18446744073709551615');
    expect(streamIdBefore('0-1')).toBe('0-0');
    expect(streamIdBefore('0-0')).toBeUndefined();
  });
});
