/**
 * Adversarial review of the cache's L1 and its invalidation (CLIENT TRACKING BCAST with a RESP2 redirect, the pub/sub
 * bus): is an L1 entry ever served after its key changed in Redis, beyond the invalidation delay and the limits
 * docs/cache.md names? Attacked here: every kind of foreign write (scripts, functions, MULTI, RENAME, COPY, RESTORE,
 * MOVE, SWAPDB, expiry, eviction, FLUSHALL ASYNC, a change of type), hostile key names, an invalidation flood (also
 * one that gets the redirect killed by client-output-buffer-limit), Redis killed and restarted (tracking state lost
 * server-side) or paused, ACL users that lose tracking, reads racing writes (replies held by a proxy of this file),
 * tags invalidated through an old membership, a redirect connection that goes silent, two apps on one client, and a
 * cluster failover.
 *
 * L1 ttl is 60 s unless a test says otherwise: an entry gone within the waits (<= 10 s) was dropped by an invalidation,
 * not by expiry. Where a test needs proof that L1 (not Redis) answers, it writes through the app's own connection:
 * NOLOOP keeps that write from being reported (docs/cache.md, Known limits), so L1 still answers the old value.
 */
import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import { connect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { Cluster, Redis } from 'ioredis';
import { CacheService, type RedisToolkitOptions } from '../../lib/index.js';
import { RedisConnection } from '../../lib/advanced.js';
import { TRACKING_CONNECTION_NAME } from '../../lib/cache/cache.tracking.js';
import { FEATURES, KeyBuilder } from '../../lib/common/keys.js';
import { trackForCleanup, usePrivateRedis } from '../support/private-servers.js';
import { recordingLogger } from '../support/recording-logger.js';
import { startRedisCluster, type RedisClusterHandle } from '../support/redis-cluster.js';
import { startRedisServer } from '../support/redis-server.js';
import { rawCommand } from '../support/resp.js';
import {
  closeToolkitApps,
  createToolkitApp,
  type RedisTarget,
  type ToolkitAppOptions,
} from '../support/toolkit-app.js';
import { sleep, waitFor } from '../support/wait.js';

afterEach(closeToolkitApps);

const rand = () => randomBytes(5).toString('hex');
/** Far below the L1 ttl (60 s). */
const L1_WAIT = 5_000;
const L1 = { max: 1_000, ttl: 60_000 };
type Invalidation = 'auto' | 'tracking' | 'bus';

/** The Redis key of a cache entry (what a foreign client must write). */
const entryKey = (keyPrefix: string, key: string) => new KeyBuilder(keyPrefix).key(FEATURES.cache, key);

async function cacheApp(
  target: RedisTarget,
  keyPrefix: string,
  invalidation: Invalidation = 'tracking',
  extra: Omit<ToolkitAppOptions, 'target' | 'keyPrefix' | 'cache'> = {},
  l1: { max: number; ttl: number } = L1,
) {
  const cache: RedisToolkitOptions['cache'] = { l1: { ...l1, invalidation } };
  const app = await createToolkitApp({ target, keyPrefix, cache, maxReconnectDelay: 100, ...extra });
  return { app, cache: app.get(CacheService), client: app.get(RedisConnection).client as Redis };
}

/** The bytes the toolkit stores for `value` (what a foreign client writes to change an entry to that value). */
async function rawEntry(app: { cache: CacheService }, foreign: Redis, keyPrefix: string, value: unknown) {
  const key = `raw-${rand()}`;
  await app.cache.set(key, value);
  const raw = await foreign.getBuffer(entryKey(keyPrefix, key));
  if (raw === null) throw new Error('the raw entry was not stored');
  return raw;
}

/** CLIENT TRACKINGINFO of a connection: its flags and redirect id (the connection may be reconnecting). */
async function trackingInfo(conn: Redis): Promise<{ flags: string[]; redirect: number }> {
  const raw = (await conn.call('CLIENT', 'TRACKINGINFO').catch(() => [])) as unknown[];
  const info = new Map<string, unknown>();
  for (let i = 0; i < raw.length; i += 2) info.set(String(raw[i]), raw[i + 1]);
  return {
    flags: ((info.get('flags') as string[] | undefined) ?? []).map(String),
    redirect: Number(info.get('redirect')),
  };
}

const tracksOn = async (conn: Redis) => (await trackingInfo(conn)).flags.includes('on');

interface Link {
  client: Socket;
  upstream: Socket;
  tracking: boolean;
  held: Buffer[] | undefined;
  silenced: boolean;
}

/**
 * A TCP proxy that controls each link on its own (test/support/fault-proxy.ts acts on every link at once):
 * `hold()` keeps the server's replies on the app's command connections until `release()`, while the tracking
 * redirect (recognised by its CLIENT SETNAME) keeps flowing; `silenceTracking()` drops whatever the server sends the
 * redirect from then on, its socket left open (a half-open link, as a NAT or load balancer that forgot it leaves).
 */
class LinkProxy {
  private server: Server | undefined;
  private readonly links = new Set<Link>();
  port = 0;

  constructor(private readonly target: number) {}

  static async start(target: number): Promise<LinkProxy> {
    const proxy = new LinkProxy(target);
    const server = createServer((c) => proxy.accept(c));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
    proxy.port = (server.address() as AddressInfo).port;
    proxy.server = server;
    trackForCleanup({ stop: () => proxy.stop() });
    return proxy;
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  hold(): void {
    for (const l of this.links) if (!l.tracking) l.held ??= [];
  }

  release(): void {
    for (const l of this.links) {
      const held = l.held;
      l.held = undefined;
      if (held?.length) l.client.write(Buffer.concat(held));
    }
  }

  /** Returns how many redirect links were silenced. */
  silenceTracking(): number {
    let n = 0;
    for (const l of this.links) if (l.tracking) (l.silenced = true), n++;
    return n;
  }

  async stop(): Promise<void> {
    for (const l of this.links) l.client.destroy(), l.upstream.destroy();
    const server = this.server;
    this.server = undefined;
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  private accept(client: Socket): void {
    const upstream = connect({ host: '127.0.0.1', port: this.target });
    const link: Link = { client, upstream, tracking: false, held: undefined, silenced: false };
    this.links.add(link);
    client.on('data', (chunk: Buffer) => {
      if (chunk.includes(TRACKING_CONNECTION_NAME)) link.tracking = true;
      upstream.write(chunk);
    });
    upstream.on('data', (chunk: Buffer) => {
      if (link.silenced) return;
      if (link.held) link.held.push(chunk);
      else client.write(chunk);
    });
    const drop = () => {
      this.links.delete(link);
      client.destroy();
      upstream.destroy();
    };
    for (const s of [client, upstream]) s.on('error', drop).on('close', drop);
  }
}

describe('L1 tracking against foreign writers (private server)', () => {
  const redis = usePrivateRedis();

  it('every kind of write by a foreign client drops the entry: scripts, functions, MULTI, RENAME, COPY, RESTORE, MOVE, SWAPDB, expiry, a type change, FLUSHALL ASYNC', async () => {
    const p = `rtk-f${rand()}:`;
    const a = await cacheApp({ url: redis.server.url }, p);
    const f = trackForCleanup(new Redis(redis.server.url));
    const raw = await rawEntry(a, f, p, 'v2');
    await a.cache.set('dump-src', 'v2');
    const dumped = (await f.dumpBuffer(entryKey(p, 'dump-src'))) as Buffer;
    await f.call(
      'FUNCTION',
      'LOAD',
      'REPLACE',
      "#!lua name=l1hostile\nredis.register_function('l1hostile_set', function(keys, args) " +
        "return redis.call('SET', keys[1], args[1]) end)",
    );

    // Control: a write through the app's own connection is not reported (NOLOOP, documented): L1 answers, not Redis.
    await a.cache.set('control', 'v1');
    expect(await a.cache.get('control')).toBe('v1');
    await a.client.set(entryKey(p, 'control'), raw);
    await sleep(200);
    expect(await a.cache.get('control')).toBe('v1');

    const ops: [string, (k: string) => Promise<unknown>, unknown][] = [
      ['SET', (k) => f.set(k, raw), 'v2'],
      ['APPEND', (k) => f.append(k, 'x'), 'v1x'],
      ['SETRANGE', async (k) => f.setrange(k, (await f.strlen(k)) - 1, 'Z'), 'vZ'],
      ['GETDEL', (k) => f.getdel(k), undefined],
      ['RENAME onto it', (k) => f.set(`${k}.tmp`, raw).then(() => f.rename(`${k}.tmp`, k)), 'v2'],
      ['COPY REPLACE', (k) => f.copy(entryKey(p, 'dump-src'), k, 'REPLACE'), 'v2'],
      ['RESTORE REPLACE', (k) => f.restore(k, 0, dumped, 'REPLACE'), 'v2'],
      ['MOVE to db 1', (k) => f.move(k, 1), undefined],
      ['EVAL', (k) => f.eval("return redis.call('SET', KEYS[1], ARGV[1])", 1, k, raw), 'v2'],
      ['FCALL', (k) => f.fcall('l1hostile_set', 1, k, raw), 'v2'],
      ['MULTI/EXEC', (k) => f.multi().set(k, raw).exec(), 'v2'],
      ['a type change (list)', (k) => f.multi().del(k).rpush(k, 'x').exec(), undefined],
      ['PEXPIRE, then expiry', (k) => f.pexpire(k, 100).then(() => sleep(300)), undefined],
      ['UNLINK', (k) => f.unlink(k), undefined],
      [
        'SWAPDB',
        (k) =>
          f
            .select(1)
            .then(() => f.set(k, raw))
            .then(() => f.select(0))
            .then(() => f.swapdb(0, 1)),
        'v2',
      ],
    ];
    const wrong: string[] = [];
    for (const [name, op, want] of ops) {
      const k = `k-${name}`;
      await a.cache.set(k, 'v1');
      expect(await a.cache.get(k)).toBe('v1');
      await op(entryKey(p, k));
      if (!(await waitFor(async () => (await a.cache.get(k)) === want, L1_WAIT)))
        wrong.push(`${name}: ${String(await a.cache.get(k))}, Redis ${String(want)}`);
    }
    await f.swapdb(0, 1);
    await f.select(1);
    await f.flushdb();
    await f.select(0);
    expect(wrong).toEqual([]);

    await a.cache.set('last', 'v1');
    expect(await a.cache.get('last')).toBe('v1');
    await f.flushall('ASYNC');
    expect(await waitFor(async () => (await a.cache.get('last')) === undefined, L1_WAIT)).toBe(true);
    expect(a.cache.stats().errors).toBe(0);
  });

  it('hostile key names: UTF-8, 1 KiB, the prefix inside the key, escapes and globs; junk bytes; a non-UTF-8 key under the prefix; an instance whose keyPrefix lies under ours', async () => {
    const p = `rtk-h${rand()}:`;
    const a = await cacheApp({ url: redis.server.url }, p);
    const f = trackForCleanup(new Redis(redis.server.url));
    const raw = await rawEntry(a, f, p, 'v2');
    const keys = ['é:ключ:🙂', 'k'.repeat(1024), `${p}cache:nested`, 'a%3Ab{t}:c%', '* ? [glob] \\ "q"'];
    for (const key of keys) {
      await a.cache.set(key, 'v1');
      expect(await a.cache.get(key)).toBe('v1');
      expect(await f.exists(entryKey(p, key))).toBe(1);
      await f.set(entryKey(p, key), raw, 'PX', 60_000);
      expect(await waitFor(async () => (await a.cache.get(key)) === 'v2', L1_WAIT)).toBe(true);
      // Bytes that are no entry at all: a miss (logged), never the old L1 value.
      await f.set(entryKey(p, key), Buffer.from([0xff, 0xfe, 0x00, 0x80]));
      expect(await waitFor(async () => (await a.cache.get(key)) === undefined, L1_WAIT)).toBe(true);
    }
    // A key under the prefix that is not UTF-8: its invalidation is harmless and tracking goes on.
    await a.cache.set('after', 'v1');
    expect(await a.cache.get('after')).toBe('v1');
    await f.set(Buffer.concat([Buffer.from(`${p}cache:`), Buffer.from([0xc3, 0x28, 0xff])]), 'x');
    await f.set(entryKey(p, 'after'), raw, 'PX', 60_000);
    expect(await waitFor(async () => (await a.cache.get('after')) === 'v2', L1_WAIT)).toBe(true);

    // Another instance whose keyPrefix is `<ours>cache:`: its keys fall under our BCAST prefix, but never on ours.
    const inner = await cacheApp({ url: redis.server.url }, `${p}cache:`);
    await a.cache.set('cache:k', 'outer');
    expect(await a.cache.get('cache:k')).toBe('outer');
    for (let i = 0; i < 20; i++) await inner.cache.set('k', `inner${i}`);
    expect(await a.cache.get('cache:k')).toBe('outer');
    expect(await inner.cache.get('k')).toBe('inner19');
    await f.set(entryKey(p, 'cache:k'), raw, 'PX', 60_000);
    expect(await waitFor(async () => (await a.cache.get('cache:k')) === 'v2', L1_WAIT)).toBe(true);
    expect(await inner.cache.get('k')).toBe('inner19');
  });

  it('CLIENT KILL TYPE pubsub together with a foreign write (one MULTI): the write is not served stale once tracking is back', async () => {
    const p = `rtk-kp${rand()}:`;
    const a = await cacheApp({ url: redis.server.url }, p);
    const f = trackForCleanup(new Redis(redis.server.url));
    const raw = await rawEntry(a, f, p, 'v2');
    await a.cache.set('k', 'v1');
    expect(await a.cache.get('k')).toBe('v1');
    const { redirect } = await trackingInfo(a.client);
    const replies = await f
      .multi()
      .call('CLIENT', 'KILL', 'TYPE', 'pubsub')
      .set(entryKey(p, 'k'), raw, 'PX', 60_000)
      .exec();
    expect(replies?.map(([err]) => err)).toEqual([null, null]);
    expect(Number(replies?.[0][1])).toBeGreaterThanOrEqual(1);
    expect(await waitFor(async () => (await trackingInfo(a.client)).redirect !== redirect, L1_WAIT)).toBe(true);
    expect(await waitFor(() => tracksOn(a.client), L1_WAIT)).toBe(true);
    expect(await a.cache.get('k')).toBe('v2');
  });
});

describe('L1 tracking on servers of its own: eviction, floods, restart, pause', () => {
  it('keys evicted under maxmemory (volatile-lru) leave L1', async () => {
    const server = trackForCleanup(await startRedisServer());
    const p = `rtk-e${rand()}:`;
    const a = await cacheApp({ url: server.url }, p);
    const f = trackForCleanup(new Redis(server.url));
    for (let i = 0; i < 20; i++) await a.cache.set(`k${i}`, `v${i}`);
    for (let i = 0; i < 20; i++) expect(await a.cache.get(`k${i}`)).toBe(`v${i}`);
    const used = Number(/used_memory:(\d+)/.exec(await f.info('memory'))?.[1]);
    await f.config('SET', 'maxmemory-policy', 'volatile-lru');
    await f.config('SET', 'maxmemory', String(used + 100_000));
    // Keys without a TTL cannot be evicted under volatile-lru: the cache's entries (all with PX) go first, then OOM.
    await expect(
      (async () => {
        for (let i = 0; i < 400; i++) await f.set(`junk:${i}`, 'x'.repeat(1_000));
      })(),
    ).rejects.toThrow(/OOM/);
    expect(Number(/evicted_keys:(\d+)/.exec(await f.info('stats'))?.[1])).toBeGreaterThanOrEqual(20);
    expect(await f.exists(...Array.from({ length: 20 }, (_, i) => entryKey(p, `k${i}`)))).toBe(0);
    const served: string[] = [];
    for (let i = 0; i < 20; i++) if ((await a.cache.get(`k${i}`)) !== undefined) served.push(`k${i}`);
    expect(served).toEqual([]);
  });

  it('an invalidation flood (100,000 foreign writes of 300-byte keys): no crash, L1 stays within max, every change seen', async () => {
    const server = trackForCleanup(await startRedisServer());
    const p = `rtk-fl${rand()}:`;
    // 100,000 invalidations to read on a busy CI box can hold a reply or the redirect's PING past 1 s: no fault here
    const a = await cacheApp({ url: server.url }, p, 'tracking', { commandTimeout: 10_000 }, { max: 100, ttl: 60_000 });
    const f = trackForCleanup(new Redis(server.url));
    const raw = await rawEntry(a, f, p, 'v2');
    for (let i = 0; i < 200; i++) await a.cache.set(`k${i}`, i);
    for (let i = 0; i < 200; i++) expect(await a.cache.get(`k${i}`)).toBe(i);
    const { redirect } = await trackingInfo(a.client);
    const long = 'y'.repeat(300);
    for (let round = 0; round < 10; round++) {
      const pipe = f.pipeline();
      for (let i = 0; i < 10_000; i++) pipe.set(`${p}cache:${long}${round}-${i}`, 'x', 'PX', 30_000);
      await pipe.exec();
    }
    const pipe = f.pipeline();
    for (let i = 100; i < 200; i++) pipe.set(entryKey(p, `k${i}`), raw, 'PX', 60_000);
    await pipe.exec();
    const all = async () => {
      for (let i = 100; i < 200; i++) if ((await a.cache.get(`k${i}`)) !== 'v2') return false;
      return true;
    };
    expect(await waitFor(all, 10_000)).toBe(true);
    // The LRU (l1.max 100) is what bounds memory; the redirect was not lost; nothing failed.
    expect((a.cache as unknown as { l1: { lru: { size: number } } }).l1.lru.size).toBeLessThanOrEqual(100);
    expect((await trackingInfo(a.client)).redirect).toBe(redirect);
    expect(a.cache.stats().errors).toBe(0);
  });

  it('an invalidation past client-output-buffer-limit pubsub gets the redirect killed: L1 is emptied, tracking re-armed', async () => {
    const server = trackForCleanup(await startRedisServer());
    const p = `rtk-ob${rand()}:`;
    const a = await cacheApp({ url: server.url }, p);
    const f = trackForCleanup(new Redis(server.url));
    const raw = await rawEntry(a, f, p, 'v2');
    await f.config('SET', 'client-output-buffer-limit', 'pubsub 64kb 32kb 0');
    for (let i = 0; i < 50; i++) await a.cache.set(`k${i}`, i);
    for (let i = 0; i < 50; i++) expect(await a.cache.get(`k${i}`)).toBe(i);
    const { redirect } = await trackingInfo(a.client);
    // One transaction: its invalidations go in one message, and a 100 KB key name puts it over the hard limit, so
    // Redis closes the redirect instead of sending it; the 50 entries changed by it are never reported.
    const tx = f.multi().set(`${p}cache:${'z'.repeat(100_000)}`, 'x', 'PX', 30_000);
    for (let i = 0; i < 50; i++) tx.set(entryKey(p, `k${i}`), raw, 'PX', 60_000);
    expect((await tx.exec())?.every(([err]) => err === null)).toBe(true);
    expect(await waitFor(async () => (await trackingInfo(a.client)).redirect !== redirect, L1_WAIT)).toBe(true);
    expect(await waitFor(() => tracksOn(a.client), L1_WAIT)).toBe(true);
    const served: number[] = [];
    for (let i = 0; i < 50; i++) if ((await a.cache.get(`k${i}`)) !== 'v2') served.push(i);
    expect(served).toEqual([]);
    // Tracking works on the new redirect.
    await f.set(entryKey(p, 'k0'), await rawEntry(a, f, p, 'v3'), 'PX', 60_000);
    expect(await waitFor(async () => (await a.cache.get('k0')) === 'v3', L1_WAIT)).toBe(true);
  });

  it('Redis SIGKILLed and restarted empty (tracking state lost server-side): nothing from before is served, tracking is re-armed', async () => {
    const server = trackForCleanup(await startRedisServer());
    const p = `rtk-r${rand()}:`;
    const a = await cacheApp({ url: server.url }, p);
    for (let i = 0; i < 10; i++) await a.cache.set(`k${i}`, i);
    for (let i = 0; i < 10; i++) expect(await a.cache.get(`k${i}`)).toBe(i);
    await server.kill();
    await server.restart();
    const f = trackForCleanup(new Redis(server.url));
    expect(await waitFor(() => tracksOn(a.client), L1_WAIT)).toBe(true);
    const served: number[] = [];
    for (let i = 0; i < 10; i++) if ((await a.cache.get(`k${i}`)) !== undefined) served.push(i);
    expect(served).toEqual([]);
    // Tracking reports again after the restart.
    const raw = await rawEntry(a, f, p, 'v2');
    await a.cache.set('k', 'v1');
    expect(await a.cache.get('k')).toBe('v1');
    await f.set(entryKey(p, 'k'), raw, 'PX', 60_000);
    expect(await waitFor(async () => (await a.cache.get('k')) === 'v2', L1_WAIT)).toBe(true);
  });

  it('Redis paused (SIGSTOP) past commandTimeout, then resumed: tracking reports again, no stale value', async () => {
    const server = trackForCleanup(await startRedisServer());
    const p = `rtk-pz${rand()}:`;
    const a = await cacheApp({ url: server.url }, p, 'tracking', { commandTimeout: 300 });
    const f = trackForCleanup(new Redis(server.url));
    const raw = await rawEntry(a, f, p, 'v2');
    await a.cache.set('k', 'v1');
    expect(await a.cache.get('k')).toBe('v1');
    server.pause();
    try {
      await sleep(1_000);
      expect(await a.cache.get('other')).toBeUndefined(); // Redis does not answer: fails open
    } finally {
      server.resume();
    }
    expect(await waitFor(() => tracksOn(a.client), L1_WAIT)).toBe(true);
    expect(await a.cache.get('k')).toBe('v1');
    await f.set(entryKey(p, 'k'), raw, 'PX', 60_000);
    expect(await waitFor(async () => (await a.cache.get('k')) === 'v2', L1_WAIT)).toBe(true);
  });
});

describe('L1 when the ACL user lacks tracking', () => {
  const redis = usePrivateRedis();

  it("a user who may not SUBSCRIBE __redis__:invalidate: 'auto' warns and uses the bus, 'tracking' refuses the start", async () => {
    const admin = trackForCleanup(new Redis(redis.server.url));
    const password = rand();
    const p = `acl${rand()}:`;
    // Everything but the tracking channel: its own keys and channels, CLIENT TRACKING and CLIENT ID included.
    await admin.call(
      'ACL',
      'SETUSER',
      'nochan',
      'on',
      `>${password}`,
      '~acl*',
      'resetchannels',
      '&acl*',
      '&__rtk*',
      '+@all',
    );
    const url = `redis://nochan:${password}@127.0.0.1:${redis.server.port}`;
    const rec = recordingLogger();
    const a = await cacheApp({ url }, p, 'auto', { logger: rec.logger });
    const b = await cacheApp({ url }, p, 'auto', { logger: rec.logger });
    expect(rec.warnings.filter((w) => /refused CLIENT TRACKING \(NOPERM/.test(w)).length).toBe(2);
    // The bus works: a's set drops b's entry.
    await a.cache.set('k', 'v1');
    await sleep(300);
    expect(await b.cache.get('k')).toBe('v1');
    await a.cache.set('k', 'v2');
    expect(await waitFor(async () => (await b.cache.get('k')) === 'v2', L1_WAIT)).toBe(true);
    await expect(cacheApp({ url }, p, 'tracking')).rejects.toThrow(/__redis__:invalidate/);
  });

  it('CLIENT TRACKING revoked while running (connections killed): warned and counted, L1 stores nothing, tracking back once granted', async () => {
    const admin = trackForCleanup(new Redis(redis.server.url));
    const password = rand();
    const user = `rv${rand()}`;
    const p = `acl${rand()}:`;
    await admin.call('ACL', 'SETUSER', user, 'on', `>${password}`, '~acl*', '&*', '+@all');
    const url = `redis://${user}:${password}@127.0.0.1:${redis.server.port}`;
    const rec = recordingLogger();
    const a = await cacheApp({ url }, p, 'tracking', { logger: rec.logger });
    const f = trackForCleanup(new Redis(redis.server.url));
    const raw2 = await rawEntry(a, f, p, 'v2');
    const raw3 = await rawEntry(a, f, p, 'v3');
    await a.cache.set('k', 'v1');
    expect(await a.cache.get('k')).toBe('v1');

    await admin.call('ACL', 'SETUSER', user, '-client|tracking');
    await admin.call('CLIENT', 'KILL', 'USER', user);
    // Until the cache's own connection is back, L1 serves what it holds (documented); once back (it answers, and
    // tracking is off on it) L1 was emptied and stores nothing more.
    const backUntracked = async () =>
      a.client.status === 'ready' && (await trackingInfo(a.client)).flags.includes('off');
    expect(await waitFor(backUntracked, L1_WAIT)).toBe(true);
    // (the first failure may name the connection still reconnecting rather than NOPERM; later ones are throttled)
    expect(
      await waitFor(() => rec.warnings.some((w) => w.includes('L1 tracking could not be re-enabled')), L1_WAIT),
    ).toBe(true);
    expect(a.cache.stats().errors).toBeGreaterThan(0);
    // Reads go to Redis: a foreign write is seen at once, and so is the next one (nothing was kept in L1).
    expect(await a.cache.get('k')).toBe('v1');
    await f.set(entryKey(p, 'k'), raw2, 'PX', 60_000);
    expect(await a.cache.get('k')).toBe('v2');
    await f.set(entryKey(p, 'k'), raw3, 'PX', 60_000);
    expect(await a.cache.get('k')).toBe('v3');

    await admin.call('ACL', 'SETUSER', user, '+client|tracking');
    expect(await waitFor(() => tracksOn(a.client), 3 * 2_000 + L1_WAIT)).toBe(true);
    expect(await a.cache.get('k')).toBe('v3');
    await f.set(entryKey(p, 'k'), raw2, 'PX', 60_000);
    expect(await waitFor(async () => (await a.cache.get('k')) === 'v2', L1_WAIT)).toBe(true);
  });
});

describe('L1 fill racing a write (replies held by a proxy)', () => {
  const redis = usePrivateRedis();

  // Was a documented limit ("served at most until l1.ttl"): the read's reply, held here, filled L1 after the write's
  // invalidation had been handled, and 'v1' was served until l1.ttl. A read now notes the L1's version before it is
  // sent, and its fill is skipped when its key was invalidated since (lib/cache/cache.l1.ts, `remember`).
  it.each(['get', 'getOrSet'] as const)(
    '%s: a foreign write reported while a read is answered (reply held) keeps that read out of L1',
    async (via) => {
      const proxy = await LinkProxy.start(redis.server.port);
      const p = `rtk-race${rand()}:`;
      const a = await cacheApp({ url: proxy.url }, p, 'tracking');
      const b = await cacheApp({ url: redis.server.url }, p);
      await b.cache.set('k', 'v1');
      const read = (app: typeof a) => (via === 'get' ? app.cache.get('k') : app.cache.getOrSet('k', async () => 'v0'));
      proxy.hold();
      const held = read(a); // executed by Redis now, its reply held
      await sleep(50);
      await b.cache.set('k', 'v2'); // reported to a's redirect, which is not held: handled before the fill
      await sleep(100);
      proxy.release();
      expect(await held).toBe('v1');
      expect(await read(a)).toBe('v2');
    },
  );

  it('a read answered after the redirect was lost and re-armed is not kept: the write made in the gap is seen', async () => {
    const proxy = await LinkProxy.start(redis.server.port);
    const p = `rtk-rearm${rand()}:`;
    const a = await cacheApp({ url: proxy.url }, p);
    const f = trackForCleanup(new Redis(redis.server.url));
    const raw = await rawEntry(a, f, p, 'v2');
    await f.set(entryKey(p, 'k'), await rawEntry(a, f, p, 'v1'), 'PX', 60_000);
    const { redirect } = await trackingInfo(a.client);
    proxy.hold();
    const read = a.cache.get('k'); // runs in Redis now; its reply held until tracking is being re-armed
    await sleep(50);
    // The redirect dies and the key changes before a new one exists: that write is reported to nobody.
    const replies = await f
      .multi()
      .client('KILL', 'ID', String(redirect))
      .set(entryKey(p, 'k'), raw, 'PX', 60_000)
      .exec();
    expect(replies?.map(([err]) => err)).toEqual([null, null]);
    const resubscribed = async () =>
      String(await f.client('LIST'))
        .split('\n')
        .some(
          (l) => l.includes(`name=${TRACKING_CONNECTION_NAME}`) && !l.includes(`id=${redirect} `) && / sub=1 /.test(l),
        );
    expect(await waitFor(resubscribed, L1_WAIT)).toBe(true);
    await sleep(100); // CLIENT TRACKING OFF/ON on the cache's connection now waits behind the held reply
    proxy.release();
    expect(await read).toBe('v1');
    expect(await waitFor(() => tracksOn(a.client), L1_WAIT)).toBe(true);
    expect(await a.cache.get('k')).toBe('v2');
  });

  // Was a bug (found by this review): a read of this instance whose reply comes after this instance's own `del` of
  // the key (both on the cache's connection: the GET ran first in Redis) filled L1 with the deleted value after `del`
  // emptied it, and nothing ever dropped it: with tracking the UNLINK went through the connection NOLOOP silences,
  // on the bus an instance ignores its own messages. `del` resolved 1, Redis had no key, and every later `get`
  // answered the deleted value from L1 until l1.ttl (every run, both modes). Now `del` (like every invalidation)
  // blocks the L1 fill of the reads of its keys already sent (lib/cache/cache.l1.ts, `remember`).
  it.each([
    ['tracking', 'get'],
    ['tracking', 'getOrSet'],
    ['bus', 'get'],
    ['bus', 'getOrSet'],
  ] as const)(
    "%s, %s: a read started before this instance's del and answered after it does not leave the deleted value in L1",
    async (mode, via) => {
      const proxy = await LinkProxy.start(redis.server.port);
      const p = `rtk-del${rand()}:`;
      const a = await cacheApp({ url: proxy.url }, p, mode);
      const b = await cacheApp({ url: redis.server.url }, p, mode);
      await b.cache.set('k', 'v1');
      await sleep(100);
      proxy.hold();
      const read = via === 'get' ? a.cache.get('k') : a.cache.getOrSet('k', async () => 'loaded');
      await sleep(50);
      const deleted = a.cache.del('k');
      await sleep(50);
      proxy.release();
      expect(await read).toBe('v1');
      expect(await deleted).toBe(1);
      const f = trackForCleanup(new Redis(redis.server.url));
      expect(await f.exists(entryKey(p, 'k'))).toBe(0);
      expect(await a.cache.get('k')).toBeUndefined();
    },
  );
});

describe('tags and soft invalidation with L1', () => {
  const redis = usePrivateRedis();

  it('tracking: an entry re-stored under other tags and invalidated through its old tag (hard, soft) leaves every L1', async () => {
    const p = `rtk-tg${rand()}:`;
    const a = await cacheApp({ url: redis.server.url }, p);
    const b = await cacheApp({ url: redis.server.url }, p);
    for (const soft of [false, true]) {
      await a.cache.set('k', 'v1', { tags: ['old'] });
      await a.cache.set('k', 'v2', { tags: ['new'] });
      await sleep(200);
      expect(await a.cache.get('k')).toBe('v2');
      expect(await b.cache.get('k')).toBe('v2');
      expect(await a.cache.invalidateTags('old', { soft })).toBe(1);
      // What Redis answers (a third instance reads it): deleted, or stale (get gives fresh values only).
      const c = await cacheApp({ url: redis.server.url }, p);
      expect(await c.cache.get('k')).toBeUndefined();
      expect(await waitFor(async () => (await a.cache.get('k')) === undefined, L1_WAIT)).toBe(true);
      expect(await waitFor(async () => (await b.cache.get('k')) === undefined, L1_WAIT)).toBe(true);
    }
  });

  // Was a bug (bus mode, the 'auto' fallback; found by this review): docs/cache.md says an entry re-stored with other
  // tags "may still be invalidated through an old tag" (it is deleted or softened in Redis), and that invalidateTags
  // reaches "every instance's L1 too". The bus message carried the tag names only, and each receiver dropped the keys
  // its own L1 indexes under those tags, taken from the entries' headers (the new tags): B kept serving v2 from L1
  // after A deleted or softened the key in Redis (every run: hard {a: undefined, b: 'v2'}, soft {a: 'v2', b: 'v2'}, a
  // fresh instance undefined). For soft, A's own L1 kept it too: softenTag did not drop the members from L1, unlike
  // deleteTag. (With tracking it held: the UNLINK and the soften script's SET are reported.) Now both drop the members
  // found in the index from L1, and the bus message carries their keys beside the tags (lib/cache/cache.l1.ts,
  // TagMembers; past 10,000 members the others empty their L1: the next test).
  it.each([false, true])(
    'bus: an entry re-stored under other tags and invalidated through its old tag (soft: %s) leaves every L1',
    async (soft) => {
      const p = `rtk-tb${rand()}:`;
      const a = await cacheApp({ url: redis.server.url }, p, 'bus');
      const b = await cacheApp({ url: redis.server.url }, p, 'bus');
      await a.cache.set('k', 'v1', { tags: ['old'] });
      await a.cache.set('k', 'v2', { tags: ['new'] });
      await sleep(200);
      expect(await b.cache.get('k')).toBe('v2');
      expect(await a.cache.invalidateTags('old', { soft })).toBe(1);
      const c = await cacheApp({ url: redis.server.url }, p, 'bus');
      expect(await c.cache.get('k')).toBeUndefined();
      await sleep(500); // the bus message has long arrived
      expect({ a: await a.cache.get('k'), b: await b.cache.get('k') }).toEqual({ a: undefined, b: undefined });
    },
  );

  it('bus: a tag of more than 10,000 entries invalidated: the other instances empty their L1', async () => {
    const p = `rtk-tm${rand()}:`;
    // 1,000 entries a call and a tag of 10,001 on a busy CI box can pass the default 1 s: no fault here
    const slow = { commandTimeout: 10_000 };
    const a = await cacheApp({ url: redis.server.url }, p, 'bus', slow, { max: 20_000, ttl: 60_000 });
    const b = await cacheApp({ url: redis.server.url }, p, 'bus', slow);
    const count = 10_001;
    for (let i = 0; i < count; i += 1_000) {
      const n = Math.min(1_000, count - i);
      await a.cache.mset(
        Array.from({ length: n }, (_, j) => ({ key: `m${i + j}`, value: 1, options: { tags: ['big'] } })),
      );
    }
    await a.cache.set('other', 'v1');
    await sleep(500); // A's messages heard: B's reads below fill its L1
    expect(await b.cache.get('other')).toBe('v1');
    expect(await b.cache.get('m0')).toBe(1);
    // Changed by a client B does not hear (no bus message): B answers from its L1 until it is emptied.
    const f = trackForCleanup(new Redis(redis.server.url));
    await f.set(entryKey(p, 'other'), await rawEntry(a, f, p, 'v2'), 'PX', 60_000);
    expect(await b.cache.get('other')).toBe('v1');
    expect(await a.cache.invalidateTags('big')).toBe(count);
    expect(await waitFor(async () => (await b.cache.get('other')) === 'v2', L1_WAIT)).toBe(true);
    expect(await b.cache.get('m0')).toBeUndefined();
    expect([a.cache.stats().errors, b.cache.stats().errors]).toEqual([0, 0]);
  }, 30_000);

  it.each(['tracking', 'bus'] as const)(
    '%s: soft invalidation by another instance: the next getOrSet is served stale with one refresh, not from L1',
    async (mode) => {
      const p = `rtk-sw${rand()}:`;
      const a = await cacheApp({ url: redis.server.url }, p, mode);
      const b = await cacheApp({ url: redis.server.url }, p, mode);
      let loads = 0;
      const loader = async () => `v${++loads}`;
      const opts = { ttl: 30_000, staleTtl: 30_000, tags: ['t'] };
      expect(await a.cache.getOrSetWithStatus('k', loader, opts)).toEqual({ value: 'v1', status: 'miss' });
      expect(await a.cache.getOrSetWithStatus('k', loader, opts)).toEqual({ value: 'v1', status: 'hit' });
      expect(await b.cache.invalidateTags('t', { soft: true })).toBe(1);
      expect(
        await waitFor(async () => (await a.cache.getOrSetWithStatus('k', loader, opts)).status !== 'hit', L1_WAIT),
      ).toBe(true);
      expect(await waitFor(async () => (await a.cache.get('k')) === 'v2', L1_WAIT)).toBe(true);
      expect(loads).toBe(2);
    },
  );
});

describe('L1 tracking connection faults the toolkit cannot see', () => {
  const redis = usePrivateRedis();

  // Was a bug (found by this review): nothing checked that the redirect connection still delivers. When it went
  // silent while its socket stayed open (a NAT, firewall or load balancer that dropped the idle flow: the redirect is
  // idle whenever nothing under the prefix is written), the main connection still worked, `live` stayed true (so L1
  // went on storing what it read) and every value changed since was served for up to l1.ttl, with nothing logged or
  // counted ('v1' for the whole 10 s, ~300 L1 hits, no warning, stats().errors 0). Now a redirect that heard nothing
  // for 1 s is PINGed (lib/cache/cache.tracking-master.ts, HEARTBEAT_MS); no answer within commandTimeout: L1 emptied,
  // counted, warned, the connection reconnected and tracked again.
  it('a redirect connection that goes silent (half-open) is noticed within 1 s + commandTimeout: warned, counted, L1 emptied, tracked again', async () => {
    const proxy = await LinkProxy.start(redis.server.port);
    const p = `rtk-ho${rand()}:`;
    const rec = recordingLogger();
    const a = await cacheApp({ url: proxy.url }, p, 'tracking', { commandTimeout: 500, logger: rec.logger });
    // (Nest's logger is one per process: the last app created sets it)
    const b = await cacheApp({ url: redis.server.url }, p, 'tracking', { logger: rec.logger });
    await b.cache.set('k', 'v1');
    await sleep(100);
    expect(await a.cache.get('k')).toBe('v1');
    // Idle but healthy: PINGed and answered, kept (same redirect), nothing said.
    const { redirect } = await trackingInfo(a.client);
    await sleep(2_500);
    expect((await trackingInfo(a.client)).redirect).toBe(redirect);
    // (only the L1's: an earlier test's app may report its throttled warnings' count into this process-wide logger)
    const l1Warnings = () => rec.warnings.filter((w) => w.includes('cache L1'));
    expect({ warnings: l1Warnings(), errors: a.cache.stats().errors }).toEqual({ warnings: [], errors: 0 });

    expect(proxy.silenceTracking()).toBe(1);
    const silencedAt = Date.now();
    await b.cache.set('k', 'v2');
    expect(await waitFor(async () => (await a.cache.get('k')) === 'v2', 10_000)).toBe(true);
    expect(Date.now() - silencedAt).toBeLessThan(1_000 + 500 + 1_000); // HEARTBEAT_MS + commandTimeout + slack
    expect(l1Warnings()).toEqual([expect.stringContaining('did not answer a PING within 500 ms (half-open?)')]);
    expect(a.cache.stats().errors).toBe(1);
    // The new redirect (a new link of the proxy, not silenced) reports again.
    expect(await waitFor(async () => (await trackingInfo(a.client)).redirect !== redirect, L1_WAIT)).toBe(true);
    expect(await waitFor(() => tracksOn(a.client), L1_WAIT)).toBe(true);
    expect(await a.cache.get('k')).toBe('v2');
    await b.cache.set('k', 'v3');
    expect(await waitFor(async () => (await a.cache.get('k')) === 'v3', L1_WAIT)).toBe(true);
  }, 30_000);

  // Was a bug (found by this review): two apps given the same ioredis client ({ client }, "an ioredis instance you
  // own"; two apps in one process are a case the docs name for tests and workers) each ran CLIENT TRACKING OFF + ON
  // REDIRECT <own id> on it. A connection has one redirect and one set of prefixes, so the second app's replaced the
  // first's: the first app never heard of any write again while believing it tracked, and the second's close turned
  // tracking off for good (the first app served a key a foreign client deleted, with no warning). Now the first app
  // to track on a connection of this process keeps it, and another tracks on a connection of its own
  // (lib/cache/cache.tracking-master.ts, trackedBy).
  it('two apps on one { client }: foreign writes reach both, also after the second app closed', async () => {
    const shared = trackForCleanup(new Redis(redis.server.url, { commandTimeout: 1_000 }));
    const p1 = `rtk-sh${rand()}:`;
    const p2 = `rtk-sh${rand()}:`;
    const cache: RedisToolkitOptions['cache'] = { l1: { ...L1, invalidation: 'tracking' } };
    const firstApp = await createToolkitApp({ target: { client: shared }, keyPrefix: p1, cache });
    const first = firstApp.get(CacheService);
    const secondApp = await createToolkitApp({ target: { client: shared }, keyPrefix: p2, cache });
    const second = secondApp.get(CacheService);
    const before = await trackingInfo(shared);
    expect(before.flags).toContain('on');
    await first.set('k', 'v1');
    await second.set('k', 'v1');
    await sleep(100);
    expect([await first.get('k'), await second.get('k')]).toEqual(['v1', 'v1']);
    const f = trackForCleanup(new Redis(redis.server.url));
    expect(await f.del(entryKey(p1, 'k'), entryKey(p2, 'k'))).toBe(2);
    expect(await waitFor(async () => (await first.get('k')) === undefined, L1_WAIT)).toBe(true);
    expect(await waitFor(async () => (await second.get('k')) === undefined, L1_WAIT)).toBe(true);
    // The second app's close leaves the first app's tracking on the shared client as it was.
    await secondApp.close();
    expect(await trackingInfo(shared)).toEqual(before);
    await first.set('k', 'v2');
    await sleep(100);
    expect(await first.get('k')).toBe('v2');
    expect(await f.del(entryKey(p1, 'k'))).toBe(1);
    expect(await waitFor(async () => (await first.get('k')) === undefined, L1_WAIT)).toBe(true);
  });
});

describe('L1 tracking through a cluster failover (3 masters, 1 replica each)', () => {
  let cluster: RedisClusterHandle;
  beforeAll(async () => {
    cluster = await startRedisCluster({ masters: 3, replicasPerMaster: 1 });
  }, 60_000);
  afterAll(async () => {
    await closeToolkitApps();
    await cluster?.stop();
  });

  it('a master paused and taken over by its replica: a write on the new master is seen, none is served stale after', async () => {
    const p = `rtk-fo${rand()}:`;
    const a = await cacheApp({ cluster: cluster.startupNodes }, p, 'tracking', { commandTimeout: 500 });
    const f = trackForCleanup(new Cluster(cluster.startupNodes, { redisOptions: { commandTimeout: 5_000 } }));
    const key = entryKey(p, 'k');
    await a.cache.set('k', 'v1');
    expect(await a.cache.get('k')).toBe('v1');
    const raw2 = await rawEntryCluster(a.cache, f, p, 'v2');
    const raw3 = await rawEntryCluster(a.cache, f, p, 'v3');

    const slot = Number(await f.cluster('KEYSLOT', key));
    const owner = ((await f.cluster('SLOTS')) as unknown as [number, number, [string, number, string]][]).find(
      ([from, to]) => slot >= from && slot <= to,
    );
    const victim = cluster.nodes.find((n) => n.port === Number(owner?.[2][1]));
    if (!victim) throw new Error('no owner of the slot');
    const victimId = owner?.[2][2];
    const nodes = String(await rawCommand(victim.port, ['CLUSTER', 'NODES']));
    const replicaLine = nodes.split('\n').find((l) => l.split(' ')[3] === victimId);
    const replica = cluster.nodes.find((n) => replicaLine?.includes(`:${n.port}@`));
    if (!replica) throw new Error('no replica of the slot owner');
    expect(await rawCommand(victim.port, ['WAIT', '1', '5000'])).toBe(1); // the replica has k before the takeover

    const direct = trackForCleanup(new Redis(replica.port, '127.0.0.1'));
    victim.pause();
    try {
      expect(await rawCommand(replica.port, ['CLUSTER', 'FAILOVER', 'TAKEOVER'])).toBe('OK');
      expect(
        await waitFor(
          async () => /role:master/.test(String(await rawCommand(replica.port, ['INFO', 'replication']))),
          10_000,
        ),
      ).toBe(true);
      await direct.set(key, raw2, 'PX', 60_000);
    } finally {
      // (While it is paused, the instance still answers v1 from L1 for those slots: it has sent nothing there, so it
      // has not seen the takeover. That is the outage of docs/cache.md's known limit, bounded by l1.ttl.)
      victim.resume();
    }
    // The old master comes back as a replica: from then on nothing stale, and the instance tracks the new master.
    expect(await waitFor(async () => (await a.cache.get('k')) === 'v2', 10_000)).toBe(true);
    const tracksNewMaster = () => {
      const redirects = (
        a.cache as unknown as { l1: { tracking: { redirects(): Record<string, number> } } }
      ).l1.tracking.redirects();
      return Object.entries(redirects).some(([addr, id]) => addr.endsWith(`:${replica.port}`) && id > 0);
    };
    expect(await waitFor(tracksNewMaster, 10_000)).toBe(true);
    await direct.set(key, raw3, 'PX', 60_000);
    expect(await waitFor(async () => (await a.cache.get('k')) === 'v3', L1_WAIT)).toBe(true);
  }, 45_000);
});

/** rawEntry on a cluster: the bytes of an entry holding `value`. */
async function rawEntryCluster(cache: CacheService, foreign: Cluster, keyPrefix: string, value: unknown) {
  const key = `raw-${rand()}`;
  await cache.set(key, value);
  const raw = await foreign.getBuffer(entryKey(keyPrefix, key));
  if (raw === null) throw new Error('the raw entry was not stored');
  return raw;
}
