/**
 * An attacker's review of what the notifications gateway does with client payloads (docs/pubsub.md, Protocol and
 * Guarantees), on real Redis with real socket.io clients. pubsub.hostile.spec.ts holds hostile channels, bodies,
 * nesting, binary bodies, floods, unknown events and the 1 MB cap; arguments-everywhere-2.hostile.spec.ts holds lastIds,
 * unsubscribe bodies and missing or extra ack arguments. Here: channels that are not well-formed Unicode or longer
 * than a Redis channel may be (refused before they are counted), a body whose `__proto__` a binary packet turns into
 * its prototype, ACK packets and numeric event names the server never asked for, a binary body deep enough to overflow
 * the parser's stack, a subscribe with `lastId` on a channel already held (a resync), a user id with a line separator,
 * a cursor far in the future, and the requests of a client too slow to read their answers.
 */
import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { PubSubService } from '../../lib/index.js';
import { NotificationsGateway } from '../../lib/notifications/index.js';
import { localRateLimiter } from '../../lib/notifications/notifications.local-rate-limiter.js';
import {
  closeClients,
  connectClient,
  connectRawClient,
  connectStalledClient,
  createGatewayApp,
  type TestClient,
} from '../support/pubsub-gateway.js';
import { trackForCleanup } from '../support/private-servers.js';
import { sharedServers } from '../support/shared-servers.js';
import { closeToolkitApps } from '../support/toolkit-app.js';
import { countUnhandledRejections, type RejectionCounter, settleRejections } from '../support/unhandled.js';
import { sleep, waitFor } from '../support/wait.js';

// on the real process from the first case to the last (checked in 'afterwards')
let rejections: RejectionCounter;
beforeAll(() => {
  rejections = countUnhandledRejections();
});
afterAll(() => rejections.stop());
afterEach(async () => {
  closeClients();
  await closeToolkitApps();
});

const uid = (): string => randomBytes(5).toString('hex');
const data = (c: TestClient) => c.got.map((m) => m.data);
const NS = '/notifications';

/** A raw socket.io v4 client over `ws`: text and binary frames as the attacker writes them, acks by id. */
async function rawClient(url: string, token: string) {
  const acks = new Map<number, unknown>();
  const notifications: unknown[] = [];
  let closed = false;
  const ws = await connectRawClient(url, token, (text, isBinary) => {
    if (isBinary) return;
    const ack = /^43\/notifications,(\d+)(\[.*)$/s.exec(text);
    if (ack) acks.set(Number(ack[1]), (JSON.parse(ack[2]) as unknown[])[0]);
    if (text.startsWith(`42${NS},[`)) notifications.push((JSON.parse(text.slice(`42${NS},`.length)) as unknown[])[1]);
  });
  ws.on('close', () => (closed = true));
  return {
    ws,
    acks,
    notifications,
    isClosed: () => closed,
    send: (frame: string | Buffer) => ws.send(frame),
    /** The ack of request `id`, or 'none' after `ms`. */
    ackOf: async (id: number, ms = 3_000): Promise<unknown> =>
      (await waitFor(() => acks.has(id), ms)) ? acks.get(id) : 'none',
    close: () => ws.terminate(),
  };
}

describe('channels the gateway must refuse before anything counts them', () => {
  it('a lone surrogate (channel or pattern): E_BAD_REQUEST, before the local rate limiter and authorize see it', async () => {
    const seen: string[] = [];
    const app = await createGatewayApp({
      keyPrefix: `gpu${uid()}:`,
      pubsub: {
        gateway: {
          // An app's chat rooms: any `room:` channel or pattern, for anyone.
          authorize: (_user, channel) => {
            seen.push(channel);
            return channel.startsWith('room:');
          },
          // The in-process fallback (no RateLimitService): 3 per minute.
          rateLimiter: localRateLimiter(),
          subscribeRateLimit: { limit: 3, ttl: 60_000 },
        },
      },
    });
    const eve = await connectClient(app.url, { token: 'u:eve' });
    const hostile = ['room:\uD800', 'room:a\uDC00b', 'room:\uD83D', 'room:x\uDE42*', 'room:\uDFFF\uD800'];
    const acks = await Promise.all(hostile.map((channel) => eve.subscribe(channel)));
    // Before: each reached the rate limiter and authorize; the first 3 were refused by PubSubService
    // (E_BAD_REQUEST, after counting) and the other 2 got E_RATE_LIMITED.
    expect(acks.map((a) => a.code)).toEqual(hostile.map(() => 'E_BAD_REQUEST'));
    for (const a of acks) expect(a.error).toMatch(/well-formed Unicode/);
    expect(seen).toEqual([]);
    // A well-formed surrogate pair is a character like any other: subscribed, delivered.
    expect(await eve.subscribe('room:\uD83D\uDE42')).toEqual({ ok: true });
    expect(seen).toEqual(['room:\uD83D\uDE42']);
    await app.get(PubSubService).publish('room:\uD83D\uDE42', 'smile');
    expect(await waitFor(() => eve.got.length === 1, 3_000)).toBe(true);
    expect(eve.got.map((m) => [m.channel, m.data])).toEqual([['room:\uD83D\uDE42', 'smile']]);
    expect(app.get(NotificationsGateway).stats().relays).toBe(1);
  });

  it('a channel within maxChannelLength but over 1024 UTF-8 bytes: E_BAD_REQUEST, before it is counted', async () => {
    const seen: string[] = [];
    const app = await createGatewayApp({
      keyPrefix: `gpb${uid()}:`,
      pubsub: {
        gateway: {
          authorize: (_user, channel) => {
            seen.push(channel);
            return channel.startsWith('room:');
          },
          maxChannelLength: 1024,
          subscribeRateLimit: { limit: 1, ttl: 60_000 },
        },
      },
    });
    const eve = await connectClient(app.url, { token: 'u:eve' });
    const long = `room:${'\u20AC'.repeat(400)}`; // 405 characters, 1,205 bytes
    for (let i = 0; i < 3; i++) {
      const ack = await eve.subscribe(long);
      // Before: authorize saw it and the limiter counted it; PubSubService then refused it (the 2nd: E_RATE_LIMITED).
      expect(ack).toMatchObject({ ok: false, code: 'E_BAD_REQUEST' });
      expect(ack.error).toMatch(/1024 bytes/);
    }
    expect(seen).toEqual([]);
    expect(await eve.subscribe(`room:${'\u20AC'.repeat(339)}`)).toEqual({ ok: true }); // 1,022 bytes
  });
});

describe('what socket.io itself hands the gateway', () => {
  it('a binary packet whose body has a `__proto__` key: never the channel or the lastId', async () => {
    const app = await createGatewayApp({
      keyPrefix: `gpp${uid()}:`,
      pubsub: { durable: { maxLen: 100 }, gateway: { subscribeRateLimit: false } },
    });
    const pubsub = app.get(PubSubService);
    await pubsub.notifyUser('eve', 'old');
    const eve = await rawClient(app.url, 'u:eve');
    const placeholder = '{"_placeholder":true,"num":0}';
    // socket.io-parser puts a binary packet's attachments back with `data[key] = ...`; for the key "__proto__" that
    // would set the body's prototype, were "__proto__" not an own property already (JSON.parse makes it one).
    eve.send(`451-${NS},1["subscribe",{"__proto__":{"channel":"user:eve"},"b":${placeholder}}]`);
    eve.send(Buffer.from('attachment'));
    eve.send(`451-${NS},2["subscribe",{"channel":"user:eve","__proto__":{"lastId":"0-0"},"b":${placeholder}}]`);
    eve.send(Buffer.from('attachment'));
    // Passed before the fix too: the gateway now reads own properties only, so no prototype could ever supply them.
    expect(await eve.ackOf(1)).toMatchObject({ ok: false, code: 'E_BAD_REQUEST' });
    expect(await eve.ackOf(2)).toEqual({ ok: true });
    expect(eve.notifications).toEqual([]);
    expect(({} as Record<string, unknown>).channel).toBeUndefined(); // nothing global was polluted
    await pubsub.notifyUser('eve', 'live');
    expect(await waitFor(() => eve.notifications.length === 1, 3_000)).toBe(true);
    expect(eve.notifications).toMatchObject([{ channel: 'user:eve', data: 'live' }]);
    eve.close();
  });

  it('ACK packets never asked for, numeric event names and a 10-attachment packet never completed: ignored', async () => {
    const app = await createGatewayApp({
      keyPrefix: `gpa${uid()}:`,
      pubsub: { gateway: { subscribeRateLimit: false } },
    });
    const gateway = app.get(NotificationsGateway);
    const eve = await rawClient(app.url, 'u:eve');
    eve.send(`43${NS},7["forged ack"]`);
    eve.send(`43${NS},0[{"ok":true}]`);
    eve.send(`461-${NS},8[{"_placeholder":true,"num":0}]`);
    eve.send(Buffer.from('binary ack'));
    eve.send(`42${NS},9[42,{"channel":"user:eve"}]`);
    eve.send(`42${NS},10[0,"subscribe",{"channel":"user:eve"}]`);
    expect(await eve.ackOf(9, 500)).toBe('none');
    expect(await eve.ackOf(10, 100)).toBe('none');
    expect(gateway.stats().relays).toBe(0);
    eve.send(`42${NS},11["subscribe",{"channel":"user:eve"}]`);
    expect(await eve.ackOf(11)).toEqual({ ok: true });
    // Announces 10 attachments and sends 1: socket.io holds at most 10 (maxAttachments), nothing reaches the gateway.
    eve.send(`4510-${NS},12["subscribe",{"channel":{"_placeholder":true,"num":0}}]`);
    eve.send(Buffer.from('one of ten'));
    expect(await eve.ackOf(12, 500)).toBe('none');
    expect(eve.isClosed()).toBe(false);
    await app.get(PubSubService).notifyUser('eve', 'served');
    expect(await waitFor(() => eve.notifications.length === 1, 3_000)).toBe(true);
    expect(eve.notifications).toMatchObject([{ channel: 'user:eve', data: 'served' }]);
    eve.close();
  });

  it("a binary body nested 100,000 deep (over the parser's stack): that connection closes, the others are served", async () => {
    const app = await createGatewayApp({
      keyPrefix: `gpn${uid()}:`,
      pubsub: { gateway: { subscribeRateLimit: false } },
    });
    const carol = await connectClient(app.url, { token: 'u:carol' });
    expect(await carol.subscribe('user:carol')).toEqual({ ok: true });
    const eve = await rawClient(app.url, 'u:eve');
    const depth = 100_000;
    const nested = `${'{"a":'.repeat(depth)}{"_placeholder":true,"num":0}${'}'.repeat(depth)}`;
    eve.send(`451-${NS},1["subscribe",${nested}]`);
    eve.send(Buffer.from('x'));
    expect(await waitFor(() => eve.isClosed(), 5_000)).toBe(true);
    expect(eve.acks.size).toBe(0);
    await app.get(PubSubService).notifyUser('carol', 'still here');
    expect(await waitFor(() => carol.got.length === 1, 3_000)).toBe(true);
    expect(data(carol)).toEqual(['still here']);
    expect(await carol.subscribe('user:carol')).toEqual({ ok: true });
  });
});

describe('replay cursors', () => {
  it('subscribe with lastId on a channel already held (a resync after a gap): replayed from lastId, then live once', async () => {
    const prefix = `gpr${uid()}:`;
    const app = await createGatewayApp({
      keyPrefix: prefix,
      pubsub: { durable: { maxLen: 100 }, gateway: { subscribeRateLimit: false } },
    });
    const pubsub = app.get(PubSubService);
    const gateway = app.get(NotificationsGateway);
    const rex = await connectClient(app.url, { token: 'u:rex' });
    expect(await rex.subscribe('user:rex')).toEqual({ ok: true });
    for (const n of [1, 2, 3]) await pubsub.notifyUser('rex', n);
    expect(await waitFor(() => rex.got.length === 3, 3_000)).toBe(true);
    const after1 = rex.got[0].id;
    rex.got.length = 0;
    // Before: { ok: true } and nothing: lastId was ignored for a channel the socket held, so a client resyncing
    // after a gap (the `drop` policy's advice) got no word and no messages.
    expect(await rex.subscribe('user:rex', after1)).toEqual({ ok: true, replayed: 2 });
    expect(data(rex)).toEqual([2, 3]);
    await pubsub.notifyUser('rex', 4);
    expect(await waitFor(() => rex.got.length === 3, 3_000)).toBe(true);
    await sleep(200);
    expect(data(rex)).toEqual([2, 3, 4]);
    // Still one subscription: one relay, one Redis subscription, and one unsubscribe ends it.
    expect(gateway.stats().relays).toBe(1);
    expect(pubsub.subscriptionCount).toBe(1);
    // A resync racing live messages: each message once, in stream order, none lost while the socket is out of the room.
    rex.got.length = 0;
    const from = (await pubsub.replay('rex', '0-0')).at(-1)?.id as string;
    const racing = Array.from({ length: 20 }, (_, i) => pubsub.notifyUser('rex', `r${i}`));
    const resync = rex.subscribe('user:rex', from);
    const more = Array.from({ length: 20 }, (_, i) => pubsub.notifyUser('rex', `s${i}`));
    await Promise.all([...racing, ...more]);
    expect(await resync).toMatchObject({ ok: true });
    const expected = [
      ...Array.from({ length: 20 }, (_, i) => `r${i}`),
      ...Array.from({ length: 20 }, (_, i) => `s${i}`),
    ];
    expect(await waitFor(() => rex.got.length >= expected.length, 5_000)).toBe(true);
    await sleep(300);
    expect(data(rex)).toEqual(expected);
    expect(new Set(rex.got.map((m) => m.id)).size).toBe(expected.length);
    // A resync with a lastId Redis would refuse is refused before the subscription is touched: still delivered.
    const largest = '18446744073709551615-18446744073709551615';
    expect(await rex.subscribe('user:rex', largest)).toMatchObject({ ok: false, code: 'E_BAD_REQUEST' });
    await pubsub.notifyUser('rex', 'kept');
    expect(await waitFor(() => rex.got.length === expected.length + 1, 3_000)).toBe(true);
    expected.push('kept');
    // Without lastId a repeated subscribe stays a no-op.
    expect(await rex.subscribe('user:rex')).toEqual({ ok: true });
    expect(await rex.unsubscribe('user:rex')).toEqual({ ok: true });
    expect(await waitFor(() => gateway.stats().relays === 0 && pubsub.subscriptionCount === 0, 3_000)).toBe(true);
    const redis = trackForCleanup(new Redis(sharedServers().single.url));
    const [, numsub] = (await redis.call('PUBSUB', 'NUMSUB', `${prefix}ps:user:rex`)) as [string, number];
    expect(Number(numsub)).toBe(0);
    await pubsub.notifyUser('rex', 5);
    await sleep(200);
    expect(data(rex)).toEqual(expected);
  });

  it('a user id with a line separator (U+2028): its lastId is replayed like any other', async () => {
    const app = await createGatewayApp({
      keyPrefix: `gpl${uid()}:`,
      pubsub: { durable: { maxLen: 100 }, gateway: { subscribeRateLimit: false } },
    });
    const pubsub = app.get(PubSubService);
    const id = 'a\u2028b';
    await pubsub.notifyUser(id, 'missed');
    const c = await connectClient(app.url, { token: `u:${id}` });
    // Before: { ok: true }: `/^user:(.+)$/` does not match past a line separator, so lastId was silently ignored.
    expect(await c.subscribe(`user:${id}`, '0-0')).toEqual({ ok: true, replayed: 1 });
    expect(data(c)).toEqual(['missed']);
    await pubsub.notifyUser(id, 'live');
    expect(await waitFor(() => c.got.length === 2, 3_000)).toBe(true);
    expect(data(c)).toEqual(['missed', 'live']);
  });

  it('a lastId past everything (far future): replayed 0, and live messages still arrive', async () => {
    const app = await createGatewayApp({
      keyPrefix: `gpf${uid()}:`,
      pubsub: { durable: { maxLen: 100 }, gateway: { subscribeRateLimit: false } },
    });
    const pubsub = app.get(PubSubService);
    await pubsub.notifyUser('fay', 'old');
    const c = await connectClient(app.url, { token: 'u:fay' });
    expect(await c.subscribe('user:fay', '18446744073709551615-0')).toEqual({ ok: true, replayed: 0 });
    await pubsub.notifyUser('fay', 'new');
    expect(await waitFor(() => c.got.length === 1, 3_000)).toBe(true);
    await sleep(100);
    expect(data(c)).toEqual(['new']);
  });
});

describe('a client that sends requests but does not read their answers', () => {
  it('drop policy: its requests are dropped unanswered and counted in droppedSlow; nothing is subscribed', async () => {
    const cap = 5;
    const app = await createGatewayApp({
      keyPrefix: `gps${uid()}:`,
      commandTimeout: 10_000,
      pubsub: {
        gateway: {
          slowClient: { policy: 'drop', maxBufferedMessages: cap },
          subscribeRateLimit: false,
          publicChannels: ['a', 'b', 'c'],
        },
      },
    });
    const pubsub = app.get(PubSubService);
    const gateway = app.get(NotificationsGateway);
    const hog = await connectStalledClient(app.url, 'u:hog', 'user:hog');
    const [serverSocket] = [...gateway.server.sockets.values()];
    const conn = serverSocket.conn as unknown as { writeBuffer?: unknown[] };
    const blob = 'x'.repeat(64 * 1024);
    // Fill the loopback buffers until engine.io holds `cap` packets for it.
    for (let i = 0; i < 1_000 && (conn.writeBuffer?.length ?? 0) < cap; i++) {
      await pubsub.notifyUser('hog', { i, blob });
      await sleep(2);
    }
    expect(conn.writeBuffer?.length ?? 0).toBeGreaterThanOrEqual(cap);
    const before = gateway.stats().droppedSlow;
    for (const channel of ['a', 'b', 'c']) hog.send('subscribe', { channel });
    expect(await waitFor(() => gateway.stats().droppedSlow === before + 3, 3_000)).toBe(true);
    expect(gateway.stats().relays).toBe(1); // user:hog only
    expect(serverSocket.connected).toBe(true);
    hog.close();
  }, 60_000);
});

describe('afterwards', () => {
  it('no unhandled rejection', async () => {
    await settleRejections();
    expect(rejections.reasons).toEqual([]);
  });
});
