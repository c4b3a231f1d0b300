import 'reflect-metadata';
import { Injectable, type OnModuleInit } from '@nestjs/common';
import { PubSubService, RedisUnavailableError } from '../../lib/index.js';
import { useDisposableCluster } from '../support/disposable-cluster.js';
import { trackForCleanup } from '../support/private-servers.js';
import { startRedisServer } from '../support/redis-server.js';
import { closeToolkitApps, createToolkitApp, type RedisTarget } from '../support/toolkit-app.js';
import { sleep, waitFor } from '../support/wait.js';
import { recordingLogger } from '../support/recording-logger.js';

afterEach(closeToolkitApps);
// After a cluster restart ioredis' sharded subscriber group schedules a slots refresh (at most 2 s) that quit() does
// not clear; let it run out so jest exits cleanly.
afterAll(() => sleep(2_500));

const received: unknown[] = [];

/** The OrdersEvents example at the top of docs/pubsub.md: subscribes in onModuleInit. */
@Injectable()
class OrdersEvents implements OnModuleInit {
  constructor(private readonly pubsub: PubSubService) {}

  async onModuleInit(): Promise<void> {
    await this.pubsub.subscribe<{ orderId: string }>('orders', (order) => void received.push(order.orderId));
  }
}

const timing = { connectTimeout: 500, commandTimeout: 300, maxReconnectDelay: 200 } as const;

/** Publishes from the app itself until Redis counts a receiver: then the subscription is in place. */
async function publishUntilHeard(pubsub: PubSubService, timeoutMs: number): Promise<boolean> {
  return waitFor(async () => (await pubsub.publish('orders', { orderId: 'o1' }).catch(() => 0)) >= 1, timeoutMs);
}

beforeEach(() => {
  received.length = 0;
});

describe('lazyConnect: a provider that subscribes in onModuleInit while Redis is down', () => {
  it('single server: the app starts, a warning names the pending subscription, a message after Redis is up arrives', async () => {
    const server = trackForCleanup(await startRedisServer());
    await server.stop();
    const { warnings, errors, logger } = recordingLogger();
    // before: init rejected with "pub/sub subscribe to orders failed: Reached the max retries per request limit"
    const app = await createToolkitApp({
      target: { url: server.url },
      lazyConnect: true,
      ...timing,
      providers: [OrdersEvents],
      logger,
    });
    const pubsub = app.get(PubSubService);
    expect(pubsub.subscriptionCount).toBe(1);
    const pending = warnings.filter((w) => w.includes('orders') && w.includes('pending'));
    expect(pending).toHaveLength(1);
    expect(pending[0]).toContain(`127.0.0.1:${server.port}`);
    expect(pending[0]).not.toContain('maxRetriesPerRequest');
    let resubscribed = 0;
    pubsub.onResubscribed(() => resubscribed++);
    await sleep(1_000); // several failed reconnects while it is down
    await server.restart();
    expect(await publishUntilHeard(pubsub, 10_000)).toBe(true);
    expect(await waitFor(() => received.length >= 1, 3_000)).toBe(true);
    expect(received[0]).toBe('o1');
    // Messages published while it was pending were not heard: listeners are told, as after a reconnect.
    expect(resubscribed).toBe(1);
    expect(errors).toEqual([]);
  }, 30_000);

  it('single server, paused: the start waits at most connectTimeout + commandTimeout, then the subscription is made on resume', async () => {
    const server = trackForCleanup(await startRedisServer());
    server.pause();
    const { warnings, logger } = recordingLogger();
    const started = Date.now();
    let app: Awaited<ReturnType<typeof createToolkitApp>>;
    try {
      app = await createToolkitApp({
        target: { url: server.url },
        lazyConnect: true,
        ...timing,
        providers: [OrdersEvents],
        logger,
      });
    } finally {
      server.resume();
    }
    expect(Date.now() - started).toBeLessThan(3_000);
    expect(warnings.some((w) => w.includes('orders') && w.includes('pending'))).toBe(true);
    expect(await publishUntilHeard(app.get(PubSubService), 10_000)).toBe(true);
    expect(await waitFor(() => received.length >= 1, 3_000)).toBe(true);
  }, 30_000);

  it('an unsubscribe while pending: the subscription is not made once Redis is up', async () => {
    const server = trackForCleanup(await startRedisServer());
    await server.stop();
    const { logger } = recordingLogger();
    const app = await createToolkitApp({ target: { url: server.url }, lazyConnect: true, ...timing, logger });
    const pubsub = app.get(PubSubService);
    let heard = 0;
    const off = await pubsub.subscribe('gone', () => void heard++);
    const kept = await pubsub.subscribe('kept', () => void heard++);
    await off();
    expect(pubsub.subscriptionCount).toBe(1);
    await server.restart();
    expect(await waitFor(async () => (await pubsub.publish('kept', 1).catch(() => 0)) === 1, 10_000)).toBe(true);
    await sleep(500);
    expect(await pubsub.publish('gone', 1)).toBe(0);
    await kept();
  }, 30_000);

  describe.each(['sharded', 'classic'] as const)('cluster (%s)', (mode) => {
    const cluster = useDisposableCluster();

    it('the app starts while every node is down; a message published once the cluster is back arrives', async () => {
      const nodes = cluster().nodes;
      await Promise.all(nodes.map((n) => n.stop()));
      const { warnings, logger } = recordingLogger();
      const target: RedisTarget = { cluster: cluster().startupNodes };
      try {
        const app = await createToolkitApp({
          target,
          lazyConnect: true,
          ...timing,
          pubsub: { cluster: mode },
          providers: [OrdersEvents],
          logger,
        });
        const pubsub = app.get(PubSubService);
        expect(pubsub.isSharded).toBe(mode === 'sharded');
        const pending = warnings.filter((w) => w.includes('orders') && w.includes('pending'));
        expect(pending).toHaveLength(1);
        expect(pending[0]).toMatch(/ECONNREFUSED/);
        expect(pending[0]).not.toContain('set lazyConnect: true'); // RedisConnection.connect's advice, beside the point
        await sleep(500);
        await Promise.all(nodes.map((n) => n.restart()));
        expect(await publishUntilHeard(pubsub, 20_000)).toBe(true);
        expect(await waitFor(() => received.includes('o1'), 3_000)).toBe(true);
      } finally {
        await Promise.all(nodes.map((n) => (n.isRunning() ? undefined : n.restart())));
      }
    }, 60_000);
  });
});

describe('without lazyConnect', () => {
  it('a subscribe while Redis is down fails with the address and the cause, not ioredis text', async () => {
    const server = trackForCleanup(await startRedisServer());
    const app = await createToolkitApp({ target: { url: server.url }, ...timing });
    const pubsub = app.get(PubSubService);
    await server.stop();
    const err = await pubsub
      .subscribe('orders', () => undefined)
      .then(
        () => undefined,
        (e: unknown) => e as Error,
      );
    expect(err).toBeInstanceOf(RedisUnavailableError);
    expect(err?.message).toContain(`127.0.0.1:${server.port}`);
    expect(err?.message).toMatch(/ECONNREFUSED|Connection is closed|no answer/);
    expect(err?.message).not.toMatch(/maxRetriesPerRequest|max retries per request/);
    expect(pubsub.subscriptionCount).toBe(0);
  });
});
