import 'reflect-metadata';
import { inspect } from 'node:util';
import { type LoggerService, Module } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { Test } from '@nestjs/testing';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import {
  CacheService,
  InvalidOptionsError,
  REDIS_CLIENT,
  RedisToolkitModule,
  type RedisToolkitOptions,
} from '../../lib/index.js';
import { JsonSerializer } from '../../lib/advanced.js';
import { resolveToolkitOptions } from '../../lib/redis-toolkit.options-resolver.js';
import { trackForCleanup } from '../support/private-servers.js';
import { startRedisServer } from '../support/redis-server.js';
import { sharedServers } from '../support/shared-servers.js';
import { closeToolkitApps, connectionFor, createToolkitApp } from '../support/toolkit-app.js';

/** The InvalidOptionsError the options raise (validation only: nothing connects). */
function optionsError(options: unknown): InvalidOptionsError {
  try {
    resolveToolkitOptions(options as RedisToolkitOptions);
  } catch (err) {
    expect(err).toBeInstanceOf(InvalidOptionsError);
    return err as InvalidOptionsError;
  }
  throw new Error('expected InvalidOptionsError');
}

/** Every rendering of the error a log or a crash report could show. */
function renderings(err: Error): string[] {
  return [err.message, String(err.stack), String(err), inspect(err, { depth: null }), JSON.stringify(err)];
}

const SECRET = 'S3cretPw';
/** The bytes of the secret as a Buffer's JSON shows them (`"data":[83,51,...]`). */
const SECRET_BYTES = [...Buffer.from(SECRET)].join(',');

function expectNoSecret(err: Error, secret = SECRET): void {
  for (const text of renderings(err)) {
    expect(text).not.toContain(secret);
    expect(text.replace(/\s/g, '')).not.toContain(SECRET_BYTES);
  }
}

describe('a password is never printed in an option error', () => {
  // Unparseable urls (nothing connects, old code and new): the error shows them masked from '//' to the last '@'.
  it.each([
    ['a port out of range', `redis://app:${SECRET}@127.0.0.1:99999`, 'redis://***@127.0.0.1:99999'],
    ['a port that is not a number', `redis://app:${SECRET}@127.0.0.1:70a0`, 'redis://***@127.0.0.1:70a0'],
    ['a host with a space', `redis://app:${SECRET}@my host:7000`, 'redis://***@my host:7000'],
    ['a raw # in the password', 'redis://app:S3c#retPw@127.0.0.1:7000', 'redis://***@127.0.0.1:7000'],
    ['a raw / in the password', 'redis://app:S3c/retPw@127.0.0.1:7000', 'redis://***@127.0.0.1:7000'],
    ['a raw ? in the password', 'redis://app:S3c?retPw@127.0.0.1:7000', 'redis://***@127.0.0.1:7000'],
  ])('connection.url with %s', (_, url, masked) => {
    const secret = url.slice(url.indexOf('app:') + 4, url.lastIndexOf('@'));
    const err = optionsError({ connection: { url } });
    expect(err.message).toContain(`connection.url is not a valid URL: ${JSON.stringify(masked)}`);
    expectNoSecret(err, secret);
  });

  // A newcomer's REDIS_URL=127.0.0.1:6379 (no scheme): the message named the value only (2026-12-06), now the form.
  it('connection.url without a scheme names the form a url takes', () => {
    const err = optionsError({ connection: { url: '127.0.0.1:40105' } });
    expect(err.message).toContain(
      'connection.url is not a valid URL: "127.0.0.1:40105" (expected redis://[user:password@]host:port[/db], ' +
        'rediss:// for TLS)',
    );
  });

  // These parse (the password's digits before a raw '/', '?' or '#' become the port) and would connect to host `app`.
  it.each([
    ['/', `redis://app:1234/${SECRET}@127.0.0.1:7000`],
    ['?', `redis://app:1234?${SECRET}@127.0.0.1:7000`],
    ['#', `redis://app:1234#${SECRET}@127.0.0.1:7000`],
  ])('a url whose password has digits then a raw %s is refused, masked', (_, url) => {
    const err = optionsError({ connection: { url } });
    expect(err.message).toContain('connection.url has an @ after the host');
    expect(err.message).toContain('"redis://***@127.0.0.1:7000"');
    expectNoSecret(err, '1234');
    expectNoSecret(err);
  });

  it.each([
    ['a number', 918_273_645, 'a number'],
    ['a Buffer', Buffer.from(SECRET), 'a Buffer'],
    ['an object', { secret: SECRET }, 'an object'],
    ['an array of its characters', [...SECRET], 'an array'],
  ])('a password given as %s: only its type is shown', (_, password, kind) => {
    const err = optionsError({ connection: { host: '127.0.0.1', port: 7000, password } });
    expect(err.message).toContain(`connection.password must be a string, got ${kind}`);
    expectNoSecret(err, typeof password === 'number' ? String(password) : SECRET);
  });

  it('a sentinelPassword that is not a string: only its type is shown', () => {
    const err = optionsError({
      connection: { sentinels: [{ host: '127.0.0.1', port: 26_000 }], name: 'm', sentinelPassword: 918_273_645 },
    });
    expect(err.message).toContain('connection.sentinelPassword must be a string, got a number');
    expectNoSecret(err, '918273645');
  });

  it('a url given as a URL object, or a connection given as a url string: only the type is shown', () => {
    const asObject = optionsError({ connection: { url: new URL(`redis://app:${SECRET}@127.0.0.1:7000`) } });
    expect(asObject.message).toContain('connection.url must be a non-empty string, got a URL');
    expectNoSecret(asObject);
    const asString = optionsError({ connection: `redis://app:${SECRET}@127.0.0.1:7000` });
    expect(asString.message).toContain('connection must be an object such as { url }, got a string');
    expectNoSecret(asString);
  });

  it('named connections and lock quorum nodes are masked the same way', () => {
    const url = `redis://app:${SECRET}@127.0.0.1:99999`;
    const err = optionsError({
      connection: { host: '127.0.0.1', port: 7000 },
      connections: { sessions: { url }, other: url },
      lock: { quorum: { nodes: [{ url }, { host: '127.0.0.1', port: 7001, password: 918_273_645 }, url] } },
    });
    expect(err.message).toContain('connections.sessions.url is not a valid URL: "redis://***@127.0.0.1:99999"');
    expect(err.message).toContain('connections.other must be an object such as { url }, got a string');
    expect(err.message).toContain('lock.quorum.nodes[0].url is not a valid URL: "redis://***@127.0.0.1:99999"');
    expect(err.message).toContain('lock.quorum.nodes[1].password must be a string, got a number');
    expect(err.message).toContain('lock.quorum.nodes[2] must be an object such as { url }, got a string');
    expectNoSecret(err);
    expectNoSecret(err, '918273645');
  });

  it('what Nest logs when the app refuses to start holds no password', async () => {
    const logged: string[] = [];
    const capture = (...args: unknown[]) => {
      logged.push(args.map((a) => (a instanceof Error ? renderings(a).join('\n') : inspect(a))).join(' '));
    };
    const logger: LoggerService = { log: capture, error: capture, warn: capture, debug: capture, verbose: capture };
    @Module({ imports: [RedisToolkitModule.forRoot({ connection: { url: `redis://app:${SECRET}@127.0.0.1:99999` } })] })
    class AppModule {}
    const error = await NestFactory.createApplicationContext(AppModule, { logger, abortOnError: false }).then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(error).toBeInstanceOf(InvalidOptionsError);
    expectNoSecret(error as Error);
    expect(logged.join('\n')).toContain('connection.url is not a valid URL: "redis://***@127.0.0.1:99999"');
    expect(logged.join('\n')).not.toContain(SECRET);
  });
});

describe('the db of a url', () => {
  afterEach(closeToolkitApps);

  it.each(['/abc', '/-1', '/16000', '/01', '/1.5', '/2/', '//0', '/0x1', '/%32'])('a url path %s is refused', (p) => {
    const err = optionsError({ connection: { url: `redis://127.0.0.1:7000${p}` } });
    expect(err.message).toContain(
      `connection.url has a path that is not a db index from 0 to 15999 (redis://host:port/db): "redis://127.0.0.1:7000${p}"`,
    );
  });

  it.each(['', '/', '/0', '/15', '/15999'])('a url path %j is accepted', (p) => {
    expect(() => resolveToolkitOptions({ connection: { url: `redis://127.0.0.1:7000${p}` } })).not.toThrow();
  });

  it('the same for connections and lock quorum nodes, the password masked', () => {
    const err = optionsError({
      connection: { host: '127.0.0.1', port: 7000 },
      connections: { sessions: { url: `redis://app:${SECRET}@127.0.0.1:7000/abc` } },
      lock: { quorum: { nodes: [{ url: 'redis://127.0.0.1:7001/-1' }] } },
    });
    expect(err.message).toContain('connections.sessions.url has a path that is not a db index');
    expect(err.message).toContain('"redis://app:***@127.0.0.1:7000/abc"');
    expect(err.message).toContain('lock.quorum.nodes[0].url has a path that is not a db index');
    expectNoSecret(err);
  });

  it('an app whose url path is no db refuses to start instead of running on db 0; a db path is selected', async () => {
    const { url } = sharedServers().single;
    await expect(createToolkitApp({ target: { url: `${url}/abc` } })).rejects.toThrow(InvalidOptionsError);
    const app = await createToolkitApp({ target: { url: `${url}/3` } });
    const info = await app.get<Redis>(REDIS_CLIENT).call('CLIENT', 'INFO');
    expect(String(info)).toMatch(/ db=3 /);
  });
});

describe('a url without a host', () => {
  // Validation only: before the fix these validated and connected to 127.0.0.1:6379, which no test may reach.
  it.each(['redis://', 'redis:///0', 'rediss:///0', 'redis:///tmp/redis.sock', 'redis:foo'])(
    '%s is refused, never a silent 127.0.0.1:6379',
    (url) => {
      const err = optionsError({ connection: { url } });
      expect(err.message).toContain(`connection.url names no host (redis://host:port/db): ${JSON.stringify(url)}`);
      expect(err.message).toContain('a unix socket needs a client of your own: pass it as { client }');
      // The host problem alone: a socket path is not also reported as a bad db.
      expect(err.message.split('\n')).toHaveLength(2);
    },
  );

  it('a unix socket works as the docs say: a client of your own passed as { client }', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'rtk-sock-'));
    try {
      const path = join(dir, 'redis.sock');
      trackForCleanup(await startRedisServer({ args: ['--unixsocket', path, '--unixsocketperm', '700'] }));
      const client = trackForCleanup(new Redis({ path, commandTimeout: 1_000 }));
      const app = await createToolkitApp({ target: { client } });
      expect(await client.dbsize()).toBe(0);
      await app.get(CacheService).set('unix-socket-check', 42);
      expect(await app.get(CacheService).get('unix-socket-check')).toBe(42);
      expect(await client.dbsize()).toBeGreaterThan(0);
      expect(String(await client.call('CLIENT', 'INFO'))).toContain(' flags=U '); // U: a unix socket client
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('for named connections and lock quorum nodes too', () => {
    const err = optionsError({
      connection: { host: '127.0.0.1', port: 7000 },
      connections: { sessions: { url: 'redis:///1' } },
      lock: { quorum: { nodes: [{ url: 'redis://' }] } },
    });
    expect(err.message).toContain('connections.sessions.url names no host');
    expect(err.message).toContain('lock.quorum.nodes[0].url names no host');
  });
});

describe('a url user name or password that is not percent-encoded', () => {
  afterEach(closeToolkitApps);
  const ENCODE = 'is not valid percent-encoding: write a % in it as %25';

  it('a raw % in the password stops the start with InvalidOptionsError, not a URIError from ioredis', async () => {
    const { port } = sharedServers().single;
    const error = await createToolkitApp({ target: { url: `redis://app:p@ss%w0rd@127.0.0.1:${port}` } }).then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(error).toBeInstanceOf(InvalidOptionsError);
    expect((error as Error).message).toContain(
      `connection.url has a user name or password that ${ENCODE} (a /, ?, # or @ as %2F, %3F, %23, %40): ` +
        `"redis://app:***@127.0.0.1:${port}"`,
    );
    expectNoSecret(error as Error, 'ss%w0rd');
    expectNoSecret(error as Error, 'p%40ss');
  });

  it.each([
    ['connection', { connection: { url: `redis://us%er:${SECRET}@127.0.0.1:7000` } }, 'connection.url'],
    [
      'a quorum node',
      {
        connection: { host: '127.0.0.1', port: 7000 },
        lock: { quorum: { nodes: [{ url: `redis://:${SECRET}%@127.0.0.1:7001` }] } },
      },
      'lock.quorum.nodes[0].url',
    ],
  ])('in the user name or at the end of the password of %s', (_, options, path) => {
    const err = optionsError(options);
    expect(err.message).toContain(`${path} has a user name or password that ${ENCODE}`);
    expectNoSecret(err);
  });

  it('a percent-encoded password is accepted', () => {
    expect(() =>
      resolveToolkitOptions({ connection: { url: 'redis://app:p%40ss%25w0rd%2F%3F%23@127.0.0.1:7000' } }),
    ).not.toThrow();
  });
});

describe('lock.quorum.nodes entries are checked for unknown keys like connection', () => {
  afterEach(closeToolkitApps);

  it.each([
    [{ host: '10.0.0.1', prot: 7001 }, 'prot', 'port'],
    [{ host: '10.0.0.1', port: 7001, tsl: { ca: 'x' } }, 'tsl', 'tls'],
    [{ url: 'redis://10.0.0.1:7001', passwrod: 'x' }, 'passwrod', 'password'],
  ])('%j', (node, key, near) => {
    const err = optionsError({
      connection: { host: '127.0.0.1', port: 7000 },
      lock: { quorum: { nodes: [{ url: 'redis://10.0.0.2:7002' }, node] } },
    });
    expect(err.message).toContain(
      `lock.quorum.nodes[1].${key} is not a known option (did you mean lock.quorum.nodes[1].${near}?)`,
    );
    expect(err.message.split('\n')).toHaveLength(2);
  });

  it('an app whose quorum node has a misspelled option refuses to start (it ran without the option)', async () => {
    const [a, b, c] = sharedServers().quorum;
    const nodes = [{ url: a.url }, { url: b.url }, { host: c.host, port: c.port, tsl: true }];
    const error = await createToolkitApp({ lock: { quorum: { nodes } } }).then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(error).toBeInstanceOf(InvalidOptionsError);
    expect((error as Error).message).toContain('lock.quorum.nodes[2].tsl is not a known option');
  });
});

describe('options given as class instances are checked for unknown keys too', () => {
  afterEach(closeToolkitApps);

  class ConnectionConfig {
    constructor(readonly url: string) {}
  }

  it.each(['single', 'cluster'] as const)(
    'a forRootAsync factory returning an instance with a misspelled option stops the start (%s)',
    async (target) => {
      class ToolkitConfig {
        readonly connection = connectionFor(target);
        readonly comandTimeout = 1;
      }
      const moduleRef = Test.createTestingModule({
        imports: [RedisToolkitModule.forRootAsync({ useFactory: () => new ToolkitConfig() as RedisToolkitOptions })],
      });
      const error = await moduleRef.compile().then(
        async (compiled) => {
          await compiled.close();
          return undefined;
        },
        (err: unknown) => err,
      );
      expect(error).toBeInstanceOf(InvalidOptionsError);
      expect((error as Error).message).toContain('comandTimeout is not a known option (did you mean commandTimeout?)');
    },
  );

  it('nested instances, and quorum nodes given as instances, are checked; clients and serializers are not walked', () => {
    class CacheConfig {
      defaulTtl = 5_000;
    }
    class Node {
      constructor(
        readonly host: string,
        readonly prot: number,
      ) {}
    }
    const err = optionsError({
      connection: new ConnectionConfig('redis://127.0.0.1:7000'),
      cache: new CacheConfig(),
      lock: { quorum: { nodes: [new Node('10.0.0.1', 7001)] } },
    });
    expect(err.message).toContain('cache.defaulTtl is not a known option (did you mean cache.defaultTtl?)');
    expect(err.message).toContain('lock.quorum.nodes[0].prot is not a known option');
    expect(err.message.split('\n')).toHaveLength(3);
    const client = new Redis({ lazyConnect: true, port: 7000, commandTimeout: 1_000 });
    expect(() =>
      resolveToolkitOptions({
        connection: { client },
        connections: { other: new ConnectionConfig('redis://127.0.0.1:7001') },
        serializer: new JsonSerializer(),
      }),
    ).not.toThrow();
    client.disconnect();
  });
});

describe('options that contradict each other, or the url, are refused naming both', () => {
  afterEach(closeToolkitApps);
  const OTHER = 'OtherPw9';

  it('a db in the url path and a different db option: refused at start (the url used to win); the same db is fine', async () => {
    const { url } = sharedServers().single;
    const error = await createToolkitApp({ target: { url: `${url}/2`, db: 5 } }).then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(error).toBeInstanceOf(InvalidOptionsError);
    expect((error as Error).message).toContain('connection.db is 5 but connection.url selects db 2: give the db once');
    const app = await createToolkitApp({ target: { url: `${url}/2`, db: 2 } });
    expect(String(await app.get<Redis>(REDIS_CLIENT).call('CLIENT', 'INFO'))).toMatch(/ db=2 /);
  });

  it.each([
    [
      'a password in the url and another as an option',
      { url: `redis://:${SECRET}@10.0.0.1:7000`, password: OTHER },
      'password',
    ],
    [
      'a user in the url and another as an option',
      { url: `redis://app:${SECRET}@10.0.0.1:7000`, username: 'other' },
      'username',
    ],
    [
      'a user but no password in the url, and a password option',
      { url: 'redis://app@10.0.0.1:7000', password: OTHER },
      'password',
    ],
    [
      'a password in the url and a user option',
      { url: `redis://:${SECRET}@10.0.0.1:7000`, username: 'app' },
      'username',
    ],
  ])('%s', (_, connection, key) => {
    const err = optionsError({ connection });
    expect(err.message).toContain(
      `connection.${key} and the ${key === 'password' ? 'password' : 'user name'} in connection.url differ`,
    );
    expectNoSecret(err);
    expectNoSecret(err, OTHER);
  });

  it('credentials given once, in the url or as options, or the same in both, are accepted', () => {
    for (const connection of [
      { url: `redis://app:${SECRET}@10.0.0.1:7000` },
      { url: 'redis://10.0.0.1:7000', username: 'app', password: SECRET },
      { url: `redis://app:${SECRET}@10.0.0.1:7000`, username: 'app', password: SECRET },
      { url: 'redis://app:p%40ss@10.0.0.1:7000', password: 'p@ss' },
    ]) {
      expect(() => resolveToolkitOptions({ connection })).not.toThrow();
    }
  });

  it('url query parameters ioredis would apply over the toolkit settings stop the start; family is taken', async () => {
    const { url } = sharedServers().single;
    const error = await createToolkitApp({
      target: { url: `${url}?enableOfflineQueue=true&commandTimeout=999999&password=${SECRET}` },
    }).then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(error).toBeInstanceOf(InvalidOptionsError);
    expect((error as Error).message).toContain(
      'connection.url has query parameters that ioredis would apply over the options: ' +
        'enableOfflineQueue, commandTimeout, password',
    );
    expectNoSecret(error as Error);
    const app = await createToolkitApp({ target: { url: `${url}?family=4` } });
    expect(await app.get<Redis>(REDIS_CLIENT).ping()).toBe('PONG');
  });

  it.each([
    ['?family=5', 'connection.url query parameter family must be 0, 4 or 6'],
    ['?family=', 'connection.url query parameter family must be 0, 4 or 6'],
    ['?family=4&db=3', 'connection.url has query parameters that ioredis would apply over the options: db;'],
    ['?keyPrefix=x&stringNumbers=true', 'would apply over the options: keyPrefix, stringNumbers;'],
  ])('url query %s is refused', (query, message) => {
    const err = optionsError({ connection: { url: `redis://10.0.0.1:7000${query}` } });
    expect(err.message).toContain(message);
    expect(err.message.split('\n')).toHaveLength(2);
  });

  it('options passed with { client } stop the start (the client is used as it is)', async () => {
    const client = trackForCleanup(new Redis(sharedServers().single.url, { commandTimeout: 1_000 }));
    const error = await createToolkitApp({ target: { client, db: 4, password: SECRET } as never }).then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(error).toBeInstanceOf(InvalidOptionsError);
    const message = (error as Error).message;
    expect(message).toContain('connection.db cannot be used with client: the client you pass is used as it is');
    expect(message).toContain('connection.password cannot be used with client');
    expectNoSecret(error as Error);
  });

  it('sentinel options without sentinels, cluster options without a cluster, db with a cluster', async () => {
    const { host, port } = sharedServers().single;
    const error = await createToolkitApp({ target: { host, port, sentinelPassword: SECRET } as never }).then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(error).toBeInstanceOf(InvalidOptionsError);
    expect((error as Error).message).toContain('connection.sentinelPassword is for sentinels: give it with sentinels');
    expectNoSecret(error as Error);

    const err = optionsError({
      connection: { url: 'redis://10.0.0.1:7000', name: 'mymaster', sentinelUsername: 's', clusterOptions: {} },
      connections: {
        c: { cluster: [{ host: '10.0.0.1', port: 7000 }], db: 1, sentinelTls: true },
        s: { sentinels: [{ host: '10.0.0.1', port: 26_379 }], name: 'm', clusterOptions: {} },
      },
    });
    const lines = err.message.split('\n').slice(1);
    expect(lines).toEqual([
      '  - connection.name is for sentinels: give it with sentinels',
      '  - connection.sentinelUsername is for sentinels: give it with sentinels',
      '  - connection.clusterOptions is for a cluster: give it with cluster',
      '  - connections.c.sentinelTls is for sentinels: give it with sentinels',
      '  - connections.c.db cannot be used with a cluster (it has only db 0)',
      '  - connections.s.clusterOptions is for a cluster: give it with cluster',
    ]);
  });
});
