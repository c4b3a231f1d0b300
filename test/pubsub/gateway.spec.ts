import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { Test } from '@nestjs/testing';
import { PubSubService, RedisToolkitModule } from '../../lib/index.js';
import { sharedServers } from '../support/shared-servers.js';
import { tokenAuthenticate } from '../support/pubsub-gateway.js';
import { NotificationsGateway } from '../../lib/notifications/index.js';
import { trackForCleanup } from '../support/private-servers.js';
import {
  closeClients,
  connectClient,
  connectStalledClient,
  createGatewayApp,
  type TestClient,
} from '../support/pubsub-gateway.js';
import { startRedisServer } from '../support/redis-server.js';
import { closeToolkitApps, PLATFORMS_AND_TARGETS } from '../support/toolkit-app.js';
import { sleep, waitFor } from '../support/wait.js';

afterEach(async () => {
  closeClients();
  await closeToolkitApps();
});

const uid = (): string => randomBytes(5).toString('hex');

describe.each(PLATFORMS_AND_TARGETS)('NotificationsGateway on %s, %s', (platform, target) => {
  it('refuses a connection without a valid session with a clear connect_error', async () => {
    const { url } = await createGatewayApp({ platform, target, keyPrefix: `g${uid()}:` });
    await expect(connectClient(url)).rejects.toMatchObject({
      message: expect.stringMatching(/unauthenticated/),
      data: { code: 'E_UNAUTHENTICATED' },
    });
    await expect(connectClient(url, { token: 'forged' })).rejects.toMatchObject({
      data: { code: 'E_UNAUTHENTICATED' },
    });
    const ok = await connectClient(url, { token: 'u:1' });
    expect(ok.socket.connected).toBe(true);
  });

  it("delivers the user's own channel and public channels; refuses other users' and internal channels", async () => {
    const app = await createGatewayApp({
      platform,
      target,
      keyPrefix: `g${uid()}:`,
      pubsub: { gateway: { publicChannels: ['news'] } },
    });
    const alice = await connectClient(app.url, { token: 'u:alice' });
    expect(await alice.subscribe('user:alice')).toEqual({ ok: true });
    expect(await alice.subscribe('news')).toEqual({ ok: true });
    expect(await alice.subscribe('user:bob')).toMatchObject({ ok: false, code: 'E_FORBIDDEN' });
    expect(await alice.subscribe('secret')).toMatchObject({ ok: false, code: 'E_FORBIDDEN' });
    expect(await alice.subscribe('__rtk:cache')).toMatchObject({ ok: false, code: 'E_FORBIDDEN' });
    expect(await alice.subscribe('news:*')).toMatchObject({ ok: false, code: 'E_FORBIDDEN' }); // no patterns by default

    const pubsub = app.get(PubSubService);
    await pubsub.notifyUser('bob', 'for bob');
    await pubsub.publish('secret', 'hidden');
    await pubsub.notifyUser('alice', { hello: 'alice' });
    await pubsub.publish('news', 'headline');
    expect(await waitFor(() => alice.got.length === 2, 3_000)).toBe(true);
    await sleep(100);
    // Order is kept per channel, not across channels (on a cluster they arrive over different shard connections).
    const byChannel = Object.fromEntries(alice.got.map((m) => [m.channel, m.data]));
    expect(alice.got).toHaveLength(2);
    expect(byChannel).toEqual({ 'user:alice': { hello: 'alice' }, news: 'headline' });
    expect(typeof alice.got[0].id).toBe('string');
    expect(alice.got[0].ts).toBeGreaterThan(Date.now() - 10_000);
  });

  it('unsubscribe stops delivery; the last socket leaving a channel drops the Redis subscription', async () => {
    const app = await createGatewayApp({
      platform,
      target,
      keyPrefix: `g${uid()}:`,
      pubsub: { gateway: { publicChannels: ['news'] } },
    });
    const a = await connectClient(app.url, { token: 'u:a' });
    const b = await connectClient(app.url, { token: 'u:b' });
    await a.subscribe('news');
    await b.subscribe('news');
    const pubsub = app.get(PubSubService);
    const gateway = app.get(NotificationsGateway);
    expect(gateway.stats().relays).toBe(1);
    expect(await pubsub.publish('news', 1)).toBe(1);
    expect(await waitFor(() => a.got.length === 1 && b.got.length === 1, 3_000)).toBe(true);
    expect(await a.unsubscribe('news')).toEqual({ ok: true });
    await pubsub.publish('news', 2);
    expect(await waitFor(() => b.got.length === 2, 3_000)).toBe(true);
    expect(a.got.length).toBe(1);
    b.socket.close();
    expect(await waitFor(() => gateway.stats().relays === 0 && pubsub.subscriptionCount === 0, 3_000)).toBe(true);
    expect(await waitFor(async () => (await pubsub.publish('news', 3)) === 0, 3_000)).toBe(true);
  });

  it('two instances relay (one on Express, one on Fastify): a client on A receives a publish made on B', async () => {
    const keyPrefix = `g${uid()}:`;
    const a = await createGatewayApp({ platform, target, keyPrefix });
    const b = await createGatewayApp({ platform: platform === 'express' ? 'fastify' : 'express', target, keyPrefix });
    const onA = await connectClient(a.url, { token: 'u:42' });
    const onB = await connectClient(b.url, { token: 'u:42' });
    await onA.subscribe('user:42');
    await onB.subscribe('user:42');
    expect(await b.get(PubSubService).notifyUser('42', 'from B')).toBe(2);
    expect(await waitFor(() => onA.got.length === 1 && onB.got.length === 1, 3_000)).toBe(true);
    expect(onA.got[0]).toMatchObject({ channel: 'user:42', data: 'from B' });
    expect(onA.got[0].id).toBe(onB.got[0].id);
  });

  it('durable mode: a client reconnecting with its last id gets exactly the missed messages, in order, then live ones', async () => {
    const keyPrefix = `g${uid()}:`;
    const app = await createGatewayApp({ platform, target, keyPrefix, pubsub: { durable: { maxLen: 500 } } });
    const pubsub = app.get(PubSubService);
    const first = await connectClient(app.url, { token: 'u:7' });
    await first.subscribe('user:7');
    for (let i = 1; i <= 3; i++) await pubsub.notifyUser('7', i);
    expect(await waitFor(() => first.got.length === 3, 3_000)).toBe(true);
    const lastId = first.got[2].id;
    first.socket.close();

    for (let i = 4; i <= 8; i++) await pubsub.notifyUser('7', i); // missed while away

    const again = await connectClient(app.url, { token: 'u:7' });
    // Live messages race the replay: none may be lost, duplicated or reordered.
    const live = (async () => {
      for (let i = 9; i <= 12; i++) await pubsub.notifyUser('7', i);
    })();
    const ack = await again.subscribe('user:7', lastId);
    await live;
    expect(ack.ok).toBe(true);
    expect(ack.replayed).toBeGreaterThanOrEqual(5);
    expect(await waitFor(() => again.got.length >= 9, 3_000)).toBe(true);
    await sleep(100);
    expect(again.got.map((m) => m.data)).toEqual([4, 5, 6, 7, 8, 9, 10, 11, 12]);
    const ids = again.got.map((m) => m.id);
    expect(new Set(ids).size).toBe(ids.length);

    // Another user's stream cannot be replayed: authorization comes first.
    const mallory = await connectClient(app.url, { token: 'u:mallory' });
    expect(await mallory.subscribe('user:7', '0-0')).toMatchObject({ ok: false, code: 'E_FORBIDDEN' });
    expect(mallory.got).toEqual([]);
  });

  it('answers bad subscribe payloads with error acks and keeps serving the socket', async () => {
    const app = await createGatewayApp({ platform, target, keyPrefix: `g${uid()}:` });
    const c = await connectClient(app.url, { token: 'u:1' });
    const bad: unknown[][] = [
      ['a string'],
      [42],
      [null],
      [[1, 2]],
      [{}],
      [{ channel: 5 }],
      [{ channel: '' }],
      [{ channel: 'x'.repeat(10_240) }],
      [{ channel: 'a\u0000b' }],
      [{ channel: 'user:1', lastId: 'nope' }],
      ['a', 'b'],
    ];
    for (const args of bad) {
      const ack = await c.raw('subscribe', ...args);
      expect(ack).toMatchObject({ ok: false, code: 'E_BAD_REQUEST' });
      expect(typeof ack.error).toBe('string');
    }
    expect(await c.raw('unsubscribe', 'nope')).toMatchObject({ ok: false, code: 'E_BAD_REQUEST' });
    c.socket.emit('subscribe'); // no ack, no body
    c.socket.emit('subscribe', { channel: 'user:1' }); // no ack
    expect(await c.subscribe('user:1')).toEqual({ ok: true });
    await app.get(PubSubService).notifyUser('1', 'still alive');
    expect(await waitFor(() => c.got.length === 1, 3_000)).toBe(true);
  });
});

describe('NotificationsGateway limits and options', () => {
  it('pattern subscriptions are delivered only where authorize allows them', async () => {
    const app = await createGatewayApp({
      keyPrefix: `g${uid()}:`,
      pubsub: {
        gateway: {
          authorize: (user, channel, { pattern }) => (pattern ? channel === 'news:*' : channel === `user:${user.id}`),
        },
      },
    });
    const c = await connectClient(app.url, { token: 'u:1' });
    expect(await c.subscribe('news:*')).toEqual({ ok: true });
    expect(await c.subscribe('*')).toMatchObject({ ok: false, code: 'E_FORBIDDEN' });
    const pubsub = app.get(PubSubService);
    await pubsub.publish('news:sport', 'goal');
    await pubsub.publish('weather', 'rain');
    await pubsub.publish('news:tech', 'chip');
    expect(await waitFor(() => c.got.length === 2, 3_000)).toBe(true);
    await sleep(100);
    expect(c.got.map((m) => [m.channel, m.data])).toEqual([
      ['news:sport', 'goal'],
      ['news:tech', 'chip'],
    ]);
  });

  it('enforces max subscriptions per socket, max channel length and the subscribe rate limit', async () => {
    const app = await createGatewayApp({
      keyPrefix: `g${uid()}:`,
      pubsub: {
        gateway: {
          authorize: () => true,
          maxSubscriptionsPerSocket: 3,
          maxChannelLength: 20,
          subscribeRateLimit: { limit: 6, ttl: 60_000 },
        },
      },
    });
    const c = await connectClient(app.url, { token: 'u:1' });
    for (const ch of ['a', 'b', 'c']) expect(await c.subscribe(ch)).toEqual({ ok: true });
    expect(await c.subscribe('d')).toMatchObject({ ok: false, code: 'E_LIMIT' });
    expect(await c.subscribe('x'.repeat(21))).toMatchObject({ ok: false, code: 'E_BAD_REQUEST' });
    expect(await c.subscribe('a')).toEqual({ ok: true }); // 5th counted message: already subscribed
    expect(await c.unsubscribe('c')).toEqual({ ok: true }); // 6th
    const limited = await c.subscribe('a');
    expect(limited).toMatchObject({ ok: false, code: 'E_RATE_LIMITED' });
    expect(limited.retryAfterMs).toBeGreaterThan(0);
    // The limit is per user: another socket of the same user is limited too.
    const c2 = await connectClient(app.url, { token: 'u:1' });
    expect(await c2.subscribe('a')).toMatchObject({ ok: false, code: 'E_RATE_LIMITED' });
  });

  it('rate-limits subscribe messages per user across instances through RateLimitService (Redis)', async () => {
    const keyPrefix = `g${uid()}:`;
    const opts = {
      keyPrefix,
      pubsub: { gateway: { publicChannels: ['a', 'b'], subscribeRateLimit: { limit: 4, ttl: 60_000 } } },
    };
    const a = await createGatewayApp(opts);
    const b = await createGatewayApp(opts);
    const onA = await connectClient(a.url, { token: 'u:shared' });
    const onB = await connectClient(b.url, { token: 'u:shared' });
    expect(await onA.subscribe('a')).toEqual({ ok: true });
    expect(await onB.subscribe('a')).toEqual({ ok: true });
    expect(await onA.subscribe('b')).toEqual({ ok: true });
    expect(await onB.subscribe('b')).toEqual({ ok: true });
    expect(await onA.unsubscribe('b')).toMatchObject({ ok: false, code: 'E_RATE_LIMITED' });
    expect(await onB.subscribe('a')).toMatchObject({ ok: false, code: 'E_RATE_LIMITED' });
    const other = await connectClient(b.url, { token: 'u:other' });
    expect(await other.subscribe('a')).toEqual({ ok: true });
  });

  it('concurrent subscribes: the per-socket limit holds, and a repeated subscribe is acked only once delivery works', async () => {
    const app = await createGatewayApp({
      keyPrefix: `g${uid()}:`,
      pubsub: { gateway: { authorize: () => true, maxSubscriptionsPerSocket: 3, subscribeRateLimit: false } },
    });
    const c = await connectClient(app.url, { token: 'u:1' });
    const acks = await Promise.all(Array.from({ length: 10 }, (_, i) => c.subscribe(`ch${i}`)));
    expect(acks.filter((a) => a.ok)).toHaveLength(3);
    expect(acks.filter((a) => a.code === 'E_LIMIT')).toHaveLength(7);
    const d = await connectClient(app.url, { token: 'u:2' });
    d.socket.emit('subscribe', { channel: 'same' }); // no ack: still in progress when the next one arrives
    expect(await d.subscribe('same')).toEqual({ ok: true });
    await app.get(PubSubService).publish('same', 'now');
    expect(await waitFor(() => d.got.length === 1, 3_000)).toBe(true);
  });

  it('uses an injected rate limiter', async () => {
    const keys: string[] = [];
    const app = await createGatewayApp({
      keyPrefix: `g${uid()}:`,
      pubsub: {
        gateway: { rateLimiter: async (key) => (keys.push(key), { allowed: keys.length <= 1, retryAfterMs: 1234 }) },
      },
    });
    const c = await connectClient(app.url, { token: 'u:9' });
    expect(await c.subscribe('user:9')).toEqual({ ok: true });
    expect(await c.subscribe('user:9')).toMatchObject({ ok: false, code: 'E_RATE_LIMITED', retryAfterMs: 1234 });
    expect(keys).toEqual(['ws-subscribe:9', 'ws-subscribe:9']);
  });

  it('fans one channel out to 1,000 sockets', async () => {
    const app = await createGatewayApp({ keyPrefix: `g${uid()}:`, pubsub: { gateway: { publicChannels: ['all'] } } });
    const clients: TestClient[] = [];
    for (let batch = 0; batch < 10; batch++) {
      clients.push(
        ...(await Promise.all(
          Array.from({ length: 100 }, (_, i) => connectClient(app.url, { token: `u:${batch * 100 + i}` })),
        )),
      );
    }
    const acks = await Promise.all(clients.map((c) => c.subscribe('all')));
    expect(acks.every((a) => a.ok)).toBe(true);
    const pubsub = app.get(PubSubService);
    expect(pubsub.subscriptionCount).toBe(1);
    for (let i = 0; i < 5; i++) await pubsub.publish('all', i);
    expect(await waitFor(() => clients.every((c) => c.got.length === 5), 15_000)).toBe(true);
    expect(clients.every((c) => c.got.map((m) => m.data).join() === '0,1,2,3,4')).toBe(true);
    expect(app.get(NotificationsGateway).stats()).toMatchObject({ connections: 1000, delivered: 5000, droppedSlow: 0 });
  }, 60_000);

  it('Redis restarted: deliveries to connected clients resume without any client action', async () => {
    const server = trackForCleanup(await startRedisServer());
    const opts = {
      target: { url: server.url },
      keyPrefix: 'gr:',
      commandTimeout: 500,
      maxReconnectDelay: 200,
    } as const;
    const a = await createGatewayApp(opts);
    const b = await createGatewayApp(opts);
    const c = await connectClient(a.url, { token: 'u:5' });
    expect(await c.subscribe('user:5')).toEqual({ ok: true });
    const pub = b.get(PubSubService);
    await pub.notifyUser('5', 'before');
    expect(await waitFor(() => c.got.length === 1, 3_000)).toBe(true);
    await server.kill();
    await sleep(300);
    await server.restart();
    const resumed = await waitFor(async () => {
      await pub.notifyUser('5', 'after').catch(() => 0);
      return c.got.some((m) => m.data === 'after');
    }, 10_000);
    expect(resumed).toBe(true);
    expect(c.socket.connected).toBe(true);
  });

  it('subscribe while Redis is down gets an E_UNAVAILABLE ack, not a crash', async () => {
    const server = trackForCleanup(await startRedisServer());
    const app = await createGatewayApp({
      target: { url: server.url },
      keyPrefix: 'gd:',
      commandTimeout: 300,
      maxReconnectDelay: 200,
    });
    const c = await connectClient(app.url, { token: 'u:5' });
    await server.kill();
    expect(await c.subscribe('user:5')).toMatchObject({ ok: false, code: 'E_UNAVAILABLE' });
    expect(app.get(NotificationsGateway).stats().relays).toBe(0);
    await server.restart();
    expect(await waitFor(async () => (await c.subscribe('user:5')).ok, 5_000)).toBe(true);
  });

  it('serves a custom namespace', async () => {
    const app = await createGatewayApp({ keyPrefix: `g${uid()}:`, namespace: '/live' });
    const c = await connectClient(app.url, { token: 'u:3' }, '/live');
    expect(await c.subscribe('user:3')).toEqual({ ok: true });
    await app.get(PubSubService).notifyUser('3', 'hi');
    expect(await waitFor(() => c.got.length === 1, 3_000)).toBe(true);
    expect(app.get(NotificationsGateway).stats().connections).toBe(1);
  });

  it.each(['drop', 'disconnect'] as const)(
    'slow client policy %s: memory stays bounded and fast clients get everything',
    async (policy) => {
      const app = await createGatewayApp({
        keyPrefix: `g${uid()}:`,
        pubsub: { gateway: { publicChannels: ['firehose'], slowClient: { policy, maxBufferedMessages: 20 } } },
      });
      const fast = await connectClient(app.url, { token: 'u:fast' });
      await fast.subscribe('firehose');
      const stalled = await connectStalledClient(app.url, 'u:slow', 'firehose');
      const pubsub = app.get(PubSubService);
      const gateway = app.get(NotificationsGateway);
      const blob = 'x'.repeat(64 * 1024);
      const total = 400; // 25 MB: far more than the loopback socket buffers hold
      for (let i = 0; i < total; i++) await pubsub.publish('firehose', { i, blob });
      expect(await waitFor(() => fast.got.length === total, 20_000)).toBe(true);
      expect(fast.got.map((m) => (m.data as { i: number }).i)).toEqual(Array.from({ length: total }, (_, i) => i));
      const stats = gateway.stats();
      if (policy === 'drop') {
        expect(stats.droppedSlow).toBeGreaterThan(0);
        expect(stats.disconnectedSlow).toBe(0);
        expect(stats.delivered + stats.droppedSlow).toBe(2 * total);
      } else {
        expect(stats.disconnectedSlow).toBe(1);
        expect(stats.droppedSlow).toBe(0);
        expect(await waitFor(() => gateway.stats().connections === 1, 5_000)).toBe(true);
      }
      stalled.close();
    },
    60_000,
  );

  it('is enabled from forRootAsync too (the extra sits beside useFactory)', async () => {
    const moduleRef = await Test.createTestingModule({
      imports: [
        RedisToolkitModule.forRootAsync({
          notificationsGateway: true,
          useFactory: async () => ({
            connection: { url: sharedServers().single.url },
            keyPrefix: `g${uid()}:`,
            pubsub: { gateway: { authenticate: tokenAuthenticate } },
          }),
        }),
      ],
    }).compile();
    const app = moduleRef.createNestApplication({ logger: ['error'] });
    try {
      await app.listen(0, '127.0.0.1');
      const { port } = app.getHttpServer().address() as AddressInfo;
      const c = await connectClient(`http://127.0.0.1:${port}`, { token: 'u:async' });
      expect(await c.subscribe('user:async')).toEqual({ ok: true });
      await app.get(PubSubService).notifyUser('async', 1);
      expect(await waitFor(() => c.got.length === 1, 3_000)).toBe(true);
    } finally {
      closeClients();
      await app.close();
    }
  });

  it('refuses every connection when loaded but switched off with pubsub.gateway: false', async () => {
    const app = await createGatewayApp({ keyPrefix: `g${uid()}:`, pubsub: { gateway: false } });
    await expect(connectClient(app.url, { token: 'u:1' })).rejects.toMatchObject({ data: { code: 'E_DISABLED' } });
  });
});

describe('NotificationsGateway configuration route', () => {
  async function boot(imports: unknown[], warnings: string[] = []) {
    const moduleRef = await Test.createTestingModule({ imports: imports as never[] }).compile();
    const app = moduleRef.createNestApplication({
      logger: {
        log: () => undefined,
        error: () => undefined,
        warn: (message: unknown) => warnings.push(String(message)),
      },
    });
    await app.listen(0, '127.0.0.1');
    const { port } = app.getHttpServer().address() as AddressInfo;
    return { app, url: `http://127.0.0.1:${port}` };
  }

  it('the extra works with isGlobal: false (the gateway injects the toolkit it was loaded by)', async () => {
    const { app, url } = await boot([
      RedisToolkitModule.forRoot({
        isGlobal: false,
        notificationsGateway: true,
        connection: { url: sharedServers().single.url },
        keyPrefix: `g${uid()}:`,
        pubsub: { gateway: { authenticate: tokenAuthenticate, publicChannels: ['news'] } },
      }),
    ]);
    try {
      const c = await connectClient(url, { token: 'u:local' });
      expect(await c.subscribe('news')).toEqual({ ok: true });
      await app.get(PubSubService).publish('news', 'n1');
      expect(await waitFor(() => c.got.length === 1, 3_000)).toBe(true);
    } finally {
      closeClients();
      await app.close();
    }
  });

  it('NotificationsGatewayModule.register({ options }) still applies them, with a deprecation warning', async () => {
    const { NotificationsGatewayModule } = await import('../../lib/notifications/index.js');
    const warnings: string[] = [];
    const { app, url } = await boot(
      [
        RedisToolkitModule.forRoot({
          connection: { url: sharedServers().single.url },
          keyPrefix: `g${uid()}:`,
          pubsub: { gateway: { authenticate: tokenAuthenticate } },
        }),
        NotificationsGatewayModule.register({ publicChannels: ['legacy'] }),
      ],
      warnings,
    );
    try {
      const c = await connectClient(url, { token: 'u:1' });
      expect(await c.subscribe('legacy')).toEqual({ ok: true });
      expect(
        warnings.filter((w) => /register\(\{ publicChannels \}\) is deprecated.*pubsub\.gateway/.test(w)),
      ).toHaveLength(1);
    } finally {
      closeClients();
      await app.close();
    }
  });

  it('register() without options takes everything from pubsub.gateway and warns about nothing', async () => {
    const { NotificationsGatewayModule } = await import('../../lib/notifications/index.js');
    const warnings: string[] = [];
    const { app, url } = await boot(
      [
        RedisToolkitModule.forRoot({
          connection: { url: sharedServers().single.url },
          keyPrefix: `g${uid()}:`,
          pubsub: { gateway: { authenticate: tokenAuthenticate, publicChannels: ['news'] } },
        }),
        NotificationsGatewayModule.register(),
      ],
      warnings,
    );
    try {
      const c = await connectClient(url, { token: 'u:1' });
      expect(await c.subscribe('news')).toEqual({ ok: true });
      expect(await c.subscribe('legacy')).toMatchObject({ ok: false, code: 'E_FORBIDDEN' });
      expect(warnings.filter((w) => /deprecated/.test(w))).toEqual([]);
    } finally {
      closeClients();
      await app.close();
    }
  });
  it('a misspelled or wrong notificationsGateway / register() option is an InvalidOptionsError naming it, at once', async () => {
    const { NotificationsGatewayModule } = await import('../../lib/notifications/index.js');
    const { InvalidOptionsError } = await import('../../lib/index.js');
    // Should forRoot accept it, the lazy import of the gateway module is awaited (not left to run after the test).
    const root = (notificationsGateway: unknown) => async () => {
      const module = RedisToolkitModule.forRoot({
        connection: { url: sharedServers().single.url },
        ...({ notificationsGateway } as object),
      });
      await Promise.allSettled(module.imports ?? []);
    };
    const cases: [() => unknown, RegExp][] = [
      [
        root({ namespase: '/live' }),
        /notificationsGateway\.namespase is not a known option \(did you mean notificationsGateway\.namespace\?\)/,
      ],
      [root({ namespace: 5 }), /notificationsGateway\.namespace must be a Socket\.IO namespace like '\/live'/],
      [root({ namespace: '' }), /notificationsGateway\.namespace must be/],
      [root('yes'), /notificationsGateway must be true or \{ namespace: '\/live' \}, got "yes"/],
      [
        () => NotificationsGatewayModule.register({ namespase: '/live' } as never),
        /register\(\)\.namespase is not a known option/,
      ],
      [
        () => NotificationsGatewayModule.register({ slowClient: { polcy: 'disconnect' } } as never),
        /register\(\)\.slowClient\.polcy is not a known option \(did you mean .*slowClient\.policy\?\)/,
      ],
    ];
    for (const [make, message] of cases) {
      let err: unknown;
      try {
        await make();
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(InvalidOptionsError);
      expect((err as Error).message).toMatch(message);
    }
    // what stays valid (true and { namespace } for the extra: the tests above): the deprecated options of register()
    expect(() => NotificationsGatewayModule.register({ namespace: '/x', publicChannels: ['a'] })).not.toThrow();
  });
});
