/**
 * Security checks of the Socket.IO notifications gateway (socket.io-client against a real app and Redis): a user
 * cannot read another user's channel, and cannot use patterns or internal channels to read more than allowed.
 * Sockets authenticate with the default authenticate (the signed session cookie / session id, through the real
 * SessionService), as in production.
 */
import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import { PubSubService, SessionService } from '../../lib/index.js';
import { type PubSubUser } from '../../lib/advanced.js';
import { CACHE_L1_CHANNEL } from '../../lib/advanced.js';
import { NotificationsGateway } from '../../lib/notifications/index.js';
import {
  closeClients,
  connectClient,
  createGatewayApp,
  type GatewayApp,
  type TestClient,
} from '../support/pubsub-gateway.js';
import { closeToolkitApps } from '../support/toolkit-app.js';
import { sleep, waitFor } from '../support/wait.js';

afterEach(async () => {
  closeClients();
  await closeToolkitApps();
});

const uid = (): string => randomBytes(5).toString('hex');

async function boot(
  extra: {
    durable?: boolean;
    authorize?: (user: PubSubUser, channel: string, info: { pattern: boolean }) => boolean;
  } = {},
): Promise<GatewayApp> {
  return createGatewayApp({
    keyPrefix: `rtk-secg-${uid()}:`,
    session: { cookie: { secret: 'gateway-secret' } },
    pubsub: {
      ...(extra.durable && { durable: { maxLen: 100 } }),
      gateway: {
        authenticate: undefined, // the default: session cookie or auth.token through SessionService
        publicChannels: ['news'],
        subscribeRateLimit: false,
        ...(extra.authorize && { authorize: extra.authorize }),
      },
    },
  });
}

/** Connects as `userId` with a real session, half of the time by cookie, otherwise by auth.token. */
async function connectAs(app: GatewayApp, userId: string, by: 'cookie' | 'token'): Promise<TestClient> {
  const sessions = app.get(SessionService);
  const session = await sessions.create(userId);
  if (by === 'token') return connectClient(app.url, { token: session.id });
  return connectClient(app.url, {}, '/notifications', {
    cookie: `rtk.sid=${encodeURIComponent(sessions.signedCookieValue(session.id))}`,
  });
}

describe("another user's channel", () => {
  it('a socket authenticated as A cannot subscribe to user:B and never receives its notifications; B does', async () => {
    const app = await boot({ durable: true });
    const pubsub = app.get(PubSubService);
    const gateway = app.get(NotificationsGateway);
    const a = await connectAs(app, 'A', 'cookie');
    const b = await connectAs(app, 'B', 'token');
    await pubsub.notifyUser('B', { secret: 'before' }); // in B's durable stream

    expect(await a.subscribe('user:A')).toEqual({ ok: true });
    expect(await b.subscribe('user:B')).toEqual({ ok: true });
    // B's channel, however asked: plain, with a durable lastId (replay), twice, and after unsubscribing it
    expect(await a.subscribe('user:B')).toMatchObject({ ok: false, code: 'E_FORBIDDEN' });
    expect(await a.subscribe('user:B', '0-0')).toMatchObject({ ok: false, code: 'E_FORBIDDEN' });
    expect(await a.unsubscribe('user:B')).toEqual({ ok: true }); // no-op: it was never subscribed
    expect(await a.subscribe('user:B')).toMatchObject({ ok: false, code: 'E_FORBIDDEN' });
    // near misses that are other channels, all refused as well
    for (const channel of [
      'user:B ',
      ' user:B',
      'USER:B',
      'user:b',
      'user::B',
      'user:A:B',
      'user:A/../B',
      'user:B\u200b',
      'user%3AB',
    ]) {
      expect({ channel, ack: await a.subscribe(channel) }).toMatchObject({
        channel,
        ack: { ok: false, code: 'E_FORBIDDEN' },
      });
    }
    expect(gateway.stats().relays).toBe(2); // user:A and user:B, nothing else was subscribed in Redis

    await pubsub.notifyUser('B', { secret: 'for B only' });
    await pubsub.notifyUser('B', { secret: 'for B again' });
    await pubsub.notifyUser('A', { text: 'for A' });
    expect(await waitFor(() => b.got.length === 2 && a.got.length === 1, 3_000)).toBe(true);
    await sleep(150); // anything misrouted would have arrived by now
    expect(b.got.map((m) => [m.channel, m.data])).toEqual([
      ['user:B', { secret: 'for B only' }],
      ['user:B', { secret: 'for B again' }],
    ]);
    expect(a.got.map((m) => [m.channel, m.data])).toEqual([['user:A', { text: 'for A' }]]);
    expect(JSON.stringify(a.got)).not.toContain('secret');
  });

  it("A cannot become B: a forged token, B's user id as a token or an unsigned cookie is refused at connect", async () => {
    const app = await boot();
    const bSession = await app.get(SessionService).create('B');
    const refused = { data: { code: 'E_UNAUTHENTICATED' } };
    await expect(connectClient(app.url, { token: 'B' })).rejects.toMatchObject(refused);
    await expect(connectClient(app.url, { token: 'u:B' })).rejects.toMatchObject(refused);
    await expect(connectClient(app.url, { userId: 'B', id: 'B' })).rejects.toMatchObject(refused);
    await expect(
      connectClient(app.url, {}, '/notifications', { cookie: `rtk.sid=${bSession.id}` }),
    ).rejects.toMatchObject(refused);
    expect(app.get(NotificationsGateway).stats()).toMatchObject({ connections: 0, refused: 4 });
  });
});

describe('pattern abuse through the gateway', () => {
  const ABUSIVE = [
    '*',
    '**',
    '?*',
    'user:*',
    'user:?',
    'user:[AB]',
    'user:B*',
    'user:[^A]',
    '*:B',
    '[u]ser:B',
    'news*',
    'news?',
    '__rtk:*',
    '__rtk:cache:l1',
    '__rtk:',
    CACHE_L1_CHANNEL,
  ];

  it(`refuses ${ABUSIVE.length} patterns and internal channels with error acks, and delivers nothing through them`, async () => {
    const app = await boot();
    const gateway = app.get(NotificationsGateway);
    const pubsub = app.get(PubSubService);
    const a = await connectAs(app, 'A', 'token');
    const b = await connectAs(app, 'B', 'cookie');
    expect(await b.subscribe('user:B')).toEqual({ ok: true });
    for (const channel of ABUSIVE) {
      const ack = await a.subscribe(channel);
      expect({ channel, ok: ack.ok, code: ack.code }).toEqual({ channel, ok: false, code: 'E_FORBIDDEN' });
      expect(typeof ack.error).toBe('string');
    }
    expect(gateway.stats().relays).toBe(1); // only B's own channel
    // B's own channel, and the session revocations the gateway listens to (B connected with a session cookie).
    expect(pubsub.subscriptionCount).toBe(2);

    await pubsub.notifyUser('B', 'private');
    await pubsub.publish('news', 'public, but A did not subscribe');
    await pubsub.publish(CACHE_L1_CHANNEL, { from: 'elsewhere', keys: ['rtk:cache:x'] });
    expect(await waitFor(() => b.got.length === 1, 3_000)).toBe(true);
    await sleep(150);
    expect(a.got).toEqual([]);
    expect(b.got.map((m) => m.channel)).toEqual(['user:B']);
  });

  it('internal channels stay refused even when a custom authorize says yes to everything', async () => {
    const app = await boot({ authorize: () => true });
    const a = await connectAs(app, 'A', 'token');
    for (const channel of ['__rtk:cache:l1', '__rtk:*', '__rtk:anything']) {
      expect({ channel, ack: await a.subscribe(channel) }).toMatchObject({
        channel,
        ack: { ok: false, code: 'E_FORBIDDEN' },
      });
    }
  });

  // Known gap: docs/pubsub.md says internal `__rtk:` channels are refused "whatever authorize says", but only a
  // channel *starting with* `__rtk:` is refused. A pattern that an over-permissive authorize accepts (here `*`, or
  // `?_rtk:*`) is PSUBSCRIBEd under the toolkit's channel prefix and also matches the internal channels, so the
  // client receives the cache's L1 invalidation messages (keys of other users' cache entries). Fix: drop
  // deliveries whose channel starts with `__rtk:` in the gateway's pattern relay (or refuse patterns that can match
  // `__rtk:`). Marked failing until then.
  it('a pattern accepted by a permissive authorize never relays internal __rtk: channels', async () => {
    const app = await boot({ authorize: () => true });
    const a = await connectAs(app, 'A', 'token');
    expect(await a.subscribe('*')).toEqual({ ok: true });
    const pubsub = app.get(PubSubService);
    await pubsub.publish(CACHE_L1_CHANNEL, { from: 'elsewhere', keys: ['rtk:cache:private-key'] });
    await pubsub.publish('news', 'visible');
    expect(await waitFor(() => a.got.some((m) => m.channel === 'news'), 3_000)).toBe(true);
    await sleep(150);
    expect(a.got.map((m) => m.channel)).toEqual(['news']);
  });
});
