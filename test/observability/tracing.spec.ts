import 'reflect-metadata';
import diagnosticsChannel from 'node:diagnostics_channel';
import { randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import {
  CacheService,
  LockLostError,
  LockNotAcquiredError,
  LockService,
  PubSubService,
  RateLimitService,
  REDIS_CLIENT,
  SessionService,
} from '../../lib/index.js';
import {
  KeyBuilder,
  REDIS_TOOLKIT_CHANNELS,
  REDIS_TOOLKIT_TRACING_CHANNELS,
  type TracingContext,
} from '../../lib/advanced.js';
import { closeToolkitApps, createToolkitApp } from '../support/toolkit-app.js';
import { sleep, waitFor } from '../support/wait.js';

const EVENTS = ['start', 'end', 'asyncStart', 'asyncEnd', 'error'] as const;
type TraceEvent = { name: string; event: (typeof EVENTS)[number]; context: TracingContext };

/** Every event of every traced operation, and every plain diagnostics event, in order. */
function listen() {
  const traces: TraceEvent[] = [];
  const events: { channel: string; payload: Record<string, unknown> }[] = [];
  const undo: (() => void)[] = [];
  for (const name of new Set(Object.values(REDIS_TOOLKIT_TRACING_CHANNELS))) {
    const channel = diagnosticsChannel.tracingChannel<object, TracingContext>(name);
    const handlers = Object.fromEntries(
      EVENTS.map((event) => [event, (context: TracingContext) => traces.push({ name, event, context })]),
    ) as unknown as Parameters<typeof channel.subscribe>[0];
    channel.subscribe(handlers);
    undo.push(() => channel.unsubscribe(handlers));
  }
  for (const channel of Object.values(REDIS_TOOLKIT_CHANNELS)) {
    const fn = (payload: unknown) => events.push({ channel, payload: payload as Record<string, unknown> });
    diagnosticsChannel.subscribe(channel, fn);
    undo.push(() => diagnosticsChannel.unsubscribe(channel, fn));
  }
  return {
    traces,
    events,
    /** One traced call per distinct context: its events in order and the context as it ended. */
    calls(name: string) {
      const contexts = [...new Set(traces.filter((t) => t.name === name).map((t) => t.context))];
      return contexts.map((context) => ({
        context,
        sequence: traces.filter((t) => t.context === context).map((t) => t.event),
      }));
    },
    on: (channel: string) => events.filter((e) => e.channel === channel).map((e) => e.payload),
    unsubscribe: () => {
      for (const u of undo) u();
    },
  };
}

const OK = ['start', 'end', 'asyncStart', 'asyncEnd'];
const FAILED = ['start', 'end', 'error', 'asyncStart', 'asyncEnd'];
/** The context without `error` (checked apart) — what a subscriber reads at asyncEnd. */
const fields = ({ error: _error, ...rest }: TracingContext) => rest;

let app: Awaited<ReturnType<typeof createToolkitApp>>;
let listener: ReturnType<typeof listen> | undefined;
let prefix: string;

beforeEach(async () => {
  prefix = `rtk-trc-${randomBytes(4).toString('hex')}:`;
  app = await createToolkitApp({ keyPrefix: prefix, session: { cookie: { secret: 's3cret-trace' } } });
});
afterEach(async () => {
  listener?.unsubscribe();
  listener = undefined;
  await closeToolkitApps();
});

describe('TracingChannel: one traced call per operation, every outcome', () => {
  it('names: each traced operation is also an event channel, in the ioredis style', () => {
    for (const [key, name] of Object.entries(REDIS_TOOLKIT_TRACING_CHANNELS)) {
      expect(REDIS_TOOLKIT_CHANNELS[key as keyof typeof REDIS_TOOLKIT_CHANNELS]).toBe(name);
    }
  });

  it('cache get (miss, hit, stale) and load (loaded, failed)', async () => {
    const cache = app.get(CacheService);
    listener = listen();
    await cache.getOrSet('k', async () => 1, { ttl: 60_000, tags: ['t'] });
    await cache.getOrSet('k', async () => 2, { ttl: 60_000, tags: ['t'] });
    await expect(cache.getOrSet('bad', async () => Promise.reject(new Error('boom')))).rejects.toThrow('boom');
    await cache.invalidateTags('t', { soft: true });
    expect((await cache.getOrSetWithStatus('k', async () => 3, { ttl: 60_000, staleTtl: 60_000 })).status).toBe(
      'stale',
    );
    const gets = listener.calls('rtk:cache:get');
    expect(gets.map((c) => fields(c.context))).toEqual([
      { feature: 'cache', operation: 'get', outcome: 'miss' },
      { feature: 'cache', operation: 'get', outcome: 'hit' },
      { feature: 'cache', operation: 'get', outcome: 'failed' },
      { feature: 'cache', operation: 'get', outcome: 'stale' },
    ]);
    expect(gets.map((c) => c.sequence)).toEqual([OK, OK, FAILED, OK]);
    expect((gets[2].context.error as Error).message).toBe('boom');
    const loads = listener.calls('rtk:cache:load');
    expect(loads.slice(0, 2).map((c) => [fields(c.context), c.sequence])).toEqual([
      [{ feature: 'cache', operation: 'load', outcome: 'loaded' }, OK],
      [{ feature: 'cache', operation: 'load', outcome: 'failed' }, FAILED],
    ]);
    // the load runs inside the get: its start comes after the get's start and its asyncEnd before the get's
    const order = listener.traces.map((t) => `${t.name}:${t.event}`);
    expect(order.indexOf('rtk:cache:load:start')).toBeGreaterThan(order.indexOf('rtk:cache:get:start'));
    expect(order.indexOf('rtk:cache:load:asyncEnd')).toBeLessThan(order.indexOf('rtk:cache:get:asyncEnd'));
  });

  it('cache refresh: refreshed in the background after a soft invalidation, failed when the loader throws', async () => {
    const cache = app.get(CacheService);
    await cache.getOrSet('r', async () => 1, { ttl: 60_000, staleTtl: 60_000, tags: ['rt'] });
    await cache.getOrSet('f', async () => 1, { ttl: 60_000, staleTtl: 60_000, tags: ['rt'] });
    await cache.invalidateTags('rt', { soft: true });
    listener = listen();
    const l = listener;
    await cache.getOrSet('r', async () => 2, { ttl: 60_000, staleTtl: 60_000 });
    expect(await waitFor(() => l.on('rtk:cache:refresh').length === 1, 5_000)).toBe(true);
    await cache.getOrSet('f', async () => Promise.reject(new Error('nope')), { ttl: 60_000, staleTtl: 60_000 });
    expect(await waitFor(() => l.on('rtk:cache:refresh').length === 2, 5_000)).toBe(true);
    expect(l.on('rtk:cache:refresh')).toEqual([
      { feature: 'cache', operation: 'refresh', outcome: 'refreshed' },
      { feature: 'cache', operation: 'refresh', outcome: 'failed' },
    ]);
    expect(await cache.getOrSet('r', async () => 3)).toBe(2);
  });

  it('rate-limit decision: allowed and refused, with the policy names and a tracker hash', async () => {
    const limits = app.get(RateLimitService);
    listener = listen();
    const policy = { limit: 1, ttl: 60_000 };
    await limits.consume('198.51.100.9', policy);
    await limits.consume('198.51.100.9', policy);
    await expect(limits.consumeOrThrow('198.51.100.9', policy)).rejects.toThrow();
    await limits.consumeAll([{ key: '198.51.100.9', policy, name: 'burst' }]);
    await limits.peek('198.51.100.9', policy); // not a decision
    const calls = listener.calls('rtk:ratelimit:decision');
    expect(calls.map((c) => [c.context.outcome, c.context.policies, c.sequence])).toEqual([
      ['allowed', ['default'], OK],
      ['refused', ['default'], OK],
      ['refused', ['default'], OK],
      ['refused', ['burst'], OK],
    ]);
    for (const c of calls) {
      expect(c.context).toMatchObject({ feature: 'ratelimit', operation: 'decision' });
      expect(c.context.tracker).toMatch(/^[A-Za-z0-9_-]{8}$/);
    }
    expect(JSON.stringify(listener.traces)).not.toContain('198.51.100.9');
  });

  it('lock acquire (acquired, busy), extend (extended, failed), release (released)', async () => {
    const locks = app.get(LockService);
    listener = listen();
    const lock = await locks.acquire('res-a', { ttl: 10_000 });
    expect(await locks.tryAcquire('res-a')).toBeNull();
    await expect(locks.acquire('res-a', { waitMs: 0 })).rejects.toBeInstanceOf(LockNotAcquiredError);
    await lock.extend(10_000);
    await lock.release();
    const short = await locks.acquire('res-b', { ttl: 150 });
    await sleep(400);
    await expect(short.extend(1_000)).rejects.toBeInstanceOf(LockLostError);
    const acquires = listener.calls('rtk:lock:acquire');
    expect(acquires.map((c) => [c.context.resource, c.context.outcome, c.sequence])).toEqual([
      ['res-a', 'acquired', OK],
      ['res-a', 'busy', OK],
      ['res-a', 'busy', FAILED],
      ['res-b', 'acquired', OK],
    ]);
    expect(acquires[0].context).toEqual({
      feature: 'lock',
      operation: 'acquire',
      kind: 'lock',
      resource: 'res-a',
      outcome: 'acquired',
      fencingToken: lock.fencingToken,
    });
    expect(acquires[2].context.error).toBeInstanceOf(LockNotAcquiredError);
    const extends_ = listener.calls('rtk:lock:extend');
    expect(extends_.map((c) => [c.context.resource, c.context.outcome, c.sequence])).toEqual([
      ['res-a', 'extended', OK],
      ['res-b', 'failed', FAILED],
    ]);
    expect(extends_[1].context.error).toBeInstanceOf(LockLostError);
    expect(listener.calls('rtk:lock:release').map((c) => fields(c.context))).toEqual([
      {
        feature: 'lock',
        operation: 'release',
        kind: 'lock',
        resource: 'res-a',
        fencingToken: lock.fencingToken,
        outcome: 'released',
      },
    ]);
  });

  it('session create and destroy (destroyed, missing); pub/sub publish, relay and drop', async () => {
    const sessions = app.get(SessionService);
    const pubsub = app.get(PubSubService);
    listener = listen();
    const session = await sessions.create('user-1', { a: 1 });
    expect(await sessions.destroy(session.id)).toBe(true);
    expect(await sessions.destroy(session.id)).toBe(false);
    expect(listener.calls('rtk:session:create').map((c) => [fields(c.context), c.sequence])).toEqual([
      [{ feature: 'session', operation: 'create', outcome: 'created' }, OK],
    ]);
    expect(listener.calls('rtk:session:destroy').map((c) => [c.context.outcome, c.sequence])).toEqual([
      ['destroyed', OK],
      ['missing', OK],
    ]);

    const received: unknown[] = [];
    await pubsub.subscribe('news', (payload) => {
      received.push(payload);
    });
    await pubsub.subscribe('news', () => {
      throw new Error('handler broke');
    });
    const before = listener.calls('rtk:pubsub:publish').length;
    expect(await pubsub.publish('news', { hello: 1 })).toBe(1);
    const l = listener;
    expect(await waitFor(() => received.length === 1, 5_000)).toBe(true);
    // a message that is not one of ours cannot be read: dropped
    const raw = app.get<Redis>(REDIS_CLIENT);
    await raw.publish(new KeyBuilder(prefix).channel('news'), 'not an envelope');
    expect(await waitFor(() => l.on('rtk:pubsub:drop').length === 2, 5_000)).toBe(true);
    const publishes = listener.calls('rtk:pubsub:publish').slice(before);
    expect(publishes.map((c) => [fields(c.context), c.sequence])).toEqual([
      [{ feature: 'pubsub', operation: 'publish', outcome: 'sent', receivers: 1 }, OK],
    ]);
    expect(listener.on('rtk:pubsub:relay')).toEqual([
      { feature: 'pubsub', operation: 'relay', outcome: 'relayed', handlers: 2 },
    ]);
    expect(listener.on('rtk:pubsub:drop')).toEqual([
      { feature: 'pubsub', operation: 'drop', outcome: 'dropped', reason: 'handler-failed' },
      { feature: 'pubsub', operation: 'drop', outcome: 'dropped', reason: 'unreadable' },
    ]);
  });

  it('no payload of any channel, traced or not, carries the session id, the cookie or the lock token', async () => {
    const sessions = app.get(SessionService);
    const locks = app.get(LockService);
    listener = listen();
    const session = await sessions.create('user-secret', { a: 1 });
    const cookie = sessions.signedCookieValue(session.id);
    await sessions.get(session.id);
    const lock = await locks.acquire('secret-check', { ttl: 5_000 });
    await lock.extend(5_000);
    await lock.release();
    await expect(lock.extend(5_000)).rejects.toBeInstanceOf(LockLostError);
    await app.get(RateLimitService).consume(session.id, { limit: 1, ttl: 1_000 });
    await app.get(CacheService).getOrSet('c', async () => ({ s: 1 }));
    await app.get(PubSubService).publish('news', { x: 1 });
    await sessions.destroy(session.id);
    await sessions.destroy(session.id);
    // errors are serialized with their message and name (JSON.stringify drops them)
    const all = JSON.stringify([listener.traces, listener.events], (_k, v) =>
      v instanceof Error ? { name: v.name, message: v.message, stack: v.stack } : v,
    );
    expect(listener.traces.length).toBeGreaterThanOrEqual(40);
    expect(all).toContain('secret-check'); // the grep can find what is there
    for (const secret of [session.id, cookie, encodeURIComponent(cookie), lock.token]) {
      expect(secret.length).toBeGreaterThan(16);
      expect(all).not.toContain(secret);
    }
  });

  it('with no subscriber no traced call builds a context or enters runStores', async () => {
    const entered: string[] = [];
    const restore = [...new Set(Object.values(REDIS_TOOLKIT_TRACING_CHANNELS))].map((name) => {
      const channel = diagnosticsChannel.tracingChannel(name);
      expect(channel.hasSubscribers).toBe(false);
      const start = channel.start as { runStores: unknown };
      start.runStores = () => {
        entered.push(name);
      };
      return () => {
        delete start.runStores;
      };
    });
    try {
      await app.get(CacheService).getOrSet('x', async () => 1);
      await app.get(RateLimitService).consume('t', { limit: 5, ttl: 1_000 });
      const lock = await app.get(LockService).acquire('r', { ttl: 1_000 });
      await lock.extend(1_000);
      await lock.release();
      const s = await app.get(SessionService).create('u');
      await app.get(SessionService).destroy(s.id);
      await app.get(PubSubService).publish('c', 1);
    } finally {
      for (const r of restore) r();
    }
    expect(entered).toEqual([]);
    // the same spy is reached with a subscriber (the check above can fail)
    listener = listen();
    await app.get(CacheService).getOrSet('x', async () => 1);
    expect(listener.calls('rtk:cache:get')).toHaveLength(1);
  });
});
