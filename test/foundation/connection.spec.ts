import 'reflect-metadata';
import { Injectable, Module } from '@nestjs/common';
import { ConfigModule, ConfigService } from '@nestjs/config';
import { Test } from '@nestjs/testing';
import { Redis } from 'ioredis';
import {
  CacheService,
  LockService,
  RateLimitService,
  REDIS_CLIENT,
  RedisToolkitHealth,
  RedisToolkitModule,
  RedisUnavailableError,
  SessionService,
} from '../../lib/index.js';
import { RedisConnection } from '../../lib/advanced.js';
import { LuaScript, type RedisClient } from '../../lib/common/lua-script.js';
import { hashSlot, scanKeys, unlinkMany } from '../../lib/common/bulk-keys.js';
import { commandCalls } from '../support/commandstats.js';
import { startRedisServer, getFreePort, type RedisServerHandle } from '../support/redis-server.js';
import { sharedServers } from '../support/shared-servers.js';
import { closeToolkitApps, createToolkitApp } from '../support/toolkit-app.js';
import { waitFor } from '../support/wait.js';
import { within } from '../support/timing.js';

afterEach(closeToolkitApps);

const echo = new LuaScript<string>('rtk_test_echo', "return 'echo:' .. KEYS[1] .. ':' .. ARGV[1]", 1);

/** EVAL and EVALSHA calls so far, summed over `masters` (INFO commandstats). */
async function scriptCalls(masters: Redis[]): Promise<{ eval: number; evalsha: number }> {
  const total = { eval: 0, evalsha: 0 };
  for (const master of masters) {
    const calls = await commandCalls(master);
    for (const name of ['eval', 'evalsha'] as const) total[name] += calls[name] ?? 0;
  }
  return total;
}

describe.each(['single', 'cluster'] as const)('module on %s', (target) => {
  it('boots, exposes the client under REDIS_CLIENT and reports health', async () => {
    const { get } = await createToolkitApp({ target });
    const client = get<RedisClient>(REDIS_CLIENT);
    await client.set('rtk:test:boot', 'ok');
    expect(await client.get('rtk:test:boot')).toBe('ok');
    const health = await get(RedisToolkitHealth).check();
    expect(health.status).toBe('up');
    expect(health.role).toBe(target === 'cluster' ? 'cluster' : 'master');
    expect(health.redisVersion).toMatch(/^\d+\.\d+/);
    expect(health.usedMemory).toBeGreaterThan(0);
    expect(health.latencyMs).toBeGreaterThanOrEqual(0);
  });

  it('runs a Lua script by EVALSHA and still runs it after SCRIPT FLUSH', async () => {
    const { get } = await createToolkitApp({ target });
    const connection = get(RedisConnection);
    expect(await echo.run(connection.client, ['{t}k'], ['1'])).toBe('echo:{t}k:1');
    await Promise.all((await connection.masters()).map((m) => m.script('FLUSH')));
    expect(await echo.run(connection.client, ['{t}k'], ['2'])).toBe('echo:{t}k:2');
  });

  it('sends every script through one command class, each loaded on its own and run by EVALSHA after', async () => {
    const { get } = await createToolkitApp({ target });
    const connection = get(RedisConnection);
    const shout = new LuaScript<string>('rtk_test_shout', 'return string.upper(ARGV[1]) .. KEYS[1]', 1);
    // One class for all scripts keeps ioredis's Command code monomorphic (lua-script.ts); a class per script did not.
    expect(Object.getPrototypeOf(shout.command(['{t}a'], ['x']))).toBe(
      Object.getPrototypeOf(echo.command(['{t}a'], ['x'])),
    );
    const before = await scriptCalls(await connection.masters());
    const replies = [];
    for (let i = 0; i < 3; i++) {
      replies.push(
        await shout.run(connection.client, ['{t}k'], [`s${i}`]),
        await echo.run(connection.client, ['{t}k'], [`e${i}`]),
      );
    }
    expect(replies).toEqual(['S0{t}k', 'echo:{t}k:e0', 'S1{t}k', 'echo:{t}k:e1', 'S2{t}k', 'echo:{t}k:e2']);
    const after = await scriptCalls(await connection.masters());
    // this app's socket is new: each script goes once as EVAL (loading it), then as EVALSHA
    expect({ eval: after.eval - before.eval, evalsha: after.evalsha - before.evalsha }).toEqual({
      eval: 2,
      evalsha: 4,
    });
  });

  it('scans every master and unlinks across slots in batches; hashSlot agrees with CLUSTER KEYSLOT', async () => {
    const { get } = await createToolkitApp({ target });
    const connection = get(RedisConnection);
    const keys = Array.from({ length: 1200 }, (_, i) => `rtk:bulk:${target}:${i}${i % 3 === 0 ? ':{tag}' : ''}`);
    await Promise.all(keys.map((k) => connection.client.set(k, '1')));
    await connection.client.set('foreign:bulk:1', '1');
    const found: string[] = [];
    for await (const page of scanKeys(connection.client, `rtk:bulk:${target}:*`, 100)) found.push(...page);
    expect(new Set(found)).toEqual(new Set(keys));
    expect(await unlinkMany(connection.client, [...keys, 'rtk:bulk:missing'])).toBe(1200);
    expect(await connection.client.exists('foreign:bulk:1')).toBe(1);
    if (target === 'cluster') {
      const node = (await connection.masters())[0];
      for (const key of ['foo', '{user1000}.following', 'a{}b', 'é{x}', ...keys.slice(0, 20)]) {
        expect(hashSlot(key)).toBe(Number(await node.call('CLUSTER', 'KEYSLOT', key)));
      }
    }
  });
});

describe('forRootAsync', () => {
  it('takes its options from ConfigService and is global', async () => {
    @Injectable()
    class UsesClient {
      constructor(readonly connection: RedisConnection) {}
    }
    @Module({ providers: [UsesClient], exports: [UsesClient] })
    class FeatureModule {}

    const moduleRef = await Test.createTestingModule({
      imports: [
        ConfigModule.forRoot({
          ignoreEnvFile: true,
          load: [() => ({ REDIS_URL: sharedServers().single.url, PREFIX: 'cfg:' })],
        }),
        RedisToolkitModule.forRootAsync({
          imports: [ConfigModule],
          inject: [ConfigService],
          useFactory: (config: ConfigService) => ({
            connection: { url: config.getOrThrow<string>('REDIS_URL') },
            keyPrefix: config.getOrThrow<string>('PREFIX'),
          }),
        }),
        FeatureModule,
      ],
    }).compile();
    const app = await moduleRef.createNestApplication({ logger: false }).init();
    try {
      const connection = app.get(UsesClient).connection;
      expect(connection.status).toBe('ready');
      expect(await connection.client.ping()).toBe('PONG');
    } finally {
      await app.close();
    }
    const connection = app.get(UsesClient).connection;
    expect(await waitFor(() => connection.status === 'end', 1_000)).toBe(true);
  });
});

describe('connection failures', () => {
  let server: RedisServerHandle | undefined;
  afterEach(async () => {
    await closeToolkitApps();
    await server?.stop();
    server = undefined;
  });

  it('fails fast at start when Redis is unreachable, naming the address and the cause', async () => {
    const port = await getFreePort();
    const started = Date.now();
    const error = await createToolkitApp({
      target: { host: '127.0.0.1', port },
      connectTimeout: 500,
      commandTimeout: 300,
    }).then(
      () => undefined,
      (err: unknown) => err,
    );
    const elapsed = Date.now() - started;
    expect(error).toBeInstanceOf(RedisUnavailableError);
    expect((error as Error).message).toContain(`redis://127.0.0.1:${port}`);
    expect((error as Error).message).toMatch(/ECONNREFUSED/);
    expect(elapsed).toBeLessThan(within(500 + 300));
  });

  it('starts without Redis when lazyConnect is set, and works once Redis is there', async () => {
    const port = await getFreePort();
    const { get } = await createToolkitApp({
      target: { host: '127.0.0.1', port },
      lazyConnect: true,
      commandTimeout: 300,
    });
    const health = get(RedisToolkitHealth);
    expect((await health.check()).status).toBe('down');
    server = await startRedisServer({ port });
    await waitFor(async () => (await health.check()).status === 'up', 5_000);
    expect((await health.check()).status).toBe('up');
  });

  it('times a command out on a paused server instead of hanging, and recovers on resume', async () => {
    server = await startRedisServer();
    const commandTimeout = 300;
    const { get } = await createToolkitApp({ target: { url: server.url }, commandTimeout });
    const client = get<RedisClient>(REDIS_CLIENT);
    server.pause();
    const started = Date.now();
    await expect(client.get('k')).rejects.toThrow(/timed out/i);
    const elapsed = Date.now() - started;
    expect(elapsed).toBeGreaterThanOrEqual(commandTimeout * 0.9);
    expect(elapsed).toBeLessThan(within(commandTimeout));
    const health = await get(RedisToolkitHealth).check();
    expect(health.status).toBe('down');
    server.resume();
    await waitFor(async () => (await client.ping().catch(() => 'x')) === 'PONG', 5_000);
    expect(await client.ping()).toBe('PONG');
  });

  it('bounds commands on a cluster that is down too (queued commands time out)', async () => {
    const port = await getFreePort();
    const commandTimeout = 300;
    const { get } = await createToolkitApp({
      target: { cluster: [{ host: '127.0.0.1', port }] },
      lazyConnect: true,
      commandTimeout,
    });
    const started = Date.now();
    await expect(get<RedisClient>(REDIS_CLIENT).get('k')).rejects.toThrow(/timed out/i);
    const elapsed = Date.now() - started;
    expect(elapsed).toBeGreaterThanOrEqual(commandTimeout * 0.9);
    expect(elapsed).toBeLessThan(within(commandTimeout));
  });

  it('fails commands at once while a standalone connection is down, and works again after the restart', async () => {
    server = await startRedisServer();
    // Large, so "at once" (no queueing until the timeout) has a generous margin on a busy machine.
    const commandTimeout = 10_000;
    const { get } = await createToolkitApp({ target: { url: server.url }, commandTimeout, maxReconnectDelay: 200 });
    const client = get<RedisClient>(REDIS_CLIENT);
    await server.kill();
    expect(await waitFor(() => client.status !== 'ready', 2_000)).toBe(true);
    const started = Date.now();
    await expect(client.get('k')).rejects.toThrow();
    expect(Date.now() - started).toBeLessThan(commandTimeout / 2);
    await server.restart();
    expect(await waitFor(async () => (await client.ping().catch(() => null)) === 'PONG', 5_000)).toBe(true);
  });

  it('reconnects to a killed and restarted server without restarting the app', async () => {
    server = await startRedisServer();
    const { get } = await createToolkitApp({
      target: { url: server.url },
      commandTimeout: 300,
      maxReconnectDelay: 200,
    });
    const client = get<RedisClient>(REDIS_CLIENT);
    await client.set('before', '1');
    await server.kill();
    await expect(client.get('before')).rejects.toThrow();
    await server.restart();
    await waitFor(async () => (await client.set('after', '2').catch(() => null)) === 'OK', 5_000);
    expect(await client.get('after')).toBe('2');
  });

  it('quits the connections it created and leaves a client passed in alone', async () => {
    const own = new Redis(sharedServers().single.url, { commandTimeout: 1_000 });
    const { get, close } = await createToolkitApp({ target: { client: own } });
    const connection = get(RedisConnection);
    expect(connection.client).toBe(own);
    const subscriber = connection.createSubscriber();
    await subscriber.subscribe('rtk:test:x');
    await close();
    expect(await waitFor(() => subscriber.status === 'end', 1_000)).toBe(true);
    expect(own.status).toBe('ready');
    expect(await own.ping()).toBe('PONG');
    await own.quit();
  });

  it('registers nothing on a client passed in: every feature runs its scripts by EVALSHA on it as it is', async () => {
    const own = new Redis(sharedServers().single.url, { commandTimeout: 1_000 });
    await own.ping();
    const ownKeysBefore = Object.keys(own).sort();
    const { get, close } = await createToolkitApp({ target: { client: own }, session: {} });
    await get(CacheService).getOrSet('rtk-own-client', async () => 1, { ttl: 5_000, tags: ['own-client'] });
    expect((await get(RateLimitService).consume('own-client', { limit: 2, ttl: 5_000 })).allowed).toBe(true);
    await (await get(LockService).acquire('own-client', { ttl: 5_000 })).release();
    const session = await get(SessionService).create('own-client-user', { a: 1 });
    await get(SessionService).destroy(session.id);
    await close();
    // ioredis defineCommand would have added one method per script to the instance (and to its scriptsSet).
    expect(Object.keys(own).sort()).toEqual(ownKeysBefore);
    expect(Object.keys((own as unknown as { scriptsSet: object }).scriptsSet)).toEqual([]);
    expect(Object.getOwnPropertyNames(own).filter((k) => k.startsWith('rtk_'))).toEqual([]);
    await own.quit();
  });

  it('closes every socket on app.close()', async () => {
    const sockets = () => process.getActiveResourcesInfo().filter((r) => r === 'TCPSocketWrap').length;
    const before = sockets();
    const { get, close } = await createToolkitApp({ target: 'single' });
    await get<RedisClient>(REDIS_CLIENT).ping();
    await get(RedisConnection).createSubscriber().subscribe('rtk:test:y');
    expect(sockets()).toBeGreaterThan(before);
    await close();
    // Other suites' sockets may close meanwhile, so "no more than before" rather than "exactly as before".
    expect(await waitFor(() => sockets() <= before, 2_000)).toBe(true);
  });
});
