import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import { PubSubService, SessionService } from '../../lib/index.js';
import { REDIS_TOOLKIT_OPTIONS, signCookieValue, type ResolvedRedisToolkitOptions } from '../../lib/advanced.js';
import { NotificationsGateway } from '../../lib/notifications/index.js';
import { resolveToolkitOptions } from '../../lib/redis-toolkit.options-resolver.js';
import { trackForCleanup } from '../support/private-servers.js';
import { closeClients, connectClient, createGatewayApp } from '../support/pubsub-gateway.js';
import { startRedisServer } from '../support/redis-server.js';
import { closeToolkitApps, PLATFORMS_AND_TARGETS } from '../support/toolkit-app.js';
import { waitFor } from '../support/wait.js';

/** The default `authenticate`: the session cookie or `auth.token`, through the real SessionService. */
afterEach(async () => {
  closeClients();
  await closeToolkitApps();
});

const uid = (): string => randomBytes(5).toString('hex');
const sessionOptions = { cookie: { secret: ['new-secret', 'old-secret'] } };

describe.each(PLATFORMS_AND_TARGETS)('default session authentication on %s, %s', (platform, target) => {
  async function boot() {
    const app = await createGatewayApp({
      platform,
      target,
      keyPrefix: `gs${uid()}:`,
      session: sessionOptions,
      pubsub: { gateway: { authenticate: undefined } },
    });
    const sessions = app.get(SessionService);
    const cookieName = app.get<ResolvedRedisToolkitOptions>(REDIS_TOOLKIT_OPTIONS).session.cookie.name;
    return { app, sessions, cookieName };
  }

  it('accepts the signed session cookie and auth.token; the user is the session user', async () => {
    const { app, sessions, cookieName } = await boot();
    const session = await sessions.create('u-42');
    const byCookie = await connectClient(app.url, {}, '/notifications', {
      cookie: `other=1; ${cookieName}=${encodeURIComponent(sessions.signedCookieValue(session.id))}`,
    });
    const byToken = await connectClient(app.url, { token: session.id });
    expect(await byCookie.subscribe('user:u-42')).toEqual({ ok: true });
    expect(await byToken.subscribe('user:u-42')).toEqual({ ok: true });
    expect(await byCookie.subscribe('user:u-43')).toMatchObject({ ok: false, code: 'E_FORBIDDEN' });
    await app.get(PubSubService).notifyUser('u-42', 'hello');
    expect(await waitFor(() => byCookie.got.length === 1 && byToken.got.length === 1, 3_000)).toBe(true);
  });

  it('refuses no session, an unsigned, tampered or foreign-secret cookie, a malformed token and a destroyed session', async () => {
    const { app, sessions, cookieName } = await boot();
    const session = await sessions.create('u-1');
    const signed = sessions.signedCookieValue(session.id);
    const refused = { data: { code: 'E_UNAUTHENTICATED' } };
    await expect(connectClient(app.url)).rejects.toMatchObject(refused);
    await expect(
      connectClient(app.url, {}, '/notifications', { cookie: `${cookieName}=${session.id}` }),
    ).rejects.toMatchObject(refused);
    await expect(
      connectClient(app.url, {}, '/notifications', {
        cookie: `${cookieName}=${encodeURIComponent(signed.slice(0, -2) + 'xx')}`,
      }),
    ).rejects.toMatchObject(refused);
    const foreign = signCookieValue(session.id, 'someone-else');
    await expect(
      connectClient(app.url, {}, '/notifications', { cookie: `${cookieName}=${encodeURIComponent(foreign)}` }),
    ).rejects.toMatchObject(refused);
    // The old secret still verifies (rotation).
    const old = await connectClient(app.url, {}, '/notifications', {
      cookie: `${cookieName}=${encodeURIComponent(signCookieValue(session.id, 'old-secret'))}`,
    });
    old.socket.close();
    await expect(connectClient(app.url, { token: 'not a session id' })).rejects.toMatchObject(refused);
    await expect(connectClient(app.url, { token: 42 })).rejects.toMatchObject(refused);
    await sessions.destroy(session.id);
    await expect(connectClient(app.url, { token: session.id })).rejects.toMatchObject(refused);
    await expect(
      connectClient(app.url, {}, '/notifications', { cookie: `${cookieName}=${encodeURIComponent(signed)}` }),
    ).rejects.toMatchObject(refused);
    expect(app.get(NotificationsGateway).stats().refused).toBe(8);
  });

  // A sibling subdomain can set a cookie of the session's name, and the browser may send it first. Before: the
  // gateway tried the first verified cookie only, so the signed cookie of an attacker's own logged-out session, sent
  // first, kept the user's socket out (E_UNAUTHENTICATED) while HTTP (SessionMiddleware, SessionGuard) let them in.
  it('with several session cookies, takes the first live session, as HTTP does', async () => {
    const { app, sessions, cookieName } = await boot();
    const dead = await sessions.create('attacker');
    await sessions.destroy(dead.id);
    const live = await sessions.create('u-9');
    const cookie = (id: string) => `${cookieName}=${encodeURIComponent(sessions.signedCookieValue(id))}`;
    const client = await connectClient(app.url, {}, '/notifications', {
      cookie: `${cookieName}=junk; ${cookie(dead.id)}; ${cookie(live.id)}`,
    });
    expect(await client.subscribe('user:u-9')).toEqual({ ok: true });
    expect(await client.subscribe('user:attacker')).toMatchObject({ ok: false, code: 'E_FORBIDDEN' });
    await expect(
      connectClient(app.url, {}, '/notifications', { cookie: `${cookie(dead.id)}; ${cookieName}=junk` }),
    ).rejects.toMatchObject({ data: { code: 'E_UNAUTHENTICATED' } });
  });
});

describe('default session authentication when Redis is down', () => {
  it('refuses with E_AUTH_UNAVAILABLE (not E_UNAUTHENTICATED), then accepts again once Redis is back', async () => {
    const server = trackForCleanup(await startRedisServer());
    const app = await createGatewayApp({
      target: { url: server.url },
      keyPrefix: 'gsd:',
      commandTimeout: 300,
      maxReconnectDelay: 200,
      session: sessionOptions,
      pubsub: { gateway: { authenticate: undefined } },
    });
    const session = await app.get(SessionService).create('u-7');
    await server.stop();
    await expect(connectClient(app.url, { token: session.id })).rejects.toMatchObject({
      data: { code: 'E_AUTH_UNAVAILABLE' },
    });
    await server.restart(); // the data is gone (no persistence): the session no longer exists
    // Until the client has reconnected, commands fail at once (no offline queue): retry until it has.
    let again: Awaited<ReturnType<SessionService['create']>> | undefined;
    expect(
      await waitFor(
        async () =>
          (again = await app
            .get(SessionService)
            .create('u-7')
            .catch(() => undefined)) !== undefined,
        5_000,
      ),
    ).toBe(true);
    if (!again) throw new Error('unreachable');
    expect(
      await waitFor(
        async () =>
          connectClient(app.url, { token: again!.id }).then(
            () => true,
            () => false,
          ),
        5_000,
      ),
    ).toBe(true);
  });
});

describe('gateway options', () => {
  it('lists every wrong gateway option by path', () => {
    const bad = {
      connection: { url: 'redis://127.0.0.1:1' },
      pubsub: {
        cluster: 'mesh',
        durable: { maxLen: 0 },
        gateway: {
          namespace: '/x',
          authenticate: 'yes',
          maxSubscriptionsPerSocket: -1,
          subscribeRateLimit: { limit: 5 },
          slowClient: { policy: 'ignore' },
          publicChannels: [''],
        },
      },
    };
    let message = '';
    try {
      resolveToolkitOptions(bad as never);
    } catch (err) {
      message = (err as Error).message;
    }
    for (const path of [
      'pubsub.cluster',
      'pubsub.durable.maxLen',
      'pubsub.gateway.namespace',
      'pubsub.gateway.authenticate',
      'pubsub.gateway.maxSubscriptionsPerSocket',
      'pubsub.gateway.subscribeRateLimit',
      'pubsub.gateway.slowClient.policy',
      'pubsub.gateway.publicChannels',
    ]) {
      expect(message).toContain(path);
    }
  });
});
