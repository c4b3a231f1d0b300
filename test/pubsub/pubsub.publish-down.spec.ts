/**
 * publish (and notifyUser, durable or not) while Redis is down under a running app: RedisUnavailableError and its log
 * line say what health says (`not connected to Redis at <address> (<state>); last error: <cause>`), not ioredis's
 * text for a command it refused, which names neither the server nor why.
 */
import 'reflect-metadata';
import { PubSubService, RedisUnavailableError } from '../../lib/index.js';
import { useDisposableCluster } from '../support/disposable-cluster.js';
import { trackForCleanup } from '../support/private-servers.js';
import { recordingLogger } from '../support/recording-logger.js';
import { startRedisServer } from '../support/redis-server.js';
import { rawCommand } from '../support/resp.js';
import { closeToolkitApps, createToolkitApp, type ToolkitAppOptions } from '../support/toolkit-app.js';
import { sleep, waitFor } from '../support/wait.js';
import { within } from '../support/timing.js';

afterEach(closeToolkitApps);
// A cluster restart leaves ioredis's sharded subscriber group a slots refresh (at most 2 s) that quit() does not clear.
afterAll(() => sleep(2_500));

const timing = { connectTimeout: 500, commandTimeout: 300, maxReconnectDelay: 200 } as const;
/** ioredis's wording for a command on a connection that is not up: says nothing the operator can act on. */
const IOREDIS_TEXT = /enableOfflineQueue|Stream isn't writeable|Connection is closed/;

const rejection = (p: Promise<unknown>): Promise<Error> =>
  p.then(
    (value) => {
      throw new Error(`resolved with ${String(value)}`);
    },
    (err: unknown) => err as Error,
  );

/** A running app on `target`, its PubSubService and the warnings it logs. */
async function app(target: ToolkitAppOptions['target'], extra: Partial<ToolkitAppOptions> = {}) {
  const { warnings, logger } = recordingLogger();
  const { get } = await createToolkitApp({ target, ...timing, logger, ...extra });
  return { pubsub: get(PubSubService), warnings };
}

describe('publish with the server killed under a running app', () => {
  it('single server: publish rejects with RedisUnavailableError naming the address and the cause; so does its log line', async () => {
    const server = trackForCleanup(await startRedisServer());
    const { pubsub, warnings } = await app({ url: server.url });
    expect(await pubsub.publish('orders', { id: 1 })).toBe(0);
    await server.kill();
    await sleep(300); // a reconnect attempt has failed: its error is the cause
    const err = await rejection(pubsub.publish('orders', { id: 2 }));
    expect(err).toBeInstanceOf(RedisUnavailableError);
    // before: "pub/sub publish to orders failed: Stream isn't writeable and enableOfflineQueue options is false"
    expect(err.message).not.toMatch(IOREDIS_TEXT);
    expect(err.message).toContain(
      `publish to orders failed: not connected to Redis at redis://127.0.0.1:${server.port}`,
    );
    expect(err.message).toMatch(/last error: .*ECONNREFUSED/);
    const logged = warnings.filter((w) => w.includes('publish to orders'));
    expect(logged).toHaveLength(1);
    expect(logged[0]).toContain(`not connected to Redis at redis://127.0.0.1:${server.port}`);
    expect(logged[0]).not.toMatch(IOREDIS_TEXT);
    // back: publish works again, nothing of the outage stays in its answers
    await server.restart();
    expect(
      await waitFor(
        () =>
          pubsub.publish('orders', { id: 3 }).then(
            () => true,
            () => false,
          ),
        10_000,
      ),
    ).toBe(true);
  });

  it('single server, a password in the url: the message names the address, never the password', async () => {
    const server = trackForCleanup(await startRedisServer({ password: 's3cr3t-pw' }));
    const { pubsub, warnings } = await app({ url: server.url });
    await server.kill();
    await sleep(300);
    const err = await rejection(pubsub.publish('orders', 1));
    expect(err).toBeInstanceOf(RedisUnavailableError);
    expect(err.message).toContain(`127.0.0.1:${server.port}`);
    expect(err.message).not.toMatch(IOREDIS_TEXT);
    expect([err.message, ...warnings].filter((m) => m.includes('s3cr3t-pw'))).toEqual([]);
  });

  it.each([
    ['durable', { durable: true }],
    ['not durable', { durable: false }],
  ] as const)('single server: notifyUser (%s) rejects the same way', async (_, pubsubOptions) => {
    const server = trackForCleanup(await startRedisServer());
    const { pubsub, warnings } = await app({ url: server.url }, { pubsub: pubsubOptions });
    expect(await pubsub.notifyUser('u1', { n: 1 })).toBe(0);
    await server.kill();
    await sleep(300);
    const err = await rejection(pubsub.notifyUser('u1', { n: 2 }));
    expect(err).toBeInstanceOf(RedisUnavailableError);
    expect(err.message).not.toMatch(IOREDIS_TEXT);
    expect(err.message).toContain(`not connected to Redis at redis://127.0.0.1:${server.port}`);
    expect(err.message).toMatch(/last error: .*ECONNREFUSED/);
    expect(warnings.filter((w) => IOREDIS_TEXT.test(w))).toEqual([]);
    if (pubsubOptions.durable) {
      const replayed = await rejection(pubsub.replay('u1', '0-0'));
      expect(replayed).toBeInstanceOf(RedisUnavailableError);
      expect(replayed.message).toContain(`not connected to Redis at redis://127.0.0.1:${server.port}`);
      expect(replayed.message).not.toMatch(IOREDIS_TEXT);
    }
  });

  describe('cluster', () => {
    const cluster = useDisposableCluster();

    it.each(['sharded', 'classic'] as const)(
      '%s: every master paused, a new subscribe rejects within connectTimeout + commandTimeout, not once they resume',
      async (mode) => {
        const { pubsub } = await app({ cluster: cluster().startupNodes }, { pubsub: { cluster: mode } });
        await pubsub.subscribe('warm', () => undefined); // the subscriber connection(s) are up
        const masters = cluster().masters;
        for (const master of masters) master.pause();
        try {
          const started = Date.now();
          const err = await rejection(pubsub.subscribe('late', () => undefined));
          expect(Date.now() - started).toBeLessThan(within(timing.connectTimeout + timing.commandTimeout));
          expect(err).toBeInstanceOf(RedisUnavailableError);
          expect(pubsub.subscriptionCount).toBe(1);
        } finally {
          for (const master of masters) master.resume();
        }
      },
    );

    it.each(['sharded', 'classic'] as const)(
      '%s: every node killed, publish and durable notifyUser name the cluster and a cause',
      async (mode) => {
        const { pubsub, warnings } = await app(
          { cluster: cluster().startupNodes },
          { pubsub: { cluster: mode, durable: true } },
        );
        expect(await pubsub.publish('orders', 1)).toBe(0);
        expect(await pubsub.notifyUser('u1', 1)).toBe(0);
        const nodes = cluster().nodes;
        try {
          await Promise.all(nodes.map((n) => n.kill()));
          await sleep(500);
          for (const err of [
            await rejection(pubsub.publish('orders', 2)),
            await rejection(pubsub.notifyUser('u1', 2)),
          ]) {
            expect(err).toBeInstanceOf(RedisUnavailableError);
            expect(err.message).not.toMatch(IOREDIS_TEXT);
            expect(err.message).toContain(`Redis at cluster(127.0.0.1:${nodes[0].port}`);
            // a cause after the address: the last connection error, or the command's own failure
            expect(err.message).toMatch(/(last error: |\): )\S/);
          }
          expect(warnings.filter((w) => IOREDIS_TEXT.test(w) && w.includes('pub/sub'))).toEqual([]);
        } finally {
          await Promise.all(nodes.map((n) => n.restart()));
          // the next test starts on a whole cluster
          const ok = (port: number) =>
            rawCommand(port, ['CLUSTER', 'INFO']).then(
              (i) => String(i).includes('cluster_state:ok'),
              () => false,
            );
          await waitFor(async () => (await Promise.all(nodes.map((n) => ok(n.port)))).every(Boolean), 15_000);
        }
      },
      30_000,
    );
  });
});
