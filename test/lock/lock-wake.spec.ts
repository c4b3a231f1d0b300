import 'reflect-metadata';
import { Cluster, type Redis } from 'ioredis';
import type { Lock, LockService } from '../../lib/index.js';
import type { RedisClient } from '../../lib/common/lua-script.js';
import type { LockWakeups } from '../../lib/lock/lock.wake.js';
import { LOCK_MODES, lockClients, lockKey, lockService, unique } from '../support/lock-modes.js';
import { closeToolkitApps } from '../support/toolkit-app.js';
import { waitFor } from '../support/wait.js';

afterEach(closeToolkitApps);

/** Far longer than each test may take: a waiter that acquires at all was woken by the release, not by its poll. */
const NO_POLL = { retry: { count: 1, delay: 600_000, jitter: 0 } };
const WAKE = { wakeOnRelease: true };

const wakeupsOf = (locks: LockService): LockWakeups => (locks as unknown as { wakeups: LockWakeups }).wakeups;

/** Every lock server has `service` among the waiters of `resource`, and its wake channel has a subscriber. */
async function waiting(servers: RedisClient[], resource: string, locks: LockService): Promise<void> {
  const { id, channel } = wakeupsOf(locks);
  const registered = await waitFor(async () => {
    for (const server of servers) {
      if ((await server.zscore(`${lockKey(resource)}:waiters`, id)) === null) return false;
      // on a cluster, NUMSUB counts one node's subscribers: add up every master's (PUBLISH reaches them all)
      let subscribers = 0;
      for (const node of server instanceof Cluster ? server.nodes('master') : [server as Redis]) {
        subscribers += ((await node.pubsub('NUMSUB', channel)) as [string, number])[1];
      }
      if (subscribers < 1) return false;
    }
    return true;
  }, 10_000);
  expect(registered).toBe(true);
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

  it('without lock.wakeOnRelease (the default) a busy acquire joins no waiting services and nobody is woken', async () => {
    const holder = await lockService(mode);
    const other = await lockService(mode);
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
