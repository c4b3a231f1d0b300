/**
 * The start refuses a Redis older than what the features on a connection need (UnsupportedRedisVersionError naming the
 * feature, the command, the minimum and what the server reported), read from the INFO server the start already asks.
 * Only Redis 7.0.x runs here, so a loopback proxy between the app and a real server rewrites the `redis_version:` line
 * of INFO replies (same byte length: the RESP length stays right); an older server's missing commands are not
 * simulated, only what it reports.
 */
import { startSentinel } from '../support/sentinel.js';
import {
  CacheService,
  PubSubService,
  RedisPermissionError,
  RedisToolkitError,
  type RedisToolkitOptions,
} from '../../lib/index.js';
import * as advanced from '../../lib/advanced.js';
import { serverVersionOf, unmetNeeds, versionNeeds } from '../../lib/connection/redis-version.js';
import { RedisConnection } from '../../lib/connection/redis-connection.js';
import { RedisConnections } from '../../lib/connection/redis-connections.js';
import { RedisPermissionsCheck } from '../../lib/connection/redis-permissions.js';
import { errorOf } from '../support/errors.js';
import { startFaultProxy, type FaultProxy } from '../support/fault-proxy.js';
import { trackForCleanup, usePrivateRedis } from '../support/private-servers.js';
import { recordingLogger } from '../support/recording-logger.js';
import { rawCommand } from '../support/resp.js';
import { sharedServers } from '../support/shared-servers.js';
import { closeToolkitApps, createToolkitApp } from '../support/toolkit-app.js';
import { waitFor } from '../support/wait.js';

const PREFIX = 'rtkv:';

/** The first lines of the shared server's INFO server, as it writes them (`redis_version:7.0.15` ...). */
let realLines: string[];
/** What the real server reports, e.g. `7.0.15`. */
let real: string;

beforeAll(async () => {
  const info = String(await rawCommand(sharedServers().single.port, ['INFO', 'server']));
  realLines = info.split('\r\n').filter((line) => /^\w+:/.test(line));
  real = realLines[0].replace('redis_version:', '');
  expect(realLines[0]).toMatch(/^redis_version:\d+\.\d+\.\d+$/);
});
afterEach(closeToolkitApps);

/**
 * `version` (`6.0.16`) when it is as long as the real one, else its `major.minor` with a patch of the right length
 * (`6.0.1` for `7.2.4`): the line keeps its byte length.
 */
const reported = (version: string): string => {
  if (version.length === real.length) return version;
  const majorMinor = version.split('.').slice(0, 2).join('.');
  const patch = real.length - majorMinor.length - 1;
  if (patch < 1) throw new Error(`cannot fake ${version} in the length of ${real}`);
  return `${majorMinor}.${'1'.repeat(patch)}`;
};

/** `text` with a `p:x...` line added so it is `length` bytes long (parseInfo reads it as one more field). */
function padded(text: string, length: number): string {
  const missing = length - Buffer.byteLength(text);
  if (missing < 4) throw new Error(`cannot pad ${JSON.stringify(text)} to ${length} bytes`);
  return `${text}p:${'x'.repeat(missing - 4)}\r\n`;
}

/** A proxy to `port` (default: the shared single server) whose INFO replies report `version`; closed after the test. */
async function proxyReporting(version: string | undefined, port = sharedServers().single.port): Promise<FaultProxy> {
  const proxy = await startFaultProxy({ port });
  trackForCleanup({ stop: () => proxy.close() });
  proxy.rewriteReplies(`redis_version:${real}`, `redis_version:${version ?? real}`);
  return proxy;
}

const boot = (
  options: Partial<RedisToolkitOptions> & { target: RedisToolkitOptions['connection'] },
  logger = recordingLogger(),
) => createToolkitApp({ keyPrefix: PREFIX, commandTimeout: 3_000, logger: logger.logger, ...options });

/** The fields an UnsupportedRedisVersionError carries (read without its class: a test must fail on its assertion). */
const versionErrorShape = (fields: Record<string, unknown>) =>
  expect.objectContaining({ name: 'UnsupportedRedisVersionError', code: 'E_UNSUPPORTED_REDIS_VERSION', ...fields });

describe('Redis version at start: a single server', () => {
  it('refuses the start on a server reporting 6.0.16 (Debian 11, Ubuntu 22.04) when sessions run on it', async () => {
    const old = reported('6.0.16');
    const proxy = await proxyReporting(old);
    const err = await errorOf(() => boot({ target: { url: proxy.url } }));
    expect(err).toBeInstanceOf(RedisToolkitError);
    expect(err).toEqual(
      versionErrorShape({ feature: 'session', command: 'PEXPIRETIME', minimum: '7.0', reported: old }),
    );
    const message = (err as Error).message;
    // the server, what it reported, each feature that needs more, with its command and minimum, and the way out
    expect(message).toContain(`redis://127.0.0.1:${proxy.port}`);
    expect(message).toContain(`redis_version ${old}`);
    expect(message).toContain('session needs Redis >= 7.0 (PEXPIRETIME');
    // pubsub.durable is not set: no stream is read, so pub/sub runs on 6.0 (until 2026-12-06 it was asked 6.2)
    expect(message).not.toMatch(/\bcache needs|rate limit needs|lock needs|pub\/sub needs/); // each runs on 6.0
    expect(message).toMatch(/upgrade/i);
    // the failed start closed what it opened: nothing is left connected through the proxy
    expect(await waitFor(() => proxy.stats.open === 0, 5_000)).toBe(true);
  });

  it('the error class is exported from nestjs-redis-toolkit/advanced, with its code', () => {
    type VersionErrorClass = new (message: string, details: object) => Error & { code: string; minimum: string };
    const Version = (advanced as Record<string, unknown>).UnsupportedRedisVersionError as VersionErrorClass | undefined;
    expect(typeof Version).toBe('function');
    const details = { feature: 'session', command: 'PEXPIRETIME', minimum: '7.0', reported: '6.0.16', server: 'x' };
    const err = new (Version as VersionErrorClass)('m', details);
    expect(err).toBeInstanceOf(RedisToolkitError);
    expect(err.code).toBe('E_UNSUPPORTED_REDIS_VERSION');
    expect(err.minimum).toBe('7.0');
  });

  it('starts a connection only the cache runs on at 6.2 (and at 6.0): the cache needs 6.0', async () => {
    for (const version of [reported('6.2.14'), reported('6.0.16')]) {
      const proxy = await proxyReporting(version);
      const logs = recordingLogger();
      const app = await boot(
        {
          target: { url: sharedServers().single.url },
          connections: { volatile: { url: proxy.url } },
          cache: { connection: 'volatile' },
        },
        logs,
      );
      const cache = app.get(CacheService);
      await cache.set('k', { v: version });
      expect(await cache.get('k')).toEqual({ v: version });
      expect(proxy.stats.rewrites).toBeGreaterThan(0); // it did read the version through the proxy
      expect([...logs.errors, ...logs.warnings].filter((m) => /version/i.test(m))).toEqual([]);
      await app.close();
    }
  });

  it('a connection pub/sub runs on at 6.0 starts without pubsub.durable, and is refused with it (XRANGE, 6.2)', async () => {
    const version = reported('6.0.16');
    const onBus = async (durable: boolean) => {
      const bus = await proxyReporting(version);
      const target = { url: sharedServers().single.url };
      return {
        bus,
        options: { target, connections: { bus: { url: bus.url } }, pubsub: { connection: 'bus', durable } },
      };
    };
    const plain = await onBus(false);
    const logs = recordingLogger();
    const app = await boot(plain.options, logs);
    expect(await app.get(PubSubService).publish('news', 1)).toBe(0);
    expect(plain.bus.stats.rewrites).toBeGreaterThan(0); // it did read the version through the proxy
    expect([...logs.errors, ...logs.warnings].filter((m) => /version/i.test(m))).toEqual([]);
    await app.close();
    const err = await errorOf(async () => boot((await onBus(true)).options));
    expect(err).toEqual(
      versionErrorShape({ feature: 'pub/sub', command: 'XRANGE', minimum: '6.2', reported: version }),
    );
  });

  it('a connection only the rate limiter runs on at 5.0 is refused naming SET ... KEEPTTL (Redis 6.0)', async () => {
    const proxy = await proxyReporting(reported('5.0.14'));
    const err = await errorOf(() =>
      boot({
        target: { url: sharedServers().single.url },
        connections: { limits: { url: proxy.url } },
        rateLimit: { connection: 'limits' },
      }),
    );
    expect(err).toEqual(
      versionErrorShape({
        feature: 'rate limit',
        command: 'SET ... KEEPTTL',
        minimum: '6.0',
        reported: reported('5.0.14'),
      }),
    );
    expect((err as Error).message).toContain('(connection "limits")');
    expect((err as Error).message).toContain('reward.lua');
  });

  it('starts on the real server (every feature) and reads the version from the INFO the start already sent', async () => {
    const proxy = await proxyReporting(undefined); // replaced by itself: counts the INFO replies that carry it
    const logs = recordingLogger();
    await boot({ target: { url: proxy.url } }, logs);
    // ioredis's ready check (INFO) and the server check (INFO server): no INFO of the version check's own
    expect(proxy.stats.rewrites).toBe(2);
    expect([...logs.errors, ...logs.warnings].filter((m) => /version/i.test(m))).toEqual([]);
  });

  it('a Valkey-style INFO (valkey_version beside the redis_version it is compatible with) starts', async () => {
    const proxy = await startFaultProxy({ port: sharedServers().single.port });
    trackForCleanup({ stop: () => proxy.close() });
    const from = `${realLines.slice(0, 3).join('\r\n')}\r\n`;
    proxy.rewriteReplies(from, padded('redis_version:7.2.4\r\nvalkey_version:8.0.1\r\n', Buffer.byteLength(from)));
    const logs = recordingLogger();
    await boot({ target: { url: proxy.url } }, logs);
    expect(proxy.stats.rewrites).toBeGreaterThan(0);
    expect([...logs.errors, ...logs.warnings].filter((m) => /version/i.test(m))).toEqual([]);
  });

  it('a server whose INFO has no redis_version starts with one warning naming what the features need', async () => {
    const proxy = await startFaultProxy({ port: sharedServers().single.port });
    trackForCleanup({ stop: () => proxy.close() });
    proxy.rewriteReplies('redis_version:', 'redis_versiom:'); // a proxy or a fork that leaves the field out
    const logs = recordingLogger();
    await boot({ target: { url: proxy.url } }, logs);
    const warned = logs.warnings.filter((m) => /version/i.test(m));
    expect(warned).toHaveLength(1);
    expect(warned[0]).toContain(`redis://127.0.0.1:${proxy.port}`);
    expect(warned[0]).toContain('Redis >= 7.0');
    expect(warned[0]).toContain('session');
  });

  it('with lazyConnect the refusal is logged as an error once connected (the app has started)', async () => {
    const proxy = await proxyReporting(reported('6.0.16'));
    const logs = recordingLogger();
    await boot({ target: { url: proxy.url }, lazyConnect: true }, logs);
    expect(await waitFor(() => logs.errors.some((m) => m.includes('session needs Redis >= 7.0')), 10_000)).toBe(true);
    expect(logs.errors.filter((m) => /version/i.test(m))).toHaveLength(1);
  });
});

describe('Redis version at start: INFO denied by the ACL', () => {
  const redis = usePrivateRedis({ aclUser: { name: 'full', password: 'full-pass' } });

  it('is refused by the permission check naming INFO (the version check adds no error of its own)', async () => {
    const admin = redis.server;
    await rawCommand(admin.port, ['ACL', 'SETUSER', 'noinfo', 'on', '>noinfo-pass', '~*', '&*', '+@all', '-info'], {
      auth: { username: 'full', password: 'full-pass' },
    });
    const err = await errorOf(() => boot({ target: { url: `redis://noinfo:noinfo-pass@127.0.0.1:${admin.port}` } }));
    expect(err).toBeInstanceOf(RedisPermissionError);
    expect((err as Error).message).toContain('health: INFO');
    expect((err as Error).message).not.toMatch(/version/i);
  });
});

describe('Redis version at start: Sentinel', () => {
  it('checks the master the sentinel resolves', async () => {
    const old = reported('6.0.16');
    const proxy = await proxyReporting(old);
    const sentinel = trackForCleanup(
      await startSentinel({ name: 'rtkversion', master: { host: '127.0.0.1', port: proxy.port } }),
    );
    const err = await errorOf(() =>
      boot({ target: { sentinels: [{ host: '127.0.0.1', port: sentinel.port }], name: 'rtkversion' } }),
    );
    expect(err).toEqual(versionErrorShape({ feature: 'session', reported: old }));
    expect((err as Error).message).toContain(`sentinel master "rtkversion"`);
  });
});

describe('Redis version at start: a cluster', () => {
  /** A proxy in front of each shared cluster node, and the natMap that sends ioredis through them. */
  async function proxiedCluster(versionOf: (i: number) => string | undefined) {
    const nodes = sharedServers().cluster;
    const proxies = await Promise.all(nodes.map((node, i) => proxyReporting(versionOf(i), node.port)));
    const natMap = Object.fromEntries(
      nodes.map((node, i) => [`${node.host}:${node.port}`, { host: '127.0.0.1', port: proxies[i].port }]),
    );
    const target = {
      cluster: proxies.map((p) => ({ host: '127.0.0.1', port: p.port })),
      clusterOptions: { natMap },
    };
    return { proxies, target };
  }

  it('refuses the start when one master reports 6.0.16, naming that master', async () => {
    const old = reported('6.0.16');
    const { proxies, target } = await proxiedCluster((i) => (i === 1 ? old : undefined));
    const err = await errorOf(() => boot({ target }));
    expect(err).toEqual(versionErrorShape({ feature: 'session', minimum: '7.0', reported: old }));
    const message = (err as Error).message;
    expect(message).toContain(`cluster master 127.0.0.1:${proxies[1].port}`);
    expect(message).not.toContain(`127.0.0.1:${proxies[0].port} reports`);
    // sharded pub/sub (pubsub.cluster 'sharded', the default) needs 7.0 on a cluster
    expect(message).toContain('pub/sub needs Redis >= 7.0 (SPUBLISH');
  });

  it('starts when every master reports the real version', async () => {
    const { proxies, target } = await proxiedCluster(() => undefined);
    const logs = recordingLogger();
    const app = await boot({ target }, logs);
    // every master was asked (through its proxy)
    for (const proxy of proxies) expect(proxy.stats.rewrites).toBeGreaterThan(0);
    expect([...logs.errors, ...logs.warnings].filter((m) => /version/i.test(m))).toEqual([]);
    await app.get(CacheService).set('c', 1);
    expect(await app.get(CacheService).get('c')).toBe(1);
  });
});

describe('Redis version at start: lock quorum nodes (locks need 5.0)', () => {
  it('refuses the start when one quorum node reports 4.0.14, naming that node', async () => {
    const [a, b, c] = sharedServers().quorum;
    const old = reported('4.0.14');
    const proxy = await proxyReporting(old, b.port);
    const err = await errorOf(() =>
      boot({
        target: { url: sharedServers().single.url },
        lock: { quorum: { nodes: [{ url: a.url }, { url: proxy.url }, { url: c.url }] } },
      }),
    );
    expect(err).toEqual(versionErrorShape({ feature: 'lock', command: 'ZPOPMIN', minimum: '5.0', reported: old }));
    const message = (err as Error).message;
    expect(message).toContain(`lock quorum node redis://127.0.0.1:${proxy.port} reports redis_version ${old}`);
    expect(message).not.toContain(`${a.port} reports`);
    expect(message).toContain('lock.quorum.nodes');
    // the failed start closed what it opened: nothing is left connected through the proxy
    expect(await waitFor(() => proxy.stats.open === 0, 5_000)).toBe(true);
  });

  it('a node that connects after a lazy start is left out of every lock call, with an error naming its version', async () => {
    const [a, b, c] = sharedServers().quorum;
    const old = reported('4.0.14');
    const proxy = await proxyReporting(old, b.port);
    const logs = recordingLogger();
    await boot(
      {
        target: { url: sharedServers().single.url },
        lazyConnect: true,
        lock: { quorum: { nodes: [{ url: a.url }, { url: proxy.url }, { url: c.url }] } },
      },
      logs,
    );
    expect(await waitFor(() => logs.errors.some((m) => m.includes('lock needs Redis >= 5.0')), 10_000)).toBe(true);
    const said = logs.errors.find((m) => m.includes('lock needs Redis >= 5.0')) as string;
    expect(said).toContain(`lock quorum node redis://127.0.0.1:${proxy.port}`);
    expect(said).toContain('left out of every lock call');
  });
});

describe('Redis version: pub/sub asks 6.2 only with pubsub.durable (RedisPermissionsCheck.checkVersion)', () => {
  /** The version check of a connection only pub/sub runs on, behind a proxy reporting `version`. */
  async function pubsubCheck(version: string) {
    const proxy = await proxyReporting(version);
    const timing = { commandTimeout: 3_000, connectTimeout: 3_000, lazyConnect: false, maxReconnectDelay: 1_000 };
    const main = new RedisConnection({ ...timing, connection: { url: proxy.url }, name: 'default' });
    trackForCleanup({ stop: () => main.onApplicationShutdown() });
    const others = 'elsewhere';
    const connections = new RedisConnections(main, {
      connections: {},
      featureConnections: { cache: others, rateLimit: others, session: others, lock: others, pubsub: 'default' },
      timing,
    });
    await main.connect(main.client);
    return (pubsubDurable: boolean | undefined) =>
      errorOf(() =>
        new RedisPermissionsCheck(connections, {
          keyPrefix: PREFIX,
          lazyConnect: false,
          shardedPubSub: false,
          pubsubDurable,
        }).checkVersion('default', main),
      );
  }

  it('on 6.0: passes without pubsub.durable; refused with it, and when it is not known', async () => {
    const old = reported('6.0.16');
    const check = await pubsubCheck(old);
    expect(await check(false)).toBeUndefined();
    const refused = versionErrorShape({ feature: 'pub/sub', command: 'XRANGE', minimum: '6.2', reported: old });
    expect(await check(true)).toEqual(refused);
    expect(await check(undefined)).toEqual(refused);
  });

  it('on 2.8 without pubsub.durable: refused naming PING on a subscribed connection (3.0)', async () => {
    const old = reported('2.8.24');
    const err = await (await pubsubCheck(old))(false);
    expect(err).toEqual(versionErrorShape({ feature: 'pub/sub', minimum: '3.0', reported: old }));
    expect((err as Error).message).toContain('pub/sub needs Redis >= 3.0 (PING on a subscribed connection');
  });
});

describe('what each feature needs (versionNeeds), and what a server reports (serverVersionOf)', () => {
  it('compares versions by their numbers, not as text', () => {
    const needs = versionNeeds(['session'], { sharded: false });
    expect(unmetNeeds(needs, '10.0.0')).toEqual([]);
    expect(unmetNeeds(needs, '7.0.0')).toEqual([]);
    expect(unmetNeeds(needs, '7.0.0-rc1')).toEqual([]);
    expect(unmetNeeds(needs, '6.2.14').map((n) => n.minimum)).toEqual(['7.0']);
    expect(unmetNeeds(needs, '255.255.255')).toEqual([]); // an unstable build
  });

  it('reads Valkey as the redis_version it is compatible with, and names both', () => {
    const valkey = serverVersionOf({ redis_version: '7.2.4', valkey_version: '8.0.1', server_name: 'valkey' });
    expect(valkey).toEqual({ version: '7.2.4', shown: 'Valkey 8.0.1 (redis_version 7.2.4)' });
    expect(serverVersionOf({ valkey_version: '8.0.1' })).toEqual({ version: '8.0.1', shown: 'Valkey 8.0.1' });
    expect(serverVersionOf({ redis_version: '6.0.16' })).toEqual({ version: '6.0.16', shown: 'redis_version 6.0.16' });
    expect(serverVersionOf({ redis_version: 'unknown' }).version).toBeUndefined();
    expect(serverVersionOf({}).version).toBeUndefined();
  });

  it('each feature states its own minimum; option-bound ones only with their option', () => {
    const min = (f: Parameters<typeof versionNeeds>[0], sharded = false, cacheL1 = false) =>
      versionNeeds(f, { sharded, cacheL1 }).map((n) => `${n.feature} ${n.minimum}`);
    expect(min(['cache'])).toEqual(['cache 6.0']);
    expect(min(['rateLimit'])).toEqual(['rate limit 6.0']);
    expect(min(['session'])).toEqual(['session 7.0']);
    expect(min(['lock'])).toEqual(['lock 5.0']);
    expect(min(['pubsub'])).toEqual(['pub/sub 6.2']);
    expect(min(['pubsub'], true)).toEqual(['pub/sub 6.2', 'pub/sub 7.0']);
    expect(min(['cache'], true)).toEqual(['cache 6.0']); // no L1: the cache neither publishes nor subscribes
    expect(min(['cache'], true, true)).toEqual(['cache 6.0', 'cache 7.0']);
    // pub/sub's 6.2 is its durable replay's: without pubsub.durable it asks what PING on a subscriber needs
    const pubsub = (sharded: boolean, pubsubDurable?: boolean) =>
      versionNeeds(['pubsub'], { sharded, pubsubDurable }).map((n) => `${n.feature} ${n.minimum}`);
    expect(pubsub(false, false)).toEqual(['pub/sub 3.0']);
    expect(pubsub(false, true)).toEqual(['pub/sub 6.2']);
    expect(pubsub(true, false)).toEqual(['pub/sub 3.0', 'pub/sub 7.0']);
  });
});
