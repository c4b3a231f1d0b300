import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import { Cluster } from 'ioredis';
import { PubSubService, SessionService } from '../../lib/index.js';
import { FEATURES, KeyBuilder } from '../../lib/advanced.js';
import { NotificationsGateway } from '../../lib/notifications/index.js';
import { useDisposableCluster } from '../support/disposable-cluster.js';
import { trackForCleanup } from '../support/private-servers.js';
import { closeClients, connectClient, createGatewayApp } from '../support/pubsub-gateway.js';
import { startRedisCluster } from '../support/redis-cluster.js';
import { rawCommand } from '../support/resp.js';
import { closeToolkitApps, createToolkitApp } from '../support/toolkit-app.js';
import { settleWithin, sleep, waitFor } from '../support/wait.js';

afterEach(closeToolkitApps);
// After a node restart ioredis' sharded subscriber group schedules a slots refresh (a timer of at most 2 s that quit()
// does not clear); let it run out so jest exits cleanly.
afterAll(() => sleep(2_500));

/**
 * Sharded pub/sub on a private cluster: a master restarted → SSUBSCRIBE on its shard is restored, no call needed, and
 * onResubscribed fires.
 */
it('sharded subscriptions come back after a master restarts', async () => {
  const cluster = trackForCleanup(await startRedisCluster({ masters: 3 }));
  const opts = {
    target: { cluster: cluster.startupNodes },
    keyPrefix: 'cr:',
    commandTimeout: 500,
    maxReconnectDelay: 200,
  } as const;
  const a = await createToolkitApp(opts);
  const b = await createToolkitApp(opts);
  const sub = a.get(PubSubService);
  const pub = b.get(PubSubService);
  expect(sub.isSharded).toBe(true);
  let resubscribed = 0;
  sub.onResubscribed(() => resubscribed++);
  const got = new Map<string, unknown[]>();
  const channels = Array.from({ length: 12 }, (_, i) => `c${i}`);
  for (const ch of channels) await sub.subscribe(ch, (p) => void got.set(ch, [...(got.get(ch) ?? []), p]));
  for (const ch of channels) await pub.publish(ch, 'before');
  expect(await waitFor(() => channels.every((ch) => got.get(ch)?.length === 1), 5_000)).toBe(true);

  const victim = cluster.masters[0];
  await victim.kill();
  await sleep(300);
  await victim.restart();
  const resumed = await waitFor(async () => {
    await Promise.all(channels.map((ch) => pub.publish(ch, 'after').catch(() => 0)));
    return channels.every((ch) => got.get(ch)?.includes('after'));
  }, 20_000);
  expect(channels.filter((ch) => !got.get(ch)?.includes('after'))).toEqual([]);
  expect(resumed).toBe(true);
  // The subscriber group was rebuilt after the loss: listeners were told (messages published meanwhile were lost).
  expect(await waitFor(() => resubscribed >= 1, 5_000)).toBe(true);
}, 60_000);

/**
 * A cluster's subscriber connections cut alone (CLIENT KILL TYPE pubsub on every node), in both pub/sub modes:
 * PubSubService.onResubscribed fires once they are back, so the gateway re-checks the sessions of its sockets (a
 * revocation published meanwhile would be lost). The session is deleted without a revocation before the cut, so only
 * that re-check can disconnect its socket.
 */
describe.each(['sharded', 'classic'] as const)('subscriber connections cut on a cluster (%s pub/sub)', (mode) => {
  const cluster = useDisposableCluster();
  afterEach(closeClients);

  it('onResubscribed fires once they are back, and the gateway drops the sockets whose session is gone', async () => {
    const target = { cluster: cluster().startupNodes };
    const keyPrefix = `cr${randomBytes(4).toString('hex')}:`;
    const options = {
      target,
      keyPrefix,
      session: { cookie: { secret: 'restart-secret' } },
      pubsub: { cluster: mode, gateway: { authenticate: undefined } },
    };
    const a = await createGatewayApp(options);
    const b = await createGatewayApp(options);
    const pubsub = b.get(PubSubService);
    expect(pubsub.isSharded).toBe(mode === 'sharded');
    let resubscribed = 0;
    pubsub.onResubscribed(() => resubscribed++);
    const sessions = a.get(SessionService);
    const doomed = await sessions.create('kim');
    const kept = await sessions.create('kim');
    const gone = await connectClient(b.url, { token: doomed.id });
    const stays = await connectClient(b.url, { token: kept.id });
    expect(await gone.subscribe('user:kim')).toEqual({ ok: true });
    const disconnected = new Promise<string>((r) => gone.socket.once('disconnect', r));

    // The session goes without a revocation (as one lost while the subscriber was away would leave it): nothing
    // disconnects its socket until the sessions are re-checked.
    const plain = trackForCleanup(new Cluster(cluster().startupNodes));
    expect(await plain.del(a.get(KeyBuilder).taggedTrusted(FEATURES.session, doomed.id))).toBe(1);
    await sleep(200);
    expect(gone.socket.connected).toBe(true);
    expect(resubscribed).toBe(0);

    const killed = await Promise.all(
      cluster().nodes.map((node) => rawCommand(node.port, ['CLIENT', 'KILL', 'TYPE', 'pubsub'])),
    );
    // B's subscriber connections only (A has no subscription): classic, its one connection; sharded, one per master
    // that owns a slot of its channels (the revocation channel, user:kim).
    expect(killed.reduce((sum: number, n) => sum + Number(n), 0)).toBeGreaterThanOrEqual(1);

    // Bounded by a margin for a loaded machine (the subscribers' return + one lookup per socket), not a timing.
    expect(await settleWithin(disconnected, 10_000, 'still connected')).toBe('io server disconnect');
    expect(resubscribed).toBeGreaterThanOrEqual(1);
    await sleep(200);
    expect(stays.socket.connected).toBe(true);
    expect(b.get(NotificationsGateway).stats()).toMatchObject({ revoked: 1, connections: 1 });
    // Delivery works again on the new subscriber connections.
    expect(await stays.subscribe('user:kim')).toEqual({ ok: true });
    await a.get(PubSubService).notifyUser('kim', 'back');
    expect(await waitFor(() => stays.got.length === 1, 5_000)).toBe(true);
  }, 60_000);
});
