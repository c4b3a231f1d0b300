/**
 * A busy multi-tenant app (a channel per user, a pattern per tenant) subscribes and unsubscribes distinct names all day:
 * every collection behind PubSubService must hold only the live subscriptions. Read through the objects (the handler
 * map, the subscriber connection's record of channels that ioredis re-sends after a reconnect, the pending and stale
 * buffers) and on the test's own server (CLIENT LIST TYPE pubsub: the sub / psub / ssub counts of each subscriber).
 */
import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import type { Cluster, Redis } from 'ioredis';
import { PubSubService } from '../../lib/index.js';
import { trackForCleanup, usePrivateRedis } from '../support/private-servers.js';
import { startRedisServer } from '../support/redis-server.js';
import { rawCommand } from '../support/resp.js';
import { sharedServers } from '../support/shared-servers.js';
import { closeToolkitApps, createToolkitApp } from '../support/toolkit-app.js';
import { bootToolkitApp } from '../support/toolkit-boot.js';
import { waitFor } from '../support/wait.js';

afterEach(closeToolkitApps);

const uid = (): string => randomBytes(5).toString('hex');

/** What the service keeps, read through the object. */
interface Internals {
  subscriber: Redis | Cluster | undefined;
  subscriptions: Map<string, unknown>;
  pending: { size: number };
  stale: { size: number };
}
const internals = (ps: PubSubService): Internals => ps as unknown as Internals;

/** The channels and patterns ioredis would re-send on a reconnect of a single server's subscriber. */
function recorded(ps: PubSubService): { subscribe: number; psubscribe: number } {
  const set = (internals(ps).subscriber as Redis | undefined)?.condition?.subscriber;
  if (!set) return { subscribe: 0, psubscribe: 0 };
  return { subscribe: set.channels('subscribe').length, psubscribe: set.channels('psubscribe').length };
}

/** Sum of sub / psub / ssub over every pub/sub client of the server on `port` (CLIENT LIST TYPE pubsub). */
async function serverCounts(port: number): Promise<{ sub: number; psub: number; ssub: number; clients: number }> {
  const list = String(await rawCommand(port, ['CLIENT', 'LIST', 'TYPE', 'pubsub']));
  const counts = { sub: 0, psub: 0, ssub: 0, clients: 0 };
  for (const line of list.split('\n').filter((l) => l.trim() !== '')) {
    counts.clients++;
    for (const field of ['sub', 'psub', 'ssub'] as const) {
      const m = new RegExp(`(?:^| )${field}=(\\d+)`).exec(line);
      counts[field] += m ? Number(m[1]) : 0;
    }
  }
  return counts;
}

/** `count` cycles of subscribe + unsubscribe over distinct names, `batch` at once; `name(i)` picks each name. */
async function churn(ps: PubSubService, count: number, batch: number, name: (i: number) => string): Promise<number> {
  let threw = 0;
  const handler = (): void => {
    threw++;
    throw new Error('a handler that throws');
  };
  for (let start = 0; start < count; start += batch) {
    const offs = await Promise.all(
      Array.from({ length: Math.min(batch, count - start) }, (_, k) => ps.subscribe(name(start + k), handler)),
    );
    // one message per batch, to the last name's handler (a channel's: its own name), which throws
    const last = name(start + offs.length - 1);
    // counted before the publish: the message can be handled before its PUBLISH reply is read (then the wait ran out)
    const before = threw;
    if (!last.includes('*') && (await ps.publish(last, start)) === 1) await waitFor(() => threw > before, 2_000);
    await Promise.all(offs.map((off) => off()));
  }
  return threw;
}

describe('pub/sub churn on one server', () => {
  const redis = usePrivateRedis();

  it('100,000 subscribe/unsubscribe cycles (channels and patterns): nothing kept; a reconnect re-sends the live ones', async () => {
    const { server } = redis;
    const keyPrefix = `ch${uid()}:`;
    const errors: string[] = [];
    const logger = { log() {}, warn() {}, error: (m: unknown) => void errors.push(String(m)) };
    // 1,000 subscribes at once on a busy CI box can pass the default 1 s; the kill below waits on no command timeout
    const app = await bootToolkitApp({
      target: { url: server.url },
      keyPrefix,
      commandTimeout: 10_000,
      maxReconnectDelay: 100,
      logger,
    });
    const ps = app.get(PubSubService);
    const got: unknown[] = [];
    await ps.subscribe('live:a', (m) => void got.push(m));
    await ps.subscribe('live:b', (m) => void got.push(m));
    await ps.subscribe('tenant:*:live', (m) => void got.push(m));

    // every fourth a pattern (a tenant's), the others a user's channel; a handler that throws gets 100 messages
    const threw = await churn(ps, 100_000, 1_000, (i) => (i % 4 === 0 ? `tenant:${i}:*` : `user:${i}`));
    expect(threw).toBe(100);
    expect(errors.filter((e) => e.includes('threw: a handler that throws'))).toHaveLength(100);

    expect(ps.subscriptionCount).toBe(3);
    expect([...internals(ps).subscriptions.keys()].sort()).toEqual(['live:a', 'live:b', 'tenant:*:live']);
    expect(recorded(ps)).toEqual({ subscribe: 2, psubscribe: 1 });
    expect(internals(ps).pending.size).toBe(0);
    expect(internals(ps).stale.size).toBe(0);
    expect(await serverCounts(server.port)).toMatchObject({ sub: 2, psub: 1 });

    // a reconnect re-sends exactly the live ones
    let resubscribed = 0;
    ps.onResubscribed(() => void resubscribed++);
    await server.kill();
    await server.restart();
    expect(await waitFor(() => resubscribed > 0, 10_000)).toBe(true);
    expect(await serverCounts(server.port)).toMatchObject({ sub: 2, psub: 1, clients: 1 });
    // the main connection (publishes) may be back a moment after the subscriber
    expect(await waitFor(async () => (await ps.publish('live:a', 1).catch(() => 0)) === 1, 5_000)).toBe(true);
    expect(await ps.publish('tenant:7:live', 2)).toBe(1);
    expect(await waitFor(() => got.length === 2, 3_000)).toBe(true);
  }, 180_000);

  it('unsubscribes while Redis is down are not re-sent as subscriptions when it is back', async () => {
    const { server } = redis;
    const keyPrefix = `ch${uid()}:`;
    const app = await bootToolkitApp({
      target: { url: server.url },
      keyPrefix,
      commandTimeout: 300,
      maxReconnectDelay: 100,
    });
    const ps = app.get(PubSubService);
    await ps.subscribe('live', () => undefined);
    const offs = await Promise.all(
      Array.from({ length: 200 }, (_, i) => ps.subscribe(i % 2 === 0 ? `gone:${i}` : `gone:${i}:*`, () => undefined)),
    );
    await server.kill();
    await Promise.all(offs.map((off) => off())); // each fails in transport (warned), none rejects
    expect(ps.subscriptionCount).toBe(1);
    let resubscribed = 0;
    ps.onResubscribed(() => void resubscribed++);
    await server.restart();
    expect(await waitFor(() => resubscribed > 0, 10_000)).toBe(true);
    // the re-sent ones that are no longer wanted are taken back once the re-sent subscriptions are in effect
    await waitFor(
      async () => (await serverCounts(server.port)).sub + (await serverCounts(server.port)).psub <= 1,
      3_000,
    );
    expect(await serverCounts(server.port)).toMatchObject({ sub: 1, psub: 0 });
    expect(recorded(ps)).toEqual({ subscribe: 1, psubscribe: 0 });
    expect(internals(ps).stale.size).toBe(0);
    // and a later reconnect re-sends only the live one
    resubscribed = 0;
    await server.kill();
    await server.restart();
    expect(await waitFor(() => resubscribed > 0, 10_000)).toBe(true);
    expect(await serverCounts(server.port)).toMatchObject({ sub: 1, psub: 0 });
  }, 60_000);
});

describe('pub/sub churn while Redis is down at start (lazyConnect)', () => {
  it('2,000 pending subscriptions made and unsubscribed: none kept, and Redis gets only the live one', async () => {
    const server = trackForCleanup(await startRedisServer());
    await server.stop();
    const app = await createToolkitApp({
      target: { url: server.url },
      keyPrefix: `ch${uid()}:`,
      lazyConnect: true,
      connectTimeout: 500,
      commandTimeout: 300,
      maxReconnectDelay: 200,
      logger: { log() {}, error() {}, warn() {} },
    });
    const ps = app.get(PubSubService);
    const got: unknown[] = [];
    await ps.subscribe('live', (m) => void got.push(m));
    await churn(ps, 2_000, 500, (i) => (i % 2 === 0 ? `user:${i}` : `tenant:${i}:*`));
    expect(ps.subscriptionCount).toBe(1);
    expect(internals(ps).pending.size).toBe(1);
    expect(internals(ps).stale.size).toBe(0);
    await server.restart();
    expect(await waitFor(async () => (await ps.publish('live', 1).catch(() => 0)) === 1, 10_000)).toBe(true);
    // Redis counts the subscriber once it has run the SUBSCRIBE; the client drops the name from `pending` when it reads
    // the reply on the other connection, which can come after the PUBLISH reply.
    expect(await waitFor(() => internals(ps).pending.size === 0, 5_000)).toBe(true);
    expect(await serverCounts(server.port)).toMatchObject({ sub: 1, psub: 0 });
    expect(recorded(ps)).toEqual({ subscribe: 1, psubscribe: 0 });
  }, 60_000);
});

describe('pub/sub churn on the cluster (classic)', () => {
  it('5,000 SUBSCRIBE/PSUBSCRIBE cycles: no channel or pattern left on any node', async () => {
    const keyPrefix = `ch${uid()}:`;
    // 500 subscribes at once on a busy CI box can pass the default 1 s: no fault here
    const app = await bootToolkitApp({
      target: 'cluster',
      keyPrefix,
      commandTimeout: 10_000,
      pubsub: { cluster: 'classic' },
    });
    const ps = app.get(PubSubService);
    expect(ps.isSharded).toBe(false);
    await ps.subscribe('live', () => undefined);
    await churn(ps, 5_000, 500, (i) => (i % 2 === 0 ? `user:${i}` : `tenant:${i}:*`));
    expect(ps.subscriptionCount).toBe(1);
    expect(internals(ps).stale.size).toBe(0);
    // the cluster's one classic subscriber connection, found on its node by its address (CLIENT LIST)
    const cluster = internals(ps).subscriber as unknown as { subscriber: { getInstance(): Redis } };
    const addr = ` addr=127.0.0.1:${cluster.subscriber.getInstance().stream.localPort} `;
    const lines: string[] = [];
    for (const { port } of sharedServers().cluster) {
      const list = String(await rawCommand(port, ['CLIENT', 'LIST', 'TYPE', 'pubsub']));
      lines.push(...list.split('\n').filter((line) => line.includes(addr)));
    }
    expect(lines).toHaveLength(1);
    expect([/ sub=(\d+)/.exec(lines[0])?.[1], / psub=(\d+)/.exec(lines[0])?.[1]]).toEqual(['1', '0']);
  }, 120_000);
});

describe('pub/sub churn on the cluster (sharded)', () => {
  it('5,000 SSUBSCRIBE/SUNSUBSCRIBE cycles over distinct channels: no channel left on any master or connection', async () => {
    const keyPrefix = `ch${uid()}:`;
    // 500 subscribes at once on a busy CI box can pass the default 1 s: no fault here
    const app = await bootToolkitApp({ target: 'cluster', keyPrefix, commandTimeout: 10_000 });
    const ps = app.get(PubSubService);
    expect(ps.isSharded).toBe(true);
    await ps.subscribe('live', () => undefined);
    await churn(ps, 5_000, 500, (i) => `user:${i}`);
    expect(ps.subscriptionCount).toBe(1);
    expect(internals(ps).stale.size).toBe(0);
    // each master's SSUBSCRIBE connection of this app: only `live` (SHARDNUMSUB of every churned name is 0)
    const masters = sharedServers().cluster.map((node) => node.port);
    const names = Array.from({ length: 5_000 }, (_, i) => `${keyPrefix}ps:user:${i}`);
    let left = 0;
    for (const port of masters) {
      for (let i = 0; i < names.length; i += 500) {
        const reply = (await rawCommand(port, ['PUBSUB', 'SHARDNUMSUB', ...names.slice(i, i + 500)])) as unknown[];
        for (let k = 1; k < reply.length; k += 2) left += Number(reply[k]);
      }
    }
    expect(left).toBe(0);
    const live = await Promise.all(
      masters.map(
        async (port) => (await rawCommand(port, ['PUBSUB', 'SHARDNUMSUB', `${keyPrefix}ps:live`])) as unknown[],
      ),
    );
    expect(live.reduce((n, r) => n + Number(r[1]), 0)).toBe(1);
  }, 120_000);
});
