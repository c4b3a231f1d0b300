/**
 * A ThrottledWarning counts the warnings it suppresses within its interval and logs that count at the interval's end,
 * on an unref'd timer. Left to run after its app closed, that timer logs through whichever logger Nest has by then
 * (another app's, in a test run), long after the warnings it counts (96056a6: the five feature services close their
 * FailurePolicy at shutdown). The other owners did not close theirs: the connection's error warning, the lock quorum's
 * node-call warning, pub/sub's unreadable-message warning and the notifications gateway's warning. Each now logs its
 * pending count when its app closes (and arms no timer after): before, that count came up to an interval later.
 */
import 'reflect-metadata';
import { Redis } from 'ioredis';
import { LockService, PubSubService } from '../../lib/index.js';
import { startFaultProxy } from '../support/fault-proxy.js';
import { unique } from '../support/lock-modes.js';
import { trackForCleanup } from '../support/private-servers.js';
import { connectClient, createGatewayApp } from '../support/pubsub-gateway.js';
import { recordingLogger } from '../support/recording-logger.js';
import { sharedServers } from '../support/shared-servers.js';
import { closeToolkitApps, createToolkitApp } from '../support/toolkit-app.js';
import { sleep, waitFor } from '../support/wait.js';

afterEach(closeToolkitApps);

const countLines = (warnings: string[], what: string): string[] =>
  warnings.filter((w) => w.startsWith(`${what}: `) && w.includes('more since the last warning'));

/** A port that refuses connections (a proxy that stopped listening). */
async function refusingUrl(): Promise<string> {
  const proxy = await startFaultProxy({ port: sharedServers().single.port });
  trackForCleanup({ stop: () => proxy.close() });
  await proxy.refuse();
  return proxy.url;
}

describe('warnings counted before app.close() are logged at close, not by a timer that outlives the app', () => {
  it('the connection error warning (RedisConnection)', async () => {
    const { warnings, logger } = recordingLogger();
    const app = await createToolkitApp({ target: { url: await refusingUrl() }, lazyConnect: true, logger });
    // ECONNREFUSED at each reconnect (50, 100, 200 ms... apart): the first logged, the next ones counted
    expect(await waitFor(() => warnings.some((w) => w.includes('connection error')), 5_000)).toBe(true);
    await sleep(800);
    expect(warnings.filter((w) => w.includes('connection error'))).toHaveLength(1);
    expect(countLines(warnings, 'Redis connection errors')).toEqual([]);
    await app.close();
    // before: nothing at close (the count's timer, armed for 10 s after the first error, was left running)
    expect(countLines(warnings, 'Redis connection errors')).toHaveLength(1);
    expect(countLines(warnings, 'Redis connection errors')[0]).toMatch(/^Redis connection errors: [1-9]\d* more /);
  });

  it("the lock quorum's failed node call warning", async () => {
    const { warnings, logger } = recordingLogger();
    const [a, b] = sharedServers().quorum;
    const app = await createToolkitApp({
      lock: { quorum: { nodes: [{ url: a.url }, { url: b.url }, { url: await refusingUrl() }] } },
      logger,
    });
    const locks = app.get(LockService);
    for (let i = 0; i < 4; i++) await (await locks.acquire(unique('shutdown-warning'), { ttl: 5_000 })).release();
    const failed = () => warnings.filter((w) => w.includes('failed a call'));
    expect(await waitFor(() => failed().length > 0, 5_000)).toBe(true);
    await sleep(300);
    expect(failed()).toHaveLength(1);
    expect(countLines(warnings, 'failed lock quorum node calls')).toEqual([]);
    await app.close();
    // 4 acquisitions and 4 releases each called the dead node: one logged, the others counted
    expect(countLines(warnings, 'failed lock quorum node calls')).toHaveLength(1);
    expect(countLines(warnings, 'failed lock quorum node calls')[0]).toMatch(/: [1-9]\d* more since the last warning/);
  });

  it("pub/sub's unreadable message warning", async () => {
    const { warnings, logger } = recordingLogger();
    const keyPrefix = `sw${Date.now()}:`;
    const app = await createToolkitApp({ keyPrefix, logger });
    const pubsub = app.get(PubSubService);
    await pubsub.subscribe('news', () => undefined);
    const { port, host } = sharedServers().single;
    const raw = trackForCleanup(new Redis(port, host));
    const [channel] = (await raw.pubsub('CHANNELS', `${keyPrefix}*`)) as string[];
    expect(channel).toBe(`${keyPrefix}ps:news`);
    for (let i = 0; i < 3; i++) await raw.publish(channel, 'not an envelope');
    const dropped = () => warnings.filter((w) => w.includes('could not be read'));
    expect(await waitFor(() => dropped().length > 0, 5_000)).toBe(true);
    await sleep(200);
    expect(dropped()).toHaveLength(1);
    await app.close();
    expect(countLines(warnings, 'unreadable or too large pub/sub messages dropped')).toEqual([
      'unreadable or too large pub/sub messages dropped: 2 more since the last warning, not logged one by one',
    ]);
  });

  it("the notifications gateway's warning", async () => {
    const { warnings, logger } = recordingLogger();
    const authorize = () => {
      throw new Error('directory down');
    };
    const app = await createGatewayApp({ keyPrefix: `sg${Date.now()}:`, pubsub: { gateway: { authorize } }, logger });
    const client = await connectClient(app.url, { token: 'u:1' });
    for (const channel of ['a', 'b', 'c']) expect((await client.subscribe(channel)).ok).toBe(false);
    expect(warnings.filter((w) => w.includes('authorize threw'))).toHaveLength(1);
    client.socket.close();
    await app.close();
    expect(countLines(warnings, 'notifications gateway warnings')).toEqual([
      'notifications gateway warnings: 2 more since the last warning, not logged one by one',
    ]);
  });
});
