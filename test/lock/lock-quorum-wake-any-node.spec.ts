/**
 * On a quorum with `lock.wakeOnRelease`, the first node's release wakes the waiting service, and when it cannot (the
 * node down or paused, or the waiter's subscription there lost) another node's does, so the wake survives a minority
 * of nodes lost. Until 2026-12-04 only the first node's release woke: with that node stopped or paused, or the
 * waiter's subscription there lost, every waiter slept until its next poll, without a word. A wake that comes twice
 * (the first node's release ran late) is taken once (the other counted as `repeated`).
 */
import 'reflect-metadata';
import type { Redis } from 'ioredis';
import { type Lock, LockService } from '../../lib/index.js';
import { commandCalls } from '../support/commandstats.js';
import { lockKey, quorumNodeClients, unique, wakeupsOf } from '../support/lock-modes.js';
import { trackForCleanup } from '../support/private-servers.js';
import { type RedisServerHandle, startRedisServer } from '../support/redis-server.js';
import { rawCommand } from '../support/resp.js';
import { closeToolkitApps, createToolkitApp } from '../support/toolkit-app.js';
import { waitFor } from '../support/wait.js';

afterEach(closeToolkitApps);

const noop = (): void => undefined;

/** Polls only every 10 minutes: a caller that gets the lock within the test was woken by the release, not its poll. */
const NO_POLL = { retry: { count: 1, delay: 600_000, jitter: 0 }, ttl: 20_000 };

/** The wake subscriber connections of `locks`, one per node (opened by its first wait). */
const subscribersOf = (locks: LockService): Redis[] =>
  (wakeupsOf(locks) as unknown as { subscribers: Redis[] }).subscribers;

/** Three private quorum nodes (the test stops or pauses one) and two services on them: a holder and a waiter. */
async function quorum(): Promise<{ servers: RedisServerHandle[]; holder: LockService; waiter: LockService }> {
  const servers = await Promise.all([0, 1, 2].map(async () => trackForCleanup(await startRedisServer())));
  const nodes = servers.map((s) => ({ url: s.url }));
  const [holder, waiter] = await Promise.all(
    [0, 1].map(async () => {
      const app = await createToolkitApp({
        commandTimeout: 500,
        maxReconnectDelay: 100,
        lock: { wakeOnRelease: true, quorum: { nodes } },
      });
      return app.get(LockService);
    }),
  );
  return { servers, holder, waiter };
}

/** From now on, PUBLISH calls made on each of `servers` (INFO commandstats, read when the result is called). */
function publishes(servers: RedisServerHandle[]): () => Promise<number[]> {
  const count = async (s: RedisServerHandle) => (await commandCalls(s.port)).publish ?? 0;
  const before = Promise.all(servers.map(count));
  return async () => {
    const [was, now] = await Promise.all([before, Promise.all(servers.map(count))]);
    return now.map((n, i) => n - was[i]);
  };
}

/** `promise`'s value, or 'not within <ms>' when it takes longer. */
const within = <T>(promise: Promise<T>, ms: number): Promise<T | string> => {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<string>((resolve) => (timer = setTimeout(resolve, ms, `not within ${ms} ms`)));
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
};

/**
 * `holder` holds a lock, `waiter` waits for it (polling every 10 minutes) until it is in the lock's waiting services
 * and subscribed on every node; `fault` runs then (a node stopped...), then the holder releases it. What the waiter
 * got within 5 s ('acquired', or 'not within 5000 ms') and its wake counts, once `wakes` wakes came (within 5 s: each
 * node's comes on its own connection, some after the lock was acquired).
 */
async function releaseAfter(
  { servers, holder, waiter }: Awaited<ReturnType<typeof quorum>>,
  fault: () => Promise<void>,
  wakes: number,
): Promise<{ got: string; received: number; repeated: number }> {
  const resource = unique('wake-any-node');
  const held = await holder.acquire(resource, { ttl: 20_000 });
  const waiting = waiter.acquire(resource, NO_POLL);
  const { channel } = wakeupsOf(waiter);
  const ready = async (s: RedisServerHandle) =>
    Number(await rawCommand(s.port, ['ZCARD', `${lockKey(resource)}:waiters`])) === 1 &&
    Number(((await rawCommand(s.port, ['PUBSUB', 'NUMSUB', channel])) as unknown[])[1]) === 1;
  expect(await waitFor(async () => (await Promise.all(servers.map(ready))).every(Boolean), 5_000)).toBe(true);
  await fault();
  await held.release(); // a majority (the two other nodes) confirms it
  const got = await within(waiting, 5_000);
  if (typeof got !== 'string') await (got as Lock).release();
  const wakeups = wakeupsOf(waiter);
  await waitFor(() => wakeups.received + (wakeups.repeated ?? 0) >= wakes, 5_000);
  const { received, repeated } = wakeups;
  return { got: typeof got === 'string' ? got : 'acquired', received, repeated };
}

describe('on a quorum a release wakes the waiter through any majority of nodes', () => {
  it('with every node up: woken once, through the first node alone', async () => {
    const q = await quorum();
    const published = publishes(q.servers);
    expect(await releaseAfter(q, async () => undefined, 1)).toEqual({ got: 'acquired', received: 1, repeated: 0 });
    // one wake message for the release: the first node's (nothing more than before on a healthy quorum)
    expect(await published()).toEqual([1, 0, 0]);
  }, 30_000);

  it('with the first node stopped: woken by the release through another node, not by its poll', async () => {
    const q = await quorum();
    // before: { got: 'not within 5000 ms', received: 0 } (only the first node's release woke)
    expect(await releaseAfter(q, () => q.servers[0].stop(), 1)).toEqual({ got: 'acquired', received: 1, repeated: 0 });
  }, 30_000);

  it('with the first node paused (no answer): woken by the release through another node', async () => {
    const q = await quorum();
    try {
      const outcome = await releaseAfter(q, async () => q.servers[0].pause(), 1);
      // through another node once the first one's release timed out (commandTimeout); the first node's release runs
      // once it resumes: a second wake of it at most, dropped
      expect({ got: outcome.got, received: outcome.received }).toEqual({ got: 'acquired', received: 1 });
    } finally {
      q.servers[0].resume();
    }
  }, 30_000);

  it("with the holder's connection to the first node lost as it releases: woken through another node", async () => {
    const q = await quorum();
    const cut = async () => void (quorumNodeClients(q.holder)[0] as Redis).stream.destroy();
    const outcome = await releaseAfter(q, cut, 1);
    // its release there fails (or runs after the reconnect, a second wake of it at most, dropped)
    expect({ got: outcome.got, received: outcome.received }).toEqual({ got: 'acquired', received: 1 });
  }, 30_000);

  it("with the waiter's subscription on the first node lost: woken through another node", async () => {
    const q = await quorum();
    const { channel } = wakeupsOf(q.waiter);
    const outcome = await releaseAfter(q, () => subscribersOf(q.waiter)[0].unsubscribe(channel).then(noop), 2);
    // the first node's release found nobody listening there (and nobody else waiting): the second node woke it
    expect(outcome).toEqual({ got: 'acquired', received: 1, repeated: 0 });
  }, 30_000);
});
