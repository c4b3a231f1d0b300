import 'reflect-metadata';
import diagnosticsChannel from 'node:diagnostics_channel';
import { createHash, randomBytes } from 'node:crypto';
import {
  CacheService,
  LockLostError,
  LockService,
  PubSubService,
  RateLimitService,
  SessionService,
} from '../../lib/index.js';
import { type DiagnosticsPayload, KeyBuilder, REDIS_TOOLKIT_CHANNELS } from '../../lib/advanced.js';
import { closeToolkitApps, createToolkitApp } from '../support/toolkit-app.js';
import { sleep } from '../support/wait.js';

type Received = { channel: string; payload: DiagnosticsPayload };

/** Subscribes to every toolkit channel for the test; `unsubscribe` removes them all. */
function listen(): { received: Received[]; unsubscribe: () => void } {
  const received: Received[] = [];
  const handlers = Object.values(REDIS_TOOLKIT_CHANNELS).map((channel) => {
    const fn = (payload: unknown) => received.push({ channel, payload: payload as DiagnosticsPayload });
    diagnosticsChannel.subscribe(channel, fn);
    return () => diagnosticsChannel.unsubscribe(channel, fn);
  });
  return {
    received,
    unsubscribe: () => {
      for (const u of handlers) u();
    },
  };
}

const on = (r: Received[], channel: string) => r.filter((x) => x.channel === channel).map((x) => x.payload);

let app: Awaited<ReturnType<typeof createToolkitApp>>;
let listener: ReturnType<typeof listen> | undefined;

beforeEach(async () => {
  app = await createToolkitApp({
    keyPrefix: `rtk-obs-${randomBytes(4).toString('hex')}:`,
    session: { cookie: { secret: 's3cret-obs' } },
  });
});
afterEach(async () => {
  listener?.unsubscribe();
  listener = undefined;
  await closeToolkitApps();
});

describe('diagnostics_channel events', () => {
  it('channel names follow ioredis 6 style and are all distinct', () => {
    const names = Object.values(REDIS_TOOLKIT_CHANNELS);
    expect(new Set(names).size).toBe(names.length);
    for (const n of names) expect(n).toMatch(/^rtk:[a-z]+:[a-z]+$/);
  });

  it('cache: get hit/miss/stale, load loaded/failed with a duration, invalidate deleted/softened', async () => {
    const cache = app.get(CacheService);
    listener = listen();
    await cache.getOrSet('k', async () => 1, { ttl: 60_000, tags: ['t'] });
    await cache.getOrSet('k', async () => 2, { ttl: 60_000, tags: ['t'] });
    await expect(cache.getOrSet('bad', async () => Promise.reject(new Error('boom')))).rejects.toThrow('boom');
    expect(await cache.invalidateTags('t', { soft: true })).toBe(1);
    await cache.getOrSet('k', async () => 3, { ttl: 60_000, staleTtl: 60_000, tags: ['t'] });
    expect(await cache.invalidateTags('t')).toBe(1);
    const r = listener.received;
    expect(on(r, 'rtk:cache:get').map((p) => p.outcome)).toEqual(['miss', 'hit', 'stale']);
    for (const p of on(r, 'rtk:cache:get')) expect(p).toMatchObject({ feature: 'cache', operation: 'get' });
    const loads = on(r, 'rtk:cache:load');
    expect(loads.map((p) => p.outcome).slice(0, 2)).toEqual(['loaded', 'failed']);
    for (const p of loads) {
      expect(p).toMatchObject({ feature: 'cache', operation: 'load' });
      expect(typeof p.durationMs).toBe('number');
      expect(p.durationMs as number).toBeGreaterThanOrEqual(0);
    }
    expect(on(r, 'rtk:cache:invalidate')).toEqual([
      { feature: 'cache', operation: 'invalidate', outcome: 'softened', tags: 1, tagNames: ['t'], entries: 1 },
      { feature: 'cache', operation: 'invalidate', outcome: 'deleted', tags: 1, tagNames: ['t'], entries: 1 },
    ]);
  });

  it('rate limit: allowed then refused, with a short tracker hash, never the tracker', async () => {
    const limits = app.get(RateLimitService);
    listener = listen();
    const tracker = '203.0.113.77';
    const policy = { limit: 1, ttl: 60_000 };
    expect((await limits.consume(tracker, policy)).allowed).toBe(true);
    expect((await limits.consume(tracker, policy)).allowed).toBe(false);
    expect((await limits.consumeAll([{ key: tracker, policy, name: 'burst' }])).allowed).toBe(false);
    const d = on(listener.received, 'rtk:ratelimit:decision');
    expect(d.map((p) => p.outcome)).toEqual(['allowed', 'refused', 'refused']);
    expect(d[2].policies).toEqual(['burst']);
    for (const p of d) {
      expect(p).toMatchObject({ feature: 'ratelimit', operation: 'decision' });
      expect(p.tracker).toMatch(/^[A-Za-z0-9_-]{8}$/);
      expect(p.tracker).toBe(d[0].tracker);
      expect(typeof p.durationMs).toBe('number');
    }
    expect(JSON.stringify(d)).not.toContain(tracker);
    // Not a plain hash of the key: 8 characters of its SHA-256 gave 203.0.113.77 back from a brute force of 203/8 in
    // 68 ms (all of IPv4 in about 3 hours on one core). Keyed by a secret of this process, nothing can be tried.
    const plain = [KeyBuilder.hash(tracker), createHash('sha256').update(tracker).digest('base64url')];
    expect(plain.map((h) => h.slice(0, 8))).not.toContain(d[0].tracker);
    // another key, another tracker
    await limits.consume('203.0.113.78', policy);
    const other = on(listener.received, 'rtk:ratelimit:decision')[3];
    expect(other.tracker).toMatch(/^[A-Za-z0-9_-]{8}$/);
    expect(other.tracker).not.toBe(d[0].tracker);
    // a peek is not a decision
    await limits.peek(tracker, policy);
    expect(on(listener.received, 'rtk:ratelimit:decision')).toHaveLength(4);
  });

  it('locks: acquire acquired/busy, extend, release, lost — through LockEvents.report', async () => {
    const locks = app.get(LockService);
    listener = listen();
    const lock = await locks.acquire('res-a', { ttl: 10_000 });
    expect(await locks.tryAcquire('res-a')).toBeNull();
    await lock.extend(10_000);
    await lock.release();
    const short = await locks.acquire('res-b', { ttl: 150 });
    await sleep(400);
    await expect(short.extend(1_000)).rejects.toBeInstanceOf(LockLostError);
    const r = listener.received;
    expect(on(r, 'rtk:lock:acquire').map((p) => [p.resource, p.outcome])).toEqual([
      ['res-a', 'acquired'],
      ['res-a', 'busy'],
      ['res-b', 'acquired'],
    ]);
    expect(on(r, 'rtk:lock:extend')).toEqual([
      expect.objectContaining({ feature: 'lock', operation: 'extend', outcome: 'extended', resource: 'res-a' }),
    ]);
    expect(on(r, 'rtk:lock:release')).toEqual([
      expect.objectContaining({ feature: 'lock', operation: 'release', outcome: 'released', resource: 'res-a' }),
    ]);
    expect(on(r, 'rtk:lock:lost')).toEqual([
      expect.objectContaining({ feature: 'lock', operation: 'lost', outcome: 'lost', resource: 'res-b' }),
    ]);
  });

  it('session create/destroy and pub/sub publish; no payload carries the session id, lock token or cookie', async () => {
    const sessions = app.get(SessionService);
    const locks = app.get(LockService);
    const pubsub = app.get(PubSubService);
    listener = listen();
    const session = await sessions.create('user-1', { a: 1 });
    const cookie = sessions.signedCookieValue(session.id);
    const lock = await locks.acquire('secret-check', { ttl: 5_000 });
    await lock.extend(5_000);
    await lock.release();
    const before = on(listener.received, 'rtk:pubsub:publish').length;
    expect(await pubsub.publish('news', { hello: 1 })).toBe(0);
    expect(on(listener.received, 'rtk:pubsub:publish').slice(before)).toEqual([
      { feature: 'pubsub', operation: 'publish', outcome: 'sent', receivers: 0 },
    ]);
    expect(await sessions.destroy(session.id)).toBe(true);
    expect(await sessions.destroy(session.id)).toBe(false);
    const r = listener.received;
    expect(on(r, 'rtk:session:create')).toEqual([
      { feature: 'session', operation: 'create', outcome: 'created', ttl: expect.any(Number) },
    ]);
    expect(on(r, 'rtk:session:destroy').map((p) => p.outcome)).toEqual(['destroyed', 'missing']);
    // the session revocations announced on destroy are pub/sub publishes too
    for (const p of on(r, 'rtk:pubsub:publish')) expect(p).toMatchObject({ feature: 'pubsub', outcome: 'sent' });
    const all = JSON.stringify(r);
    expect(r.length).toBeGreaterThanOrEqual(8);
    for (const secret of [session.id, cookie, lock.token, encodeURIComponent(cookie)]) {
      expect(secret.length).toBeGreaterThan(16);
      expect(all).not.toContain(secret);
    }
  });

  it('with no subscriber nothing is published and no payload is built', async () => {
    for (const name of Object.values(REDIS_TOOLKIT_CHANNELS)) {
      expect(diagnosticsChannel.channel(name).hasSubscribers).toBe(false);
    }
    // A spy on publish of every channel: with no subscriber, the helpers must not reach it.
    const published: string[] = [];
    const restore = Object.values(REDIS_TOOLKIT_CHANNELS).map((name) => {
      const ch = diagnosticsChannel.channel(name);
      // an own property over the prototype's publish (which node swaps when the first subscriber comes)
      ch.publish = () => {
        published.push(name);
      };
      return () => {
        delete (ch as { publish?: unknown }).publish;
      };
    });
    try {
      const cache = app.get(CacheService);
      await cache.getOrSet('x', async () => 1);
      await cache.invalidateTags('none');
      await app.get(RateLimitService).consume('t', { limit: 5, ttl: 1_000 });
      const lock = await app.get(LockService).acquire('r', { ttl: 1_000 });
      await lock.release();
      const s = await app.get(SessionService).create('u');
      await app.get(SessionService).destroy(s.id);
      await app.get(PubSubService).publish('c', 1);
    } finally {
      for (const r of restore) r();
    }
    expect(published).toEqual([]);
    // And the same spy sees them with a subscriber (the check above can fail).
    listener = listen();
    await app.get(CacheService).getOrSet('x', async () => 1);
    expect(on(listener.received, 'rtk:cache:get')).toHaveLength(1);
  });
});
