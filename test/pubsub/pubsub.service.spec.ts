import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { InvalidKeyError, InvalidOptionsError, PubSubService, RedisUnavailableError } from '../../lib/index.js';
import { JsonSerializer, type MessageMeta } from '../../lib/advanced.js';
import { RedisConnection } from '../../lib/advanced.js';
import { recordCommands } from '../support/command-recorder.js';
import { trackForCleanup } from '../support/private-servers.js';
import { startRedisServer } from '../support/redis-server.js';
import { closeToolkitApps, createToolkitApp, type RedisTarget } from '../support/toolkit-app.js';
import { sleep, waitFor } from '../support/wait.js';
import { within } from '../support/timing.js';

afterEach(closeToolkitApps);

const uid = (): string => randomBytes(5).toString('hex');

interface Received {
  payload: unknown;
  channel: string;
  meta: MessageMeta;
}

function collector(): { got: Received[]; handler: (payload: unknown, channel: string, meta: MessageMeta) => void } {
  const got: Received[] = [];
  return { got, handler: (payload, channel, meta) => void got.push({ payload, channel, meta }) };
}

async function twoInstances(
  target: RedisTarget,
  extra: Record<string, unknown> = {},
): Promise<[PubSubService, PubSubService]> {
  const keyPrefix = `ps${uid()}:`;
  const a = await createToolkitApp({ target, keyPrefix, ...extra });
  const b = await createToolkitApp({ target, keyPrefix, ...extra });
  return [a.get(PubSubService), b.get(PubSubService)];
}

describe.each(['single', 'cluster'] as const)('PubSubService on %s', (target) => {
  it('delivers a publish from one instance to subscribers on both, with id and ts, Dates intact', async () => {
    const [a, b] = await twoInstances(target);
    const onA = collector();
    const onB = collector();
    await a.subscribe('orders', onA.handler);
    await b.subscribe('orders', onB.handler);
    const when = new Date('2030-01-02T03:04:05.000Z');
    const before = Date.now();
    expect(await b.publish('orders', { n: 1, when })).toBe(2);
    expect(await waitFor(() => onA.got.length === 1 && onB.got.length === 1, 3_000)).toBe(true);
    expect(onA.got[0].payload).toEqual({ n: 1, when });
    expect(onA.got[0].channel).toBe('orders');
    expect(onA.got[0].meta.id).toBe(onB.got[0].meta.id);
    expect(onA.got[0].meta.ts).toBeGreaterThanOrEqual(before);
    expect(a.isSharded).toBe(target === 'cluster');
  });

  it('reference-counts: the last unsubscribe removes the Redis subscription; unsubscribe is idempotent', async () => {
    const [a, b] = await twoInstances(target);
    const one = collector();
    const two = collector();
    const off1 = await a.subscribe('rc', one.handler);
    const off2 = await a.subscribe('rc', two.handler);
    expect(a.subscriptionCount).toBe(1);
    expect(await b.publish('rc', 1)).toBe(1); // one Redis subscription for two handlers
    expect(await waitFor(() => one.got.length === 1 && two.got.length === 1, 2_000)).toBe(true);
    await off1();
    await off1();
    expect(await b.publish('rc', 2)).toBe(1);
    await waitFor(() => two.got.length === 2, 2_000);
    expect(one.got.map((r) => r.payload)).toEqual([1]);
    expect(two.got.map((r) => r.payload)).toEqual([1, 2]);
    await off2();
    expect(a.subscriptionCount).toBe(0);
    expect(await b.publish('rc', 3)).toBe(0);
  });

  it('one handler subscribed twice is two registrations: unsubscribing one leaves the other receiving', async () => {
    const [a, b] = await twoInstances(target);
    const got: unknown[] = [];
    const handler = (payload: unknown) => void got.push(payload);
    const off1 = await a.subscribe('twice', handler);
    const off2 = await a.subscribe('twice', handler);
    expect(await b.publish('twice', 1)).toBe(1);
    expect(await waitFor(() => got.length === 2, 2_000)).toBe(true); // once per registration, like EventEmitter
    await off1();
    await off1();
    expect(a.subscriptionCount).toBe(1);
    expect(await b.publish('twice', 2)).toBe(1);
    expect(await waitFor(() => got.length === 3, 2_000)).toBe(true);
    expect(got).toEqual([1, 1, 2]);
    await off2();
    expect(a.subscriptionCount).toBe(0);
    expect(await b.publish('twice', 3)).toBe(0);
  });

  it('concurrent first subscribers of one channel share one SUBSCRIBE and all receive', async () => {
    const [a, b] = await twoInstances(target);
    const cs = Array.from({ length: 20 }, collector);
    await Promise.all(cs.map((c) => a.subscribe('burst', c.handler)));
    expect(await b.publish('burst', 'x')).toBe(1);
    expect(await waitFor(() => cs.every((c) => c.got.length === 1), 2_000)).toBe(true);
  });

  it('isolates a throwing or rejecting handler: the others still receive', async () => {
    const [a, b] = await twoInstances(target);
    const ok = collector();
    await a.subscribe('iso', () => {
      throw new Error('boom');
    });
    await a.subscribe('iso', () => Promise.reject(new Error('async boom')));
    await a.subscribe('iso', ok.handler);
    await b.publish('iso', 1);
    await b.publish('iso', 2);
    expect(await waitFor(() => ok.got.length === 2, 2_000)).toBe(true);
  });

  it('serializes a payload once per publish and deserializes it once per instance, whatever the handler count', async () => {
    const json = new JsonSerializer();
    const counts = { serialize: 0, deserialize: 0 };
    const serializer = {
      serialize: (v: unknown) => (counts.serialize++, json.serialize(v)),
      deserialize: <T>(raw: string) => (counts.deserialize++, json.deserialize<T>(raw)),
    };
    const [a, b] = await twoInstances(target, { serializer });
    const cs = Array.from({ length: 5 }, collector);
    for (const c of cs) await a.subscribe('once', c.handler);
    for (const c of cs) await b.subscribe('once', c.handler);
    await a.publish('once', { big: 'x'.repeat(1000) });
    expect(await waitFor(() => cs.every((c) => c.got.length === 2), 2_000)).toBe(true);
    expect(counts).toEqual({ serialize: 1, deserialize: 2 });
  });

  it('rejects bad channels, pattern publishes and unserializable payloads with typed errors', async () => {
    const [a] = await twoInstances(target);
    await expect(a.publish('', 1)).rejects.toBeInstanceOf(InvalidKeyError);
    await expect(a.publish('x'.repeat(2000), 1)).rejects.toBeInstanceOf(InvalidKeyError);
    await expect(a.publish('a\nb', 1)).rejects.toBeInstanceOf(InvalidKeyError);
    await expect(a.publish('news:*', 1)).rejects.toBeInstanceOf(InvalidKeyError);
    await expect(a.publish('c', undefined)).rejects.toMatchObject({ code: 'E_SERIALIZATION' });
    await expect(a.subscribe('', () => undefined)).rejects.toBeInstanceOf(InvalidKeyError);
    await expect(a.notifyUser('', 1)).rejects.toBeInstanceOf(InvalidKeyError);
  });

  it('durable notifyUser: replay returns exactly the messages after an id, in order', async () => {
    const [a] = await twoInstances(target, { pubsub: { durable: { maxLen: 100 } } });
    const user = `u${uid()}`;
    const live = collector();
    await a.subscribe(`user:${user}`, live.handler);
    for (let i = 1; i <= 6; i++) await a.notifyUser(user, { i });
    expect(await waitFor(() => live.got.length === 6, 2_000)).toBe(true);
    const ids = live.got.map((r) => r.meta.id);
    expect(ids.every((id) => /^\d+-\d+$/.test(id))).toBe(true);
    const missed = await a.replay(user, ids[2]);
    expect(missed.map((m) => m.data)).toEqual([{ i: 4 }, { i: 5 }, { i: 6 }]);
    expect(missed.map((m) => m.id)).toEqual(ids.slice(3));
    expect(missed[0].channel).toBe(`user:${user}`);
    expect(await a.replay(user, ids[5])).toEqual([]);
    expect((await a.replay(user, '0-0', 2)).map((m) => m.data)).toEqual([{ i: 1 }, { i: 2 }]);
    await expect(a.replay(user, 'not-an-id')).rejects.toBeInstanceOf(InvalidKeyError);
  });

  it('durable streams are capped (MAXLEN ~)', async () => {
    const [a] = await twoInstances(target, { pubsub: { durable: { maxLen: 10 } } });
    const user = `cap${uid()}`;
    for (let i = 0; i < 300; i++) await a.notifyUser(user, i);
    const all = await a.replay(user, '0-0', 10_000);
    expect(all.length).toBeGreaterThanOrEqual(10);
    expect(all.length).toBeLessThan(300);
    expect(all.at(-1)?.data).toBe(299);
  });

  if (target === 'single') {
    it('pattern subscriptions receive matching channels with the pattern in meta', async () => {
      const [a, b] = await twoInstances(target);
      const c = collector();
      const off = await a.subscribe('news:*', c.handler);
      await b.publish('news:sport', 1);
      await b.publish('weather', 2);
      await b.publish('news:tech', 3);
      expect(await waitFor(() => c.got.length === 2, 2_000)).toBe(true);
      await sleep(50);
      expect(c.got.map((r) => [r.channel, r.payload, r.meta.pattern])).toEqual([
        ['news:sport', 1, 'news:*'],
        ['news:tech', 3, 'news:*'],
      ]);
      await off();
    });
  } else {
    it('sharded mode refuses patterns with a clear error; classic mode serves them', async () => {
      const [a] = await twoInstances(target);
      await expect(a.subscribe('news:*', () => undefined)).rejects.toBeInstanceOf(InvalidOptionsError);
      await expect(a.subscribe('news:*', () => undefined)).rejects.toThrow(/pubsub.cluster: 'classic'/);
      const [c, d] = await twoInstances(target, { pubsub: { cluster: 'classic' } });
      expect(c.isSharded).toBe(false);
      const got = collector();
      await c.subscribe('news:*', got.handler);
      await c.subscribe('plain', got.handler);
      await d.publish('news:a', 1);
      await d.publish('plain', 2);
      expect(await waitFor(() => got.got.length === 2, 3_000)).toBe(true);
    });

    it('sharded channels spread over every master', async () => {
      const [a, b] = await twoInstances(target);
      const c = collector();
      const channels = Array.from({ length: 30 }, (_, i) => `spread:${i}`);
      for (const ch of channels) await a.subscribe(ch, c.handler);
      for (const ch of channels) expect(await b.publish(ch, ch)).toBe(1);
      expect(await waitFor(() => c.got.length === 30, 3_000)).toBe(true);
      expect(new Set(c.got.map((r) => r.payload))).toEqual(new Set(channels));
    });
  }
});

describe('PubSubService when Redis fails', () => {
  it('resubscribes after a Redis restart: deliveries resume without any call', async () => {
    const server = trackForCleanup(await startRedisServer());
    const opts = { target: { url: server.url }, keyPrefix: 'r:', commandTimeout: 500, maxReconnectDelay: 200 } as const;
    const a = await createToolkitApp(opts);
    const b = await createToolkitApp(opts);
    const ps = a.get(PubSubService);
    const c = collector();
    await ps.subscribe('alive', c.handler);
    await ps.subscribe('al*', c.handler);
    await b.get(PubSubService).publish('alive', 'before');
    expect(await waitFor(() => c.got.length === 2, 2_000)).toBe(true);

    await server.kill();
    await expect(b.get(PubSubService).publish('alive', 'down')).rejects.toBeInstanceOf(RedisUnavailableError);
    await expect(ps.subscribe('other', () => undefined)).rejects.toBeInstanceOf(RedisUnavailableError);
    expect(ps.subscriptionCount).toBe(2);
    await server.restart();

    // Keep publishing until the subscriber is back: the first publishes after the restart may beat its resubscribe.
    const pub = b.get(PubSubService);
    const resumed = await waitFor(async () => {
      await pub.publish('alive', 'after').catch(() => 0);
      return c.got.filter((r) => r.payload === 'after').length >= 2;
    }, 10_000);
    expect(resumed).toBe(true);
    expect(c.got.some((r) => r.payload === 'down')).toBe(false);
  });

  it('a paused Redis fails every publish of a batched call within commandTimeout', async () => {
    const server = trackForCleanup(await startRedisServer());
    const a = await createToolkitApp({ target: { url: server.url }, commandTimeout: 300 });
    server.pause();
    try {
      const started = Date.now();
      const outcomes = await Promise.allSettled(
        Array.from({ length: 10 }, (_, i) => a.get(PubSubService).publish('x', i)),
      );
      expect(Date.now() - started).toBeLessThan(within(300));
      expect(outcomes.map((o) => o.status === 'rejected' && o.reason instanceof RedisUnavailableError)).toEqual(
        Array.from({ length: 10 }, () => true),
      );
    } finally {
      server.resume();
    }
  });
});

describe('a subscribe that timed out on a paused Redis', () => {
  it('leaves no Redis subscription behind once Redis resumes (a publish there counts no phantom receiver)', async () => {
    const server = trackForCleanup(await startRedisServer());
    const keyPrefix = `ps${uid()}:`;
    const a = await createToolkitApp({ target: { url: server.url }, commandTimeout: 300, keyPrefix });
    const pubsub = a.get(PubSubService);
    const got: unknown[] = [];
    const warm: unknown[] = [];
    await pubsub.subscribe('warm', (m) => void warm.push(m)); // the subscriber connection is up
    server.pause();
    try {
      await expect(pubsub.subscribe('late', (m) => void got.push(m))).rejects.toBeInstanceOf(RedisUnavailableError);
    } finally {
      server.resume();
    }
    expect(pubsub.subscriptionCount).toBe(1);
    // Once resumed, the timed-out SUBSCRIBE is run: read late from the connection it was written on, or sent again by
    // ioredis (autoResendUnfulfilledCommands) on the connection that replaced it. Wait for the subscriber to be back.
    expect(await waitFor(async () => (await pubsub.publish('warm', 'back')) === 1 && warm.length > 0, 3_000)).toBe(
      true,
    );
    await sleep(300);
    const admin = new Redis(server.url);
    try {
      expect(await admin.pubsub('NUMSUB', `${keyPrefix}ps:late`)).toEqual([`${keyPrefix}ps:late`, 0]);
    } finally {
      admin.disconnect();
    }
    expect(await pubsub.publish('late', 1)).toBe(0);
    // and a later subscribe to the same names works as usual
    const off = await pubsub.subscribe('late', (m) => void got.push(m));
    expect(await pubsub.publish('late', 2)).toBe(1);
    expect(await waitFor(() => got.length === 1, 2_000)).toBe(true);
    expect(got).toEqual([2]);
    await off();
  });
});

describe('publishes of one event-loop turn share one script call (single server)', () => {
  it('70 publishes on two channels: one EVALSHA per 32, every message delivered once, in order, with its count', async () => {
    const [a, b] = await twoInstances('single');
    const onOne = collector();
    const onTwo = collector();
    await b.subscribe('one', onOne.handler);
    await b.subscribe('two', onTwo.handler);
    await a.publish('one', 'warm-up'); // both subscriptions are live before the burst
    expect(await waitFor(() => onOne.got.length === 1, 3_000)).toBe(true);
    onOne.got.length = 0;
    const aClient = (a as unknown as { connection: RedisConnection }).connection.client;
    const { value: counts, commands } = await recordCommands(aClient, () =>
      Promise.all(Array.from({ length: 70 }, (_, i) => a.publish(i % 2 === 0 ? 'one' : 'two', { i }))),
    );
    expect(commands.filter((c) => c === 'evalsha' || c === 'eval')).toHaveLength(3);
    expect(commands.filter((c) => c === 'publish')).toEqual([]);
    expect(counts).toEqual(Array.from({ length: 70 }, () => 1));
    expect(await waitFor(() => onOne.got.length === 35 && onTwo.got.length === 35, 3_000)).toBe(true);
    expect(onOne.got.map((m) => (m.payload as { i: number }).i)).toEqual(Array.from({ length: 35 }, (_, k) => 2 * k));
    expect(onTwo.got.map((m) => (m.payload as { i: number }).i)).toEqual(
      Array.from({ length: 35 }, (_, k) => 2 * k + 1),
    );
    expect(new Set([...onOne.got, ...onTwo.got].map((m) => m.meta.id)).size).toBe(70);
  });
});
