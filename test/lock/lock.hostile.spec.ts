/**
 * An adversarial review of the locks (lib/lock/, docs/lock.md), above all the grants of `wakeOnRelease` on one server
 * (a release gives the lock to the oldest waiting service) and the per-turn batching: contention between separate
 * services with callers that give up or throw, waits given up while their grant is on its way, services closed while
 * they wait or hold a grant, subscriber connections killed, ttl expiry, Redis restarted / paused / SCRIPT FLUSH / OOM /
 * PUBLISH revoked while waiters wait, hostile resource names, and a cluster master paused in a turn of locks.
 */
import 'reflect-metadata';
import { Injectable } from '@nestjs/common';
import { Cluster, Redis } from 'ioredis';
import {
  InvalidKeyError,
  LockLostError,
  LockNotAcquiredError,
  LockService,
  RedisReplyError,
  RedisUnavailableError,
  WithLock,
  type Lock,
} from '../../lib/index.js';
import { RedisConnection } from '../../lib/advanced.js';
import type { RedisClient } from '../../lib/common/lua-script.js';
import { ownedBy, useDisposableCluster } from '../support/disposable-cluster.js';
import { errorOf } from '../support/errors.js';
import { lockAppOptions, lockKey, quorumNodeClients, unique, wakeupsOf } from '../support/lock-modes.js';
import { trackForCleanup } from '../support/private-servers.js';
import { recordingLogger } from '../support/recording-logger.js';
import { startRedisServer, type RedisServerHandle } from '../support/redis-server.js';
import { closeToolkitApps, createToolkitApp, type RedisTarget, type ToolkitApp } from '../support/toolkit-app.js';
import { sleep, waitFor } from '../support/wait.js';

afterEach(closeToolkitApps);

interface Service {
  app: ToolkitApp;
  locks: LockService;
  client: RedisClient;
}

async function service(target: RedisTarget, options: Parameters<typeof createToolkitApp>[0] = {}): Promise<Service> {
  const app = await createToolkitApp({ target, ...options });
  return { app, locks: app.get(LockService), client: app.get(RedisConnection).client };
}

/** A private server's service: short command timeout, quick reconnects (chaos tests). */
const privateService = (server: RedisServerHandle, lock: Record<string, unknown> = {}, url = server.url) =>
  service({ url }, { commandTimeout: 300, maxReconnectDelay: 100, lock });

/** Far longer than each test may take: a waiter that acquires at all was granted the lock by the release. */
const NO_POLL = { retry: { count: 1, delay: 600_000, jitter: 0 } };

/** A small deterministic PRNG (mulberry32), so a failing run can be replayed. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** How `promise` settled, never rejecting. */
const settle = <T>(promise: Promise<T>): Promise<PromiseSettledResult<T>> =>
  promise.then(
    (value) => ({ status: 'fulfilled', value }),
    (reason: unknown) => ({ status: 'rejected', reason }),
  );

/** The number of entries of `resource`'s waiting services; and whether the set is expiring. */
async function waitingSet(client: RedisClient, resource: string): Promise<{ card: number; pttl: number }> {
  const key = `${lockKey(resource)}:waiters`;
  return { card: await client.zcard(key), pttl: await client.pttl(key) };
}

/** `count` entries among the waiting services of `resource`, and `locks` listens on its grant channel. */
async function joined(client: Redis, resource: string, count: number, locks: LockService): Promise<void> {
  const key = `${lockKey(resource)}:waiters`;
  const { grantChannel } = wakeupsOf(locks);
  const ok = await waitFor(
    async () =>
      (await client.zcard(key)) >= count && ((await client.pubsub('NUMSUB', grantChannel)) as [string, number])[1] >= 1,
    5_000,
  );
  expect(ok).toBe(true);
}

/** Another LockService on the same connection as `locks` (another app instance's, sharing the batching). */
function sibling(locks: LockService): LockService {
  const inner = locks as unknown as {
    lockOptions: ConstructorParameters<typeof LockService>[0];
    connection: RedisConnection;
    keys: ConstructorParameters<typeof LockService>[2];
  };
  return new LockService(inner.lockOptions, inner.connection, inner.keys);
}

/** In one turn, `other` asks for each resource before `held` are released: the releases still go first. */
async function sameTurn(other: LockService, resources: string[], held: (Lock | null)[]): Promise<(Lock | null)[]> {
  const [next] = await Promise.all([
    Promise.all(resources.map((r) => other.tryAcquire(r, { ttl: 10_000 }))),
    Promise.all(held.map((l) => l?.release())),
  ]);
  for (const [i, lock] of next.entries()) expect(lock?.fencingToken).toBeGreaterThan(held[i]?.fencingToken ?? 0);
  return next;
}

class Boom extends Error {}

describe('mutual exclusion under contention (separate services, one resource)', () => {
  it.each([
    ['single', 'single', true],
    ['single, polling', 'single', false],
    ['cluster (wake)', 'cluster', true],
    ['quorum (wake)', 'quorum', true],
  ] as const)(
    '%s: 4 services x 5 callers, short waits and throwing sections: one holder, growing tokens, nothing left',
    async (_name, target, wakeOnRelease) => {
      const random = prng(target.length * 7 + (wakeOnRelease ? 1 : 0));
      const services = await Promise.all(
        Array.from({ length: 4 }, () => {
          const { target: on, lock } = lockAppOptions(target, {
            wakeOnRelease,
            retry: { count: 10, delay: 30, jitter: 30 },
          });
          return service(on, { lock });
        }),
      );
      const resource = unique('storm');
      let inside = 0;
      let most = 0;
      const fences: number[] = [];
      const tally = { done: 0, thrown: 0, shortBusy: 0, longBusy: 0 };
      const caller = async (locks: LockService): Promise<void> => {
        for (let round = 0; round < 6; round++) {
          const roll = random();
          const short = roll < 0.3; // gives up soon: often while the lock is being granted to it
          const waitMs = short ? Math.floor(random() * 40) : 15_000;
          const hold = Math.floor(random() * 6);
          try {
            await locks.using(resource, { ttl: 5_000, waitMs }, async (_signal, lock) => {
              inside++;
              most = Math.max(most, inside);
              fences.push(lock.fencingToken);
              try {
                await sleep(hold);
              } finally {
                inside--;
              }
              if (roll > 0.85) throw new Boom('thrown inside using');
            });
            tally.done++;
          } catch (err) {
            if (err instanceof Boom) tally.thrown++;
            else if (err instanceof LockNotAcquiredError && short) tally.shortBusy++;
            else if (err instanceof LockNotAcquiredError) tally.longBusy++;
            else throw err;
          }
        }
      };
      const started = Date.now();
      await Promise.all(services.flatMap((s) => Array.from({ length: 5 }, () => caller(s.locks))));
      expect(Date.now() - started).toBeLessThan(15_000);
      expect(most).toBe(1);
      expect(tally.longBusy).toBe(0); // no long waiter was left behind
      expect(tally.done + tally.thrown + tally.shortBusy).toBe(120);
      expect(fences.length).toBe(tally.done + tally.thrown);
      for (let i = 1; i < fences.length; i++) expect(fences[i]).toBeGreaterThan(fences[i - 1]);
      // a grant that was on its way to a wait given up is released by its service: shortly, nothing is held
      const [client] = target === 'quorum' ? quorumNodeClients(services[0].locks) : [services[0].client];
      expect(await waitFor(async () => (await client.exists(lockKey(resource))) === 0, 2_000)).toBe(true);
      const { card, pttl } = await waitingSet(client, resource);
      expect(card === 0 || (pttl > 0 && pttl <= 5_000)).toBe(true);
      expect(card).toBe(0);
    },
    40_000,
  );

  it('a semaphore (limit 2) with 3 services x 4 callers never has 3 holders; every permit is returned', async () => {
    const services = await Promise.all(Array.from({ length: 3 }, () => service('single')));
    const name = unique('sem-storm');
    let inside = 0;
    let most = 0;
    await Promise.all(
      services.flatMap((s) =>
        Array.from({ length: 4 }, async () => {
          const slots = s.locks.semaphore(name, { limit: 2, ttl: 5_000 });
          for (let round = 0; round < 4; round++) {
            await slots.using({ waitMs: 15_000, retry: { delay: 10, jitter: 10 } }, async () => {
              most = Math.max(most, ++inside);
              await sleep(3);
              inside--;
            });
          }
        }),
      ),
    );
    expect(most).toBe(2);
    expect(await services[0].locks.semaphore(name, { limit: 2 }).holders()).toBe(0);
  }, 30_000);
});

describe('grants on one server: waits that end while their grant is on its way', () => {
  it('a wait given up at the moment the release grants it passes the lock on to the next waiting service', async () => {
    const holder = await service('single');
    const quitter = await service('single');
    const patient = await service('single');
    const admin = holder.client as Redis;
    // 8 resources, each released at a slightly different moment around the quitter's deadline
    const runs = Array.from({ length: 8 }, async (_, k) => {
      const resource = unique(`given-up-${k}`);
      const held = await holder.locks.acquire(resource, { ttl: 10_000 });
      const begun = Date.now();
      const quitting = settle(quitter.locks.acquire(resource, { ttl: 10_000, waitMs: 400, ...NO_POLL }));
      await joined(admin, resource, 1, quitter.locks);
      const waiting = settle(patient.locks.acquire(resource, { ttl: 10_000, waitMs: 20_000, ...NO_POLL }));
      await joined(admin, resource, 2, patient.locks);
      await sleep(Math.max(0, begun + 400 + (k - 4) * 3 - Date.now()));
      await held.release();
      const released = Date.now();
      const quit = await quitting;
      let quitterFence = held.fencingToken;
      if (quit.status === 'fulfilled') {
        quitterFence = quit.value.fencingToken;
        expect(quitterFence).toBeGreaterThan(held.fencingToken);
        await quit.value.release();
      } else {
        expect(quit.reason).toBeInstanceOf(LockNotAcquiredError);
      }
      const next = await waiting;
      // granted: its only poll is 10 minutes away
      expect(next.status).toBe('fulfilled');
      if (next.status !== 'fulfilled') return;
      expect(Date.now() - released).toBeLessThan(3_000);
      expect(next.value.fencingToken).toBeGreaterThan(quitterFence);
      await next.value.release();
      expect(await admin.exists(lockKey(resource))).toBe(0);
      expect(await admin.zcard(`${lockKey(resource)}:waiters`)).toBe(0);
    });
    await Promise.all(runs);
  }, 30_000);

  it('a service closed while it waits: its caller fails typed at once, the next service is granted it', async () => {
    const holder = await service('single');
    const closing = await service('single');
    const patient = await service('single');
    const admin = holder.client as Redis;
    const resource = unique('closed-waiter');
    const held = await holder.locks.acquire(resource, { ttl: 10_000 });
    const closed = settle(closing.locks.acquire(resource, { ttl: 10_000, waitMs: 20_000, ...NO_POLL }));
    await joined(admin, resource, 1, closing.locks);
    const waiting = settle(patient.locks.acquire(resource, { ttl: 10_000, waitMs: 20_000, ...NO_POLL }));
    await joined(admin, resource, 2, patient.locks);
    const closedAt = Date.now();
    await closing.app.close();
    const outcome = await closed;
    expect(Date.now() - closedAt).toBeLessThan(2_000);
    expect(outcome.status).toBe('rejected');
    if (outcome.status === 'rejected') expect(outcome.reason).toBeInstanceOf(RedisUnavailableError);
    await held.release();
    const next = await waiting;
    expect(next.status).toBe('fulfilled');
    if (next.status === 'fulfilled') {
      expect(next.value.fencingToken).toBeGreaterThan(held.fencingToken);
      await next.value.release();
    }
    expect(await admin.exists(lockKey(resource))).toBe(0);
    expect(await admin.zcard(`${lockKey(resource)}:waiters`)).toBe(0);
  }, 30_000);

  it('a service closed holding a granted lock: not released, expires at its ttl, then the next gets it', async () => {
    const holder = await service('single');
    const closing = await service('single');
    const polling = await service('single');
    const admin = holder.client as Redis;
    const resource = unique('closed-holder');
    const held = await holder.locks.acquire(resource, { ttl: 10_000 });
    const granted = closing.locks.acquire(resource, { ttl: 800, waitMs: 20_000, ...NO_POLL });
    await joined(admin, resource, 1, closing.locks);
    await held.release();
    const lock = await granted;
    expect(wakeupsOf(closing.locks).received).toBe(1);
    expect(lock.fencingToken).toBeGreaterThan(held.fencingToken);
    await closing.app.close();
    expect(await admin.exists(lockKey(resource))).toBe(1); // left to expire, as after a crash
    expect(await errorOf(() => lock.release())).toBeInstanceOf(RedisUnavailableError);
    const next = await polling.locks.acquire(resource, { ttl: 5_000, waitMs: 5_000, retry: { delay: 50, jitter: 0 } });
    expect(next.fencingToken).toBeGreaterThan(lock.fencingToken);
    await next.release();
  }, 30_000);
});

describe('ttl expiry while held', () => {
  it('a lock past its ttl is lost: isHeld false, extend/release fail typed, the next has a larger token', async () => {
    const a = await service('single');
    const b = await service('single');
    const resource = unique('expired');
    const lock = await a.locks.acquire(resource, { ttl: 150 });
    await sleep(300);
    expect(lock.isHeld).toBe(false);
    const next = await b.locks.acquire(resource, { ttl: 5_000 });
    expect(next.fencingToken).toBeGreaterThan(lock.fencingToken);
    expect(await errorOf(() => lock.extend(1_000))).toBeInstanceOf(LockLostError);
    expect(await errorOf(() => lock.release())).toBeInstanceOf(LockLostError);
    // the expired holder's calls changed nothing: b still holds it
    expect(await a.locks.tryAcquire(resource)).toBeNull();
    expect(await a.client.get(lockKey(resource))).toBe(next.token);
    await next.release();
  });

  it('using: Redis paused past the ttl aborts the signal with LockLostError and the call rejects with it', async () => {
    const server = trackForCleanup(await startRedisServer());
    const a = await privateService(server);
    const b = await privateService(server);
    const resource = unique('paused-holder');
    let aborted: unknown;
    let fence = 0;
    const run = settle(
      a.locks.using(resource, { ttl: 400 }, async (signal, lock) => {
        fence = lock.fencingToken;
        server.pause();
        await sleep(900);
        server.resume();
        aborted = signal.aborted ? signal.reason : undefined;
        return 'finished anyway';
      }),
    );
    const outcome = await run;
    expect(aborted).toBeInstanceOf(LockLostError);
    expect(outcome.status).toBe('rejected');
    if (outcome.status === 'rejected') expect(outcome.reason).toBeInstanceOf(LockLostError);
    const next = await b.locks.acquire(resource, { ttl: 5_000, waitMs: 3_000 });
    expect(next.fencingToken).toBeGreaterThan(fence);
    await next.release();
  }, 20_000);
});

describe('Redis trouble while waiters wait (one server, grants)', () => {
  it('the subscriber connections killed (CLIENT KILL TYPE pubsub): the waiter still acquires by polling', async () => {
    const server = trackForCleanup(await startRedisServer());
    const a = await privateService(server);
    const b = await privateService(server);
    const admin = trackForCleanup(new Redis(server.port, '127.0.0.1'));
    const resource = unique('killed-sub');
    const held = await a.locks.acquire(resource, { ttl: 10_000 });
    const next = b.locks.acquire(resource, { ttl: 10_000, waitMs: 10_000, retry: { delay: 300, jitter: 0 } });
    await joined(admin, resource, 1, b.locks);
    expect(Number(await admin.call('CLIENT', 'KILL', 'TYPE', 'pubsub'))).toBeGreaterThanOrEqual(1);
    await held.release();
    const lock = await next;
    expect(lock.fencingToken).toBeGreaterThan(held.fencingToken);
    await lock.release();
    // and the subscription comes back: the next wait is granted again
    const again = await a.locks.acquire(resource, { ttl: 10_000 });
    const granted = b.locks.acquire(resource, { ttl: 10_000, waitMs: 20_000, ...NO_POLL });
    await joined(admin, resource, 1, b.locks);
    await again.release();
    const last = await granted;
    expect(wakeupsOf(b.locks).received).toBe(1);
    expect(last.fencingToken).toBeGreaterThan(again.fencingToken);
    await last.release();
    expect(await admin.exists(lockKey(resource))).toBe(0);
  }, 30_000);

  it('paused while a service waits: its wait fails typed; after the resume the next waiter is granted it', async () => {
    const server = trackForCleanup(await startRedisServer());
    const a = await privateService(server);
    const b = await privateService(server);
    const c = await privateService(server);
    const admin = trackForCleanup(new Redis(server.port, '127.0.0.1'));
    const resource = unique('paused-wait');
    const held = await a.locks.acquire(resource, { ttl: 10_000 });
    const failing = settle(b.locks.acquire(resource, { ttl: 10_000, waitMs: 3_000, retry: { delay: 100, jitter: 0 } }));
    await joined(admin, resource, 1, b.locks);
    server.pause();
    const outcome = await failing;
    server.resume();
    expect(outcome.status).toBe('rejected');
    if (outcome.status === 'rejected') expect(outcome.reason).toBeInstanceOf(RedisUnavailableError);
    const next = c.locks.acquire(resource, { ttl: 10_000, waitMs: 20_000, ...NO_POLL });
    await joined(admin, resource, 1, c.locks);
    await held.release();
    const lock = await next;
    expect(lock.fencingToken).toBeGreaterThan(held.fencingToken);
    await lock.release();
    expect(await waitFor(async () => (await admin.exists(lockKey(resource))) === 0, 2_000)).toBe(true);
    expect(await waitFor(async () => (await admin.zcard(`${lockKey(resource)}:waiters`)) === 0, 2_000)).toBe(true);
  }, 30_000);

  it('SCRIPT FLUSH while a service waits: the release still grants it the lock', async () => {
    const server = trackForCleanup(await startRedisServer());
    const a = await privateService(server);
    const b = await privateService(server);
    const admin = trackForCleanup(new Redis(server.port, '127.0.0.1'));
    const resource = unique('flushed');
    const held = await a.locks.acquire(resource, { ttl: 10_000 });
    const next = b.locks.acquire(resource, { ttl: 10_000, waitMs: 20_000, ...NO_POLL });
    await joined(admin, resource, 1, b.locks);
    expect(await admin.script('FLUSH')).toBe('OK');
    await held.release();
    const lock = await next;
    expect(wakeupsOf(b.locks).received).toBe(1);
    expect(lock.fencingToken).toBeGreaterThan(held.fencingToken);
    await lock.release();
    expect(await admin.exists(lockKey(resource))).toBe(0);
  }, 20_000);

  it('restarted without persistence while a service waits: typed outcomes, tokens still grow', async () => {
    const server = trackForCleanup(await startRedisServer());
    const a = await privateService(server);
    const b = await privateService(server);
    const admin = trackForCleanup(new Redis(server.port, '127.0.0.1', { maxRetriesPerRequest: 1 }));
    const resource = unique('restarted');
    const held = await a.locks.acquire(resource, { ttl: 10_000 });
    const waiting = settle(b.locks.acquire(resource, { ttl: 10_000, waitMs: 8_000, retry: { delay: 100, jitter: 0 } }));
    await joined(admin, resource, 1, b.locks);
    await server.kill();
    await server.restart();
    const outcome = await waiting;
    // both connections back (an attempt while reconnecting fails at once, closed: RedisUnavailableError)
    const up = async () =>
      (await Promise.all([a, b].map((s) => s.client.ping().catch(() => '')))).every((r) => r === 'PONG');
    expect(await waitFor(up, 5_000)).toBe(true);
    if (outcome.status === 'rejected') expect(outcome.reason).toBeInstanceOf(RedisUnavailableError);
    else expect(outcome.value.fencingToken).toBeGreaterThan(held.fencingToken);
    // the holder's lock is gone with the data: provably not ours
    expect(await errorOf(() => held.release())).toBeInstanceOf(LockLostError);
    const lock =
      outcome.status === 'fulfilled'
        ? outcome.value
        : await b.locks.acquire(resource, { ttl: 10_000, waitMs: 5_000, retry: { delay: 100, jitter: 0 } });
    expect(lock.fencingToken).toBeGreaterThan(held.fencingToken);
    await lock.release();
  }, 30_000);

  it('SCRIPT FLUSH, then a release and an acquisition by another service in one turn: it gets the lock', async () => {
    const server = trackForCleanup(await startRedisServer());
    const { locks } = await privateService(server);
    const other = sibling(locks);
    const admin = trackForCleanup(new Redis(server.port, '127.0.0.1'));
    // at most 8 of each (one script call each way; more: the describe below)
    const resources = Array.from({ length: 8 }, () => unique('flush-turn'));
    const warm = await Promise.all(resources.map((r) => locks.tryAcquire(r, { ttl: 10_000 })));
    await Promise.all(warm.map((l) => l?.release()));
    for (const some of [resources, resources.slice(0, 1), resources.slice(0, 2)]) {
      const held = await Promise.all(some.map((r) => locks.tryAcquire(r, { ttl: 10_000 })));
      expect(await admin.script('FLUSH')).toBe('OK');
      const next = await sameTurn(other, some, held);
      await Promise.all(next.map((l) => l?.release()));
    }
    for (const r of resources) expect(await admin.exists(lockKey(r))).toBe(0);
  }, 20_000);

  it('OOM (maxmemory 1, noeviction): the release still grants; acquisitions fail typed and hold nothing', async () => {
    const server = trackForCleanup(await startRedisServer());
    const a = await privateService(server);
    const b = await privateService(server);
    const c = await privateService(server);
    const admin = trackForCleanup(new Redis(server.port, '127.0.0.1'));
    const resource = unique('oom');
    const held = await a.locks.acquire(resource, { ttl: 10_000 });
    const waiting = b.locks.acquire(resource, { ttl: 10_000, waitMs: 20_000, ...NO_POLL });
    await joined(admin, resource, 1, b.locks);
    await admin.config('SET', 'maxmemory-policy', 'noeviction');
    await admin.config('SET', 'maxmemory', '1');
    try {
      // the release script's first write (ZPOPMIN) is not refused under OOM, and a script that wrote runs to its end
      await held.release();
      const lock = await waiting;
      expect(wakeupsOf(b.locks).received).toBe(1);
      expect(lock.fencingToken).toBeGreaterThan(held.fencingToken);
      // a new acquisition's SET NX is refused: a typed error for that call, no wait, no lock
      const other = unique('oom-other');
      expect(await errorOf(() => c.locks.acquire(other, { waitMs: 2_000 }))).toBeInstanceOf(RedisReplyError);
      expect(await errorOf(() => c.locks.acquire(resource, { waitMs: 2_000 }))).toBeInstanceOf(RedisReplyError);
      expect(await admin.exists(lockKey(other))).toBe(0);
      await lock.release(); // a release frees memory: allowed
      expect(await admin.exists(lockKey(resource))).toBe(0);
      expect(await admin.zcard(`${lockKey(resource)}:waiters`)).toBe(0);
    } finally {
      await admin.config('SET', 'maxmemory', '0');
    }
    const lock = await c.locks.acquire(resource, { ttl: 10_000, waitMs: 2_000 });
    expect(lock.fencingToken).toBeGreaterThan(held.fencingToken);
    await lock.release();
  }, 20_000);

  it('PUBLISH revoked at run time: the release resolves and reports it; the waiter gets the lock by its poll', async () => {
    const server = trackForCleanup(await startRedisServer({ aclUser: { name: 'app', password: 'app-pass' } }));
    // Nest's static logger may send an app's lines to the other app's logger: both apps log to one recorder
    const logs = recordingLogger();
    const options = { commandTimeout: 300, maxReconnectDelay: 100, logger: logs.logger };
    const a = await service({ url: server.url }, options);
    const b = await service({ url: server.url }, options);
    const admin = trackForCleanup(new Redis(server.port, '127.0.0.1'));
    const resource = unique('no-publish');
    const held = await a.locks.acquire(resource, { ttl: 1_000 });
    const waiting = b.locks.acquire(resource, { ttl: 10_000, waitMs: 8_000, retry: { delay: 100, jitter: 0 } });
    await joined(admin, resource, 1, b.locks);
    await admin.call('ACL', 'SETUSER', 'app', '-publish');
    const began = Date.now();
    // before: RedisPermissionError, though the script had released the lock and passed it on (Redis keeps the writes
    // made before the PUBLISH that failed): the caller thought it failed
    expect(await settle(held.release())).toEqual({ status: 'fulfilled', value: undefined });
    expect(held.isHeld).toBe(false);
    expect(await admin.get(lockKey(resource))).not.toBe(held.token);
    // no grant message came: the waiter's next poll takes the lock, well before the holder's 1 s ttl
    const lock = await waiting;
    expect(Date.now() - began).toBeLessThan(900);
    expect(wakeupsOf(b.locks).received).toBe(0);
    expect(lock.fencingToken).toBeGreaterThan(held.fencingToken);
    // not silent: counted with the error replies, and one warning naming the resource, PUBLISH and the remedy
    expect(a.locks.stats().replyErrors).toBe(1);
    const named = [...logs.warnings, ...logs.errors].filter((line) => line.includes('PUBLISH'));
    expect(named).toHaveLength(1);
    expect(named[0]).toContain(`"${resource}"`);
    expect(named[0]).toContain('+publish');
    await admin.call('ACL', 'SETUSER', 'app', '+publish');
    await lock.release();
    expect(b.locks.stats().replyErrors).toBe(0);
  }, 20_000);
});

describe('a turn with more acquisitions than fit one script call, queued before its releases', () => {
  // docs/lock.md: "A turn's releases are sent before its acquisitions, so an acquisition never finds busy a lock
  // released in the same turn". TickBatcher.add (lib/common/tick-batcher.ts) flushed a batcher that held maxPerCall
  // calls (8 on one server, 24 on a cluster) at once when one more was added; the acquisitions' flush sent the
  // releases queued so far first (sendingAfter), but the releases of this turn were not queued yet, so the first 8
  // (24) acquisitions reached Redis before the turn's releases and found every lock busy. In a SharedTurn a full
  // batcher now waits for the turn's end, where the releases go first.
  it.each([
    ['single', 12],
    ['cluster', 30],
  ] as const)(
    '%s: %i acquisitions by another service, then the releases, in one turn: each acquisition gets its lock',
    async (target, n) => {
      const { locks, client } = await service(target);
      const other = sibling(locks);
      const resources = Array.from({ length: n }, () => unique('full-turn'));
      const held = await Promise.all(resources.map((r) => locks.tryAcquire(r, { ttl: 10_000 })));
      expect(held.every((l) => l !== null)).toBe(true);
      const [next] = await Promise.all([
        Promise.all(resources.map((r) => other.tryAcquire(r, { ttl: 10_000 }))),
        Promise.all(held.map((l) => l?.release())),
      ]);
      const got = next.map((l) => l !== null);
      await Promise.all(next.map((l) => l?.release()));
      for (const r of resources) expect(await client.exists(lockKey(r))).toBe(0);
      expect(got).toEqual(resources.map(() => true)); // observed: the first 8 (24) null
    },
  );
});

const JOB = unique('hostile-job');

@Injectable()
class Job {
  runs: number[] = [];

  @WithLock({ resource: JOB, ttl: 2_000, onBusy: 'skip' })
  async run(): Promise<string> {
    const current = LockService.current();
    this.runs.push(current?.lock.fencingToken ?? -1);
    await sleep(60);
    return 'ran';
  }
}

describe('@WithLock, MultiLocks and auto-extension under attack', () => {
  it("@WithLock onBusy 'skip' on 3 app instances at once: one runs per round, with a growing token", async () => {
    const apps = await Promise.all(Array.from({ length: 3 }, () => createToolkitApp({ providers: [Job] })));
    const jobs = apps.map((app) => app.get(Job));
    for (let round = 0; round < 5; round++) {
      const results = await Promise.all(jobs.map((job) => job.run()));
      expect(results.filter((r) => r === 'ran')).toHaveLength(1);
      expect(results.filter((r) => r === undefined)).toHaveLength(2);
    }
    const tokens = jobs.flatMap((job) => job.runs);
    expect(tokens).toHaveLength(5);
    expect(tokens.every((t) => t > 0)).toBe(true);
    // rounds run one after another: sorted by value they are the rounds' order, all distinct
    expect(new Set(tokens).size).toBe(5);
  }, 20_000);

  it('usingAll over overlapping sets from 3 services x 3 callers: no resource ever has two holders', async () => {
    const services = await Promise.all(Array.from({ length: 3 }, () => service('single')));
    const pool = Array.from({ length: 4 }, () => unique('multi'));
    const inside = new Map<string, number>();
    let overlap = 0;
    const random = prng(7);
    await Promise.all(
      services.flatMap((s) =>
        Array.from({ length: 3 }, async () => {
          for (let round = 0; round < 5; round++) {
            const set = pool.filter(() => random() < 0.6);
            if (set.length === 0) set.push(pool[0]);
            await s.locks.usingAll(set, { ttl: 5_000, waitMs: 15_000, retry: { delay: 10, jitter: 10 } }, async () => {
              for (const r of set) {
                const n = (inside.get(r) ?? 0) + 1;
                inside.set(r, n);
                if (n > 1) overlap++;
              }
              await sleep(3);
              for (const r of set) inside.set(r, (inside.get(r) ?? 1) - 1);
            });
          }
        }),
      ),
    );
    expect(overlap).toBe(0);
    for (const r of pool) expect(await services[0].client.exists(lockKey(r))).toBe(0);
  }, 30_000);

  it('a lock deleted behind its back: auto-extension reports it lost once, typed; extend fails typed', async () => {
    const { locks, client } = await service('single');
    const resource = unique('deleted');
    const lost: unknown[] = [];
    const lock = await locks.acquire(resource, { ttl: 300, autoExtend: { onLost: (err) => lost.push(err) } });
    expect(await client.del(lockKey(resource))).toBe(1);
    expect(await waitFor(() => lost.length > 0, 2_000)).toBe(true);
    await sleep(300);
    expect(lost).toHaveLength(1);
    expect(lost[0]).toBeInstanceOf(LockLostError);
    expect(lock.isHeld).toBe(false);
    expect(await errorOf(() => lock.extend(1_000))).toBeInstanceOf(LockLostError);
    const next = await locks.acquire(resource, { ttl: 1_000 });
    expect(next.fencingToken).toBeGreaterThan(lock.fencingToken);
    await next.release();
  });

  // "A wait's later attempts keep its place" and "services are served in the order they started waiting"
  // (docs/lock.md), but acquire-many.lua set PEXPIRE whenever a member was added (ZADD NX returned 1), also when that
  // shortened the set's expiry: a service joining with a short ttl took the entry of one that waits with a long ttl
  // away with the set. That one was then granted nothing: it slept until its next poll while the lock was passed on or
  // free (here its only poll is at its deadline, 6 s). The set's expiry is now only ever lengthened.
  it('a later waiter with a shorter ttl does not drop an earlier waiting service from the set', async () => {
    const a = await service('single');
    const early = await service('single');
    const late = await service('single');
    const resource = unique('dropped');
    const order: string[] = [];
    const holding = a.locks.using(resource, { ttl: 300 }, () => sleep(1_000)); // kept alive by its extensions
    await sleep(20);
    // each releases at once once granted, so the next waiter is granted in turn
    const first = early.locks.acquire(resource, { ttl: 5_000, waitMs: 6_000, ...NO_POLL }).then(
      (l) => (order.push('early'), l.release()),
      () => null,
    );
    await joined(early.client as Redis, resource, 1, early.locks);
    const second = late.locks.acquire(resource, { ttl: 300, waitMs: 6_000, retry: { delay: 100, jitter: 0 } }).then(
      (l) => (order.push('late'), l.release()),
      () => null,
    );
    await joined(late.client as Redis, resource, 2, late.locks);
    await holding;
    const released = Date.now();
    // granted in the order they began waiting, each at once
    const both = await waitFor(() => order.length === 2, 3_000);
    await Promise.all([first, second]);
    const took = Date.now() - released;
    // before the fix: both false (3 s after the release only 'late' had had it), order ['late', 'early']: 'early' got
    // it at its deadline poll (6 s)
    expect({ both, order }).toEqual({ both: true, order: ['early', 'late'] });
    expect(took).toBeLessThan(3_000);
  }, 20_000);

  it('a wait longer than its ttl: the waiting set expires meanwhile, the waiter acquires by its poll', async () => {
    const a = await service('single');
    const b = await service('single');
    const resource = unique('outlived');
    const released = a.locks.using(resource, { ttl: 300 }, () => sleep(900)); // kept alive by extensions
    await sleep(20);
    const began = Date.now();
    const next = b.locks.acquire(resource, { ttl: 300, waitMs: 5_000, retry: { delay: 400, jitter: 0 } });
    await sleep(350);
    // joined with the ttl of its attempt: gone now, though the wait goes on
    expect(await b.client.exists(`${lockKey(resource)}:waiters`)).toBe(0);
    await released;
    const lock = await next;
    expect(Date.now() - began).toBeLessThan(2_000);
    await lock.release();
  }, 20_000);
});

const HOSTILE = [
  '{',
  '}',
  ':',
  '{}',
  'a}b{c',
  '%7B',
  '%',
  '*',
  '?[a]',
  'a b',
  ' ',
  'ünïcødé 😀 ⚠',
  '😀',
  'x'.repeat(1024),
  '-',
  ':waiters',
  'rtk:lock:{x}',
];
const REFUSED = ['', 'x'.repeat(1025), 'a\nb', '\n', '\r', '\u0000', '\uD800', 'a\uDC00b', '😀'.slice(0, 1)];

describe.each(['single', 'cluster'] as const)('hostile resource names on %s', (target) => {
  it('refused ones are InvalidKeyError before any Redis call; the others lock, exclude, wait and release', async () => {
    const a = await service(target);
    const b = await service(target, { lock: { wakeOnRelease: true } });
    for (const name of REFUSED) {
      expect(await errorOf(() => a.locks.tryAcquire(name))).toBeInstanceOf(InvalidKeyError);
      expect(await errorOf(() => a.locks.acquire(name, { waitMs: 0 }))).toBeInstanceOf(InvalidKeyError);
      expect(await errorOf(() => a.locks.acquireAll(['ok', name]))).toBeInstanceOf(InvalidKeyError);
      expect(await errorOf(() => a.locks.semaphore(name, { limit: 2 }).tryAcquire())).toBeInstanceOf(InvalidKeyError);
    }
    const suffix = unique('');
    const names = HOSTILE.map((n, i) => (i === 13 ? n : `${n}${suffix}`));
    // one turn: every name at once (several slots on a cluster, never a cross-slot error)
    const held = await Promise.all(names.map((n) => a.locks.tryAcquire(n, { ttl: 10_000 })));
    expect(held.every((l) => l !== null)).toBe(true);
    // distinct names are distinct locks ('{' and its escaped form '%7B' too); each excludes the other service
    expect(await Promise.all(names.map((n) => b.locks.tryAcquire(n)))).toEqual(names.map(() => null));
    // a waiter of the other service is passed each lock by its release (grant or wake message carrying the key)
    const waits = names.map((n) =>
      b.locks.acquire(n, { ttl: 10_000, waitMs: 10_000, retry: { delay: 100, jitter: 0 } }),
    );
    await sleep(150);
    await Promise.all(held.map((l) => l?.release()));
    const next = await Promise.all(waits);
    for (const [i, lock] of next.entries()) expect(lock.fencingToken).toBeGreaterThan(held[i]?.fencingToken ?? 0);
    await Promise.all(next.map((l) => l.release()));
    // all of them at once, all or none
    await a.locks.usingAll(names, { ttl: 5_000 }, async (_signal, multi) => {
      expect(Object.keys(multi.fencingTokens).sort()).toEqual([...names].sort());
      expect(await b.locks.tryAcquire(names[0])).toBeNull();
    });
    const sem = a.locks.semaphore(names[0], { limit: 1 });
    const permit = await sem.tryAcquire();
    expect(permit).not.toBeNull();
    expect(await b.locks.semaphore(names[0], { limit: 1 }).tryAcquire()).toBeNull();
    await permit?.release();
    for (const n of names) expect(await a.client.exists(lockKey(n))).toBe(0);
  }, 30_000);
});

describe('a cluster turn of locks', () => {
  it('services of one client: a release and an acquisition in one turn, the acquisition gets the lock', async () => {
    const { locks, client } = await service('cluster');
    const other = sibling(locks);
    expect(client).toBeInstanceOf(Cluster);
    const resources = Array.from({ length: 24 }, () => unique('same-turn'));
    for (const some of [resources, resources.slice(0, 1), resources.slice(0, 4)]) {
      const held = await Promise.all(some.map((r) => locks.tryAcquire(r, { ttl: 10_000 })));
      expect(held.every((l) => l !== null)).toBe(true);
      const next = await sameTurn(other, some, held);
      await Promise.all(next.map((l) => l?.release()));
    }
    for (const r of resources) expect(await client.exists(lockKey(r))).toBe(0);
  });

  describe('with a master paused', () => {
    const cluster = useDisposableCluster();

    it('only the locks on the paused master fail, typed; the rest of the turn is held and released', async () => {
      const { locks } = await service(
        { cluster: cluster().startupNodes },
        { commandTimeout: 300, maxReconnectDelay: 100 },
      );
      const victim = cluster().masters[1];
      const resources = Array.from({ length: 24 }, () => unique('paused-master'));
      const onVictim = await ownedBy(
        victim,
        resources.map((r) => lockKey(r)),
      );
      expect(onVictim.some(Boolean)).toBe(true);
      expect(onVictim.every(Boolean)).toBe(false);
      const before = await Promise.all(resources.map((r) => locks.tryAcquire(r, { ttl: 5_000 })));
      expect(before.every((l) => l !== null)).toBe(true);
      victim.pause();
      let outcomes: PromiseSettledResult<Lock | null>[];
      let releases: PromiseSettledResult<unknown>[];
      try {
        // one turn: the releases of every lock and acquisitions of fresh resources
        [releases, outcomes] = await Promise.all([
          Promise.all(before.map((l) => settle(l?.release() ?? Promise.resolve()))),
          Promise.all(resources.map((r) => settle(locks.tryAcquire(`${r}:again`, { ttl: 5_000 })))),
        ]);
      } finally {
        victim.resume();
      }
      const againOnVictim = await ownedBy(
        victim,
        resources.map((r) => lockKey(`${r}:again`)),
      );
      for (const [i, release] of releases.entries()) {
        if (onVictim[i]) {
          expect(release.status).toBe('rejected');
          if (release.status === 'rejected') expect(release.reason).toBeInstanceOf(RedisUnavailableError);
        } else expect(release.status).toBe('fulfilled');
      }
      for (const [i, outcome] of outcomes.entries()) {
        if (againOnVictim[i]) {
          expect(outcome.status).toBe('rejected');
          if (outcome.status === 'rejected') expect(outcome.reason).toBeInstanceOf(RedisUnavailableError);
        } else {
          expect(outcome.status).toBe('fulfilled');
          if (outcome.status === 'fulfilled') expect(outcome.value).not.toBeNull();
        }
      }
      for (const outcome of outcomes) if (outcome.status === 'fulfilled') await outcome.value?.release();
    }, 40_000);
    it('SCRIPT FLUSH on every master, then a release and an acquisition of the same locks in one turn', async () => {
      const { locks, client } = await service({ cluster: cluster().startupNodes }, { commandTimeout: 1_000 });
      const other = sibling(locks);
      const resources = Array.from({ length: 24 }, () => unique('flush-turn'));
      const warm = await Promise.all(resources.map((r) => locks.tryAcquire(r, { ttl: 10_000 })));
      await Promise.all(warm.map((l) => l?.release()));
      for (const some of [resources, resources.slice(0, 1), resources.slice(0, 4)]) {
        const held = await Promise.all(some.map((r) => locks.tryAcquire(r, { ttl: 10_000 })));
        for (const master of (client as Cluster).nodes('master')) expect(await master.script('FLUSH')).toBe('OK');
        const next = await sameTurn(other, some, held);
        await Promise.all(next.map((l) => l?.release()));
      }
      for (const r of resources) expect(await client.exists(lockKey(r))).toBe(0);
    }, 30_000);
  });
});
