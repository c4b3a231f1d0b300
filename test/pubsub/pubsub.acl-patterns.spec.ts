/**
 * Pattern subscriptions (PSUBSCRIBE) under a restricted ACL user. The start-up check cannot ask for PSUBSCRIBE (no
 * pattern is known before `subscribe` is called, and a user who never subscribes a pattern must not need it), so a
 * refusal is a typed error naming the command, the pattern and the rule: at start when a provider subscribes in
 * onModuleInit, else to the caller. A subscription Redis refuses later (ioredis re-sends every PSUBSCRIBE in one
 * command after a reconnect; a pending one of lazyConnect) is dropped, logged once and reported, never left dead
 * without a word (before: the whole re-sent command was refused, the allowed patterns with it, and nothing said so;
 * under lazyConnect it was tried again each second, silently).
 */
import 'reflect-metadata';
import { Injectable, type OnModuleInit } from '@nestjs/common';
import { Test } from '@nestjs/testing';
import { Redis } from 'ioredis';
import { PubSubService, RedisPermissionError, type RedisReplyError, RedisToolkitModule } from '../../lib/index.js';
import { useDisposableCluster } from '../support/disposable-cluster.js';
import { closeClients, connectClient, createGatewayApp } from '../support/pubsub-gateway.js';
import { trackForCleanup, usePrivateRedis } from '../support/private-servers.js';
import { startRedisServer } from '../support/redis-server.js';
import { recordingLogger } from '../support/recording-logger.js';
import { closeToolkitApps, createToolkitApp } from '../support/toolkit-app.js';
import { sleep, waitFor } from '../support/wait.js';

afterEach(async () => {
  closeClients();
  await closeToolkitApps();
});

const PASSWORD = `acl-${Math.random().toString(36).slice(2)}`;
/** Every command and key; channels under the prefix only (what the start-up check asks for pub/sub). */
const BASE = ['on', `>${PASSWORD}`, '~*', '+@all', 'resetchannels', '&rtk:*'];
const timing = { commandTimeout: 2_000, maxReconnectDelay: 100 } as const;

/** A provider that subscribes a pattern in onModuleInit, as the OrdersEvents example of docs/pubsub.md does. */
@Injectable()
class PatternEvents implements OnModuleInit {
  constructor(private readonly pubsub: PubSubService) {}

  async onModuleInit(): Promise<void> {
    await this.pubsub.subscribe('orders:*', () => undefined);
  }
}

/** What one app saw: each dropped subscription, each onResubscribed, what each name received. */
function watch(pubsub: PubSubService) {
  const dropped: [string, RedisReplyError][] = [];
  const seen = { resubscribed: 0 };
  pubsub.onSubscriptionDropped((name, error) => void dropped.push([name, error]));
  pubsub.onResubscribed(() => seen.resubscribed++);
  const got = new Map<string, unknown[]>();
  const handler = (name: string) => (payload: unknown) => void got.set(name, [...(got.get(name) ?? []), payload]);
  return { dropped, seen, got, handler };
}

/** Publishes on `channel` until `name`'s handler received it (the subscription works). */
async function heard(pubsub: PubSubService, got: Map<string, unknown[]>, name: string, channel: string) {
  return waitFor(async () => {
    await pubsub.publish(channel, channel);
    return (got.get(name) ?? []).includes(channel);
  }, 3_000);
}

describe('single server', () => {
  const redis = usePrivateRedis();
  let admin: Redis;
  beforeAll(() => {
    admin = trackForCleanup(new Redis(redis.server.port, '127.0.0.1', { lazyConnect: true }));
  });
  const setUser = (...rules: string[]) => admin.call('acl', 'setuser', 'app', 'reset', ...BASE, ...rules);
  const target = () => ({ url: `redis://app:${PASSWORD}@127.0.0.1:${redis.server.port}` });

  it('a user without PSUBSCRIBE that never subscribes a pattern starts: the start-up check does not ask for it', async () => {
    await setUser('-psubscribe');
    const app = await createToolkitApp({ target: target(), ...timing });
    const w = watch(app.get(PubSubService));
    await app.get(PubSubService).subscribe('news', w.handler('news'));
    expect(await heard(app.get(PubSubService), w.got, 'news', 'news')).toBe(true);
  });

  it.each([
    ['-psubscribe', /refused by the ACL: NOPERM .*'psubscribe' command/],
    ['&rtk:ps:other:*', /refused by the ACL: NOPERM .*channels/],
  ])(
    'a user with %s: a provider subscribing a pattern in onModuleInit fails the start naming PSUBSCRIBE, the pattern and the rule',
    async (rule, reason) => {
      await setUser(rule);
      const moduleRef = await Test.createTestingModule({
        imports: [RedisToolkitModule.forRoot({ connection: { url: target().url }, ...timing })],
        providers: [PatternEvents],
      }).compile();
      const err = await moduleRef.init().then(
        () => undefined,
        (e: unknown) => e,
      );
      await moduleRef.close();
      // before: RedisPermissionError "pub/sub subscribe to orders:* failed: NOPERM ..." (no command, no rule)
      expect(err).toBeInstanceOf(RedisPermissionError);
      const message = (err as Error).message;
      expect(message).toMatch(/^pub\/sub PSUBSCRIBE rtk:ps:orders:\* \(subscribe to orders:\*\) /);
      expect(message).toMatch(reason);
      expect(message).toContain('`ACL SETUSER <user> +psubscribe &rtk:ps:orders:*` (or allchannels)');
      expect(message).not.toContain(PASSWORD);
    },
  );

  it('a pattern refused at run time rejects the caller with the typed error, logged once, counted once', async () => {
    await setUser();
    const { warnings, errors, logger } = recordingLogger();
    const app = await createToolkitApp({ target: target(), ...timing, logger });
    const pubsub = app.get(PubSubService);
    const err = await pubsub
      .subscribe('news:*', () => undefined)
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    expect(err).toBeInstanceOf(RedisPermissionError);
    expect((err as Error).message).toMatch(/^pub\/sub PSUBSCRIBE rtk:ps:news:\* \(subscribe to news:\*\) was refused/);
    expect([...warnings, ...errors].filter((m) => m.includes('news:*'))).toEqual([
      expect.stringContaining('PSUBSCRIBE rtk:ps:news:*'),
    ]);
    expect(pubsub.stats().replyErrors).toBe(1);
    expect(pubsub.subscriptionCount).toBe(0);
  });

  it('channel rules tightened (Redis cuts the subscriber): the refused pattern is dropped and reported once, the allowed one and the channel restored', async () => {
    await setUser('&rtk:ps:a:*', '&rtk:ps:b:*');
    const { errors, logger } = recordingLogger();
    const app = await createToolkitApp({ target: target(), ...timing, logger });
    const pubsub = app.get(PubSubService);
    const w = watch(pubsub);
    await pubsub.subscribe('a:*', w.handler('a:*'));
    await pubsub.subscribe('b:*', w.handler('b:*'));
    await pubsub.subscribe('c', w.handler('c'));

    // Redis 7 closes the subscriber connection whose subscriptions the new rules no longer allow; ioredis reconnects
    // and re-sends PSUBSCRIBE rtk:ps:a:* rtk:ps:b:* as one command, which Redis refuses whole.
    await admin.call('acl', 'setuser', 'app', 'resetchannels', '&rtk:*', '&rtk:ps:a:*');
    expect(await waitFor(() => w.seen.resubscribed === 1, 5_000)).toBe(true);

    // before: a:* received nothing (refused with b:*), nothing was dropped nor logged, 3 subscriptions counted
    expect(await heard(pubsub, w.got, 'a:*', 'a:1')).toBe(true);
    expect(await heard(pubsub, w.got, 'c', 'c')).toBe(true);
    expect(w.dropped.map(([name]) => name)).toEqual(['b:*']);
    expect(w.dropped[0][1]).toBeInstanceOf(RedisPermissionError);
    expect(w.dropped[0][1].message).toMatch(/PSUBSCRIBE rtk:ps:b:\* \(subscribe to b:\*\) was refused by the ACL/);
    expect(pubsub.subscriptionCount).toBe(2);
    expect(pubsub.stats().replyErrors).toBe(1);
    expect(errors.filter((m) => m.includes('b:*'))).toEqual([
      expect.stringMatching(/PSUBSCRIBE rtk:ps:b:\*.*The subscription to b:\* is dropped/),
    ]);
    expect(await pubsub.publish('b:1', 'b:1')).toBe(0);

    // A later reconnect: the dropped one is not sent again nor reported again; the others stay.
    await admin.call('client', 'kill', 'type', 'pubsub');
    expect(await waitFor(() => w.seen.resubscribed === 2, 5_000)).toBe(true);
    expect(await heard(pubsub, w.got, 'a:*', 'a:2')).toBe(true);
    expect(w.dropped).toHaveLength(1);
    expect(errors.filter((m) => m.includes('b:*'))).toHaveLength(1);
  });

  it('PSUBSCRIBE revoked, then a reconnect: every pattern is dropped and reported, the channels restored', async () => {
    await setUser('&rtk:ps:a:*', '&rtk:ps:b:*');
    const { errors, logger } = recordingLogger();
    const app = await createToolkitApp({ target: target(), ...timing, logger });
    const pubsub = app.get(PubSubService);
    const w = watch(pubsub);
    await pubsub.subscribe('a:*', w.handler('a:*'));
    await pubsub.subscribe('b:*', w.handler('b:*'));
    await pubsub.subscribe('c', w.handler('c'));
    await admin.call('acl', 'setuser', 'app', '-psubscribe');
    await admin.call('client', 'kill', 'type', 'pubsub');
    expect(await waitFor(() => w.seen.resubscribed === 1, 5_000)).toBe(true);

    // before: nothing dropped, nothing logged, both patterns dead
    expect(w.dropped.map(([name, e]) => [name, e instanceof RedisPermissionError])).toEqual([
      ['a:*', true],
      ['b:*', true],
    ]);
    expect(w.dropped[0][1].message).toMatch(/'psubscribe' command.*`ACL SETUSER <user> \+psubscribe &rtk:ps:a:\*`/);
    expect(errors.filter((m) => m.includes('is dropped'))).toHaveLength(2);
    expect(pubsub.subscriptionCount).toBe(1);
    expect(await heard(pubsub, w.got, 'c', 'c')).toBe(true);
    // Granted again: a new subscribe works (a dropped subscription is no longer in the way).
    await admin.call('acl', 'setuser', 'app', '+psubscribe');
    await pubsub.subscribe('a:*', w.handler('a:*'));
    expect(await heard(pubsub, w.got, 'a:*', 'a:again')).toBe(true);
  });

  it('the gateway: a pattern relay Redis refused after a reconnect is forgotten, so the next client is told, not joined to a dead room', async () => {
    await setUser('&rtk:ps:news:*');
    const app = await createGatewayApp({ target: target(), ...timing, pubsub: { gateway: { authorize: () => true } } });
    const w = watch(app.get(PubSubService));
    const first = await connectClient(app.url, { token: 'u:alice' });
    expect(await first.subscribe('news:*')).toEqual({ ok: true });
    await admin.call('acl', 'setuser', 'app', 'resetchannels', '&rtk:*');
    expect(await waitFor(() => w.seen.resubscribed === 1, 5_000)).toBe(true);

    const next = await connectClient(app.url, { token: 'u:bob' });
    // before: { ok: true }, and it never received anything
    expect(await next.subscribe('news:*')).toEqual({
      ok: false,
      code: 'E_BAD_REQUEST',
      error: expect.stringMatching(
        /^pub\/sub PSUBSCRIBE rtk:ps:news:\* \(subscribe to news:\*\) was refused by the ACL/,
      ),
    });
    expect(w.dropped.map(([name]) => name)).toEqual(['news:*']);
  });
});

describe('lazyConnect', () => {
  it('a pending pattern subscription Redis refuses once it is reachable is dropped and reported once, not tried again each second', async () => {
    const server = trackForCleanup(await startRedisServer({ args: ['--user', 'app', ...BASE, '-psubscribe'] }));
    await server.stop();
    const { errors, warnings, logger } = recordingLogger();
    const app = await createToolkitApp({
      target: { url: `redis://app:${PASSWORD}@127.0.0.1:${server.port}` },
      lazyConnect: true,
      connectTimeout: 500,
      commandTimeout: 300,
      maxReconnectDelay: 200,
      providers: [PatternEvents],
      logger,
    });
    const pubsub = app.get(PubSubService);
    const w = watch(pubsub);
    expect(warnings.filter((m) => m.includes('orders:*') && m.includes('pending'))).toHaveLength(1);
    expect(pubsub.subscriptionCount).toBe(1);

    await server.restart();
    // before: never dropped (tried again each second, each refusal swallowed)
    expect(await waitFor(() => w.dropped.length === 1, 5_000)).toBe(true);
    expect(w.dropped[0][0]).toBe('orders:*');
    expect(w.dropped[0][1]).toBeInstanceOf(RedisPermissionError);
    expect(pubsub.subscriptionCount).toBe(0);
    await sleep(2_500); // past two retry periods of the pending subscriptions (1 s)
    const admin = trackForCleanup(new Redis(server.port, '127.0.0.1'));
    const log = (await admin.call('acl', 'log')) as unknown[][];
    const counts = log
      .map((entry) => Object.fromEntries(Array.from({ length: entry.length / 2 }, (_, i) => entry.slice(2 * i))))
      .filter((e) => e.username === 'app' && e.object === 'psubscribe')
      .map((e) => e.count);
    expect(counts).toEqual([1]);
    expect(errors.filter((m) => m.includes('orders:*'))).toEqual([expect.stringContaining('is dropped')]);
  });
});

describe('a Redis Cluster with classic pub/sub', () => {
  const cluster = useDisposableCluster();

  it('channel rules tightened on every node: the refused pattern is dropped and reported, the allowed one restored', async () => {
    const nodes = cluster().nodes.map((n) => trackForCleanup(new Redis(n.port, '127.0.0.1', { lazyConnect: true })));
    for (const node of nodes) await node.call('acl', 'setuser', 'app', 'reset', ...BASE, '&rtk:ps:a:*', '&rtk:ps:b:*');
    const { errors, logger } = recordingLogger();
    const app = await createToolkitApp({
      target: { cluster: cluster().startupNodes, username: 'app', password: PASSWORD },
      pubsub: { cluster: 'classic' },
      ...timing,
      logger,
    });
    const pubsub = app.get(PubSubService);
    const w = watch(pubsub);
    await pubsub.subscribe('a:*', w.handler('a:*'));
    await pubsub.subscribe('b:*', w.handler('b:*'));
    expect(await heard(pubsub, w.got, 'a:*', 'a:0')).toBe(true);

    // The node holding the subscriber connection closes it; ioredis opens one on a node and re-sends both patterns
    // in one PSUBSCRIBE, which is refused whole (ioredis catches and ignores that).
    // (It may first move to a node not tightened yet, and be cut again there: wait for the refusal.)
    await Promise.all(
      nodes.map((node) => node.call('acl', 'setuser', 'app', 'resetchannels', '&rtk:*', '&rtk:ps:a:*')),
    );
    expect(await waitFor(() => w.dropped.length > 0 && w.seen.resubscribed >= 1, 10_000)).toBe(true);

    // before: nothing dropped nor logged, and a:* dead with b:*
    expect(w.dropped.map(([name, e]) => [name, e instanceof RedisPermissionError])).toEqual([['b:*', true]]);
    expect(errors.filter((m) => m.includes('is dropped'))).toEqual([expect.stringContaining('PSUBSCRIBE rtk:ps:b:*')]);
    expect(await heard(pubsub, w.got, 'a:*', 'a:1')).toBe(true);
    expect(pubsub.subscriptionCount).toBe(1);
  });
});
