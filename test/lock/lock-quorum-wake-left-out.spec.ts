/**
 * The wake-on-release subscriber of a quorum (one connection per node) subscribes only on the nodes that take part: a
 * node left out by its check (a replica, a missing db, an ACL user without a lock command...) is sent no lock call,
 * so nothing is ever published to this service there, and a subscription would be a connection for nothing (and,
 * where the ACL denies SUBSCRIBE, a warning at each connect). The service is still woken through the other nodes.
 */
import 'reflect-metadata';
import { type Lock, LockService } from '../../lib/index.js';
import { lockKey, unique, wakeupsOf } from '../support/lock-modes.js';
import { nodesWith, startMisfitServers } from '../support/misfit-servers.js';
import { trackForCleanup } from '../support/private-servers.js';
import { recordingLogger } from '../support/recording-logger.js';
import { getFreePort, startRedisServer } from '../support/redis-server.js';
import { rawCommand } from '../support/resp.js';
import { sharedServers } from '../support/shared-servers.js';
import { closeToolkitApps, createToolkitApp } from '../support/toolkit-app.js';
import { waitFor } from '../support/wait.js';

afterEach(closeToolkitApps);

/** Waits by polling only every 10 minutes: a caller that gets the lock within a test was woken by the release. */
const NO_POLL = { retry: { count: 1, delay: 600_000, jitter: 0 }, ttl: 10_000 };

/** Subscribers of `channel` on the server on `port` (PUBSUB NUMSUB). */
const numsub = async (port: number, channel: string): Promise<number> =>
  Number(((await rawCommand(port, ['PUBSUB', 'NUMSUB', channel])) as unknown[])[1]);

/** Clients connected to the server on `port` now, besides the one asking. */
async function connected(port: number): Promise<number> {
  const info = String(await rawCommand(port, ['INFO', 'clients']));
  return Number(/connected_clients:(\d+)/.exec(info)?.[1]) - 1;
}

/** Two apps (a holder and a waiter) with wake-on-release on `nodes`; what all of them logged. */
async function twoApps(nodes: { url: string }[], connection: { lazyConnect?: boolean } = {}) {
  const logs = [recordingLogger(), recordingLogger()];
  const [holder, waiter] = await Promise.all(
    logs.map(async ({ logger }) => {
      const app = await createToolkitApp({
        ...connection,
        maxReconnectDelay: 100,
        lock: { wakeOnRelease: true, quorum: { nodes } },
        logger,
      });
      return app.get(LockService);
    }),
  );
  // Nest's static logger may send an app's lines to the other app's logger: both are read together
  const errors = () => logs.flatMap((l) => l.errors);
  const warnings = () => logs.flatMap((l) => l.warnings);
  return { holder, waiter, errors, warnings };
}

/** `promise`'s value, or 'not within <ms>' when it takes longer (woken by a release, not by a poll). */
const within = <T>(promise: Promise<T>, ms: number): Promise<T | string> => {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<string>((resolve) => (timer = setTimeout(resolve, ms, `not within ${ms} ms`)));
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
};

/**
 * `waiter` waits for a lock `holder` holds (its first wait opens its subscriber) until its subscription is active on the
 * first node (each node's release wakes); `check` runs then; the release must wake `waiter` within 5 s, once.
 */
async function wokenThroughTheOthers(holder: LockService, waiter: LockService, check: () => Promise<void>) {
  const resource = unique('wake-left-out');
  const held = await holder.acquire(resource, { ttl: 10_000 });
  const waiting = waiter.acquire(resource, NO_POLL);
  const [first] = sharedServers().quorum;
  const channel = wakeupsOf(waiter).channel;
  const joined = async () => Number(await rawCommand(first.port, ['ZCARD', `${lockKey(resource)}:waiters`])) === 1;
  expect(await waitFor(joined, 5_000)).toBe(true);
  expect(await waitFor(async () => (await numsub(first.port, channel)) === 1, 5_000)).toBe(true);
  await check();
  await held.release();
  const got = await within(waiting, 5_000);
  expect(typeof got === 'string' ? got : 'acquired').toBe('acquired');
  expect(wakeupsOf(waiter).received).toBe(1);
  await (got as Lock).release();
}

describe('the wake subscriber leaves out a quorum node left out', () => {
  it('lazyConnect, a node without its db: no subscription and no connection of the subscriber there', async () => {
    const { fewDbs } = await startMisfitServers();
    const { holder, waiter, errors } = await twoApps(nodesWith({ url: `${fewDbs.url}/9` }), { lazyConnect: true });
    // each app's node check leaves it out on its first ready (under lazyConnect, connected at start)
    expect(await waitFor(() => errors().filter((e) => e.includes('left out')).length === 2, 5_000)).toBe(true);
    const before = await connected(fewDbs.port);
    await wokenThroughTheOthers(holder, waiter, async () => {
      // before: 1 (the waiter's subscriber connected there and subscribed)
      expect(await numsub(fewDbs.port, wakeupsOf(waiter).channel)).toBe(0);
      expect(await connected(fewDbs.port)).toBe(before);
    });
  });

  it('lazyConnect, an ACL user without SUBSCRIBE: left out, and no warning of a subscription it refused', async () => {
    const z = trackForCleanup(await startRedisServer());
    await rawCommand(z.port, ['ACL', 'SETUSER', 'app', 'on', '>app-pass', '~*', '&*', '+@all', '-subscribe']);
    const url = `redis://app:app-pass@127.0.0.1:${z.port}`;
    const { holder, waiter, errors, warnings } = await twoApps(nodesWith({ url }), { lazyConnect: true });
    const named = () => errors().filter((e) => e.includes(`127.0.0.1:${z.port}`) && e.includes('left out'));
    expect(await waitFor(() => named().length === 2, 5_000)).toBe(true);
    expect(named()[0]).toMatch(/SUBSCRIBE/i);
    await wokenThroughTheOthers(holder, waiter, async () => {
      expect(await numsub(z.port, wakeupsOf(waiter).channel)).toBe(0);
    });
    // before: 'lock wake-ups: subscribing failed, waiters poll until it succeeds: NOPERM ...' at each connect
    expect(warnings().filter((w) => w.includes('subscribing failed'))).toEqual([]);
  });

  it('no lazyConnect, down at start and up as a replica after the wait began: never subscribed there', async () => {
    const { master } = await startMisfitServers();
    const port = await getFreePort();
    const { holder, waiter, errors } = await twoApps(nodesWith({ url: `redis://127.0.0.1:${port}` }));
    // the waiter's subscriber is opened now, while the node is down
    const busy = unique('wake-left-out-early');
    const held = await holder.acquire(busy, { ttl: 10_000 });
    await expect(waiter.acquire(busy, { retry: { count: 1, delay: 5, jitter: 0 } })).rejects.toThrow();
    await held.release();
    trackForCleanup(await startRedisServer({ port, args: ['--replicaof', '127.0.0.1', String(master.port)] }));
    const named = () => errors().filter((e) => e.includes(`127.0.0.1:${port}`) && e.includes('left out'));
    expect(await waitFor(() => named().length === 2, 5_000)).toBe(true);
    await wokenThroughTheOthers(holder, waiter, async () => {
      // before: 1 (the subscriber connected there as soon as the node was up)
      expect(await numsub(port, wakeupsOf(waiter).channel)).toBe(0);
    });
  });

  it('no lazyConnect, down at start and up as a good server: subscribed there once its check passed', async () => {
    const port = await getFreePort();
    const { holder, waiter, errors } = await twoApps(nodesWith({ url: `redis://127.0.0.1:${port}` }));
    const busy = unique('wake-late-good');
    const held = await holder.acquire(busy, { ttl: 10_000 });
    await expect(waiter.acquire(busy, { retry: { count: 1, delay: 5, jitter: 0 } })).rejects.toThrow();
    await held.release();
    trackForCleanup(await startRedisServer({ port }));
    const channel = wakeupsOf(waiter).channel;
    expect(await waitFor(async () => (await numsub(port, channel)) === 1, 5_000)).toBe(true);
    await wokenThroughTheOthers(holder, waiter, async () => undefined);
    expect(errors()).toEqual([]);
  });
});
