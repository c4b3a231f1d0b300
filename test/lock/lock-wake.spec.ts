import 'reflect-metadata';
import { jest } from '@jest/globals';
import { Logger } from '@nestjs/common';
import type { Redis } from 'ioredis';
import type { Lock, LockService } from '../../lib/index.js';
import type { RedisClient } from '../../lib/common/lua-script.js';
import {
  LOCK_MODES,
  lockClients,
  lockKey,
  lockService,
  unique,
  waitingAndListening,
  waitingEntriesOf,
  wakeupsOf,
} from '../support/lock-modes.js';
import { closeToolkitApps } from '../support/toolkit-app.js';
import { waitFor } from '../support/wait.js';

afterEach(closeToolkitApps);

/** Far longer than each test may take: a waiter that acquires at all was woken by the release, not by its poll. */
const NO_POLL = { retry: { count: 1, delay: 600_000, jitter: 0 } };
const WAKE = { wakeOnRelease: true };

/** Every lock server has `service` among the waiters of `resource`, and its wake channel has a subscriber. */
async function waiting(servers: RedisClient[], resource: string, locks: LockService): Promise<void> {
  expect(await waitingAndListening(servers, resource, locks)).toBe(true);
}

/** `locks` listens on its grant channel (one server). */
async function listening(server: Redis, locks: LockService): Promise<void> {
  const { grantChannel } = wakeupsOf(locks);
  const subscribed = async () => ((await server.pubsub('NUMSUB', grantChannel)) as [string, number])[1] >= 1;
  expect(await waitFor(subscribed, 10_000)).toBe(true);
}

describe.each(LOCK_MODES)('wake-on-release across services on %s', (mode) => {
  it('a waiter of another service (its own connections) acquires when the holder releases, not at its next poll', async () => {
    const holder = await lockService(mode, WAKE);
    const other = await lockService(mode, WAKE);
    const servers = lockClients(mode, holder.connection, holder.locks);
    const resource = unique('wake');
    const first = await holder.locks.acquire(resource, { ttl: 20_000 });
    const next = other.locks.acquire(resource, { ...NO_POLL, ttl: 20_000 });
    await waiting(servers, resource, other.locks);
    await first.release();
    const second = await next;
    expect(second.fencingToken).toBeGreaterThan(first.fencingToken);
    expect(wakeupsOf(other.locks).received).toBeGreaterThanOrEqual(1);
    expect(wakeupsOf(holder.locks).received).toBe(0);
    // it left the waiters when it got the lock (and the release took it out on every server)
    for (const server of servers) expect(await server.zcard(`${lockKey(resource)}:waiters`)).toBe(0);
    await second.release();
  }, 30_000);

  it('wakes waiting services one per release, in the order they started waiting', async () => {
    const holder = await lockService(mode, WAKE);
    const services = [await lockService(mode, WAKE), await lockService(mode, WAKE), await lockService(mode, WAKE)];
    const servers = lockClients(mode, holder.connection, holder.locks);
    const resource = unique('order');
    const order: number[] = [];
    let lock: Lock = await holder.locks.acquire(resource, { ttl: 20_000 });
    const acquisitions: Promise<Lock>[] = [];
    for (const [i, service] of services.entries()) {
      acquisitions.push(
        service.locks.acquire(resource, { ...NO_POLL, ttl: 20_000 }).then((l) => {
          order.push(i);
          return l;
        }),
      );
      await waiting(servers, resource, service.locks);
    }
    for (const acquisition of acquisitions) {
      await lock.release();
      lock = await acquisition;
    }
    await lock.release();
    expect(order).toEqual([0, 1, 2]);
    expect(services.map((s) => wakeupsOf(s.locks).received >= 1)).toEqual([true, true, true]);
  }, 60_000);

  it('with lock.wakeOnRelease false a busy acquire joins no waiting services and nobody is woken', async () => {
    const holder = await lockService(mode, { wakeOnRelease: false });
    const other = await lockService(mode, { wakeOnRelease: false });
    const servers = lockClients(mode, holder.connection, holder.locks);
    const resource = unique('no-wake');
    const first = await holder.locks.acquire(resource, { ttl: 20_000 });
    await expect(other.locks.acquire(resource, { retry: { count: 2, delay: 20, jitter: 0 } })).rejects.toThrow(
      /3 attempts/,
    );
    for (const server of servers) expect(await server.exists(`${lockKey(resource)}:waiters`)).toBe(0);
    await first.release();
    expect(wakeupsOf(other.locks).received).toBe(0);
  });

  if (mode === 'cluster') return; // CLIENT KILL below addresses one server; the cluster's subscriber moves between nodes

  it('with the wake lost (its subscriber connection killed) the waiter still acquires by polling', async () => {
    const holder = await lockService(mode, WAKE);
    const other = await lockService(mode, WAKE);
    const servers = lockClients(mode, holder.connection, holder.locks);
    const resource = unique('lost-wake');
    const first = await holder.locks.acquire(resource, { ttl: 20_000 });
    const next = other.locks.acquire(resource, { retry: { count: 100, delay: 200, jitter: 0 }, ttl: 20_000 });
    await waiting(servers, resource, other.locks);
    const subscribers = (wakeupsOf(other.locks) as unknown as { subscribers: Redis[] }).subscribers;
    expect(subscribers).toHaveLength(servers.length);
    // Kill every subscriber connection of the waiting service, then release before ioredis reconnects: the release
    // finds nobody listening on its channel, so no wake arrives.
    for (const [i, server] of servers.entries()) {
      const port = subscribers[i].stream.localPort;
      expect(await (server as Redis).client('KILL', 'ADDR', `127.0.0.1:${port}`)).toBe(1);
    }
    await first.release();
    const second = await next;
    expect(second.fencingToken).toBeGreaterThan(first.fencingToken);
    expect(wakeupsOf(other.locks).received).toBe(0);
    await second.release();
  }, 30_000);
});

/** The commands `client` sends from now on, by name (what reaches Redis, not a mock of it). */
function commandsSent(client: RedisClient): string[] {
  const sent: string[] = [];
  const send = client.sendCommand.bind(client);
  client.sendCommand = ((command: { name: string }, ...rest: unknown[]) => {
    sent.push(command.name);
    return (send as (...a: unknown[]) => unknown)(command, ...rest);
  }) as typeof client.sendCommand;
  return sent;
}

/** A waiting service's grant channel stops listening: a release finds nobody there (PUBLISH reaches no one). */
async function deaf(locks: LockService): Promise<void> {
  const wakeups = wakeupsOf(locks);
  const [subscriber] = (wakeups as unknown as { subscribers: Redis[] }).subscribers;
  await subscriber.unsubscribe(wakeups.grantChannel);
}

/** On one server with grants: a service holds `resource` (ttl 20 s) as `first`; `other` is a second service. */
async function heldOnOneServer(name: string) {
  const holder = await lockService('single', WAKE);
  const other = await lockService('single', WAKE);
  const [server] = lockClients('single', holder.connection, holder.locks) as Redis[];
  const resource = unique(name);
  const first = await holder.locks.acquire(resource, { ttl: 20_000 });
  return { other, server, resource, first };
}

describe('lock grants (wakeOnRelease on one server): a release hands the lock to the oldest waiting service', () => {
  it('the waiter gets the lock from the release itself: it sends no command, and the lock is never free', async () => {
    const { other, server, resource, first } = await heldOnOneServer('grant');
    const next = other.locks.acquire(resource, { ...NO_POLL, ttl: 20_000 });
    await waiting([server], resource, other.locks);
    const sent = commandsSent(other.connection.client);
    await first.release();
    // the release set the lock to the waiter's token in the same script: nobody could take it in between
    const holderNow = await server.get(lockKey(resource));
    const second = await next;
    expect(holderNow).toBe(second.token);
    expect(sent).toEqual([]);
    expect(second.fencingToken).toBeGreaterThan(first.fencingToken);
    expect(second.expiresAt - Date.now()).toBeGreaterThan(15_000);
    expect(await server.zcard(`${lockKey(resource)}:waiters`)).toBe(0);
    await second.release();
    expect(await server.exists(lockKey(resource))).toBe(0);
  }, 30_000);

  // The grant message carried the token as Lua wrote a number (%.14g): a 16-digit token arrived rounded to 100 µs,
  // up or down, so a granted holder could get a smaller token than its predecessor's.
  it("the granted fencing token is the counter's, every digit of it (16 digits, the counter ahead of the clock)", async () => {
    const { other, server, resource, first } = await heldOnOneServer('grant-digits');
    const next = other.locks.acquire(resource, { ...NO_POLL, ttl: 20_000 });
    await waiting([server], resource, other.locks);
    // ahead of the server's clock in µs (as after a failover to a replica whose clock is behind): INCR draws the token
    await server.set(`${lockKey(resource)}:fence`, '9007199254740000');
    await first.release();
    const second = await next;
    expect(second.fencingToken).toBe(9_007_199_254_740_001);
    expect(await server.get(`${lockKey(resource)}:fence`)).toBe('9007199254740001');
    await second.release();
  }, 30_000);

  // A waiting entry whose ttl SET refuses (never written by us) raised in release-many.lua: every release of that
  // tick failed, other locks' included, and those stayed held until their ttl.
  it("a waiting entry we did not write is dropped: the tick's releases, of this lock and others, all go through", async () => {
    const holder = await lockService('single', WAKE);
    const [server] = lockClients('single', holder.connection, holder.locks) as Redis[];
    const [a, b] = [unique('bad-entry-a'), unique('bad-entry-b')];
    const locks = [await holder.locks.acquire(a, { ttl: 20_000 }), await holder.locks.acquire(b, { ttl: 20_000 })];
    await server.zadd(`${lockKey(a)}:waiters`, 0, 'svc-x tok-x 0', 1, 'svc-y tok-y 99999999999999999999');
    await Promise.all(locks.map((lock) => lock.release()));
    expect(await server.exists(lockKey(a), lockKey(b))).toBe(0);
    expect(await server.zcard(`${lockKey(a)}:waiters`)).toBe(0);
  }, 30_000);

  it('grants go to waiting services in the order they started waiting, each with a larger fencing token', async () => {
    const holder = await lockService('single', WAKE);
    const services = [await lockService('single', WAKE), await lockService('single', WAKE)];
    const [server] = lockClients('single', holder.connection, holder.locks);
    const resource = unique('grant-order');
    let lock = await holder.locks.acquire(resource, { ttl: 20_000 });
    const acquisitions: Promise<Lock>[] = [];
    for (const service of services) {
      acquisitions.push(service.locks.acquire(resource, { ...NO_POLL, ttl: 20_000 }));
      await waiting([server], resource, service.locks);
    }
    const fences = [lock.fencingToken];
    for (const [i, acquisition] of acquisitions.entries()) {
      await lock.release();
      lock = await acquisition;
      expect(await server.get(lockKey(resource))).toBe(lock.token);
      expect(wakeupsOf(services[i].locks).received).toBe(1);
      fences.push(lock.fencingToken);
    }
    await lock.release();
    expect(fences[1]).toBeGreaterThan(fences[0]);
    expect(fences[2]).toBeGreaterThan(fences[1]);
  }, 60_000);

  it('a waiting service that no longer listens is skipped: the next one gets the grant', async () => {
    const { other, server, resource, first } = await heldOnOneServer('grant-deaf');
    const gone = await lockService('single', WAKE);
    const lost = gone.locks.acquire(resource, { retry: { count: 1, delay: 1_500, jitter: 0 } });
    await waiting([server], resource, gone.locks);
    const next = other.locks.acquire(resource, { ...NO_POLL, ttl: 20_000 });
    await waiting([server], resource, other.locks);
    await deaf(gone.locks);
    await first.release();
    const second = await next;
    expect(await server.get(lockKey(resource))).toBe(second.token);
    expect(second.fencingToken).toBeGreaterThan(first.fencingToken);
    await expect(lost).rejects.toThrow(/held by another owner/);
    expect(wakeupsOf(gone.locks).received).toBe(0);
    await second.release();
  }, 30_000);

  // ttl 3 s: the reply held back 1 s leaves under 2 s of the grant's ttl, so the lock is extended before it is handed
  it.each([20_000, 3_000])(
    "a grant that arrives before its attempt's busy reply goes to that attempt (ttl %d)",
    async (ttl) => {
      const { other, server, resource, first } = await heldOnOneServer('grant-early');
      // one wait first, so the service already listens when its next attempt is made; given up, it leaves the waiters
      await expect(other.locks.acquire(resource, { retry: { count: 1, delay: 10, jitter: 0 } })).rejects.toThrow(
        /held by another owner/,
      );
      await listening(server, other.locks);
      expect(
        await waitFor(async () => (await waitingEntriesOf(server, resource, other.locks)).length === 0, 5_000),
      ).toBe(true);
      // The next script reply to reach the service is held back 1 s (the attempt ran in Redis: only its reply waits).
      const client = other.connection.client;
      const send = client.sendCommand.bind(client);
      let holdBack = true;
      client.sendCommand = ((command: { name: string }, ...rest: unknown[]) => {
        const reply = (send as (...a: unknown[]) => Promise<unknown>)(command, ...rest);
        if (!holdBack || !command.name.startsWith('eval')) return reply;
        holdBack = false;
        return reply.then((r) => new Promise((resolve) => setTimeout(() => resolve(r), 1_000)));
      }) as typeof client.sendCommand;
      const next = other.locks.acquire(resource, { ...NO_POLL, ttl });
      // the new wait joins (its attempt ran; only its reply is held back)
      expect(
        await waitFor(async () => (await waitingEntriesOf(server, resource, other.locks)).length === 1, 5_000),
      ).toBe(true);
      expect(holdBack).toBe(false);
      await first.release();
      const second = await next;
      expect(await server.get(lockKey(resource))).toBe(second.token);
      expect(second.expiresAt - Date.now()).toBeGreaterThan(ttl * 0.8);
      expect(await server.pttl(lockKey(resource))).toBeGreaterThan(ttl * 0.8);
      // one grant: the new wait's (the given-up wait's entry left, so no release grants it)
      expect(wakeupsOf(other.locks).received).toBe(1);
      expect(await server.zcard(`${lockKey(resource)}:waiters`)).toBe(0);
      expect(second.fencingToken).toBeGreaterThan(first.fencingToken);
      await second.release();
    },
    30_000,
  );

  it('a grant to a service whose caller gave up is released by it, and passes to the next waiting service', async () => {
    const { other, server, resource, first } = await heldOnOneServer('grant-gave-up');
    const quitter = await lockService('single', WAKE);
    // it waits (so it listens), then gives up, and its entry leaves the waiting services
    const quitting = quitter.locks.acquire(resource, { retry: { count: 1, delay: 500, jitter: 0 } });
    await waiting([server], resource, quitter.locks);
    const [entry] = await waitingEntriesOf(server, resource, quitter.locks);
    await expect(quitting).rejects.toThrow(/held by another owner/);
    expect(
      await waitFor(async () => (await waitingEntriesOf(server, resource, quitter.locks)).length === 0, 5_000),
    ).toBe(true);
    // ... unless a release took it first: put back, first in line, it is granted the lock a caller no longer wants
    await server.zadd(`${lockKey(resource)}:waiters`, 0, entry);
    const next = other.locks.acquire(resource, { ...NO_POLL, ttl: 20_000 });
    await waiting([server], resource, other.locks);
    await first.release();
    const second = await next;
    expect(wakeupsOf(quitter.locks).received).toBe(1);
    expect(await server.get(lockKey(resource))).toBe(second.token);
    expect(second.fencingToken).toBeGreaterThan(first.fencingToken);
    expect(quitter.locks.activity()).toEqual({ held: 0, waiting: 0 });
    await second.release();
  }, 30_000);

  it("a grant whose message never arrives is taken over by the waiter's next attempt", async () => {
    const { other, server, resource, first } = await heldOnOneServer('grant-lost');
    const key = lockKey(resource);
    const next = other.locks.acquire(resource, { retry: { count: 100, delay: 100, jitter: 0 }, ttl: 20_000 });
    await waiting([server], resource, other.locks);
    // What a release does, without the message: the lock set to the waiting service's token, the service popped.
    const grantSilently = `
      local waiting = redis.call('ZPOPMIN', KEYS[2])[1]
      local token = string.match(waiting, '^%S+ (%S+) %d+$')
      redis.call('SET', KEYS[1], token, 'PX', 20000)
      return token`;
    const granted = (await server.eval(grantSilently, 2, key, `${key}:waiters`)) as string;
    expect(granted).toMatch(/^[\w-]{20,}$/);
    const second = await next;
    expect(await server.get(key)).toBe(second.token);
    expect(second.fencingToken).toBeGreaterThan(first.fencingToken);
    expect(wakeupsOf(other.locks).received).toBe(0);
    await second.release();
    await expect(first.release()).rejects.toThrow(/expired or is held by another owner/);
  }, 30_000);

  it("a grant of a wait begun with a shorter ttl than its waiting caller's is extended to that caller's", async () => {
    const { other, server, resource, first } = await heldOnOneServer('grant-ttl');
    // the service's wait begins with this caller's attempt: a release grants the lock with its ttl
    const short = other.locks.acquire(resource, { retry: { count: 1, delay: 500, jitter: 0 }, ttl: 3_000 });
    await waiting([server], resource, other.locks);
    const long = other.locks.acquire(resource, { ...NO_POLL, ttl: 30_000 });
    await expect(short).rejects.toThrow(/held by another owner/); // it gives up; the other caller keeps the wait
    expect(await waitingEntriesOf(server, resource, other.locks)).toEqual([expect.stringMatching(/ 3000$/)]);
    await first.release();
    const granted = await long;
    expect(await server.get(lockKey(resource))).toBe(granted.token);
    expect(await server.pttl(lockKey(resource))).toBeGreaterThan(25_000);
    expect(granted.expiresAt - Date.now()).toBeGreaterThan(25_000);
    expect(granted.fencingToken).toBeGreaterThan(first.fencingToken);
    await granted.release();
  }, 30_000);

  it('a message on the grant channel that is not a grant of ours is reported and changes nothing', async () => {
    const { other, server, resource, first } = await heldOnOneServer('grant-hostile');
    const next = other.locks.acquire(resource, { ...NO_POLL, ttl: 20_000 });
    await waiting([server], resource, other.locks);
    const warnings: string[] = [];
    const spy = jest.spyOn(Logger.prototype, 'warn').mockImplementation((m: unknown) => void warnings.push(String(m)));
    try {
      const { grantChannel } = wakeupsOf(other.locks);
      // the waiter's own token and lock key, with a fencing token in e-notation (as a release wrote 16 digits before
      // 2026-12-03): rounded, so not a grant; the holder still holds the lock
      const [, waitToken] = (await waitingEntriesOf(server, resource, other.locks))[0].split(' ');
      const junk = [
        '',
        'garbage',
        '0 t k',
        '-3 t k',
        `1 ${first.token}`,
        `7 ${first.token} elsewhere:{x}`,
        `1.796282276709e+15 ${waitToken} ${lockKey(resource)}`,
      ];
      for (const message of junk) expect(await server.publish(grantChannel, message)).toBe(1);
      expect(await waitFor(() => warnings.length >= junk.length, 5_000)).toBe(true);
      expect(warnings.filter((w) => /not a grant|not a lock of this service/.test(w))).toHaveLength(junk.length);
    } finally {
      spy.mockRestore();
    }
    expect(wakeupsOf(other.locks).received).toBe(1); // the one grant-shaped message for a foreign key
    expect(await server.get(lockKey(resource))).toBe(first.token);
    await first.release();
    const second = await next;
    expect(second.fencingToken).toBeGreaterThan(first.fencingToken);
    await second.release();
  }, 30_000);

  it('by default a waiter on one server is granted the lock, and on a cluster or a quorum it polls', async () => {
    for (const mode of LOCK_MODES) {
      const holder = await lockService(mode);
      const other = await lockService(mode);
      const servers = lockClients(mode, holder.connection, holder.locks);
      const resource = unique('default');
      const first = await holder.locks.acquire(resource, { ttl: 20_000 });
      const next = other.locks.acquire(resource, { retry: { count: 200, delay: 50, jitter: 0 }, ttl: 20_000 });
      if (mode === 'single') await waiting(servers, resource, other.locks);
      else await new Promise((resolve) => setTimeout(resolve, 200));
      const joined = await Promise.all(servers.map((s) => s.exists(`${lockKey(resource)}:waiters`)));
      expect([mode, joined.every((n) => n === 1)]).toEqual([mode, mode === 'single']);
      await first.release();
      const second = await next;
      expect(second.fencingToken).toBeGreaterThan(first.fencingToken);
      expect([mode, wakeupsOf(other.locks).received]).toEqual([mode, mode === 'single' ? 1 : 0]);
      await second.release();
    }
  }, 60_000);

  it('on a cluster and a quorum a release wakes the waiter: it waits by its id alone, with no token to grant', async () => {
    for (const mode of ['cluster', 'quorum'] as const) {
      const holder = await lockService(mode, WAKE);
      const other = await lockService(mode, WAKE);
      const servers = lockClients(mode, holder.connection, holder.locks);
      const resource = unique('no-grant');
      const first = await holder.locks.acquire(resource, { ttl: 20_000 });
      const next = other.locks.acquire(resource, { ...NO_POLL, ttl: 20_000 });
      await waiting(servers, resource, other.locks);
      const { id } = wakeupsOf(other.locks);
      for (const server of servers) expect(await waitingEntriesOf(server, resource, other.locks)).toEqual([id]);
      await first.release();
      const second = await next;
      expect(second.fencingToken).toBeGreaterThan(first.fencingToken);
      await second.release();
    }
  }, 60_000);
});
