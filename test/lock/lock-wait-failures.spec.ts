/**
 * A wait for a lock that ends because Redis failed during it (an attempt timed out on a paused server) must leave the
 * lock's waiting services, as a given-up wait does (lock-waits.spec): else the next release serves a wait that is
 * over. On one server that release granted the lock to the ended wait's token, its service released it, and only then
 * did the real waiter get it; the entry was not taken out when Redis came back.
 */
import 'reflect-metadata';
import { Cluster, Redis } from 'ioredis';
import {
  type Lock,
  LockNotAcquiredError,
  LockService,
  type RedisToolkitOptions,
  RedisUnavailableError,
} from '../../lib/index.js';
import { ownedBy, useDisposableCluster } from '../support/disposable-cluster.js';
import { lockKey, unique, wakeupsOf } from '../support/lock-modes.js';
import { trackForCleanup } from '../support/private-servers.js';
import { type RedisServerHandle, startRedisServer } from '../support/redis-server.js';
import { rawCommand } from '../support/resp.js';
import { closeToolkitApps, type RedisTarget } from '../support/toolkit-app.js';
import { bootToolkitApp } from '../support/toolkit-boot.js';
import { waitFor } from '../support/wait.js';

afterEach(closeToolkitApps);

const COMMAND_TIMEOUT = 300;
/** Waiting services on a cluster too (there a release wakes the waiter; on one server it grants it the lock). */
const WAKE = { wakeOnRelease: true };
/** Waits by polling only every 10 minutes: a caller that gets the lock within a test was served by the release. */
const NO_POLL = { retry: { count: 1, delay: 600_000, jitter: 0 }, ttl: 20_000 };
/** One attempt that joins the waiting services, the second 500 ms later (while the test has Redis paused). */
const SECOND_ATTEMPT_SOON = { retry: { count: 1, delay: 500, jitter: 0 }, ttl: 20_000 };

/** `promise`'s value, or 'not within <ms>' when it takes longer (served by a release, not by a poll). */
const within = <T>(promise: Promise<T>, ms: number): Promise<T | string> => {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<string>((resolve) => (timer = setTimeout(resolve, ms, `not within ${ms} ms`)));
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
};

async function locksOn(target: RedisTarget, lock: RedisToolkitOptions['lock'] = {}): Promise<LockService> {
  const app = await bootToolkitApp({ target, commandTimeout: COMMAND_TIMEOUT, maxReconnectDelay: 100, lock });
  return app.get(LockService);
}

/** Acquires and releases a lock of its own (on `resource`) through `locks` once its connection is back (within 5 s). */
async function answeredAgain(locks: LockService, resource = unique('after')): Promise<void> {
  const ok = await waitFor(async () => {
    const lock = await locks.acquire(resource, { ttl: 5_000 }).catch(() => null);
    await lock?.release();
    return lock !== null;
  }, 5_000);
  expect(ok).toBe(true);
}

/** Subscribers of `channel` on the servers on `ports` (PUBSUB NUMSUB of each). */
async function subscribers(ports: readonly number[], channel: string): Promise<number> {
  const replies = await Promise.all(ports.map((port) => rawCommand(port, ['PUBSUB', 'NUMSUB', channel])));
  return replies.reduce<number>((n, reply) => n + Number((reply as unknown[])[1]), 0);
}

/**
 * Once the ended wait has left: `next` waits for `resource` (polling too rarely to matter), `first` is released, and
 * the release must serve `next` within 5 s (on one server a grant, on a cluster a wake): its lock. The release waits
 * until `next` listens (its first wait starts its subscriber, on the servers on `ports`): a release before that finds
 * nobody listening and deletes the lock, leaving `next` to its poll, as documented (it failed a CI run so).
 */
async function releaseServesNext(
  admin: { zcard(key: string): Promise<number> },
  waiting: string,
  next: LockService,
  resource: string,
  first: Lock,
  ports: readonly number[],
): Promise<Lock> {
  const second = next.acquire(resource, NO_POLL);
  expect(await waitFor(async () => (await admin.zcard(waiting)) === 1, 5_000)).toBe(true);
  const channel = wakeupsOf(next).channel;
  expect(await waitFor(async () => (await subscribers(ports, channel)) >= 1, 5_000)).toBe(true);
  await first.release();
  const got = await within(second, 5_000);
  expect(typeof got === 'string' ? got : 'acquired').toBe('acquired');
  return got as Lock;
}

describe('a wait ended by a transport failure on one server (a release grants the lock to a waiting service)', () => {
  it('leaves the waiting services once Redis answers again: the next release grants the lock to the real waiter', async () => {
    const server = trackForCleanup(await startRedisServer());
    const target = { url: server.url };
    const [holder, failing, next] = [await locksOn(target), await locksOn(target), await locksOn(target)];
    const admin = trackForCleanup(new Redis(server.port, '127.0.0.1'));
    const resource = unique('wait-failed');
    const waiting = `${lockKey(resource)}:waiters`;
    const first = await holder.acquire(resource, { ttl: 20_000 });

    const failed = failing.acquire(resource, SECOND_ATTEMPT_SOON).then(
      () => 'acquired',
      (err: unknown) => err,
    );
    expect(await waitFor(async () => (await admin.zcard(waiting)) === 1, 5_000)).toBe(true);
    server.pause(); // its second attempt times out
    try {
      expect(await failed).toBeInstanceOf(RedisUnavailableError);
    } finally {
      server.resume();
    }
    // Redis answers the service again (its next attempt, of another lock): the ended wait's entry leaves
    await answeredAgain(failing);
    // before: still 1, the ended wait
    expect(await waitFor(async () => (await admin.zcard(waiting)) === 0, 5_000)).toBe(true);

    const got = await releaseServesNext(admin, waiting, next, resource, first, [server.port]);
    expect(await admin.get(lockKey(resource))).toBe(got.token);
    // granted by the release itself: none to the service whose wait had ended
    expect(wakeupsOf(failing).received).toBe(0);
    expect(wakeupsOf(next).received).toBe(1);
    await got.release();
  }, 30_000);
});

describe('a wait ended by a transport failure on a cluster (a release wakes a waiting service)', () => {
  const cluster = useDisposableCluster();

  // The ended wait kept its service's id among the lock's waiting services: the next release woke that service (still
  // listening, so the wake counted as delivered) and deleted the lock, and the real waiter slept until its next poll.
  it('leaves the waiting services once Redis answers again: the next release wakes the real waiter', async () => {
    const { masters, startupNodes } = cluster();
    const target = { cluster: startupNodes };
    const [holder, failing, next] = [
      await locksOn(target, WAKE),
      await locksOn(target, WAKE),
      await locksOn(target, WAKE),
    ];
    const admin = trackForCleanup(new Cluster(startupNodes));
    const resource = unique('wait-failed-cluster');
    const waiting = `${lockKey(resource)}:waiters`;
    const owners = await Promise.all(masters.map(async (m) => (await ownedBy(m, [lockKey(resource)]))[0]));
    const master = masters[owners.indexOf(true)];
    // a resource on the same master, for the service's next attempt once that master answers again
    const candidates = Array.from({ length: 64 }, () => unique('after'));
    const onMaster = await ownedBy(master, candidates.map(lockKey));
    const after = candidates[onMaster.indexOf(true)];
    const first = await holder.acquire(resource, { ttl: 20_000 });

    const failed = failing.acquire(resource, SECOND_ATTEMPT_SOON).then(
      () => 'acquired',
      (err: unknown) => err,
    );
    expect(await waitFor(async () => (await admin.zcard(waiting)) === 1, 5_000)).toBe(true);
    master.pause(); // its second attempt times out (resumed well within cluster-node-timeout: no failover)
    try {
      expect(await failed).toBeInstanceOf(RedisUnavailableError);
    } finally {
      master.resume();
    }
    await answeredAgain(failing, after);
    // before: still 1, the ended wait
    expect(await waitFor(async () => (await admin.zcard(waiting)) === 0, 5_000)).toBe(true);

    const got = await releaseServesNext(
      admin,
      waiting,
      next,
      resource,
      first,
      masters.map((m) => m.port),
    );
    // one wake, to the real waiter: none to the service whose wait had ended
    expect(wakeupsOf(failing).received).toBe(0);
    expect(wakeupsOf(next).received).toBe(1);
    await got.release();
  }, 60_000);
});

/** Private quorum servers that keep their data across stop/restart (append-only file, fsync at every write). */
async function durableQuorum(): Promise<RedisServerHandle[]> {
  const args = ['--appendonly', 'yes', '--appendfsync', 'always'];
  return Promise.all([0, 1, 2].map(async () => trackForCleanup(await startRedisServer({ args }))));
}

const onQuorum = (servers: readonly RedisServerHandle[]): Promise<LockService> =>
  locksOn('single', { ...WAKE, quorum: { nodes: servers.map((s) => ({ url: s.url })) } });

const zcard = async (server: RedisServerHandle, key: string): Promise<number> =>
  Number(await rawCommand(server.port, ['ZCARD', key]));

const zcards = (servers: readonly RedisServerHandle[], key: string): Promise<number[]> =>
  Promise.all(servers.map((s) => zcard(s, key)));

/** The service's next answered attempts (of other locks), until `done` (within 10 s). */
const answeredUntil = (locks: LockService, done: () => Promise<boolean>): Promise<boolean> =>
  waitFor(async () => {
    await answeredAgain(locks);
    return done();
  }, 10_000);

/** The quorum node clients of `locks`. */
const nodeClients = (locks: LockService): Redis[] =>
  (locks as unknown as { quorumClients: { client: Redis }[] }).quorumClients.map(({ client }) => client);

/** Every service's clients are connected to every node again (reconnected after a restart). */
const allConnected = (services: LockService[]): Promise<boolean> =>
  waitFor(() => services.every((locks) => nodeClients(locks).every((c) => c.status === 'ready')), 5_000);

/** ZREMs `locks` sends to each of its quorum nodes from now on (counted as its clients are asked to send them). */
function zremsSent(locks: LockService): number[] {
  const clients = nodeClients(locks);
  const sent = clients.map(() => 0);
  clients.forEach((client, i) => {
    const send = client.sendCommand.bind(client);
    client.sendCommand = ((command, stream) => {
      if (command.name === 'zrem') sent[i]++;
      return send(command, stream);
    }) as Redis['sendCommand'];
  });
  return sent;
}

/** Removals of the service kept for a retry (PendingLeaves.size). */
const keptLeaves = (locks: LockService): unknown =>
  (wakeupsOf(locks) as unknown as { leaving: { size?: number } }).leaving.size;

/** The first attempt joins the waiting services, the second comes 1.5 s later (once the test has stopped nodes). */
const SECOND_ATTEMPT_LATER = { retry: { count: 1, delay: 1_500, jitter: 0 }, ttl: 20_000 };

// A removal a node did not answer (QuorumLockBackend.leave) was never sent again: its Promise.allSettled never
// rejected, so PendingLeaves kept nothing. The entry stayed in the first node's waiting services (then the one node
// whose release woke), so the next release woke the service whose wait had ended and the real waiter slept until its
// poll. Since 2026-12-04 every node's release wakes: an entry left on any node would.
describe('a wait ended on a quorum while nodes did not answer its removal (each node wakes)', () => {
  it('given up while the first node was down: taken out there at the next answered attempt once it is back', async () => {
    const servers = await durableQuorum();
    const [holder, quitter, next] = [await onQuorum(servers), await onQuorum(servers), await onQuorum(servers)];
    const resource = unique('wait-given-up-quorum');
    const waiting = `${lockKey(resource)}:waiters`;
    const first = await holder.acquire(resource, { ttl: 20_000 });
    const gaveUp = quitter.acquire(resource, SECOND_ATTEMPT_LATER).then(
      () => 'acquired',
      (err: unknown) => err,
    );
    expect(await waitFor(async () => (await zcards(servers, waiting)).join() === '1,1,1', 5_000)).toBe(true);
    await servers[0].stop(); // the second attempt is busy on the two others; the removal gets no answer from it
    expect(await gaveUp).toBeInstanceOf(LockNotAcquiredError);
    expect(await waitFor(async () => (await zcards(servers.slice(1), waiting)).join() === '0,0', 5_000)).toBe(true);
    await servers[0].restart(); // from its append-only file: the ended wait's entry is there
    expect(await zcard(servers[0], waiting)).toBe(1);
    // before: still 1 after 10 s of answered attempts
    expect(await answeredUntil(quitter, async () => (await zcard(servers[0], waiting)) === 0)).toBe(true);
    expect(keptLeaves(quitter)).toBe(0);
    // the release must reach the first node, and the next waiter join there
    expect(await allConnected([holder, next])).toBe(true);

    const admin = { zcard: (key: string) => zcard(servers[0], key) };
    const got = await releaseServesNext(admin, waiting, next, resource, first, [servers[0].port]);
    // one wake, to the real waiter: none to the service whose wait had ended
    expect(wakeupsOf(quitter).received).toBe(0);
    expect(wakeupsOf(next).received).toBe(1);
    await got.release();
  }, 60_000);

  it('ended by a transport failure (two nodes down): taken out on both at the next answered attempts', async () => {
    const servers = await durableQuorum();
    const [holder, failing, next] = [await onQuorum(servers), await onQuorum(servers), await onQuorum(servers)];
    const resource = unique('wait-failed-quorum');
    const waiting = `${lockKey(resource)}:waiters`;
    const first = await holder.acquire(resource, { ttl: 20_000 });
    const failed = failing.acquire(resource, SECOND_ATTEMPT_LATER).then(
      () => 'acquired',
      (err: unknown) => err,
    );
    expect(await waitFor(async () => (await zcards(servers, waiting)).join() === '1,1,1', 5_000)).toBe(true);
    await Promise.all([servers[0].stop(), servers[1].stop()]); // no majority answers the second attempt
    expect(await failed).toBeInstanceOf(RedisUnavailableError);
    expect(await waitFor(async () => (await zcard(servers[2], waiting)) === 0, 5_000)).toBe(true);
    await Promise.all([servers[0].restart(), servers[1].restart()]);
    expect(await zcards(servers, waiting)).toEqual([1, 1, 0]);
    // before: still [1, 1] after 10 s of answered attempts
    const outOfBoth = async () => (await zcards(servers.slice(0, 2), waiting)).join() === '0,0';
    expect(await answeredUntil(failing, outOfBoth)).toBe(true);
    expect(keptLeaves(failing)).toBe(0);
    expect(await allConnected([holder, next])).toBe(true);

    const admin = { zcard: (key: string) => zcard(servers[0], key) };
    const got = await releaseServesNext(admin, waiting, next, resource, first, [servers[0].port]);
    expect(wakeupsOf(failing).received).toBe(0);
    expect(wakeupsOf(next).received).toBe(1);
    await got.release();
  }, 60_000);

  it('with a node down for good: its removals are kept unsent, and the nodes that answered get each one once', async () => {
    const servers = await durableQuorum();
    const [holder, quitter] = [await onQuorum(servers), await onQuorum(servers)];
    const sent = zremsSent(quitter);
    await servers[2].stop(); // for good (a majority still answers)
    const resources = Array.from({ length: 5 }, () => unique('node-down-for-good'));
    const held = await Promise.all(resources.map((r) => holder.acquire(r, { ttl: 20_000 })));
    for (const resource of resources) {
      // joins the waiting services with its first attempt and leaves them when it gives up
      await expect(quitter.acquire(resource, { retry: { count: 1, delay: 5, jitter: 0 } })).rejects.toBeInstanceOf(
        LockNotAcquiredError,
      );
    }
    expect(await waitFor(() => sent.join() === '5,5,5', 5_000)).toBe(true);
    // one removal per given-up wait kept for the node that is down
    expect(keptLeaves(quitter)).toBe(5);
    for (let i = 0; i < 20; i++) await answeredAgain(quitter);
    // nothing sent again: not to the node that is down (its connection is not up), not to the nodes that answered
    expect(sent).toEqual([5, 5, 5]);
    expect(keptLeaves(quitter)).toBe(5);
    for (const resource of resources) {
      expect(await zcards(servers.slice(0, 2), `${lockKey(resource)}:waiters`)).toEqual([0, 0]);
    }
    await Promise.all(held.map((lock) => lock.release()));
  }, 60_000);
});
