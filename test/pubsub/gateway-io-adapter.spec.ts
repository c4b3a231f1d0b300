import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import type { INestApplication } from '@nestjs/common';
import { IoAdapter } from '@nestjs/platform-socket.io';
import { createAdapter } from '@socket.io/redis-adapter';
import { Redis } from 'ioredis';
import { ClusterAdapterWithHeartbeat, type ClusterMessage, type ClusterResponse, MessageType } from 'socket.io-adapter';
import { PubSubService } from '../../lib/index.js';
import { NotificationsGateway } from '../../lib/notifications/index.js';
import type { NotificationsGatewayOptions } from '../../lib/notifications/index.js';
import { usePrivateRedis } from '../support/private-servers.js';
import {
  closeClients,
  connectClient,
  connectStalledClient,
  createGatewayApp,
  type GatewayApp,
  type TestClient,
} from '../support/pubsub-gateway.js';
import { closeToolkitApps, PLATFORMS, type Platform } from '../support/toolkit-app.js';
import { waitFor } from '../support/wait.js';
import { commandCalls, resetCommandCalls } from '../support/commandstats.js';

/**
 * The gateway in apps that run a Socket.IO adapter across instances: Nest's RedisIoAdapter recipe
 * (docs.nestjs.com/websockets/adapter: `@socket.io/redis-adapter`'s createAdapter on two Redis clients, installed with
 * app.useWebSocketAdapter) and the ClusterAdapterWithHeartbeat base of socket.io-adapter, which the Redis streams
 * adapter and the cluster adapter extend (here over an in-process bus standing in for their transport). Each instance
 * relays the Redis messages itself, so an emit that the adapter also broadcast to the other instances reached a client
 * once per instance relaying its channel, past the slow-client policy of the instance it is connected to.
 */

// Its own server: INFO commandstats counts only this file's commands.
const redis = usePrivateRedis();
const quitAfter: Redis[] = [];

afterEach(async () => {
  closeClients();
  await closeToolkitApps();
  await Promise.all(quitAfter.splice(0).map((c) => c.quit().catch(() => c.disconnect())));
});

const uid = (): string => randomBytes(5).toString('hex');

/** The Socket.IO server Nest's IoAdapter creates (from its own copy of socket.io, whose types differ from ours). */
type IoServer = ReturnType<IoAdapter['createIOServer']>;

/** Nest's RedisIoAdapter recipe, with the adapter to install given. */
class AdapterIoAdapter extends IoAdapter {
  constructor(
    app: INestApplication,
    private readonly install: (server: IoServer) => void,
  ) {
    super(app);
  }

  override createIOServer(...args: Parameters<IoAdapter['createIOServer']>): IoServer {
    const server = super.createIOServer(...args);
    this.install(server);
    return server;
  }
}

/** The cluster-adapter family (socket.io-adapter's ClusterAdapterWithHeartbeat) over an in-process bus. */
function busAdapter(bus: EventEmitter, counts: { broadcasts: number }) {
  return class BusAdapter extends ClusterAdapterWithHeartbeat {
    private readonly onBus = (message: ClusterMessage) => {
      if (message.uid !== this.uid && message.nsp === this.nsp.name) this.onMessage(message);
    };
    private readonly onBusResponse = (to: string, response: ClusterResponse) => {
      if (to === this.uid) this.onResponse(response);
    };

    constructor(nsp: unknown) {
      super(nsp, { heartbeatInterval: 60_000, heartbeatTimeout: 120_000 });
      bus.on('message', this.onBus);
      bus.on('response', this.onBusResponse);
    }

    protected async doPublish(message: ClusterMessage): Promise<string> {
      if (message.type === MessageType.BROADCAST) {
        const [event] = (message.data as { packet: { data: unknown[] } }).packet.data;
        if (event === 'notification') counts.broadcasts++;
      }
      // A hop like a network's: encoded, and received on a later turn.
      const copy = structuredClone(message);
      setImmediate(() => bus.emit('message', copy));
      return '';
    }

    protected async doPublishResponse(requesterUid: string, response: ClusterResponse): Promise<void> {
      const copy = structuredClone(response);
      setImmediate(() => bus.emit('response', requesterUid, copy));
    }

    override close(): void {
      super.close();
      bus.off('message', this.onBus);
      bus.off('response', this.onBusResponse);
    }
  };
}

type AdapterKind = 'redis-adapter' | 'cluster-adapter';

interface Fleet {
  apps: GatewayApp[];
  /** Adapter broadcasts of `notification` events (PUBLISHes to the adapter's channels, or bus broadcasts). */
  adapterBroadcasts(): number;
  /** Each instance emits `fence` to the whole namespace through the adapter (an app's own emit). */
  fence(clients: TestClient[]): Promise<void>;
}

/** `instances` copies of one app (same keyPrefix, same Redis), each with the adapter of `kind` installed. */
async function startFleet(
  kind: AdapterKind,
  platform: Platform,
  instances: number,
  gateway: NotificationsGatewayOptions,
  extra: { durable?: boolean } = {},
): Promise<Fleet> {
  const keyPrefix = `gia${uid()}:`;
  const key = `sio${uid()}`;
  const counts = { broadcasts: 0, fences: 0 };
  const bus = new EventEmitter();
  bus.setMaxListeners(0);
  let install: (server: IoServer) => void;
  if (kind === 'redis-adapter') {
    // Counts what the adapters PUBLISH on their channels (`<key>#<nsp>#[<room>#]`), without MONITOR.
    const counter = new Redis(redis.server.url, { lazyConnect: true });
    quitAfter.push(counter);
    await counter.connect();
    counter.on('pmessage', (_pattern: string, channel: string) => {
      if (channel === `${key}#/notifications#`) counts.fences++;
      else if (channel.startsWith(`${key}#/notifications#rtk:`)) counts.broadcasts++;
    });
    await counter.psubscribe(`${key}#*`);
    install = (server) => {
      const pub = new Redis(redis.server.url);
      const sub = pub.duplicate();
      quitAfter.push(pub, sub);
      server.adapter(createAdapter(pub, sub, { key }));
    };
  } else {
    install = (server) => {
      server.adapter(busAdapter(bus, counts));
    };
  }
  const apps: GatewayApp[] = [];
  for (let i = 0; i < instances; i++) {
    apps.push(
      await createGatewayApp({
        platform,
        target: { url: redis.server.url },
        keyPrefix,
        commandTimeout: 10_000,
        pubsub: {
          ...(extra.durable && { durable: { maxLen: 1_000 } }),
          gateway: { subscribeRateLimit: false, ...gateway },
        },
        beforeInit: (app) => {
          app.useWebSocketAdapter(new AdapterIoAdapter(app, install));
        },
      }),
    );
  }
  return {
    apps,
    adapterBroadcasts: () => counts.broadcasts,
    async fence(clients) {
      const seen = clients.map(() => 0);
      clients.forEach((c, i) => {
        c.socket.on('fence', () => {
          seen[i]++;
        });
      });
      const fencesBefore = counts.fences;
      for (const app of apps) app.get(NotificationsGateway).server.emit('fence');
      // Each fence leaves its instance after that instance's earlier adapter broadcasts, on the same connection (or
      // bus): once every client has every instance's fence, every copy sent before has arrived too.
      expect(await waitFor(() => seen.every((n) => n >= apps.length), 15_000)).toBe(true);
      if (kind === 'redis-adapter') {
        expect(await waitFor(() => counts.fences - fencesBefore >= apps.length, 15_000)).toBe(true);
      }
      // An app's own emits through the server still reach every instance's clients: each fence exactly once.
      expect(seen).toEqual(clients.map(() => apps.length));
    },
  };
}

const commandStats = () => commandCalls(redis.server.url);
const resetStats = () => resetCommandCalls(redis.server.url);

/** Each client's messages, by channel, as their `data`. */
const byChannel = (client: TestClient): Record<string, unknown[]> => {
  const out: Record<string, unknown[]> = {};
  for (const m of client.got) (out[m.channel] ??= []).push(m.data);
  return out;
};

const range = (n: number, from = 0): number[] => Array.from({ length: n }, (_, i) => from + i);

const ADAPTERS: AdapterKind[] = ['redis-adapter', 'cluster-adapter'];
const MATRIX = ADAPTERS.flatMap((kind) => PLATFORMS.map((platform) => [kind, platform] as const));

describe.each(MATRIX)('the gateway beside a Socket.IO %s (%s)', (kind, platform) => {
  it.each([2, 3])(
    '%i instances: each client gets each notification once, in order (user room, public room, pattern room)',
    async (instances) => {
      const fleet = await startFleet(kind, platform, instances, {
        authorize: (user, channel, { pattern }) =>
          pattern ? channel === 'feed:*' : channel === `user:${user.id}` || channel === 'news',
      });
      // The same user on every instance, in the same rooms.
      const clients: TestClient[] = [];
      for (const app of fleet.apps) {
        const client = await connectClient(app.url, { token: 'u:alice' });
        for (const channel of ['user:alice', 'news', 'feed:*'])
          expect(await client.subscribe(channel)).toEqual({ ok: true });
        clients.push(client);
      }
      const n = 20;
      const pubsub = fleet.apps[0].get(PubSubService);
      if (kind === 'redis-adapter') await resetStats();
      for (let i = 0; i < n; i++) {
        await pubsub.notifyUser('alice', i);
        await pubsub.publish('news', i);
        await pubsub.publish('feed:x', i);
      }
      expect(await waitFor(() => clients.every((c) => c.got.length >= 3 * n), 15_000)).toBe(true);
      await fleet.fence(clients);
      // Redis's own count (the adapters' PUBLISHes and ours), read once every copy has arrived.
      const stats = kind === 'redis-adapter' ? await commandStats() : undefined;
      if (stats && process.env.RTK_GATEWAY_ADAPTER_STATS) {
        const ours = /^(info|config|hello|quit)\b/;
        const total = Object.entries(stats)
          .filter(([cmd]) => !ours.test(cmd))
          .reduce((sum, [, calls]) => sum + calls, 0);
        process.stdout.write(
          `${kind} ${platform} x${instances}: ${3 * n} notifications, ${clients.length} clients: ` +
            `received ${clients.reduce((sum, c) => sum + c.got.length, 0)}, PUBLISH ${stats.publish} ` +
            `(${instances} of them fences), commands ${total}: ${JSON.stringify(stats)}\n`,
        );
      }
      const expected = { 'user:alice': range(n), news: range(n), 'feed:x': range(n) };
      expect({
        got: clients.map(byChannel),
        adapterBroadcasts: fleet.adapterBroadcasts(),
        // One PUBLISH per notification (ours) and one per fence; the adapters publish nothing for the relays.
        publishes: stats?.publish,
      }).toEqual({
        got: clients.map(() => expected),
        adapterBroadcasts: 0,
        publishes: stats && 3 * n + instances,
      });
      const delivered = fleet.apps.map((app) => app.get(NotificationsGateway).stats().delivered);
      expect(delivered).toEqual(fleet.apps.map(() => 3 * n));
    },
    60_000,
  );

  it('a durable replay on one instance and live delivery on another: each message once, in order', async () => {
    const fleet = await startFleet(kind, platform, 2, {}, { durable: true });
    const pubsub = fleet.apps[0].get(PubSubService);
    for (let i = 0; i < 5; i++) await pubsub.notifyUser('bob', i);
    const replaying = await connectClient(fleet.apps[0].url, { token: 'u:bob' });
    expect(await replaying.subscribe('user:bob', '0-0')).toEqual({ ok: true, replayed: 5 });
    const live = await connectClient(fleet.apps[1].url, { token: 'u:bob' });
    expect(await live.subscribe('user:bob')).toEqual({ ok: true });
    for (let i = 5; i < 15; i++) await pubsub.notifyUser('bob', i);
    expect(await waitFor(() => replaying.got.length >= 15 && live.got.length >= 10, 15_000)).toBe(true);
    await fleet.fence([replaying, live]);
    expect({
      replaying: replaying.got.map((m) => m.data),
      live: live.got.map((m) => m.data),
      adapterBroadcasts: fleet.adapterBroadcasts(),
    }).toEqual({ replaying: range(15), live: range(10, 5), adapterBroadcasts: 0 });
    const ids = replaying.got.map((m) => m.id);
    expect(new Set(ids).size).toBe(15);
  }, 60_000);

  it.each(['drop', 'disconnect'] as const)(
    'slow-client policy %s holds on the instance the slow client is on, whatever the others relay',
    async (policy) => {
      const cap = 1024 * 1024;
      const fleet = await startFleet(kind, platform, 2, {
        publicChannels: ['big'],
        slowClient: { policy, maxBufferedMessages: 100_000, maxBufferedBytes: cap },
      });
      const fast = await connectClient(fleet.apps[0].url, { token: 'u:fast' });
      expect(await fast.subscribe('big')).toEqual({ ok: true });
      const stalled = await connectStalledClient(fleet.apps[1].url, 'u:slow', 'big');
      // Closed whatever the outcome: the app cannot close while a connection that reads nothing is open.
      try {
        const slowGateway = fleet.apps[1].get(NotificationsGateway);
        const [serverSocket] = [...slowGateway.server.sockets.values()];
        const conn = serverSocket.conn as unknown as { writeBuffer?: { data?: unknown }[] };
        const bytesHeld = () => (conn.writeBuffer ?? []).reduce((n, p) => n + String(p.data ?? '').length, 0);
        let maxHeld = 0;
        const pubsub = fleet.apps[0].get(PubSubService);
        const blob = 'x'.repeat(64 * 1024);
        const n = 200; // 200 x 64 KB = 12.5 MB: more than the loopback socket buffers hold
        for (let i = 0; i < n; i++) {
          await pubsub.publish('big', { i, blob });
          maxHeld = Math.max(maxHeld, bytesHeld());
        }
        expect(await waitFor(() => fast.got.length >= n, 20_000)).toBe(true);
        // The slow instance has relayed all n (delivered or skipped by its policy).
        const settled = () => {
          const s = slowGateway.stats();
          return policy === 'drop' ? s.delivered + s.droppedSlow >= n : s.disconnectedSlow === 1;
        };
        expect(await waitFor(settled, 20_000)).toBe(true);
        await fleet.fence([fast]);
        maxHeld = Math.max(maxHeld, bytesHeld());
        expect({
          fast: fast.got.map((m) => (m.data as { i: number }).i),
          adapterBroadcasts: fleet.adapterBroadcasts(),
          // At most the cap plus the one message that crossed it (about 64 KB with its envelope).
          heldWithinCap: maxHeld <= cap + 70 * 1024 ? true : maxHeld,
        }).toEqual({ fast: range(n), adapterBroadcasts: 0, heldWithinCap: true });
        const stats = slowGateway.stats();
        if (policy === 'drop') {
          expect(stats.droppedSlow).toBeGreaterThan(0);
          expect(stats.delivered + stats.droppedSlow).toBe(n);
          expect(serverSocket.connected).toBe(true);
        } else {
          expect(stats.disconnectedSlow).toBe(1);
          expect(serverSocket.disconnected).toBe(true);
        }
      } finally {
        stalled.close();
      }
    },
    90_000,
  );
});
