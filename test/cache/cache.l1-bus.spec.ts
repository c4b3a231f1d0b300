/**
 * The L1 invalidation bus (`cache.l1.invalidation: 'bus'`) on a Redis Cluster whose subscriber connections are cut
 * alone (CLIENT KILL TYPE pubsub on every node), in both pub/sub modes: the messages published meanwhile are lost, so
 * B's L1 must be emptied once its subscriber is back.
 * Waits are bounded far below the L1 ttl (60 s): an entry gone within them was dropped by the bus, not by expiry.
 */
import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import type { LoggerService } from '@nestjs/common';
import { CacheService, PubSubService, type RedisToolkitOptions } from '../../lib/index.js';
import { CACHE_L1_CHANNEL } from '../../lib/cache/cache.l1.js';
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
