/**
 * The notifications gateway from outside, as an attacker: thousands of connections of distinct users that subscribe
 * to many channels and leave (cleanly or by vanishing), clients that connect and never authenticate, sockets bound to
 * sessions that end. What the gateway holds per socket, per user, per channel and per session is read through the
 * objects: it stays bounded and is emptied when the sockets leave. Also the durable replay's `skipped` once entries
 * after `lastId` were trimmed from the stream, and the local rate limiter's cap.
 */
import 'reflect-metadata';
import { jest } from '@jest/globals';
import { randomBytes } from 'node:crypto';
import { WebSocket } from 'ws';
import { PubSubService, SessionService } from '../../lib/index.js';
import { generateSessionId, signCookieValue } from '../../lib/advanced.js';
import { Redis } from 'ioredis';
import { usePrivateRedis } from '../support/private-servers.js';
import { NotificationsGateway } from '../../lib/notifications/index.js';
import { localRateLimiter } from '../../lib/notifications/notifications.local-rate-limiter.js';
import {
  closeClients,
  connectClient,
  connectRawClient,
  createGatewayApp,
  type GatewayApp,
} from '../support/pubsub-gateway.js';
import { closeToolkitApps } from '../support/toolkit-app.js';
import { waitFor } from '../support/wait.js';

jest.setTimeout(300_000);

const redis = usePrivateRedis();

afterEach(async () => {
  closeClients();
  await closeToolkitApps();
});

const uid = (): string => randomBytes(5).toString('hex');

/** What the gateway holds, by name: each collection's size. */
function held(gateway: NotificationsGateway) {
  const g = gateway as unknown as {
    relays: { size: number };
    userSockets: { byUser: Map<string, unknown> };
    durableReplay: { replaying: Map<string, unknown> };
    revocations: { sockets: Map<string, unknown>; sessionOf: Map<unknown, string>; recent: Map<string, number> };
  };
  return {
    connections: gateway.stats().connections,
    relays: g.relays.size,
    users: g.userSockets.byUser.size,
    replaying: g.durableReplay.replaying.size,
    revocationSockets: g.revocations.sockets.size,
    revocationSessions: g.revocations.sessionOf.size,
  };
}

const EMPTY = { connections: 0, relays: 0, users: 0, replaying: 0, revocationSockets: 0, revocationSessions: 0 };

/** A raw socket.io connection that subscribes to `channels` (acks awaited) and can vanish (TCP torn down). */
async function rawSubscriber(app: GatewayApp, token: string, channels: string[]): Promise<WebSocket> {
  const acks = new Map<number, (text: string) => void>();
  const ws = await connectRawClient(app.url, token, (text) => {
    const m = /^43\/notifications,(\d+)(.*)$/s.exec(text);
    if (m) acks.get(Number(m[1]))?.(m[2]);
  });
  await Promise.all(
    channels.map(
      (channel, i) =>
        new Promise<void>((resolve, reject) => {
          acks.set(i + 1, (body) => (body.includes('"ok":true') ? resolve() : reject(new Error(body))));
          ws.send(`42/notifications,${i + 1}${JSON.stringify(['subscribe', { channel }])}`);
        }),
    ),
  );
  return ws;
}

/** A gateway where every user may join any room, with no subscribe limit; `baseline`: its Redis subscriptions at start. */
async function openGatewayApp() {
  const app = await createGatewayApp({
    keyPrefix: `gc${uid()}:`,
    pubsub: { gateway: { authorize: () => true, subscribeRateLimit: false } },
  });
  const pubsub = app.get(PubSubService);
  return { app, gateway: app.get(NotificationsGateway), pubsub, baseline: pubsub.subscriptionCount };
}

describe('2,000 connections of distinct users', () => {
  it('subscribing to their own and shared rooms, leaving cleanly or vanishing: nothing is left', async () => {
    const { app, gateway, pubsub, baseline } = await openGatewayApp();
    let most = 0;
    for (let batch = 0; batch < 40; batch++) {
      const clients = await Promise.all(
        Array.from({ length: 50 }, async (_, i) => {
          const n = batch * 50 + i;
          const channels = [`user:c${n}`, `room:${n}`, `room:shared${n % 7}`];
          if (n % 2 === 0) {
            const c = await connectClient(app.url, { token: `u:c${n}` });
            for (const channel of channels) expect(await c.subscribe(channel)).toMatchObject({ ok: true });
            return () => c.socket.close();
          }
          const ws = await rawSubscriber(app, `u:c${n}`, channels);
          return () => ws.terminate(); // vanishes: no disconnect packet, the TCP connection torn down
        }),
      );
      const now = held(gateway);
      most = Math.max(most, now.relays);
      expect(now).toMatchObject({ connections: 50, users: 50 });
      for (const leave of clients) leave();
      expect(await waitFor(() => gateway.stats().connections === 0, 10_000)).toBe(true);
    }
    // 50 sockets at a time: 100 own channels + 7 shared rooms at most, never the 2,000 users' 4,000
    expect(most).toBeLessThanOrEqual(107);
    expect(await waitFor(() => held(gateway).relays === 0, 10_000)).toBe(true);
    expect(held(gateway)).toEqual(EMPTY);
    // every Redis subscription the relays opened is closed again
    expect(await waitFor(() => pubsub.subscriptionCount === baseline, 10_000)).toBe(true);
  });

  it('clients that connect and never authenticate, or authenticate wrongly, leave nothing behind', async () => {
    const app = await createGatewayApp({ keyPrefix: `gc${uid()}:` });
    const gateway = app.get(NotificationsGateway);
    const idle: WebSocket[] = [];
    for (let batch = 0; batch < 10; batch++) {
      await Promise.all(
        Array.from({ length: 50 }, async () => {
          // engine.io open, no namespace CONNECT ever sent
          const ws = new WebSocket(`${app.url.replace('http', 'ws')}/socket.io/?EIO=4&transport=websocket`);
          await new Promise<void>((resolve, reject) => {
            ws.once('message', () => resolve());
            ws.once('error', reject);
          });
          idle.push(ws);
          // and a refused one: no token, then a wrong one
          await connectClient(app.url, {}).then(
            () => expect('connected').toBe('refused'),
            () => undefined,
          );
          await connectClient(app.url, { token: 'nope' }).then(
            () => expect('connected').toBe('refused'),
            () => undefined,
          );
        }),
      );
    }
    expect(gateway.stats().refused).toBe(1_000);
    expect(held(gateway)).toEqual(EMPTY);
    for (const ws of idle) ws.terminate();
  });
});

/** A gateway authenticating sockets by their session (the default authenticate), with no subscribe limit. */
async function sessionGatewayApp() {
  const app = await createGatewayApp({
    keyPrefix: `gc${uid()}:`,
    session: {},
    pubsub: { gateway: { authenticate: undefined, subscribeRateLimit: false } },
  });
  return { app, gateway: app.get(NotificationsGateway), sessions: app.get(SessionService) };
}

it('sockets bound to sessions: leaving or being revoked empties the revocation maps; the revoked are capped', async () => {
  const { app, gateway, sessions } = await sessionGatewayApp();
  const made = await Promise.all(Array.from({ length: 200 }, (_, i) => sessions.create(`s${i}`)));
  const clients = await Promise.all(made.map((s) => connectClient(app.url, { token: s.id })));
  for (const [i, c] of clients.entries()) expect(await c.subscribe(`user:s${i}`)).toMatchObject({ ok: true });
  expect(held(gateway)).toMatchObject({ connections: 200, revocationSockets: 200, revocationSessions: 200 });
  // half leave, the other half's sessions are destroyed (revoked: disconnected by the gateway)
  for (const c of clients.slice(0, 100)) c.socket.close();
  await Promise.all(made.slice(100).map((s) => sessions.destroy(s.id)));
  expect(await waitFor(() => gateway.stats().connections === 0, 10_000)).toBe(true);
  expect(await waitFor(() => held(gateway).relays === 0, 10_000)).toBe(true);
  expect(held(gateway)).toEqual(EMPTY);
  expect(gateway.stats().revoked).toBe(100);
  // 12,000 more sessions ended (ids that never existed: each destroy is announced all the same): the gateway
  // remembers the revoked ones for a minute, at most 10,000 of them
  const recent = (gateway as unknown as { revocations: { recent: Map<string, number> } }).revocations.recent;
  let most = 0;
  for (let i = 0; i < 12_000; i += 500) {
    await Promise.all(Array.from({ length: 500 }, () => sessions.destroy(generateSessionId())));
    most = Math.max(most, recent.size);
  }
  expect(await waitFor(() => recent.size === 10_000, 10_000)).toBe(true);
  expect(most).toBeLessThanOrEqual(10_000);
});

it('100 clients holding 40 channels each vanish: every relay and Redis subscription goes', async () => {
  const { app, gateway, pubsub, baseline } = await openGatewayApp();
  const channels = (n: number) => Array.from({ length: 40 }, (_, j) => `many:${n}:${j}`);
  const sockets = await Promise.all(Array.from({ length: 100 }, (_, n) => rawSubscriber(app, `u:m${n}`, channels(n))));
  expect(held(gateway)).toMatchObject({ connections: 100, relays: 4_000, users: 100 });
  expect(pubsub.subscriptionCount - baseline).toBe(4_000);
  for (const ws of sockets) ws.terminate();
  expect(await waitFor(() => held(gateway).relays === 0 && pubsub.subscriptionCount === baseline, 20_000)).toBe(true);
  expect(held(gateway)).toEqual(EMPTY);
});

it('500 session-authenticated handshakes whose connection is torn down at once leave nothing bound', async () => {
  const { app, gateway, sessions } = await sessionGatewayApp();
  const made = await Promise.all(Array.from({ length: 500 }, (_, i) => sessions.create(`h${i}`)));
  await Promise.all(
    made.map(async (s) => {
      const ws = new WebSocket(`${app.url.replace('http', 'ws')}/socket.io/?EIO=4&transport=websocket`);
      await new Promise<void>((resolve, reject) => {
        ws.once('message', () => {
          ws.send(`40/notifications,${JSON.stringify({ token: s.id })}`);
          ws.terminate(); // gone while its session is looked up
          resolve();
        });
        ws.once('error', reject);
      });
    }),
  );
  // the handshakes decided after their connections closed: nothing is left of them
  await new Promise((r) => setTimeout(r, 500));
  expect(await waitFor(() => held(gateway).revocationSessions === 0, 10_000)).toBe(true);
  expect(held(gateway)).toEqual(EMPTY);
});

it('1,000 handshakes with forged session cookies or tokens are refused and write nothing to Redis', async () => {
  const secret = 'gateway-churn-secret-0123456789-abcdefghij';
  const app = await createGatewayApp({
    target: { url: redis.server.url },
    keyPrefix: `gc${uid()}:`,
    session: { cookie: { secret } },
    pubsub: { gateway: { authenticate: undefined } },
  });
  const gateway = app.get(NotificationsGateway);
  const admin = new Redis(redis.server.url);
  try {
    // the revocation subscription is made at the first handshake: one first, then count
    await connectClient(app.url, { token: generateSessionId() }).catch(() => undefined);
    const before = await admin.dbsize();
    for (let batch = 0; batch < 20; batch++) {
      await Promise.all(
        Array.from({ length: 50 }, (_, i) => {
          const id = generateSessionId();
          const forged = [
            { cookie: `rtk.sid=${encodeURIComponent(`s:${id}.${randomBytes(32).toString('base64url')}`)}` },
            { cookie: `rtk.sid=${encodeURIComponent(signCookieValue(id, secret))}` }, // signed, no such session
            { cookie: `rtk.sid=s:${'x'.repeat(6_000)}.sig` },
          ][i % 3];
          const auth = i % 4 === 0 ? { token: id } : {};
          return connectClient(app.url, auth, '/notifications', forged).then(
            () => expect('connected').toBe('refused'),
            (err: Error & { data?: { code?: string } }) => expect(err.data?.code).toBe('E_UNAUTHENTICATED'),
          );
        }),
      );
    }
    expect((await admin.dbsize()) - before).toBe(0);
    expect(held(gateway)).toEqual(EMPTY);
  } finally {
    admin.disconnect();
  }
});

describe('a durable replay after entries following lastId were trimmed from the stream', () => {
  it.each(['single', 'cluster'] as const)('says skipped (%s)', async (target) => {
    const user = `tr${uid()}`;
    const app = await createGatewayApp({
      target,
      keyPrefix: `gc${uid()}:`,
      pubsub: { durable: { maxLen: 10 }, gateway: { maxReplay: 1_000, subscribeRateLimit: false } },
    });
    const pubsub = app.get(PubSubService);
    await pubsub.notifyUser(user, 'first');
    const [first] = await pubsub.replay(user, '0-0', 1);
    // 300 more: XADD MAXLEN ~ 10 trims whole nodes of 100 entries, 'first' and many after it among them
    for (let n = 0; n < 300; n++) await pubsub.notifyUser(user, n);
    const kept = await pubsub.replay(user, '0-0', 1_000);
    expect(kept.length).toBeLessThan(300); // trimmed: what came right after 'first' is gone
    expect(kept[0].data).not.toBe(0);
    const c = await connectClient(app.url, { token: `u:${user}` });
    // before: { ok: true, replayed: kept.length } as if the client had missed nothing more
    expect(await c.subscribe(`user:${user}`, first.id)).toEqual({ ok: true, replayed: kept.length, skipped: true });
    expect(c.got.map((m) => m.id)).toEqual(kept.map((m) => m.id));

    // a lastId still in the stream: nothing was trimmed after it, so nothing skipped
    const d = await connectClient(app.url, { token: `u:${user}` });
    expect(await d.subscribe(`user:${user}`, kept[4].id)).toEqual({ ok: true, replayed: kept.length - 5 });
    // '0-0' (nothing seen): what the stream holds, no skipped while it is within maxReplay
    const e = await connectClient(app.url, { token: `u:${user}` });
    expect(await e.subscribe(`user:${user}`, '0-0')).toEqual({ ok: true, replayed: kept.length });
  });
});

it('the local rate limiter holds at most 10,000 windows, and lets go of the expired ones', async () => {
  const limiter = localRateLimiter();
  const policy = { limit: 3, ttl: 60_000 };
  for (let i = 0; i < 20_000; i++) await limiter(`ws-subscribe:u${i}`, policy);
  const size = (limiter as { size?: number }).size;
  expect(size).toBeDefined();
  expect(size).toBeLessThanOrEqual(10_000);
  // a window still open keeps counting: the newest user is refused after 3
  for (let i = 0; i < 3; i++) await limiter('ws-subscribe:u19999', policy);
  expect((await limiter('ws-subscribe:u19999', policy)).allowed).toBe(false);
  // windows of a short ttl go once expired
  const short = localRateLimiter();
  for (let i = 0; i < 500; i++) await short(`k${i}`, { limit: 1, ttl: 50 });
  await new Promise((r) => setTimeout(r, 120));
  await short('k-last', { limit: 1, ttl: 50 });
  expect((short as { size?: number }).size).toBe(1);
});

it("the local rate limiter's windows end on time when the wall clock steps back", async () => {
  const limiter = localRateLimiter();
  const policy = { limit: 1, ttl: 100 };
  expect((await limiter('ws-subscribe:clock', policy)).allowed).toBe(true);
  expect((await limiter('ws-subscribe:clock', policy)).allowed).toBe(false);
  const realNow = Date.now.bind(Date);
  const back = jest.spyOn(Date, 'now').mockImplementation(() => realNow() - 3_600_000); // an hour back (NTP, a VM)
  try {
    await new Promise((r) => setTimeout(r, 200));
    // before: { allowed: false, retryAfterMs: ~3,600,100 }: the window stayed open until the clock caught up
    expect(await limiter('ws-subscribe:clock', policy)).toEqual({ allowed: true, retryAfterMs: 0 });
  } finally {
    back.mockRestore();
  }
});
