import { InvalidOptionsError, RedisToolkitModule } from '../../lib/index.js';
import { resolveToolkitOptions } from '../../lib/redis-toolkit.options-resolver.js';
import { Module } from '@nestjs/common';
import { Test } from '@nestjs/testing';
import { Cluster, Redis } from 'ioredis';
import type { RedisToolkitOptions } from '../../lib/index.js';

function problemsOf(options: unknown): string {
  try {
    resolveToolkitOptions(options as RedisToolkitOptions);
  } catch (err) {
    expect(err).toBeInstanceOf(InvalidOptionsError);
    expect((err as InvalidOptionsError).code).toBe('E_INVALID_OPTIONS');
    return (err as Error).message;
  }
  throw new Error('expected InvalidOptionsError');
}

describe('option validation', () => {
  it.each([
    [
      { connection: { url: 'redis://a:1', cluster: [{ host: 'a', port: 1 }] } },
      /connection must give only one of .*got url\/host\/port and cluster/,
    ],
    [{ connection: { host: 'a', port: 70_000 } }, /connection\.port must be an integer from 1 to 65535, got 70000/],
    [{ connection: { url: 'http://x:1' } }, /connection\.url must start with redis:\/\/ or rediss:\/\/, got http:/],
    [{ connection: { url: 'not a url' } }, /connection\.url is not a valid URL/],
    [{ connection: { cluster: [] } }, /connection\.cluster must be a non-empty array/],
    [{ connection: { cluster: [{ host: 'a' }] } }, /connection\.cluster\[0\]\.port is required/],
    [{ connection: { sentinels: [{ host: 'a', port: 1 }] } }, /connection\.name is required with sentinels/],
    [{ connection: { client: {} } }, /connection\.client must be an ioredis Redis or Cluster instance/],
    [{}, /connection is required/],
    [
      { connection: { url: 'redis://a:1' }, commandTimeout: -1 },
      /commandTimeout must be a positive number of milliseconds, got -1/,
    ],
    [
      { connection: { url: 'redis://a:1' }, cache: { defaultTtl: -5 } },
      /cache\.defaultTtl must be a positive number of milliseconds, got -5/,
    ],
    [
      { connection: { url: 'redis://a:1' }, cache: { l1: { max: 0, ttl: 10 } } },
      /cache\.l1\.max must be an integer from 1/,
    ],
    [
      { connection: { url: 'redis://a:1' }, rateLimit: { defaults: { limit: 5, ttl: 1000, algorithm: 'leaky' } } },
      /rateLimit\.defaults\.algorithm must be one of/,
    ],
    [{ connection: { url: 'redis://a:1' }, lock: { ttl: 0 } }, /lock\.ttl must be a positive number/],
    [
      { connection: { url: 'redis://a:1' }, serializer: { serialize: 1 } },
      /serializer must have serialize\(value\) and deserialize\(raw\) functions/,
    ],
  ])('%j is refused with a message naming the option', (options, message) => {
    expect(problemsOf(options)).toMatch(message);
  });

  it('lists every problem at once', () => {
    const message = problemsOf({ connection: { host: 'a', port: 0 }, commandTimeout: 'fast', session: { ttl: -1 } });
    expect(message.split('\n').filter((l) => l.startsWith('  - '))).toEqual([
      '  - connection.port must be an integer from 1 to 65535, got 0',
      '  - commandTimeout must be a positive number of milliseconds, got "fast"',
      '  - session.ttl must be a positive number of milliseconds, got -1',
    ]);
  });

  it('refuses a client of your own without commandTimeout: on a paused server every call would wait without end', () => {
    // The toolkit's commandTimeout applies to the clients it creates; a { client } is used as it is. Until 2026-12-03
    // one without a timeout was taken, and a paused server (SIGSTOP) held every call of every feature on it.
    const bare = new Redis({ lazyConnect: true });
    const cluster = new Cluster([{ host: '127.0.0.1', port: 1 }], { lazyConnect: true });
    const timed = new Redis({ lazyConnect: true, commandTimeout: 500 });
    const timedCluster = new Cluster([{ host: '127.0.0.1', port: 1 }], {
      lazyConnect: true,
      redisOptions: { commandTimeout: 500 },
    });
    try {
      expect(problemsOf({ connection: { client: bare } })).toMatch(
        /connection\.client has no commandTimeout: .*new Redis\(url, \{ commandTimeout: 1000 \}\)/,
      );
      expect(problemsOf({ connection: { url: 'redis://a:1' }, connections: { s: { client: bare } } })).toMatch(
        /connections\.s\.client has no commandTimeout/,
      );
      expect(problemsOf({ connection: { client: cluster } })).toMatch(
        /connection\.client has no commandTimeout: .*redisOptions: \{ commandTimeout: 1000 \}/,
      );
      for (const client of [timed, timedCluster]) {
        expect(resolveToolkitOptions({ connection: { client } }).connection).toMatchObject({ client });
      }
    } finally {
      for (const client of [bare, cluster, timed, timedCluster]) client.disconnect();
    }
  });

  it('fills defaults in one place', () => {
    const resolved = resolveToolkitOptions({ connection: { url: 'redis://127.0.0.1:1' } });
    expect(resolved).toMatchObject({ keyPrefix: 'rtk:', commandTimeout: 1000, lazyConnect: false });
    expect(resolved.cache.defaultTtl).toBe(60_000);
    expect(resolved.rateLimit.failOpen).toBe(true);
  });

  it('fails the bootstrap of an app with bad options, before connecting', async () => {
    // compile() builds providers but connects nothing (that is init): rejecting here is "before connecting".
    await expect(
      Test.createTestingModule({
        imports: [RedisToolkitModule.forRoot({ connection: { url: 'redis://127.0.0.1:1', port: 99999 } as never })],
      }).compile(),
    ).rejects.toThrow(/connection give either url or host\/port, not both/);
  });
});

describe('unknown option keys and a missing connection target', () => {
  const url = 'redis://127.0.0.1:1';

  it('a misspelled option at the top is listed with the other problems, naming the nearest known name', () => {
    const message = problemsOf({
      connection: { url },
      commandTimout: 5,
      keyPrefix: 7,
      cache: { defaultTtl: -1 },
      lock: { ttl: 'x' },
    });
    expect(message).toMatch(/^Invalid RedisToolkitModule options:/);
    expect(message).toMatch(/commandTimout is not a known option \(did you mean commandTimeout\?\)/);
    expect(message).toMatch(/keyPrefix must be a string/);
    expect(message).toMatch(/cache\.defaultTtl must be a positive number/);
    expect(message).toMatch(/lock\.ttl must be a positive number/);
    expect(message.split('\n').filter((l) => l.startsWith('  - '))).toHaveLength(4);
  });

  it.each([
    [{ connection: { url, passwrd: 'x' } }, 'connection.passwrd', 'connection.password'],
    [{ connection: { url }, cache: { l1: { max: 10, ttl: 1_000, maxx: 3 } } }, 'cache.l1.maxx', 'cache.l1.max'],
    [
      { connection: { url }, rateLimit: { defaults: { limit: 1, ttl: 1_000, algoritm: 'x' } } },
      'rateLimit.defaults.algoritm',
      'rateLimit.defaults.algorithm',
    ],
    [{ connection: { url }, session: { cookie: { secrte: 's' } } }, 'session.cookie.secrte', 'session.cookie.secret'],
    [{ connection: { url }, lock: { retry: { cout: 1 } } }, 'lock.retry.cout', 'lock.retry.count'],
    [
      { connection: { url }, pubsub: { gateway: { publicChanels: [] } } },
      'pubsub.gateway.publicChanels',
      'pubsub.gateway.publicChannels',
    ],
  ])('at any depth: %j', (options, path, near) => {
    const message = problemsOf(options);
    expect(message).toContain(`${path} is not a known option (did you mean ${near}?)`);
  });

  it('an unknown key far from every name is reported without a guess; values we do not own are not looked into', () => {
    expect(problemsOf({ connection: { url }, zzzzzzzz: 1 })).toMatch(/zzzzzzzz is not a known option$/m);
    // tls options and a serializer instance belong to node and the user: their keys are not ours to check.
    expect(() =>
      resolveToolkitOptions({ connection: { url, tls: { servername: 'x', rejectUnauthorized: false } } }),
    ).not.toThrow();
  });

  it.each([[{}], [{ url: undefined }], [{ url: process.env.RTK_SURELY_UNSET_VARIABLE }]])(
    'connection %j names no server: an error, not a silent 127.0.0.1:6379',
    (connection) => {
      expect(problemsOf({ connection })).toMatch(/connection names no server/);
    },
  );
});

describe('one global toolkit per application', () => {
  // compile() builds the providers and connects nothing: the refusal comes before any connection.
  const url = 'redis://127.0.0.1:1';
  const compile = (imports: unknown[]) =>
    Test.createTestingModule({ imports: imports as never[] })
      .compile()
      .then(
        async (compiled) => {
          await compiled.close();
          return undefined;
        },
        (err: unknown) => err,
      );

  // Before: both started, each with its own connections, and a feature module's class got whichever toolkit Nest
  // found first.
  it('refuses forRoot imported twice (root and feature module), and forRoot beside forRootAsync', async () => {
    @Module({ imports: [RedisToolkitModule.forRoot({ connection: { url }, keyPrefix: 'feature:' })] })
    class FeatureModule {}
    const twice = await compile([RedisToolkitModule.forRoot({ connection: { url } }), FeatureModule]);
    expect(twice).toBeInstanceOf(InvalidOptionsError);
    expect((twice as Error).message).toMatch(/RedisToolkitModule is imported 2 times as a global module/);
    expect((twice as Error).message).toMatch(/isGlobal: false/);

    const mixed = await compile([
      RedisToolkitModule.forRoot({ connection: { url } }),
      RedisToolkitModule.forRootAsync({ useFactory: () => ({ connection: { url }, keyPrefix: 'b:' }) }),
    ]);
    expect(mixed).toBeInstanceOf(InvalidOptionsError);
  });

  it('accepts a second toolkit with isGlobal: false, scoped to the module that imports it', async () => {
    @Module({ imports: [RedisToolkitModule.forRoot({ connection: { url }, keyPrefix: 'feature:', isGlobal: false })] })
    class FeatureModule {}
    expect(await compile([RedisToolkitModule.forRoot({ connection: { url } }), FeatureModule])).toBeUndefined();
  });
});
