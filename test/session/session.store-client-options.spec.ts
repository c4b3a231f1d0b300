import { randomBytes } from 'node:crypto';
import { Cluster, Redis } from 'ioredis';
import { InvalidOptionsError, RedisSessionStore } from '../../lib/index.js';
import { trackForCleanup } from '../support/private-servers.js';
import { sharedServers } from '../support/shared-servers.js';

// Was a BUG (fixed): RedisSessionStore took a user's own ioredis client without looking at the options the module
// refuses on its own { client } (test/foundation/connection.hostile.spec.ts). Seen on the store before: with keyPrefix
// 'app:' a session just set read back as null (ioredis prefixed the GETEX, not the scripts' keys); with stringNumbers
// each write's expiry came back as a string, taken for a lost race: 6 sets cost 32 script calls and 24 GETs instead of
// 5 and 2. Now the constructor refuses such a client with an InvalidOptionsError naming the option and the remedy.

const single = (options: Record<string, unknown>): Redis =>
  trackForCleanup(new Redis(sharedServers().single.url, { lazyConnect: true, ...options }));

function refusal(make: () => unknown): string[] {
  let err: unknown;
  try {
    make();
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(InvalidOptionsError);
  const lines = (err as Error).message.split('\n');
  expect(lines[0]).toBe('Invalid RedisSessionStore options:');
  return lines.slice(1);
}

describe('RedisSessionStore on a client of the user', () => {
  it('keyPrefix, stringNumbers and replyMapping "resp3" are refused at construction, naming the remedy', () => {
    expect(refusal(() => new RedisSessionStore({ client: single({ keyPrefix: 'app:' }) }))).toEqual([
      '  - RedisSessionStore client was created with keyPrefix "app:": ioredis adds it to the keys of its own ' +
        "commands but not to those of the store's Lua scripts, so the store would miss its own sessions (one just " +
        'set read back as null). Give the store a client without it and the prefix as its prefix option (e.g. ' +
        'prefix: "app:rtk:")',
    ]);
    expect(refusal(() => new RedisSessionStore({ client: single({ stringNumbers: true }) }))).toEqual([
      '  - RedisSessionStore client was created with stringNumbers true: integer replies would arrive as strings ' +
        'where the store reads numbers (a write taken for a lost race: every set retried, then merged in Lua). Give ' +
        'the store a client without it',
    ]);
    expect(
      refusal(() => new RedisSessionStore({ client: single({ protocol: 3, replyMapping: 'resp3' }), prefix: 'x:' })),
    ).toEqual([
      '  - RedisSessionStore client was created with replyMapping "resp3": map replies would arrive as objects and ' +
        'doubles as numbers where the store reads RESP2 shapes. Give the store a client with the default ("legacy")',
    ]);
    // all at once, each named once
    expect(
      refusal(() => new RedisSessionStore({ client: single({ keyPrefix: 'a:', stringNumbers: true }) })),
    ).toHaveLength(2);
  });

  it('a Cluster client: its options and its redisOptions, a prefix copied to both named once', () => {
    const nodes = sharedServers().cluster;
    const prefixed = trackForCleanup(new Cluster(nodes, { lazyConnect: true, redisOptions: { keyPrefix: 'app:' } }));
    expect(refusal(() => new RedisSessionStore({ client: prefixed }))).toEqual([
      expect.stringMatching(/^ {2}- RedisSessionStore client was created with keyPrefix "app:": ioredis adds it/),
    ]);
    const numbers = trackForCleanup(new Cluster(nodes, { lazyConnect: true, redisOptions: { stringNumbers: true } }));
    expect(refusal(() => new RedisSessionStore({ client: numbers }))).toEqual([
      expect.stringMatching(/^ {2}- RedisSessionStore client was created with stringNumbers true: /),
    ]);
    expect(prefixed.status).toBe('wait'); // refused before anything connected
  });

  it('a client without them (protocol 3 with the default mapping included) works', async () => {
    for (const client of [single({}), single({ protocol: 3 })]) {
      const store = new RedisSessionStore({ client, prefix: `rtk-opts-${randomBytes(4).toString('hex')}:` });
      const sid = randomBytes(24).toString('base64url');
      const data = { cookie: { originalMaxAge: 60_000, httpOnly: true, path: '/' }, userId: 'u1', views: 3 };
      await store.set(sid, data as never);
      expect(await store.get(sid)).toMatchObject({ userId: 'u1', views: 3 });
    }
  });
});
