/**
 * The gateway's subscription to session revocations, dropped by Redis after a reconnect (an ACL tightened: pub/sub
 * drops and reports a refused re-subscription, 1a6dd07). Before: the gateway went on admitting session sockets as if
 * revocations still arrived, so a session destroyed afterwards kept its socket, and the sockets whose sessions were
 * destroyed while it was dropped were never looked at again. Now the next handshake subscribes again, and the sockets
 * already there are re-checked.
 */
import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { PubSubService, SessionService } from '../../lib/index.js';
import { SESSION_REVOKED_CHANNEL } from '../../lib/session/session.revocation.js';
import { closeClients, connectClient, createGatewayApp } from '../support/pubsub-gateway.js';
import { trackForCleanup, usePrivateRedis } from '../support/private-servers.js';
import { recordingLogger } from '../support/recording-logger.js';
import { closeToolkitApps, PLATFORMS } from '../support/toolkit-app.js';
import { waitFor } from '../support/wait.js';

afterEach(async () => {
  closeClients();
  await closeToolkitApps();
});

const PASSWORD = `acl-${randomBytes(6).toString('hex')}`;
const BASE = ['on', `>${PASSWORD}`, '~*', '+@all', 'resetchannels'];

describe.each(PLATFORMS)('the gateway on %s when Redis drops its revocation subscription', (platform) => {
  const redis = usePrivateRedis();
  let admin: Redis;
  beforeAll(() => {
    admin = trackForCleanup(new Redis(redis.server.port, '127.0.0.1', { lazyConnect: true }));
  });

  it('the next handshake subscribes again, and the sockets already there are re-checked', async () => {
    await admin.call('acl', 'setuser', 'app', 'reset', ...BASE, '&rtk:*');
    const { logger } = recordingLogger();
    const app = await createGatewayApp({
      target: { url: `redis://app:${PASSWORD}@127.0.0.1:${redis.server.port}` },
      platform,
      commandTimeout: 2_000,
      maxReconnectDelay: 100,
      session: { cookie: { secret: 'revocation-dropped-secret' } },
      pubsub: { gateway: { authenticate: undefined } },
      logger,
    });
    const sessions = app.get(SessionService);
    const pubsub = app.get(PubSubService);
    const dropped: string[] = [];
    pubsub.onSubscriptionDropped((name) => void dropped.push(name));
    let resubscribed = 0;
    pubsub.onResubscribed(() => resubscribed++);

    const first = await sessions.create('alice');
    const early = await connectClient(app.url, { token: first.id });
    expect(await early.subscribe('user:alice')).toEqual({ ok: true });

    // Users' channels stay allowed, the revocation channel is not: Redis cuts the subscriber, which reconnects and
    // is refused the revocation channel on its re-subscription (pub/sub drops it and says so).
    await admin.call('acl', 'setuser', 'app', 'resetchannels', '&rtk:ps:user:*');
    expect(await waitFor(() => resubscribed === 1, 5_000)).toBe(true);
    expect(dropped).toEqual([SESSION_REVOKED_CHANNEL]);
    // Granted again (no reconnect follows an ACL widening), then alice logs out everywhere meanwhile: the revocation
    // is published, but nobody here listens.
    await admin.call('acl', 'setuser', 'app', 'resetchannels', '&rtk:*');
    expect(await sessions.destroyAllForUser('alice')).toBe(1);
    expect(early.socket.connected).toBe(true);

    // A new session socket: its handshake subscribes again (before: admitted on the old, dropped subscription) and
    // the early socket, whose session is gone, is disconnected by the re-check.
    const second = await sessions.create('bob');
    const late = await connectClient(app.url, { token: second.id });
    expect(await waitFor(() => !early.socket.connected, 5_000)).toBe(true);
    // Revocations arrive again: bob's logout disconnects his socket.
    expect(await sessions.destroy(second.id)).toBe(true);
    expect(await waitFor(() => !late.socket.connected, 5_000)).toBe(true);
  });
});
