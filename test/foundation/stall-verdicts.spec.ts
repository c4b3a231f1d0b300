/**
 * A reply that arrives while the event loop is blocked past a timeout is read before the timeout's verdict (after a
 * stall Node runs the due timers before the poll phase reads the sockets; the toolkit's timers give their verdict
 * after it): on every command path the toolkit builds (a pipeline, a MULTI, the subscriber connection, a cluster's
 * node connections) and in the shared helpers (withTimeout, the cache's `within` for softTimeout). A reply that really
 * did not come (DEBUG SLEEP past the timeout) still times out as before: `Command timed out` for each command in
 * flight, one reset of the connection. The stall is placed right after the command is written (busy-machine.hostile
 * does the same for each feature), so the interleaving is the same on every run.
 */
import 'reflect-metadata';
import { type Cluster, Redis } from 'ioredis';
import { REDIS_CLIENT, PubSubService } from '../../lib/index.js';
import { within } from '../../lib/cache/cache.loader.js';
import { withTimeout } from '../../lib/common/timeout.js';
import { RedisConnection } from '../../lib/connection/redis-connection.js';
import { trackForCleanup, usePrivateRedis } from '../support/private-servers.js';
import { closeToolkitApps } from '../support/toolkit-app.js';
import { bootToolkitApp } from '../support/toolkit-boot.js';
import { stallOnSend } from '../support/stall.js';
import { waitFor } from '../support/wait.js';

const redis = usePrivateRedis({ args: ['--enable-debug-command', 'yes'] });
afterEach(closeToolkitApps);

const TIMEOUT = 500;
const STALL = 1_500;

function countCloses(client: Redis | Cluster): () => number {
  let closes = 0;
  client.on('close', () => closes++);
  return () => closes;
}

describe('a reply read right after a stall past commandTimeout is in time', () => {
  it('a pipeline and a MULTI on the main client: their replies, and the connection is kept', async () => {
    const app = await bootToolkitApp({ target: { url: redis.server.url }, commandTimeout: TIMEOUT, keyPrefix: 'sv1:' });
    const client = app.get<Redis>(REDIS_CLIENT);
    const closes = countCloses(client);
    // a pipeline is written when its last command is sent: the stall comes after that one
    let fired = stallOnSend([client], ['incr'], STALL).fired;
    const piped = await client.pipeline().set('sv1:p', 'a').get('sv1:p').incr('sv1:n').exec();
    expect(fired()).toBe(true);
    expect(piped).toEqual([
      [null, 'OK'],
      [null, 'a'],
      [null, 1],
    ]);
    fired = stallOnSend([client], ['exec'], STALL).fired;
    const multi = await client.multi().incr('sv1:n').get('sv1:p').exec();
    expect(fired()).toBe(true);
    expect(multi).toEqual([
      [null, 2],
      [null, 'a'],
    ]);
    expect({ closes: closes(), status: client.status }).toEqual({ closes: 0, status: 'ready' });
  });

  it('the subscriber connection: a SUBSCRIBE confirmed during a stall is a subscription, its messages arrive', async () => {
    const app = await bootToolkitApp({ target: { url: redis.server.url }, commandTimeout: TIMEOUT, keyPrefix: 'sv2:' });
    const pubsub = app.get(PubSubService);
    const got: unknown[] = [];
    await pubsub.subscribe('first', (m) => got.push(m));
    const subscriber = (pubsub as unknown as { subscriber: Redis }).subscriber;
    const closes = countCloses(subscriber);
    const fired = stallOnSend([subscriber], ['subscribe'], STALL).fired;
    const outcome = await pubsub
      .subscribe('second', (m) => got.push(m))
      .then(
        () => 'subscribed',
        (err: unknown) => (err as Error).message,
      );
    expect(fired()).toBe(true);
    expect(outcome).toBe('subscribed');
    await pubsub.publish('second', { n: 1 });
    expect(await waitFor(() => got.length === 1, 5_000)).toBe(true);
    expect(closes()).toBe(0);
    // and a connection made by createSubscriber directly
    const own = app.get(RedisConnection).createSubscriber() as Redis;
    await own.connect();
    const ownFired = stallOnSend([own], ['subscribe'], STALL).fired;
    expect(await own.subscribe('sv2:raw')).toBe(1);
    expect(ownFired()).toBe(true);
  });

  it('a cluster: a GET and a pipeline on a node connection, replies read after the stall, no reset', async () => {
    const app = await bootToolkitApp({ target: 'cluster', commandTimeout: TIMEOUT, keyPrefix: 'sv3:' });
    const cluster = app.get<Cluster>(REDIS_CLIENT);
    await cluster.set('sv3:{k}', 'v');
    const masters = cluster.nodes('master');
    const closes = masters.map(countCloses);
    let fired = stallOnSend(masters, ['get'], STALL).fired;
    const value = await cluster.get('sv3:{k}').catch((err: unknown) => (err as Error).message);
    expect(fired()).toBe(true);
    expect(value).toBe('v');
    fired = stallOnSend(masters, ['incr'], STALL).fired;
    const piped = await cluster.pipeline().get('sv3:{k}').incr('sv3:{k}n').exec();
    expect(fired()).toBe(true);
    expect(piped?.map(([err, v]) => [err?.message ?? null, v])).toEqual([
      [null, 'v'],
      [null, 1],
    ]);
    expect(closes.map((c) => c())).toEqual(masters.map(() => 0));
    await cluster.del('sv3:{k}', 'sv3:{k}n');
  });

  it('withTimeout and the cache’s within (softTimeout): a reply read right after the stall is the value', async () => {
    const source = trackForCleanup(new Redis(redis.server.port, '127.0.0.1'));
    await source.set('sv4', 'x');
    // the GET is sent (and the loop stalled) after the timer is armed
    const later = () => Promise.resolve().then(() => source.get('sv4'));
    let fired = stallOnSend([source], ['get'], STALL).fired;
    const raced = await withTimeout(later(), TIMEOUT, 'no reply').catch((err: unknown) => err);
    expect(fired()).toBe(true);
    fired = stallOnSend([source], ['get'], STALL).fired;
    const waited = await within(later(), TIMEOUT);
    expect(fired()).toBe(true);
    expect({ raced, waited }).toEqual({ raced: 'x', waited: 'x' });
  });
});

describe('a reply that does not come in time still times out (DEBUG SLEEP past the timeout)', () => {
  const sleepRedis = (seconds: number) => {
    const sleeper = trackForCleanup(new Redis(redis.server.port, '127.0.0.1'));
    return sleeper.call('debug', 'sleep', String(seconds));
  };

  it('every command in flight fails with `Command timed out`, the connection is dropped and comes back', async () => {
    const app = await bootToolkitApp({ target: { url: redis.server.url }, commandTimeout: 300, keyPrefix: 'sv5:' });
    const client = app.get<Redis>(REDIS_CLIENT);
    const closes = countCloses(client);
    const asleep = sleepRedis(1.2);
    await new Promise((r) => setTimeout(r, 50));
    const started = performance.now();
    const outcomes = await Promise.all(
      [
        client.get('sv5:a'),
        client
          .pipeline()
          .get('sv5:b')
          .exec()
          .then((r) => {
            if (r?.[0]?.[0]) throw r[0][0];
          }),
        client.multi().get('sv5:c').exec(),
        client.eval('return 1', 0),
      ].map((p) =>
        (p as Promise<unknown>).then(
          () => 'answered',
          (err: unknown) => (err as Error).message,
        ),
      ),
    );
    const waited = performance.now() - started;
    expect(outcomes).toEqual(['Command timed out', 'Command timed out', 'Command timed out', 'Command timed out']);
    expect(waited).toBeGreaterThanOrEqual(290);
    await asleep;
    expect(await waitFor(() => client.status === 'ready', 5_000)).toBe(true);
    // dropped by the timeout (its reconnect's ready check may time out again while Redis sleeps: 2 on the old build too)
    expect(closes()).toBeGreaterThanOrEqual(1);
    expect(await client.get('sv5:a')).toBeNull();
  });

  it('withTimeout and within: no reply within the time is the timeout', async () => {
    const source = trackForCleanup(new Redis(redis.server.port, '127.0.0.1'));
    await source.ping();
    // On the same connection as the reads, which Redis runs after it: asleep before they are read, however loaded the
    // box (a sleeper connection of its own, 50 ms ahead, had not reached Redis yet in a loaded run: both answered)
    const asleep = source.call('debug', 'sleep', '1');
    const raced = await withTimeout(source.get('sv6'), 300, 'no reply').catch((err: unknown) => (err as Error).message);
    const waited = await within(source.get('sv6'), 200);
    await asleep;
    expect({ raced, waited }).toEqual({ raced: 'no reply', waited: undefined });
  });
});
