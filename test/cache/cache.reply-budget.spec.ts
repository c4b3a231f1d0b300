/**
 * The cache's reads under a bounded `client-output-buffer-limit normal` (1 MiB here): every entry is under the size
 * bound (cache.value-size.spec.ts), but Redis builds the replies of all the commands it read in one go before it writes
 * any, and closes the connection when they pass the hard limit together: two entries of 600 KB read in one MGET, or in
 * two commands pipelined on the connection, failed every call in flight on it. The reads of one connection now share a
 * reply budget (lib/common/reply-budget.ts): the values in flight add up to at most the bound. docs/cache.md,
 * "Size of a value".
 */
import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import type { Cluster, Redis } from 'ioredis';
import { CacheService } from '../../lib/index.js';
import { RedisConnection } from '../../lib/advanced.js';
import { recordCommands } from '../support/command-recorder.js';
import { ownedBy, useDisposableCluster } from '../support/disposable-cluster.js';
import { usePrivateRedis } from '../support/private-servers.js';
import { countCloses, nextTurn, ONE_MIB } from '../support/reply-limit.js';
import { rawCommand } from '../support/resp.js';
import { closeToolkitApps, createToolkitApp } from '../support/toolkit-app.js';

afterEach(closeToolkitApps);

const prefix = () => `rtk-rb${randomBytes(5).toString('hex')}:`;
const KB = 1_000;
const big = (c: string, kb = 600) => c.repeat(kb * KB);

describe('a server with `client-output-buffer-limit normal 1mb 0 0`', () => {
  const redis = usePrivateRedis({ args: ONE_MIB });
  const boot = async () => {
    const app = await createToolkitApp({ target: { url: redis.server.url }, keyPrefix: prefix() });
    const cache = app.get(CacheService);
    const client = app.get(RedisConnection).client as Redis;
    await cache.set('a', big('a'));
    await cache.set('b', big('b'));
    await cache.set('small', 'tiny');
    return { app, cache, closes: countCloses(client), client };
  };

  // Before: one MGET of both: a reply of 1.2 MB, and Redis closed the connection (both reads failed open: undefined).
  it('two entries of 600 KB read in one turn: both values, no connection closed', async () => {
    const { cache, closes } = await boot();
    const values = await Promise.all([cache.get('a'), cache.get('b'), cache.get('small')]);
    expect(values).toEqual([big('a'), big('b'), 'tiny']);
    expect(closes()).toBe(0);
    expect(cache.stats().failedOpen).toBe(0);
  });

  // Before: each GET alone was under the limit, but pipelined on the connection their replies passed it together.
  it('reads of consecutive turns, pipelined: every value, no connection closed', async () => {
    const { cache, closes } = await boot();
    const reads: Promise<unknown>[] = [];
    for (let i = 0; i < 6; i++) {
      reads.push(cache.get(i % 2 === 0 ? 'a' : 'b'));
      await nextTurn();
    }
    expect(await Promise.all(reads)).toEqual([0, 1, 2, 3, 4, 5].map((i) => big(i % 2 === 0 ? 'a' : 'b')));
    expect(closes()).toBe(0);
    expect(cache.stats().failedOpen).toBe(0);
  });

  // Before: mget's one MGET of both closed the connection: [undefined, undefined].
  it('mget of both: both values, in order', async () => {
    const { cache, closes } = await boot();
    expect(await cache.mget(['b', 'small', 'a'])).toEqual([big('b'), 'tiny', big('a')]);
    expect(closes()).toBe(0);
  });

  // Before: the hits' reads closed the connection, and each failed open to its loader.
  it('getOrSet hits of both in one turn: the stored values, no loader called', async () => {
    const { cache, closes } = await boot();
    let loads = 0;
    const loader = async () => (loads++, 'loaded');
    const values = await Promise.all([cache.getOrSet('a', loader), cache.getOrSet('b', loader)]);
    expect(values).toEqual([big('a'), big('b')]);
    expect(loads).toBe(0);
    expect(closes()).toBe(0);
  });

  // The measurement of the task: 50 concurrent readers of 300 KB entries on one server.
  it('50 concurrent readers of 300 KB entries: every value right, no connection closed', async () => {
    const { cache, closes } = await boot();
    const { wrong } = await fiftyReaders(cache, '1 MiB limit');
    expect(wrong).toBe(0);
    expect(closes()).toBe(0);
    expect(cache.stats().failedOpen).toBe(0);
  });
});

/** 50 readers, 20 reads each of 10 entries of 300 KB: the wrong values, and the rate in the log (no assertion on it). */
async function fiftyReaders(cache: CacheService, what: string): Promise<{ wrong: number }> {
  const keys = Array.from({ length: 10 }, (_, i) => `e${i}`);
  const values = new Map(keys.map((k, i) => [k, String.fromCharCode(97 + i).repeat(300 * KB)]));
  for (const k of keys) await cache.set(k, values.get(k));
  let wrong = 0;
  let reads = 0;
  const started = process.hrtime.bigint();
  await Promise.all(
    Array.from({ length: 50 }, async (_, reader) => {
      for (let i = 0; i < 20; i++) {
        const k = keys[(reader + i) % keys.length];
        if ((await cache.get(k)) !== values.get(k)) wrong++;
        reads++;
      }
    }),
  );
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  console.log(
    `reply budget, ${what}: ${reads} reads of 300 KB by 50 readers in ${seconds.toFixed(2)} s ` +
      `(${Math.round(reads / seconds)} reads/s, ${Math.round((reads * 300) / 1000 / seconds)} MB/s)`,
  );
  expect(reads).toBe(1_000);
  return { wrong };
}

// The same load with no limit, to compare (a guard: passes before too).
it("Redis's default: 50 concurrent readers of 300 KB entries, today's reads", async () => {
  const app = await createToolkitApp({ keyPrefix: prefix() });
  const { wrong } = await fiftyReaders(app.get(CacheService), 'no limit');
  expect(wrong).toBe(0);
});

// A guard (passes before too): with Redis's default limit the read path is today's, no script and no extra command.
it("Redis's default (`normal 0 0 0`): one MGET for a turn's reads, nothing else", async () => {
  const app = await createToolkitApp({ keyPrefix: prefix() });
  const cache = app.get(CacheService);
  await cache.set('a', 'x');
  await cache.set('b', 'y');
  const client = app.get(RedisConnection).client;
  const { value, commands } = await recordCommands(client, () => Promise.all([cache.get('a'), cache.get('b')]));
  expect(value).toEqual(['x', 'y']);
  expect(commands).toEqual(['mget']);
});

describe('a cluster whose masters have `client-output-buffer-limit normal 1mb 0 0`', () => {
  const cluster = useDisposableCluster();

  // Before: the turn's GETs of one master went as one pipeline: 1.2 MB of replies, and the master closed the connection.
  it('two entries of 600 KB on one master read in one turn: both values, no connection closed', async () => {
    for (const master of cluster().masters)
      await rawCommand(master.port, ['CONFIG', 'SET', 'client-output-buffer-limit', 'normal 1mb 0 0']);
    const keyPrefix = prefix();
    const app = await createToolkitApp({ target: { cluster: cluster().startupNodes }, keyPrefix });
    const cache = app.get(CacheService);
    // two keys whose slots the first master owns
    const candidates = Array.from({ length: 64 }, (_, i) => `k${i}`);
    const owned = await ownedBy(
      cluster().masters[0],
      candidates.map((k) => `${keyPrefix}cache:${k}`),
    );
    const [x, y] = candidates.filter((_, i) => owned[i]);
    await cache.set(x, big('x'));
    await cache.set(y, big('y'));
    const closes = countCloses(app.get(RedisConnection).client as Cluster);
    const values = await Promise.all([cache.get(x), cache.get(y)]);
    expect(values).toEqual([big('x'), big('y')]);
    expect(closes()).toBe(0);
    expect(cache.stats().failedOpen).toBe(0);
  });
});
