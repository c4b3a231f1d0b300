/**
 * Issue 12, several named connections: `connections` of forRoot and a `connection` name per feature. Each feature
 * writes to the server its connection names and nowhere else; the cache's L1 invalidations travel on the cache's
 * server; unknown names fail the start naming them; every owned connection is quit on shutdown, a user's client is
 * not; health reports each connection and the worst status; the ACL check asks each server for its features' commands.
 */
import 'reflect-metadata';
import { Inject, Injectable, Module } from '@nestjs/common';
import { ConfigModule, ConfigService } from '@nestjs/config';
import { Test } from '@nestjs/testing';
import { Redis } from 'ioredis';
import {
  CacheService,
  InvalidOptionsError,
  LockService,
  PubSubService,
  RateLimitService,
  RedisPermissionError,
  RedisToolkitHealth,
  RedisToolkitModule,
  RedisUnavailableError,
  SessionService,
} from '../../lib/index.js';
import { getRedisClientToken, RedisConnection, RedisConnections } from '../../lib/advanced.js';
import { resolveToolkitOptions } from '../../lib/redis-toolkit.options-resolver.js';
import { startRedisServer, getFreePort, type RedisServerHandle } from '../support/redis-server.js';
import { trackForCleanup, usePrivateRedis } from '../support/private-servers.js';
import { closeToolkitApps, createToolkitApp, type ToolkitApp } from '../support/toolkit-app.js';
import { scanAll } from '../support/scan.js';
import { waitFor } from '../support/wait.js';

const persistent = usePrivateRedis();
const volatile = usePrivateRedis();

afterEach(closeToolkitApps);

function raw(server: RedisServerHandle): Redis {
  return trackForCleanup(new Redis(server.port, '127.0.0.1'));
}

/** Every key under `prefix` on the server, grouped by feature (`cache`, `rl`, `sess`, `lock`, `ps`). */
async function featuresOn(server: RedisServerHandle, prefix: string): Promise<Set<string>> {
  const keys = await scanAll(raw(server), `${prefix}*`);
  return new Set(keys.map((k) => k.slice(prefix.length).split(':')[0]));
}

/** Clients connected to the server, less the one asking. */
async function clientCount(client: Redis): Promise<number> {
  const list = String(await client.call('client', 'list'));
  return list.trim().split('\n').length - 1;
}

async function exerciseEveryFeature(get: ToolkitApp['get']): Promise<void> {
  await get(CacheService).set('product:1', { name: 'tea' }, { ttl: 60_000 });
  expect((await get(RateLimitService).consume('ip:1', { limit: 5, ttl: 60_000 })).allowed).toBe(true);
  await get(SessionService).create('user-1', { cart: 2 });
  const lock = await get(LockService).acquire('order:1', { ttl: 10_000 });
  expect(lock.fencingToken).toBeGreaterThan(0);
  await get(PubSubService).notifyUser('user-1', { hello: 1 });
}

describe.each([
  ['cache, rate limit and lock on "volatile"', { cache: 'volatile', rateLimit: 'volatile', lock: 'volatile' }],
  ['sessions and pub/sub on "volatile"', { session: 'volatile', pubsub: 'volatile' }],
] as const)('%s, the rest on the default', (_, placement: Partial<Record<string, string>>) => {
  it('each feature writes to the server its connection names and nowhere else', async () => {
    const prefix = `nc${Math.random().toString(36).slice(2, 8)}:`;
    const on = (feature: string) => (placement[feature] ? { connection: placement[feature] } : {});
    const { get } = await createToolkitApp({
      target: { url: persistent.server.url },
      connections: { volatile: { url: volatile.server.url } },
      keyPrefix: prefix,
      cache: on('cache'),
      rateLimit: on('rateLimit'),
      session: on('session'),
      lock: on('lock'),
      pubsub: { durable: { maxLen: 10 }, ...on('pubsub') },
    });
    await exerciseEveryFeature(get);
    const expected = (server: 'default' | 'volatile') =>
      new Set(
        (
          [
            ['cache', 'cache'],
            ['rateLimit', 'rl'],
            ['session', 'sess'],
            ['lock', 'lock'],
            ['pubsub', 'ps'],
          ] as const
        )
          .filter(([feature]) => (placement[feature] ?? 'default') === server)
          .map(([, key]) => key),
      );
    expect(await featuresOn(persistent.server, prefix)).toEqual(expected('default'));
    expect(await featuresOn(volatile.server, prefix)).toEqual(expected('volatile'));
  });
});

describe.each(['bus', 'tracking'] as const)('the cache L1 invalidation (%s)', (invalidation) => {
  it('runs on the cache connection: two instances whose pub/sub servers differ still drop each other’s L1 entries', async () => {
    const other = trackForCleanup(await startRedisServer());
    const prefix = 'ncl1:';
    // Both instances keep the cache on "volatile"; their default connections (and so pub/sub) are different servers.
    const boot = (defaultServer: RedisServerHandle) =>
      createToolkitApp({
        target: { url: defaultServer.url },
        connections: { volatile: { url: volatile.server.url } },
        keyPrefix: prefix,
        cache: { connection: 'volatile', l1: { max: 100, ttl: 60_000, invalidation } },
      });
    const first = await boot(persistent.server);
    const second = await boot(other);
    const a = first.get(CacheService);
    const b = second.get(CacheService);
    // b writes k itself, so no invalidation from a is still on its way to drop b's L1 entry after the read below.
    await b.set('k', 'v1', { ttl: 60_000 });
    expect(await b.get('k')).toBe('v1');
    // With the bus, b now serves k from its L1: gone from Redis, still answered.
    const volatileRaw = raw(volatile.server);
    await volatileRaw.unlink(...(await scanAll(volatileRaw, `${prefix}cache:*`)));
    if (invalidation === 'bus') expect(await b.get('k')).toBe('v1');
    // Tracking: Redis reports the raw UNLINK itself (a client that is not the toolkit).
    else expect(await waitFor(async () => (await b.get('k')) === undefined, 3_000)).toBe(true);
    await a.set('k', 'v2', { ttl: 60_000 });
    expect(await waitFor(async () => (await b.get('k')) === 'v2', 3_000)).toBe(true);
    // The bus: one channel under the prefix; tracking: the RESP2 invalidation channel, and nothing under the prefix.
    const pattern = invalidation === 'bus' ? `${prefix}*` : '__redis__:invalidate';
    const channels = async (server: RedisServerHandle) =>
      ((await raw(server).call('pubsub', 'channels', pattern)) as string[]).length;
    expect(await channels(volatile.server)).toBe(1);
    expect(await channels(persistent.server)).toBe(0);
    expect(await channels(other)).toBe(0);
  });
});

describe('options', () => {
  const base = { connection: { url: 'redis://127.0.0.1:1' } };
  const problemsOf = (options: object): string => {
    try {
      resolveToolkitOptions(options as never);
    } catch (err) {
      expect(err).toBeInstanceOf(InvalidOptionsError);
      return (err as Error).message;
    }
    throw new Error('no error');
  };

  it('a feature naming an unknown connection fails, naming it, the known names and the nearest', () => {
    const message = problemsOf({
      ...base,
      connections: { volatile: { url: 'redis://127.0.0.1:2' }, sessions: { url: 'redis://127.0.0.1:3' } },
      cache: { connection: 'volatle' },
      lock: { connection: 'nowhere' },
    });
    expect(message).toContain(
      'cache.connection names an unknown connection "volatle": known are "default", "volatile", "sessions" ' +
        '(did you mean "volatile"?)',
    );
    expect(message).toContain('lock.connection names an unknown connection "nowhere"');
  });

  it('each named connection is checked like connection: no server, unknown keys, two targets, "default"', () => {
    const message = problemsOf({
      ...base,
      connections: {
        empty: { url: undefined },
        typo: { host: '127.0.0.1', prot: 6380 },
        both: { url: 'redis://127.0.0.1:2', cluster: [{ host: '127.0.0.1', port: 3 }] },
        default: { url: 'redis://127.0.0.1:4' },
      },
    });
    expect(message).toContain('connections.empty names no server');
    expect(message).toContain('connections.typo.prot is not a known option (did you mean connections.typo.port?)');
    expect(message).toContain('connections.both must give only one of');
    expect(message).toContain('connections.default is not allowed: the default connection is `connection`');
  });

  it('resolves each feature to its connection, default when it names none', () => {
    const resolved = resolveToolkitOptions({
      ...base,
      connections: { sessions: { url: 'redis://127.0.0.1:2' } },
      session: { connection: 'sessions' },
      pubsub: { connection: 'default' },
    });
    expect(resolved.featureConnections).toEqual({
      cache: 'default',
      rateLimit: 'default',
      session: 'sessions',
      lock: 'default',
      pubsub: 'default',
    });
  });
});

describe('start and shutdown', () => {
  it('quits every connection it opened on each server (subscribers included), never a client the user gave', async () => {
    const checkPersistent = raw(persistent.server);
    const checkVolatile = raw(volatile.server);
    const before = [await clientCount(checkPersistent), await clientCount(checkVolatile)];
    const users = trackForCleanup(new Redis(persistent.server.port, '127.0.0.1', { commandTimeout: 1_000 }));
    await users.ping();
    const { app, get } = await createToolkitApp({
      target: { url: persistent.server.url },
      connections: { volatile: { url: volatile.server.url }, mine: { client: users } },
      cache: { connection: 'volatile', l1: { max: 10, ttl: 1_000 } },
      pubsub: { connection: 'volatile' },
    });
    await get(PubSubService).subscribe('news', () => undefined);
    // default: main; volatile: main + pub/sub's subscriber + the L1's RESP2 tracking connection (the L1 uses the bus,
    // and so shares the subscriber, only where CLIENT TRACKING is refused).
    expect(await clientCount(checkPersistent)).toBe(before[0] + 2); // + the user's own client
    expect(await clientCount(checkVolatile)).toBe(before[1] + 3);
    expect(get(RedisConnections).names).toEqual(['default', 'volatile', 'mine']);
    await app.close();
    expect(await waitFor(async () => (await clientCount(checkPersistent)) === before[0] + 1, 2_000)).toBe(true);
    expect(await waitFor(async () => (await clientCount(checkVolatile)) === before[1], 2_000)).toBe(true);
    expect(users.status).toBe('ready');
    expect(await users.ping()).toBe('PONG');
  });

  it('fails fast when a named connection is unreachable, naming it, and closes the connections already open', async () => {
    const check = raw(persistent.server);
    const before = await clientCount(check);
    const port = await getFreePort();
    const error = await createToolkitApp({
      target: { url: persistent.server.url },
      connections: { sessions: { host: '127.0.0.1', port } },
      session: { connection: 'sessions' },
      connectTimeout: 500,
      commandTimeout: 300,
    }).then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(error).toBeInstanceOf(RedisUnavailableError);
    expect((error as Error).message).toContain(`redis://127.0.0.1:${port} (connection "sessions")`);
    expect(await waitFor(async () => (await clientCount(check)) === before, 2_000)).toBe(true);
  });

  it('asks each server only for the commands of the features on it (ACL check per connection)', async () => {
    const admin = raw(volatile.server);
    const password = `nc-${Math.random().toString(36).slice(2)}`;
    // May do everything but ZCOUNT, which only locks need.
    await admin.call('acl', 'setuser', 'app', 'reset', 'on', `>${password}`, '+@all', '-zcount', '~*', '&*');
    const restricted = { url: `redis://app:${password}@127.0.0.1:${volatile.server.port}` };
    const ok = await createToolkitApp({
      target: { url: persistent.server.url },
      connections: { volatile: restricted },
      cache: { connection: 'volatile' },
    });
    expect((await ok.get(RedisToolkitHealth).check()).status).toBe('up');
    await ok.close();
    const error = await createToolkitApp({
      target: { url: persistent.server.url },
      connections: { volatile: restricted },
      lock: { connection: 'volatile' },
    }).then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(error).toBeInstanceOf(RedisPermissionError);
    expect((error as Error).message).toContain('The Redis ACL user of connection "volatile"');
    expect((error as Error).message).toContain('lock: ZCOUNT');
    await admin.call('acl', 'deluser', 'app');
  });

  it("the cache's own connection is asked for what its load lock and L1 send: DEL (the shared release script), PUBLISH and SUBSCRIBE only with an L1", async () => {
    const admin = raw(volatile.server);
    const password = `nc-${Math.random().toString(36).slice(2)}`;
    const restricted = { url: `redis://app:${password}@127.0.0.1:${volatile.server.port}` };
    const start = (l1: boolean) =>
      createToolkitApp({
        target: { url: persistent.server.url },
        connections: { volatile: restricted },
        cache: { connection: 'volatile', ...(l1 ? { l1: { max: 10, ttl: 5_000 } } : {}) },
      }).then(
        async (app) => (await app.close(), undefined),
        (err: unknown) => err,
      );
    const user = (...denied: string[]) =>
      admin.call('acl', 'setuser', 'app', 'reset', 'on', `>${password}`, '+@all', ...denied, '~*', '&*');
    // Without DEL every release of a load lock is refused (and only logged): the next miss of that key waits lockWait.
    await user('-del');
    const noDel = await start(false);
    expect(noDel).toBeInstanceOf(RedisPermissionError);
    expect((noDel as Error).message).toMatch(/cache: .*DEL \(in release-lock\.lua\)/);
    // Without an L1 the cache never publishes nor subscribes (its invalidation bus is the L1's).
    await user('-publish', '-subscribe');
    expect(await start(false)).toBeUndefined();
    const withL1 = await start(true);
    expect(withL1).toBeInstanceOf(RedisPermissionError);
    expect((withL1 as Error).message).toMatch(/cache: .*PUBLISH/);
    await admin.call('acl', 'deluser', 'app');
  });
});

describe('health', () => {
  it('reports each connection; the status is the worst; a killed server is down by name', async () => {
    const doomed = trackForCleanup(await startRedisServer());
    const { get } = await createToolkitApp({
      target: { url: persistent.server.url },
      connections: { volatile: { url: doomed.url } },
      cache: { connection: 'volatile' },
      commandTimeout: 300,
    });
    const health = get(RedisToolkitHealth);
    const up = await health.check();
    expect(up.status).toBe('up');
    expect(Object.keys(up.connections ?? {})).toEqual(['default', 'volatile']);
    expect(up.connections?.default.status).toBe('up');
    expect(up.connections?.volatile.status).toBe('up');
    expect(up.connections?.volatile.role).toBe('master');
    await doomed.kill();
    const down = await health.check();
    expect(down.status).toBe('down');
    expect(down.connections?.default.status).toBe('up');
    expect(down.connections?.volatile.status).toBe('down');
    expect(down.error).toMatch(/^connection "volatile": /);
    // The default connection's own figures stay at the top level.
    expect(down.role).toBe('master');
  });

  it('has no `connections` field with the default connection alone', async () => {
    const { get } = await createToolkitApp({ target: { url: persistent.server.url } });
    const result = await get(RedisToolkitHealth).check();
    expect(result.status).toBe('up');
    expect(result).not.toHaveProperty('connections');
  });
});

describe('injecting a named client', () => {
  @Injectable()
  class UsesVolatile {
    constructor(
      @Inject(getRedisClientToken('volatile')) readonly volatileClient: Redis,
      readonly defaultConnection: RedisConnection,
    ) {}
  }

  it('forRoot provides getRedisClientToken(name) for each of its connections', async () => {
    const { get } = await createToolkitApp({
      target: { url: persistent.server.url },
      connections: { volatile: { url: volatile.server.url } },
      providers: [UsesVolatile],
    });
    const uses = get(UsesVolatile);
    await uses.volatileClient.set('nc:inject', 'here');
    expect(await raw(volatile.server).get('nc:inject')).toBe('here');
    expect(await raw(persistent.server).get('nc:inject')).toBeNull();
    expect(get(RedisConnections).get('volatile').client).toBe(uses.volatileClient);
  });

  it('forRootAsync: connections from the factory, named clients listed in connectionNames', async () => {
    @Module({ providers: [UsesVolatile], exports: [UsesVolatile] })
    class FeatureModule {}
    const moduleRef = await Test.createTestingModule({
      imports: [
        ConfigModule.forRoot({
          ignoreEnvFile: true,
          load: [() => ({ REDIS_URL: persistent.server.url, VOLATILE_URL: volatile.server.url })],
        }),
        RedisToolkitModule.forRootAsync({
          imports: [ConfigModule],
          inject: [ConfigService],
          connectionNames: ['volatile'],
          useFactory: (config: ConfigService) => ({
            connection: { url: config.getOrThrow<string>('REDIS_URL') },
            connections: { volatile: { url: config.getOrThrow<string>('VOLATILE_URL') } },
            keyPrefix: 'ncasync:',
            cache: { connection: 'volatile' },
          }),
        }),
        FeatureModule,
      ],
    }).compile();
    const app = await moduleRef.createNestApplication({ logger: false }).init();
    try {
      await app.get(CacheService).set('k', 1, { ttl: 60_000 });
      expect(await featuresOn(volatile.server, 'ncasync:')).toEqual(new Set(['cache']));
      expect(await featuresOn(persistent.server, 'ncasync:')).toEqual(new Set());
      expect(app.get(UsesVolatile).volatileClient.options.port).toBe(volatile.server.port);
    } finally {
      await app.close();
    }
  });

  it('forRootAsync: a name in connectionNames that the factory does not configure fails the start', async () => {
    const error = await Test.createTestingModule({
      imports: [
        RedisToolkitModule.forRootAsync({
          connectionNames: ['volatile'],
          useFactory: () => ({ connection: { url: persistent.server.url } }),
        }),
      ],
    })
      .compile()
      .then(
        () => undefined,
        (err: unknown) => err,
      );
    expect(error).toBeInstanceOf(InvalidOptionsError);
    expect((error as Error).message).toBe('Unknown Redis connection "volatile": known are "default"');
  });
});
