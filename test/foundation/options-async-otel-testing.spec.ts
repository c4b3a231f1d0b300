/**
 * The options no start-up check of forRoot's resolver reaches: forRootAsync's own object and the extras of forRoot /
 * forRootAsync (isGlobal, notificationsGateway, connectionNames), RedisToolkitInstrumentation's config and the
 * testing helpers' options. Each is refused with InvalidOptionsError naming the option, before anything starts; the
 * options given rightly still work. (options-everywhere.hostile.spec.ts holds the review's cases; these are the
 * messages, the neighbouring keys and the ways in that were not pinned there.)
 */
import 'reflect-metadata';
import { Injectable, Module } from '@nestjs/common';
import { Test } from '@nestjs/testing';
import { InvalidOptionsError, type RedisToolkitOptions, RedisToolkitModule } from '../../lib/index.js';
import { RedisToolkitInstrumentation } from '../../lib/otel/index.js';
import {
  createRedisTestingModule,
  startRedisCluster,
  startRedisServer,
  testConnection,
} from '../../lib/testing/index.js';
import { errorOf } from '../support/errors.js';

const options = (): RedisToolkitOptions => ({ connection: { url: 'redis://127.0.0.1:1' }, lazyConnect: true });

/** The error `run` throws synchronously, or undefined. */
function thrown(run: () => unknown): unknown {
  try {
    run();
    return undefined;
  } catch (err) {
    return err;
  }
}

function expectRefused(err: unknown, message: RegExp): void {
  expect(err).toBeInstanceOf(InvalidOptionsError);
  expect((err as Error).message).toMatch(message);
}

@Injectable()
class ToolkitConfig {
  create(): RedisToolkitOptions {
    return options();
  }
}

@Module({ providers: [ToolkitConfig], exports: [ToolkitConfig] })
class ConfigModule {}

describe('forRootAsync: its own keys', () => {
  it.each([
    ['isGlobl', { useFactory: options, isGlobl: false }, /- isGlobl is not a known option \(did you mean isGlobal\?\)/],
    [
      'notificationGateway',
      { useFactory: options, notificationGateway: true },
      /- notificationGateway is not a known option \(did you mean notificationsGateway\?\)/,
    ],
    ['useFactroy', { useFactroy: options }, /- useFactroy is not a known option \(did you mean useFactory\?\)/],
    ['no useFactory', { useFactroy: options }, /- useFactory is required \(or useClass, or useExisting\)/],
    ['injects', { useFactory: options, injects: [] }, /- injects is not a known option \(did you mean inject\?\)/],
    // a toolkit option beside useFactory (not returned by it) was dropped
    ['keyPrefix beside useFactory', { useFactory: options, keyPrefix: 'app:' }, /- keyPrefix is not a known option/],
    [
      'useFactory and useClass',
      { useFactory: options, useClass: ToolkitConfig },
      /- useFactory and useClass cannot be given together/,
    ],
    ['useFactory an object', { useFactory: { connection: {} } }, /- useFactory must be a function, got/],
    ['inject a string', { useFactory: options, inject: 'Config' }, /- inject must be an array, got "Config"/],
    ['imports a module', { useFactory: options, imports: ConfigModule }, /- imports must be an array, got a function/],
    [
      'connectionNames with an empty name',
      { useFactory: options, connectionNames: ['volatile', ''] },
      /- connectionNames must be an array of connection names/,
    ],
    [
      'notificationsGateway: 0',
      { useFactory: options, notificationsGateway: 0 },
      /- notificationsGateway must be true, false or \{ namespace/,
    ],
  ])('%s is refused when forRootAsync is called', (_case, given, message) => {
    const err = thrown(() => RedisToolkitModule.forRootAsync(given as never));
    expectRefused(err, /^Invalid RedisToolkitModule\.forRootAsync options:/);
    expectRefused(err, message);
  });

  it('every problem is listed in one error', () => {
    const err = thrown(() => RedisToolkitModule.forRootAsync({ useFactroy: options, isGlobal: 'no' } as never));
    expectRefused(err, /useFactroy is not a known option[\s\S]*isGlobal must be true or false, got "no"/);
  });

  it('no options at all is refused (before: a TypeError inside Nest)', () => {
    expectRefused(
      thrown(() => RedisToolkitModule.forRootAsync(undefined as never)),
      /options are required/,
    );
  });

  it.each([
    ['useFactory with imports and inject', { imports: [ConfigModule], inject: [ToolkitConfig], useFactory: options }],
    ['useClass', { useClass: ToolkitConfig }],
    ['useExisting', { imports: [ConfigModule], useExisting: ToolkitConfig }],
    [
      'provideInjectionTokensFrom',
      { provideInjectionTokensFrom: [ToolkitConfig], inject: [ToolkitConfig], useFactory: options },
    ],
    ['every extra', { useFactory: options, isGlobal: false, notificationsGateway: false, connectionNames: [] }],
  ])('%s compiles', async (_case, given) => {
    const compiled = await Test.createTestingModule({
      imports: [RedisToolkitModule.forRootAsync(given as never)],
    }).compile();
    await compiled.close();
  });
});

describe('forRoot extras', () => {
  it.each([
    ['isGlobal: 1', { isGlobal: 1 }, /- isGlobal must be true or false, got 1/],
    ["connectionNames: 'volatile'", { connectionNames: 'volatile' }, /- connectionNames must be an array/],
    ['notificationsGateway: null', { notificationsGateway: null }, /- notificationsGateway must be true, false or/],
    // before: accepted by forRoot, then refused at start as "not a known option" with no name suggested (the start's
    // check knows only the options, not the extras)
    ['isGlobl', { isGlobl: false }, /- isGlobl is not a known option \(did you mean isGlobal\?\)/],
    [
      'notificationGateway',
      { notificationGateway: true },
      /- notificationGateway is not a known option \(did you mean notificationsGateway\?\)/,
    ],
  ])('%s is refused when forRoot is called', (_case, extra, message) => {
    const err = thrown(() => RedisToolkitModule.forRoot({ ...options(), ...extra } as never));
    expectRefused(err, /^Invalid RedisToolkitModule\.forRoot options:/);
    expectRefused(err, message);
  });

  it('no options at all is refused (before: a TypeError inside Nest)', () => {
    expectRefused(
      thrown(() => RedisToolkitModule.forRoot(undefined as never)),
      /options are required/,
    );
  });

  it('isGlobal given as undefined keeps the default (global), false scopes it', () => {
    expect(RedisToolkitModule.forRoot({ ...options(), isGlobal: undefined }).global).toBe(true);
    expect(RedisToolkitModule.forRootAsync({ useFactory: options, isGlobal: undefined }).global).toBe(true);
    expect(RedisToolkitModule.forRoot({ ...options(), isGlobal: false }).global).toBe(false);
    expect(RedisToolkitModule.forRootAsync({ useFactory: options, isGlobal: false }).global).toBe(false);
  });
});

describe('RedisToolkitInstrumentation config', () => {
  it('a wrong key or type is refused by the constructor and by setConfig, which keeps the config it had', () => {
    expectRefused(
      thrown(() => new RedisToolkitInstrumentation({ metric: false, enabled: false } as never)),
      /^Invalid RedisToolkitInstrumentation options:\n {2}- metric is not a known option \(did you mean metrics\?\)/,
    );
    expectRefused(
      thrown(() => new RedisToolkitInstrumentation('off' as never)),
      /config must be an object/,
    );
    const instrumentation = new RedisToolkitInstrumentation({ enabled: false, traces: false });
    try {
      expectRefused(
        thrown(() => instrumentation.setConfig({ traces: 0, commandDurations: false } as never)),
        /commandDurations is not a known option[\s\S]*traces must be true or false, got 0/,
      );
      expect(instrumentation.getConfig()).toEqual({
        enabled: false,
        traces: false,
        metrics: true,
        commandDuration: true,
      });
      instrumentation.setConfig({ metrics: false });
      expect(instrumentation.getConfig()).toEqual({
        enabled: true,
        traces: true,
        metrics: false,
        commandDuration: true,
      });
    } finally {
      instrumentation.disable();
    }
  });
});

describe('testing helpers', () => {
  it.each([
    ['a number', 6379, /redis must be a server or cluster .*, got a number$/],
    ['null', null, /redis must be .*, got null$/],
    // the url is not shown: it may hold a password
    ['a url', 'redis://:secret@127.0.0.1:1', /got a string \(a url goes in \{ url \}\)$/],
  ])('testConnection(%s) is refused naming redis', (_case, redis, message) => {
    const err = thrown(() => testConnection(redis as never));
    expectRefused(err, message);
    expect((err as Error).message).not.toContain('secret');
  });

  it('createRedisTestingModule refuses a toolkit that is not an object, and no options at all', () => {
    expectRefused(
      thrown(() => createRedisTestingModule({ redis: { url: 'redis://127.0.0.1:1' }, toolkit: 'x:' as never })),
      /toolkit must be an object, got a string/,
    );
    expectRefused(
      thrown(() => createRedisTestingModule(undefined as never)),
      /needs \{ redis, \.\.\. \}/,
    );
  });

  it.each([
    ['aclUser.pasword', { aclUser: { name: 'a', pasword: 'pw' } }, /aclUser: pasword is not a known option \(did/],
    ['no aclUser.password', { aclUser: { name: 'app' } }, /aclUser\.password must be a non-empty string, got null/],
    ['password: 1234', { password: 1234 }, /password must be a non-empty string, got a number/],
    ['args a string', { args: '--maxmemory 8mb' }, /args must be an array of strings, got "--maxmemory 8mb"/],
    ["cluster: 'yes'", { cluster: 'yes' }, /cluster must be true or false, got "yes"/],
    ['port: 70000', { port: 70_000 }, /port must be an integer from 1 to 65535, got 70000/],
    ['port: 6379', { port: 6379 }, /refusing to start a test server on port 6379/],
  ])('startRedisServer with %s is refused before anything starts', async (_case, given, message) => {
    const started = await startRedisServer(given as never).then(
      async (server) => {
        await server.stop();
        return server;
      },
      (err: unknown) => err,
    );
    expectRefused(started, message);
    expect((started as Error).message).not.toContain('1234');
  });

  it.each([
    ["masters: '3'", { masters: '3' }, /masters must be an integer >= 3 \(redis-cli needs 3\), got "3"/],
    ['masters: 2', { masters: 2 }, /masters must be an integer >= 3/],
    ['replicasPerMaster: -1', { replicasPerMaster: -1 }, /replicasPerMaster must be an integer >= 0, got -1/],
    [
      'replicas',
      { replicas: 1 },
      /startRedisCluster: replicas is not a known option; known: masters, replicasPerMaster/,
    ],
  ])('startRedisCluster with %s is refused before any node starts', async (_case, given, message) => {
    expectRefused(await errorOf(() => startRedisCluster(given as never)), message);
  });
});
