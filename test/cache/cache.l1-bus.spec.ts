/**
 * The L1 invalidation bus (`cache.l1.invalidation: 'bus'`) on what it used to miss:
 * - a Redis Cluster whose subscriber connections are cut alone (CLIENT KILL TYPE pubsub on every node), in both
 *   pub/sub modes: the messages published meanwhile are lost, so B's L1 must be emptied once its subscriber is back;
 * - invalidations of many long keys: every bus message stays under pubsub.maxMessageBytes, so none is refused.
 * Waits are bounded far below the L1 ttl (60 s): an entry gone within them was dropped by the bus, not by expiry.
 */
import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import type { LoggerService } from '@nestjs/common';
import { CacheService, PubSubService, type RedisToolkitOptions } from '../../lib/index.js';
import { CACHE_L1_CHANNEL } from '../../lib/cache/cache.l1.js';
import type { Serializer } from '../../lib/common/serializer.js';
import { CACHE_L1_PUBSUB } from '../../lib/pubsub/pubsub.providers.js';
import { useDisposableCluster } from '../support/disposable-cluster.js';
import { rawCommand } from '../support/resp.js';
import { closeToolkitApps, createToolkitApp, type RedisTarget } from '../support/toolkit-app.js';
import { waitFor } from '../support/wait.js';

afterEach(closeToolkitApps);

const rand = () => randomBytes(5).toString('hex');
/** Far below the L1 ttl (60 s). */
const L1_WAIT = 10_000;

/** A logger that keeps the warnings (a bus message that could not be published is one). */
function recordingLogger(warnings: string[]): LoggerService {
  return {
    log: () => undefined,
    error: (message: unknown) => void warnings.push(`error: ${String(message)}`),
    warn: (message: unknown) => void warnings.push(String(message)),
  };
}

/** JSON followed by twice its length in spaces (JSON.parse skips them). */
const padded: Serializer = {
  serialize: (value) => {
    const json = JSON.stringify(value);
    return json + ' '.repeat(2 * json.length);
  },
  deserialize: <T>(raw: string) => JSON.parse(raw) as T,
};

async function busApp(
  target: RedisTarget,
  keyPrefix: string,
  l1: { max: number; ttl: number },
  extra: Partial<RedisToolkitOptions> = {},
  warnings: string[] = [],
) {
  const app = await createToolkitApp({
    target,
    keyPrefix,
    cache: { l1: { ...l1, invalidation: 'bus' } },
    maxReconnectDelay: 100,
    logger: recordingLogger(warnings),
    ...extra,
  });
  return { app, cache: app.get(CacheService), pubsub: app.get<PubSubService>(CACHE_L1_PUBSUB), warnings };
}

describe.each(['sharded', 'classic'] as const)('L1 on the bus of a cluster (%s pub/sub)', (mode) => {
  // A cluster of its own: CLIENT KILL TYPE pubsub must reach only this block's subscribers.
  const cluster = useDisposableCluster();

  it('writes made while the subscriber connections were cut are not served stale by B once they are back', async () => {
    const target = { cluster: cluster().startupNodes };
    const keyPrefix = `rtk-b${rand()}:`;
    const l1 = { max: 100, ttl: 60_000 };
    const pubsub = { cluster: mode };
    const a = await busApp(target, keyPrefix, l1, { pubsub });
    const b = await busApp(target, keyPrefix, l1, { pubsub });
    // An instance without L1 publishes nothing on the bus: its write reaches B's L1 only if B's L1 is emptied.
    const quiet = (await createToolkitApp({ target, keyPrefix, pubsub, logger: recordingLogger([]) })).get(
      CacheService,
    );
    expect(b.pubsub.isSharded).toBe(mode === 'sharded');
    // What B's bus hears (a second handler on the channel its L1 listens to), by key; and when B is told its
    // subscriber is back.
    const heard = new Map<string, number>();
    await b.pubsub.subscribe<{ keys?: string[] }>(CACHE_L1_CHANNEL, (m) => {
      for (const k of m.keys ?? []) heard.set(k, (heard.get(k) ?? 0) + 1);
    });
    let resubscribed = 0;
    b.pubsub.onResubscribed(() => resubscribed++);
    await a.cache.set('price', 10);
    await a.cache.set('stock', 5);
    // A read of B that A's message overtakes keeps nothing in L1 (it may have run before A's write): heard first.
    const heardAll = () => heard.has(`${keyPrefix}cache:price`) && heard.has(`${keyPrefix}cache:stock`);
    expect(await waitFor(heardAll, L1_WAIT)).toBe(true);
    expect(await b.cache.get('price')).toBe(10);
    expect(await b.cache.get('stock')).toBe(5);
    // Served from B's L1 from now on: the quiet instance's write is not seen.
    await quiet.set('stock', 4);
    expect(await b.cache.get('stock')).toBe(5);

    // Only the pub/sub connections go (every client's node connections stay up). A's set follows at once; whether its
    // message is lost depends on how fast B's subscriber comes back, the quiet write's is never sent.
    const killed = await Promise.all(
      cluster().nodes.map((node) => rawCommand(node.port, ['CLIENT', 'KILL', 'TYPE', 'pubsub'])),
    );
    // One subscriber connection per instance holds the bus channel (sharded: the one to the master of its slot).
    expect(killed.reduce((sum: number, n) => sum + Number(n), 0)).toBe(2);
    await a.cache.set('price', 12);
    await quiet.set('stock', 6);
    expect(await waitFor(async () => (await b.cache.get('price')) === 12, L1_WAIT)).toBe(true);
    expect(await waitFor(async () => (await b.cache.get('stock')) === 6, L1_WAIT)).toBe(true);
    expect(resubscribed).toBeGreaterThanOrEqual(1);

    // The bus works again on the new subscriber connection.
    await a.cache.set('price', 13);
    expect(await waitFor(async () => (await b.cache.get('price')) === 13, L1_WAIT)).toBe(true);
    // And B's L1 follows it, not a clear: a key B holds in L1 once its first set was heard, changed by A.
    const fresh = `${keyPrefix}cache:fresh`;
    const resubscribedBefore = resubscribed;
    await a.cache.set('fresh', 1);
    expect(await waitFor(() => heard.get(fresh) === 1, L1_WAIT)).toBe(true);
    expect(await b.cache.get('fresh')).toBe(1);
    await quiet.set('fresh', 0);
    expect(await b.cache.get('fresh')).toBe(1);
    await a.cache.set('fresh', 2);
    expect(await waitFor(async () => (await b.cache.get('fresh')) === 2, L1_WAIT)).toBe(true);
    expect(heard.get(fresh)).toBe(2);
    expect(resubscribed).toBe(resubscribedBefore);
    expect(a.cache.stats().errors).toBe(0);
  }, 60_000);
});

describe.each(['single', 'cluster'] as const)('L1 bus messages of many long keys on %s', (target) => {
  it.each([
    { maxMessageBytes: undefined, bound: 1_048_576, count: 1_500, serializer: 'JSON' },
    { maxMessageBytes: 100_000, bound: 100_000, count: 300, serializer: 'JSON' },
    // Three times the JSON: the first cut is still too large for publish, so each refused message goes in halves.
    { maxMessageBytes: 100_000, bound: 100_000, count: 300, serializer: 'padded JSON' },
  ])(
    'del of $count keys of 1,000 characters, maxMessageBytes $bound, $serializer: all leave the other L1, none refused',
    async ({ maxMessageBytes, bound, count, serializer }) => {
      const keyPrefix = `rtk-b${rand()}:`;
      const l1 = { max: 2_000, ttl: 60_000 };
      const pubsub = { maxMessageBytes };
      // Not a test of timeouts: 100 sets or gets of 1,000-character keys at once once outlasted the default 1 s on a
      // busy CI box, and a set or get that times out fails open (counted in stats().errors), leaving a key unset.
      const commandTimeout = 10_000;
      const extra = serializer === 'JSON' ? { pubsub, commandTimeout } : { pubsub, commandTimeout, serializer: padded };
      const a = await busApp(target, keyPrefix, l1, extra, []);
      const b = await busApp(target, keyPrefix, l1, extra, []);
      const quiet = (await createToolkitApp({ target, keyPrefix, ...extra, logger: recordingLogger([]) })).get(
        CacheService,
      );
      // Every bus message B hears: its keys and its size as JSON.
      const heard: { keys: number; bytes: number }[] = [];
      await b.pubsub.subscribe<{ keys?: string[] }>(CACHE_L1_CHANNEL, (m) => {
        heard.push({ keys: m.keys?.length ?? 0, bytes: Buffer.byteLength(JSON.stringify(m)) });
      });
      // 1,000 characters each, 100 of them ':' (stored escaped as %3A): about 1,230 bytes per Redis key, so 1,000
      // keys in one message would pass 1 MiB (and 300 would pass 100,000 bytes).
      const keys = Array.from({ length: count }, (_, i) =>
        `${String(i).padStart(4, '0')}${'x:'.repeat(100)}`.padEnd(1_000, 'y'),
      );
      expect(keys.every((k) => k.length === 1_000)).toBe(true);
      for (let i = 0; i < keys.length; i += 100) {
        await Promise.all(keys.slice(i, i + 100).map((k) => a.cache.set(k, 'v1')));
      }
      // A's messages heard before B reads: a read of B that one of them overtakes keeps nothing in L1.
      expect(await waitFor(() => heard.reduce((n, m) => n + m.keys, 0) === count, L1_WAIT)).toBe(true);
      heard.length = 0;
      for (let i = 0; i < keys.length; i += 100) {
        const got = await Promise.all(keys.slice(i, i + 100).map((k) => b.cache.get(k)));
        const errors = [a.cache.stats().errors, b.cache.stats().errors];
        expect({ notV1: got.filter((v) => v !== 'v1').length, errors }).toEqual({ notV1: 0, errors: [0, 0] });
      }
      // B's get answers v1 only from an L1 entry the bus did not drop: gone from Redis by an instance without L1 (no
      // message), every key is still served by B's L1.
      expect(await quiet.del(...keys)).toBe(count);
      const served = async () => (await Promise.all(keys.map((k) => b.cache.get(k)))).filter((v) => v !== undefined);
      expect((await served()).length).toBe(count);

      expect(await a.cache.del(...keys)).toBe(0);
      expect(await waitFor(async () => (await served()).length === 0, L1_WAIT)).toBe(true);
      // Every key in exactly one message, each well under the bound (padded: under it); none refused or failed on A.
      expect(heard.reduce((n, m) => n + m.keys, 0)).toBe(count);
      expect(heard.length).toBeGreaterThanOrEqual(serializer === 'JSON' ? 2 : 4);
      expect(Math.max(...heard.map((m) => m.bytes))).toBeLessThan(serializer === 'JSON' ? bound * 0.6 : bound / 3);
      expect(a.cache.stats().errors).toBe(0);
      expect(a.pubsub.stats()).toEqual({ unavailable: 0, replyErrors: 0 });
      expect(a.warnings).toEqual([]);
    },
    60_000,
  );
});
