import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import express from 'express';
import expressSession from 'express-session';
import { Redis } from 'ioredis';
import request from 'supertest';
import { PubSubService, REDIS_CLIENT, RedisSessionStore, SessionService } from '../../lib/index.js';
import { generateSessionId, KeyBuilder, RedisConnection } from '../../lib/advanced.js';
import { SESSION_REVOKED_CHANNEL } from '../../lib/session/session.revocation.js';
import type { RedisClient } from '../../lib/common/lua-script.js';
import { NotificationsGateway } from '../../lib/notifications/index.js';
import { trackForCleanup, usePrivateRedis } from '../support/private-servers.js';
import { closeClients, connectClient, createGatewayApp, type GatewayApp } from '../support/pubsub-gateway.js';
import { sharedServers } from '../support/shared-servers.js';
import { closeToolkitApps, type RedisTarget } from '../support/toolkit-app.js';
import { settleWithin, sleep, waitFor } from '../support/wait.js';

/**
 * Issue 17 item 2: a WebSocket never outlives its session. Destroying a session on any instance disconnects the
 * sockets it authenticated on every instance; a subscribe re-checks the session; the session cookie is accepted only
 * from an allowed Origin.
 */
afterEach(async () => {
  closeClients();
  await closeToolkitApps();
});

const uid = (): string => randomBytes(5).toString('hex');
const session = { cookie: { secret: 'revocation-secret' } };

async function instances(target: RedisTarget, count: number, gateway: Record<string, unknown> = {}) {
  const keyPrefix = `gr${uid()}:`;
  const apps: GatewayApp[] = [];
  for (let i = 0; i < count; i++) {
    apps.push(
      await createGatewayApp({
        target,
        keyPrefix,
        session,
        pubsub: { gateway: { authenticate: undefined, ...gateway } },
      }),
    );
  }
  return { apps, keyPrefix };
}

describe.each(['single', 'cluster'] as const)('sessions revoke their WebSockets on %s', (target) => {
  it('logout everywhere on instance A disconnects the sockets on instance B, and nothing more is delivered', async () => {
    const {
      apps: [a, b],
    } = await instances(target, 2);
    const sessionsA = a.get(SessionService);
    const phone = await sessionsA.create('alice');
    const laptop = await sessionsA.create('alice');
    const bob = await sessionsA.create('bob');
    const onPhone = await connectClient(b.url, { token: phone.id });
    const onLaptop = await connectClient(a.url, { token: laptop.id });
    const bobs = await connectClient(b.url, { token: bob.id });
    for (const [c, ch] of [
      [onPhone, 'user:alice'],
      [onLaptop, 'user:alice'],
      [bobs, 'user:bob'],
    ] as const)
      expect(await c.subscribe(ch)).toEqual({ ok: true });
    const pubsub = a.get(PubSubService);
    await pubsub.notifyUser('alice', 'before');
    expect(await waitFor(() => onPhone.got.length === 1 && onLaptop.got.length === 1, 5_000)).toBe(true);

    const disconnected = (c: typeof onPhone) => new Promise<string>((r) => c.socket.once('disconnect', r));
    const phoneGone = disconnected(onPhone);
    const laptopGone = disconnected(onLaptop);
    const started = Date.now();
    expect(await sessionsA.destroyAllForUser('alice')).toBe(2);
    await pubsub.notifyUser('alice', 'after');
    await pubsub.notifyUser('bob', 'still here');
    expect(await phoneGone).toBe('io server disconnect');
    expect(await laptopGone).toBe('io server disconnect');
    const elapsed = Date.now() - started;
    expect(await waitFor(() => bobs.got.length === 1, 5_000)).toBe(true);
    await sleep(200);
    if (target === 'single') {
      // One subscriber connection receives the revocation and the message in the order they were published.
      expect(onPhone.got.map((m) => m.data)).toEqual(['before']);
      expect(onLaptop.got.map((m) => m.data)).toEqual(['before']);
    }
    expect(bobs.socket.connected).toBe(true);
    expect(b.get(NotificationsGateway).stats()).toMatchObject({ revoked: 1, connections: 1, relays: 1 });
    expect(a.get(NotificationsGateway).stats()).toMatchObject({ revoked: 1, connections: 0, relays: 0 });
    // The contract is "within 1 s"; measured with a wide margin for a loaded machine.
    expect(elapsed).toBeLessThan(5_000);
    // The destroyed session cannot come back in.
    await expect(connectClient(b.url, { token: phone.id })).rejects.toMatchObject({
      data: { code: 'E_UNAUTHENTICATED' },
    });
  });

  it('destroy and regenerate revoke only that session; the revocation carries no session id', async () => {
    const {
      apps: [a, b],
      keyPrefix,
    } = await instances(target, 2);
    const sessions = a.get(SessionService);
    const one = await sessions.create('carol');
    const two = await sessions.create('carol');
    const c1 = await connectClient(b.url, { token: one.id });
    const c2 = await connectClient(b.url, { token: two.id });
    // Anyone who can SUBSCRIBE on that Redis hears the revocations (single server: every internal channel).
    const heard: string[] = [];
    if (target === 'single') {
      const spy = trackForCleanup(new Redis(sharedServers().single.url));
      spy.on('pmessage', (_p: string, _ch: string, m: string) => heard.push(m));
      await spy.psubscribe(`${keyPrefix}ps:__rtk:*`);
    }

    const c1Gone = new Promise((r) => c1.socket.once('disconnect', r));
    expect(await sessions.destroy(one.id)).toBe(true);
    await c1Gone;
    const renewed = await sessions.regenerate(two.id);
    expect(await waitFor(() => !c2.socket.connected, 5_000)).toBe(true);
    const c3 = await connectClient(b.url, { token: renewed.id });
    expect(await c3.subscribe('user:carol')).toEqual({ ok: true });
    expect(b.get(NotificationsGateway).stats().revoked).toBe(2);
    if (target === 'single') {
      expect(await waitFor(() => heard.length >= 2, 3_000)).toBe(true);
      for (const m of heard) {
        for (const id of [one.id, two.id]) expect(m).not.toContain(id);
      }
    }
  });

  it('a subscribe re-checks the session: one gone without a revocation (expired, evicted) is refused and disconnected', async () => {
    const {
      apps: [a],
      keyPrefix,
    } = await instances(target, 1);
    const s = await a.get(SessionService).create('dave');
    const c = await connectClient(a.url, { token: s.id });
    expect(await c.subscribe('user:dave')).toEqual({ ok: true });
    // Gone behind the toolkit's back: no revocation is published.
    await a.get(RedisConnection).client.del(`${keyPrefix}sess:{${s.id}}`);
    const gone = new Promise((r) => c.socket.once('disconnect', r));
    expect(await c.subscribe('public')).toMatchObject({ ok: false, code: 'E_UNAUTHENTICATED' });
    await gone;
    expect(a.get(NotificationsGateway).stats().revoked).toBe(1);
  });
});

/**
 * An express-session app on instance A's toolkit client, as docs/session.md sets it up (`genid: generateSessionId`,
 * so the gateway's default authentication reads the same sessions). Log in answers the session id.
 */
function expressSessionApp(store: RedisSessionStore): express.Express {
  const app = express();
  app.use(
    expressSession({
      store,
      secret: 'store-secret',
      resave: false,
      saveUninitialized: false,
      genid: generateSessionId,
    }),
  );
  app.post('/login/:user', (req, res) => {
    (req.session as unknown as { userId: string }).userId = req.params.user;
    res.json({ id: req.sessionID });
  });
  app.post('/logout', (req, res, next) => req.session.destroy((err) => (err ? next(err) : res.json({ ok: true }))));
  return app;
}

describe.each(['single', 'cluster'] as const)('RedisSessionStore revokes WebSockets on %s', (target) => {
  /** Resolves with the disconnect reason, or 'still connected' after `ms` (a bound for a loaded box, not a timing). */
  const disconnectWithin = (c: { socket: { once(e: string, f: (r: string) => void): unknown } }, ms: number) =>
    new Promise<string>((resolve) => {
      const timer = setTimeout(() => resolve('still connected'), ms);
      c.socket.once('disconnect', (reason) => {
        clearTimeout(timer);
        resolve(reason);
      });
    });

  it('a logout through express-session (store.destroy) on instance A disconnects the socket on instance B', async () => {
    const {
      apps: [a, b],
      keyPrefix,
    } = await instances(target, 2);
    const store = new RedisSessionStore({ client: a.get<RedisClient>(REDIS_CLIENT), prefix: keyPrefix });
    const app = expressSessionApp(store);
    const agent = request.agent(app);
    const { id } = (await agent.post('/login/gina').expect(200)).body as { id: string };
    const other = (await request(app).post('/login/gina').expect(200)).body as { id: string };
    const onB = await connectClient(b.url, { token: id });
    const otherOnB = await connectClient(b.url, { token: other.id });
    expect(await onB.subscribe('user:gina')).toEqual({ ok: true });

    const gone = disconnectWithin(onB, 5_000);
    await agent.post('/logout').expect(200);
    // The contract is "within 1 s"; 5 s is the margin for a loaded machine, and the test fails past it.
    expect(await gone).toBe('io server disconnect');
    expect(await store.get(id)).toBeNull();
    // Only that session: the other socket of the same user stays.
    await sleep(200);
    expect(otherOnB.socket.connected).toBe(true);
    expect(b.get(NotificationsGateway).stats()).toMatchObject({ revoked: 1, connections: 1 });
    await expect(connectClient(b.url, { token: id })).rejects.toMatchObject({ data: { code: 'E_UNAUTHENTICATED' } });
  });

  it('store.clear() disconnects every session socket on every instance', async () => {
    const {
      apps: [a, b],
      keyPrefix,
    } = await instances(target, 2);
    const store = new RedisSessionStore({ client: a.get<RedisClient>(REDIS_CLIENT), prefix: keyPrefix });
    const app = expressSessionApp(store);
    const ids: string[] = [];
    for (const user of ['hal', 'ida', 'hal'])
      ids.push(((await request(app).post(`/login/${user}`).expect(200)).body as { id: string }).id);
    const sockets = [
      await connectClient(a.url, { token: ids[0] }),
      await connectClient(b.url, { token: ids[1] }),
      await connectClient(b.url, { token: ids[2] }),
    ];
    const gone = sockets.map((c) => disconnectWithin(c, 5_000));
    await store.clear();
    expect(await Promise.all(gone)).toEqual(['io server disconnect', 'io server disconnect', 'io server disconnect']);
    expect(a.get(NotificationsGateway).stats().revoked).toBe(1);
    expect(b.get(NotificationsGateway).stats().revoked).toBe(2);
  });
});

describe('a revocation published while the subscriber connection is away', () => {
  // A server of its own: CLIENT KILL TYPE pubsub must reach only this test's subscribers.
  const redis = usePrivateRedis();

  it('is not lost: once the subscriber is back, every socket whose session is gone is disconnected', async () => {
    const {
      apps: [a, b],
    } = await instances({ url: redis.server.url }, 2);
    const sessions = a.get(SessionService);
    const doomed = await sessions.create('kim');
    const kept = await sessions.create('kim');
    const gone = await connectClient(b.url, { token: doomed.id });
    const stays = await connectClient(b.url, { token: kept.id });
    expect(await gone.subscribe('user:kim')).toEqual({ ok: true });
    const disconnected = new Promise<string>((r) => gone.socket.once('disconnect', r));

    const admin = trackForCleanup(new Redis(redis.server.url));
    // B's subscriber (the revocation channel, the relay of user:kim) is cut (A has none: no socket, no subscription);
    // the destroy follows at once.
    expect(await admin.call('CLIENT', 'KILL', 'TYPE', 'pubsub')).toBe(1);
    expect(await sessions.destroy(doomed.id)).toBe(true);
    // The premise: nobody was subscribed to the revocation channel when it was announced (published just before).
    const [, listeners] = (await admin.pubsub('NUMSUB', `${a.get(KeyBuilder).channel(SESSION_REVOKED_CHANNEL)}`)) as [
      string,
      number,
    ];
    expect(listeners).toBe(0);

    // Bounded by a margin for a loaded machine (reconnect delay + one lookup per socket), not a timing.
    const reason = await settleWithin(disconnected, 10_000, 'still connected');
    expect(reason).toBe('io server disconnect');
    await sleep(200);
    expect(stays.socket.connected).toBe(true);
    expect(b.get(NotificationsGateway).stats()).toMatchObject({ revoked: 1, connections: 1 });
    // Delivery works again on the reconnected subscriber.
    expect(await stays.subscribe('user:kim')).toEqual({ ok: true });
    await a.get(PubSubService).notifyUser('kim', 'back');
    expect(await waitFor(() => stays.got.length === 1, 5_000)).toBe(true);
  });
});

describe('the session cookie and the Origin of the handshake', () => {
  async function cookieFor(app: GatewayApp, userId: string): Promise<string> {
    const sessions = app.get(SessionService);
    const s = await sessions.create(userId);
    const name = sessions.options.cookie.name;
    return `${name}=${encodeURIComponent(sessions.signedCookieValue(s.id))}`;
  }

  it('refuses a cross-site Origin by default, accepts the same origin and a handshake without Origin', async () => {
    const {
      apps: [app],
    } = await instances('single', 1);
    const cookie = await cookieFor(app, 'erin');
    await expect(
      connectClient(app.url, {}, '/notifications', { cookie, origin: 'https://evil.example' }),
    ).rejects.toMatchObject({ data: { code: 'E_FORBIDDEN_ORIGIN' } });
    await expect(
      connectClient(app.url, {}, '/notifications', { cookie, origin: 'http://127.0.0.1:1' }),
    ).rejects.toMatchObject({ data: { code: 'E_FORBIDDEN_ORIGIN' } });
    const same = await connectClient(app.url, {}, '/notifications', { cookie, origin: app.url });
    expect(await same.subscribe('user:erin')).toEqual({ ok: true });
    const noOrigin = await connectClient(app.url, {}, '/notifications', { cookie });
    expect(await noOrigin.subscribe('user:erin')).toEqual({ ok: true });
    // auth.token is not sent by a browser on its own: no Origin check for it.
    const s = await app.get(SessionService).create('erin');
    await connectClient(app.url, { token: s.id }, '/notifications', { origin: 'https://evil.example' });
    expect(app.get(NotificationsGateway).stats().refused).toBe(2);
  });

  it('accepts a configured origin and refuses the others, the same origin included', async () => {
    const {
      apps: [app],
    } = await instances('single', 1, { allowedOrigins: ['https://app.example.com'] });
    const cookie = await cookieFor(app, 'frank');
    const ok = await connectClient(app.url, {}, '/notifications', { cookie, origin: 'https://app.example.com' });
    expect(await ok.subscribe('user:frank')).toEqual({ ok: true });
    await expect(
      connectClient(app.url, {}, '/notifications', { cookie, origin: 'https://app.example.com.evil.example' }),
    ).rejects.toMatchObject({ data: { code: 'E_FORBIDDEN_ORIGIN' } });
    await expect(connectClient(app.url, {}, '/notifications', { cookie, origin: app.url })).rejects.toMatchObject({
      data: { code: 'E_FORBIDDEN_ORIGIN' },
    });
  });

  it('refuses a malformed allowedOrigins at startup', async () => {
    await expect(instances('single', 1, { allowedOrigins: ['app.example.com'] })).rejects.toThrow(
      /pubsub\.gateway\.allowedOrigins/,
    );
  });
});
