/**
 * What one reconnect costs the L1's CLIENT TRACKING (lib/cache/cache.tracking.ts), counted on servers of this file's
 * own: the CLIENT TRACKING, CLIENT ID and SUBSCRIBE commands each server ran (INFO commandstats) and the times the L1
 * was emptied, per reconnect of the cache's connection (CLIENT KILL), of the RESP2 redirect connection, of both, of
 * a restarted server, and over several reconnects in a row; on one server and on each master of a cluster. Exactly
 * what is needed: one CLIENT TRACKING ON on a connection that reconnected (a new connection tracks nothing, so no OFF
 * first), OFF + ON on one that still tracks with the redirect that died (Redis refuses ON again with the same
 * prefix), one CLIENT ID + SUBSCRIBE per reconnect of the redirect, and one L1 clear per reconnect (writes made while
 * a connection was away were reported to nobody); no failed step (a warning, `stats().errors`) on the way. After each,
 * a foreign write drops the entry again.
 */
import 'reflect-metadata';
import { jest } from '@jest/globals';
import { randomBytes } from 'node:crypto';
import { Cluster, Redis } from 'ioredis';
import { CacheService, type RedisToolkitOptions } from '../../lib/index.js';
import { RedisConnection } from '../../lib/advanced.js';
import { CacheL1 } from '../../lib/cache/cache.l1.js';
import { MasterTracking } from '../../lib/cache/cache.tracking-master.js';
import { TRACKING_CONNECTION_NAME } from '../../lib/cache/cache.tracking.js';
import { commandCalls } from '../support/commandstats.js';
import { useDisposableCluster } from '../support/disposable-cluster.js';
import { trackForCleanup, usePrivateRedis } from '../support/private-servers.js';
import type { RedisServerHandle } from '../support/redis-server.js';
import { closeToolkitApps, createToolkitApp, type RedisTarget } from '../support/toolkit-app.js';
import { sleep, waitFor } from '../support/wait.js';

afterEach(closeToolkitApps);

const rand = () => randomBytes(5).toString('hex');
/** Far below the L1 ttl (60 s): an entry gone within it was dropped by an invalidation, not by expiry. */
const L1_WAIT = 5_000;
/**
 * After tracking is back, the counts below are final once (a) a second arming queued behind the first (a connection's
 * `ready` step: queued at once, run in a few ms) has run: QUIET_MS; and (b) a retry of a step (RETRY_MS, 2 s, in
 * lib/cache/cache.tracking-master.ts) has run: SETTLE_MS after the last retry was scheduled. A retry is
 * MasterTracking's only delayed step that sends tracking commands (its heartbeat sends PING; a refused step counts in
 * `stats().errors`), and both paths to it go through retryLater, watched below: a reconnect that scheduled none is
 * settled after QUIET_MS instead of a fixed 2.5 s, one that did is waited for as long as before.
 */
const QUIET_MS = 500;
const SETTLE_MS = 2_500;
/** When MasterTracking.retryLater last ran (any app of this file: a stray retry only makes the wait longer). */
let retryScheduledAt = Number.NEGATIVE_INFINITY;
const tracking = MasterTracking.prototype as unknown as { retryLater(): void };
const scheduleRetry = tracking.retryLater;
jest.spyOn(tracking, 'retryLater').mockImplementation(function (this: unknown) {
  retryScheduledAt = performance.now();
  scheduleRetry.call(this);
});

/** Every L1 clear (`forget`: a reconnect, a FLUSHDB, clear()), with the L1 it emptied. */
const forget = jest.spyOn(CacheL1.prototype as unknown as { forget(): void }, 'forget');

/** The L1 of a CacheService and its tracking (private fields, read by this test only). */
interface Internals {
  l1: { tracking?: { live: boolean } };
}

async function cacheApp(target: RedisTarget, keyPrefix: string) {
  const cache: RedisToolkitOptions['cache'] = { l1: { max: 1_000, ttl: 60_000, invalidation: 'tracking' } };
  const app = await createToolkitApp({ target, keyPrefix, cache, maxReconnectDelay: 100 });
  const service = app.get(CacheService);
  const l1 = (service as unknown as Internals).l1;
  const client = app.get(RedisConnection).client as Redis | Cluster;
  const all = () => forget.mock.contexts.filter((c) => c === (l1 as unknown)).length;
  // The clears made while the cache's connection emits `ready` (its listeners run in order: ours first and last)
  let atReady = 0;
  let onReady = 0;
  client.prependListener('ready', () => void (atReady = all()));
  client.on('ready', () => void (onReady += all() - atReady));
  return {
    cache: service,
    client,
    live: () => l1.tracking?.live === true,
    /**
     * The L1's clears, less those made by the cache's connection's own `ready` (lib/cache/cache.l1.ts, onReconnect,
     * there for the bus; with tracking the clear once tracking is back is the one that counts, and comes later): what
     * tracking costs, whether that listener clears or not.
     */
    clears: () => all() - onReady,
    /** Every clear, the `ready` one included. */
    allClears: all,
  };
}
type App = Awaited<ReturnType<typeof cacheApp>>;

/** INFO commandstats of one server: the commands tracking sends. */
async function trackingCommands(port: number): Promise<{ tracking: number; id: number; subscribe: number }> {
  const calls = await commandCalls(port);
  return { tracking: calls['client|tracking'] ?? 0, id: calls['client|id'] ?? 0, subscribe: calls.subscribe ?? 0 };
}

/** The id of the redirect connection on the server at `port` (ours: this app is the only one tracking there). */
async function redirectId(admin: Redis): Promise<number> {
  const line = String(await admin.client('LIST'))
    .split('\n')
    .find((l) => l.includes(`name=${TRACKING_CONNECTION_NAME}`));
  if (!line) throw new Error('no tracking connection');
  return Number(/\bid=(\d+)/.exec(line)?.[1]);
}

/** The app's connection to the server at `port` (its only one on a single server, a node connection in a cluster). */
function mainTo(client: Redis | Cluster, port: number): Redis {
  if (!(client instanceof Cluster)) return client;
  const node = client.nodes('master').find((n) => Number(n.options.port) === port);
  if (!node) throw new Error(`no connection to the master on ${port}`);
  return node;
}

type Drop = 'main' | 'redirect' | 'both' | 'restart';

/** Drops the app's connection(s) to `server` as `drop` says, from an admin connection of the test's own. */
async function dropOn(app: App, server: RedisServerHandle, drop: Drop): Promise<void> {
  if (drop === 'restart') {
    await server.stop();
    await server.restart();
    return;
  }
  const admin = trackForCleanup(new Redis(server.port, '127.0.0.1'));
  const tx = admin.multi();
  // the app's connection by its address (a CLIENT ID sent on it would count in the commands measured)
  if (drop !== 'redirect')
    tx.call('CLIENT', 'KILL', 'ADDR', `127.0.0.1:${mainTo(app.client, server.port).stream.localPort}`);
  if (drop !== 'main') tx.call('CLIENT', 'KILL', 'ID', String(await redirectId(admin)));
  expect((await tx.exec())?.map(([err, n]) => [err, n])).toEqual(
    drop === 'both'
      ? [
          [null, 1],
          [null, 1],
        ]
      : [[null, 1]],
  );
  await admin.quit();
}

/** Waits until the L1 was emptied past `clears` and tracks again (every master), then until nothing more is sent. */
async function backAfter(app: App, clears: number): Promise<void> {
  expect(await waitFor(() => app.allClears() > clears && app.live(), 10_000)).toBe(true);
  const backAt = performance.now();
  for (;;) {
    const left = Math.max(backAt + QUIET_MS, retryScheduledAt + SETTLE_MS) - performance.now();
    if (left <= 0) break;
    await sleep(left);
  }
  expect(app.live()).toBe(true);
}

/** A foreign client's write of an entry the L1 holds drops it (tracking works after the reconnects). */
async function foreignWriteSeen(app: App, foreign: Redis | Cluster, keyPrefix: string): Promise<void> {
  const key = `k${rand()}`;
  await app.cache.set(key, 'v1');
  await app.cache.set(`${key}-other`, 'v2');
  expect(await app.cache.get(key)).toBe('v1');
  const raw = await foreign.getBuffer(`${keyPrefix}cache:${key}-other`);
  await foreign.set(`${keyPrefix}cache:${key}`, raw as Buffer, 'PX', 60_000);
  expect(await waitFor(async () => (await app.cache.get(key)) === 'v2', L1_WAIT)).toBe(true);
}

interface Cost {
  tracking: number;
  id: number;
  subscribe: number;
  clears: number;
  errors: number;
}

/** Runs `drops` one after the other (each awaited until tracking is back) and says what they cost `server`. */
async function costOf(app: App, server: RedisServerHandle, drops: Drop[]): Promise<Cost> {
  let total = { tracking: 0, id: 0, subscribe: 0 };
  const clears = app.clears();
  const errors = app.cache.stats().errors;
  for (const drop of drops) {
    // INFO commandstats starts from 0 after a restart: count each drop on its own
    const before = await trackingCommands(server.port);
    const at = app.allClears();
    await dropOn(app, server, drop);
    await backAfter(app, at);
    const after = await trackingCommands(server.port);
    const from = drop === 'restart' ? { tracking: 0, id: 0, subscribe: 0 } : before;
    total = {
      tracking: total.tracking + after.tracking - from.tracking,
      id: total.id + after.id - from.id,
      subscribe: total.subscribe + after.subscribe - from.subscribe,
    };
  }
  return { ...total, clears: app.clears() - clears, errors: app.cache.stats().errors - errors };
}

/** What one reconnect needs, per kind: see the file's comment. */
const NEEDED: Record<Drop, Cost> = {
  main: { tracking: 1, id: 0, subscribe: 0, clears: 1, errors: 0 },
  redirect: { tracking: 2, id: 1, subscribe: 1, clears: 1, errors: 0 },
  both: { tracking: 1, id: 1, subscribe: 1, clears: 1, errors: 0 },
  restart: { tracking: 1, id: 1, subscribe: 1, clears: 1, errors: 0 },
};
const SERIES: Drop[] = ['both', 'main', 'redirect', 'both', 'main', 'redirect', 'both'];
const sumOf = (drops: Drop[]): Cost =>
  drops.reduce(
    (s, d) => ({
      tracking: s.tracking + NEEDED[d].tracking,
      id: s.id + NEEDED[d].id,
      subscribe: s.subscribe + NEEDED[d].subscribe,
      clears: s.clears + NEEDED[d].clears,
      errors: 0,
    }),
    { tracking: 0, id: 0, subscribe: 0, clears: 0, errors: 0 },
  );

describe('CLIENT TRACKING re-armed once per reconnect: one server', () => {
  const redis = usePrivateRedis();

  it.each(['main', 'redirect', 'both', 'restart'] as const)(
    'the %s connection(s) dropped: exactly the commands and the one L1 clear it needs',
    async (drop) => {
      const p = `rtk-ra${rand()}:`;
      const app = await cacheApp({ url: redis.server.url }, p);
      expect(await waitFor(app.live, L1_WAIT)).toBe(true);
      await foreignWriteSeen(app, trackForCleanup(new Redis(redis.server.url)), p);
      expect(await costOf(app, redis.server, [drop])).toEqual(NEEDED[drop]);
      await foreignWriteSeen(app, trackForCleanup(new Redis(redis.server.url)), p);
    },
  );

  it(`${SERIES.length} reconnects in a row (${SERIES.join(', ')}), then a restart: the sum of what each needs`, async () => {
    const p = `rtk-ra${rand()}:`;
    const app = await cacheApp({ url: redis.server.url }, p);
    expect(await waitFor(app.live, L1_WAIT)).toBe(true);
    expect(await costOf(app, redis.server, SERIES)).toEqual(sumOf(SERIES));
    expect(await costOf(app, redis.server, ['restart'])).toEqual(NEEDED.restart);
    await foreignWriteSeen(app, trackForCleanup(new Redis(redis.server.url)), p);
  });

  it('both connections killed 5 times without waiting for tracking in between: at most one arming and one clear each', async () => {
    const p = `rtk-ra${rand()}:`;
    const app = await cacheApp({ url: redis.server.url }, p);
    expect(await waitFor(app.live, L1_WAIT)).toBe(true);
    const before = await trackingCommands(redis.server.port);
    const clears = app.clears();
    const allClears = app.allClears();
    const errors = app.cache.stats().errors;
    const admin = trackForCleanup(new Redis(redis.server.url));
    for (let i = 0; i < 5; i++) {
      const main = Number(
        await mainTo(app.client, redis.server.port)
          .client('ID')
          .catch(() => 0),
      );
      const redirect = await redirectId(admin).catch(() => 0);
      await admin.multi().client('KILL', 'ID', String(main)).client('KILL', 'ID', String(redirect)).exec();
      // the next kill once both are back (not necessarily tracking yet)
      expect(
        await waitFor(
          async () =>
            mainTo(app.client, redis.server.port).status === 'ready' &&
            (await redirectId(admin).catch(() => redirect)) !== redirect,
          L1_WAIT,
        ),
      ).toBe(true);
    }
    await backAfter(app, allClears);
    const after = await trackingCommands(redis.server.port);
    const cost = {
      tracking: after.tracking - before.tracking,
      clears: app.clears() - clears,
      errors: app.cache.stats().errors - errors,
    };
    expect(cost.tracking).toBeLessThanOrEqual(5);
    expect(cost.clears).toBeLessThanOrEqual(5);
    expect(cost.errors).toBe(0);
    await foreignWriteSeen(app, trackForCleanup(new Redis(redis.server.url)), p);
  });

  // Was a bug: the redirect reconnected while the server refused CLIENT TRACKING (an ACL change), the cache's
  // connection staying up (so its own `ready` never emptied L1): each retry failed, warned and counted, and L1 served
  // what it held, unwatched, until l1.ttl (a foreign write made meanwhile was never seen).
  it('the redirect dropped while CLIENT TRACKING is refused (ACL): L1 emptied once, no stale read; tracking back once granted', async () => {
    const admin = trackForCleanup(new Redis(redis.server.url));
    const user = `rv${rand()}`;
    const password = rand();
    const p = `acl${rand()}:`;
    await admin.call('ACL', 'SETUSER', user, 'on', `>${password}`, '~acl*', '&*', '+@all');
    const app = await cacheApp({ url: `redis://${user}:${password}@127.0.0.1:${redis.server.port}` }, p);
    expect(await waitFor(app.live, L1_WAIT)).toBe(true);
    const foreign = trackForCleanup(new Redis(redis.server.url));
    await app.cache.set('k', 'v1');
    await app.cache.set('other', 'v2');
    expect(await app.cache.get('k')).toBe('v1');
    const raw = await foreign.getBuffer(`${p}cache:other`);
    const [clears, errors] = [app.clears(), app.cache.stats().errors];

    await admin.call('ACL', 'SETUSER', user, '-client|tracking');
    await admin.call('CLIENT', 'KILL', 'ID', String(await redirectId(admin)));
    expect(await waitFor(() => app.cache.stats().errors > errors, L1_WAIT)).toBe(true); // the refusal, counted
    await foreign.set(`${p}cache:k`, raw as Buffer, 'PX', 60_000);
    expect(await app.cache.get('k')).toBe('v2');
    expect(app.clears() - clears).toBe(1);

    await admin.call('ACL', 'SETUSER', user, '+client|tracking');
    expect(await waitFor(app.live, 2 * 2_000 + L1_WAIT)).toBe(true);
    expect(app.clears() - clears).toBe(2); // and once tracking is on: the reads under way keep nothing
    await foreignWriteSeen(app, foreign, p);
  });
});

describe('CLIENT TRACKING re-armed once per reconnect: a cluster, per master', () => {
  const cluster = useDisposableCluster();

  /** The master of `key`'s slot and the cost on every master (the others must see no tracking command). */
  async function perMaster(app: App, drops: Drop[], key: string) {
    const masters = cluster().masters;
    const probe = trackForCleanup(new Cluster(cluster().startupNodes));
    const owner = probe.slots[Number(await probe.cluster('KEYSLOT', key))]?.[0];
    const victim = masters.find((m) => owner === `127.0.0.1:${m.port}`);
    if (!victim) throw new Error(`no master owns ${key}`);
    const others = masters.filter((m) => m !== victim);
    const othersBefore = await Promise.all(others.map((m) => trackingCommands(m.port)));
    const cost = await costOf(app, victim, drops);
    const othersAfter = await Promise.all(others.map((m) => trackingCommands(m.port)));
    return { cost, othersTracking: othersAfter.map((a, i) => a.tracking - othersBefore[i].tracking) };
  }

  it.each(['main', 'redirect', 'both', 'restart'] as const)(
    'the %s connection(s) to one master dropped: exactly what it needs on that master, nothing on the others',
    async (drop) => {
      const p = `rtk-rac${rand()}:`;
      const app = await cacheApp({ cluster: cluster().startupNodes }, p);
      expect(await waitFor(app.live, L1_WAIT)).toBe(true);
      const foreign = trackForCleanup(new Cluster(cluster().startupNodes));
      await foreignWriteSeen(app, foreign, p);
      const { cost, othersTracking } = await perMaster(app, [drop], `${p}cache:k`);
      expect(cost).toEqual(NEEDED[drop]);
      expect(othersTracking).toEqual([0, 0]);
      await foreignWriteSeen(app, foreign, p);
    },
  );

  it(`${SERIES.length} reconnects in a row on one master: the sum of what each needs`, async () => {
    const p = `rtk-rac${rand()}:`;
    const app = await cacheApp({ cluster: cluster().startupNodes }, p);
    expect(await waitFor(app.live, L1_WAIT)).toBe(true);
    const { cost, othersTracking } = await perMaster(app, SERIES, `${p}cache:k`);
    expect(cost).toEqual(sumOf(SERIES));
    expect(othersTracking).toEqual([0, 0]);
    await foreignWriteSeen(app, trackForCleanup(new Cluster(cluster().startupNodes)), p);
  });
});
