/**
 * What each feature does when Redis loses data without being "down": eviction under a small `maxmemory` with
 * `allkeys-lru`, and a restart without persistence (SIGKILL, `--save ''`, no AOF: every key gone).
 *
 * Today's behaviour is asserted as it is. Fencing tokens never go backwards when the counter is lost (issue 17
 * item 7: they are floored by the Redis clock in µs).
 */
import 'reflect-metadata';
import { CacheService, LockService, RateLimitService, RedisUnavailableError, SessionService } from '../../lib/index.js';
import { FEATURES, KeyBuilder } from '../../lib/common/keys.js';
import { trackForCleanup } from '../support/private-servers.js';
import { startRedisServer, type RedisServerHandle } from '../support/redis-server.js';
import { rawCommand } from '../support/resp.js';
import { closeToolkitApps, createToolkitApp, type ToolkitApp } from '../support/toolkit-app.js';
import { httpGet, startSampleApp } from './harness/sample-app.js';

afterEach(closeToolkitApps);

/** INFO stats field as a number. */
async function infoNumber(server: RedisServerHandle, section: string, field: string): Promise<number> {
  const info = String(await rawCommand(server.port, ['INFO', section], { timeoutMs: 10_000 }));
  const m = new RegExp(`^${field}:(\\d+)`, 'm').exec(info);
  if (!m) throw new Error(`INFO ${section} has no ${field}`);
  return Number(m[1]);
}

/** How many keys match `pattern` (a private server of ~130 keys: one SCAN page of 1,000 sees them all). */
async function storedKeys(server: RedisServerHandle, pattern: string): Promise<number> {
  const [, keys] = (await rawCommand(server.port, ['SCAN', '0', 'MATCH', pattern, 'COUNT', '1000'])) as [
    string,
    string[],
  ];
  return keys.length;
}

/** Writes ~`mb` MB of cache entries nobody reads again: under allkeys-lru the older untouched keys go first. */
async function fillCache(cache: CacheService, tag: string, mb: number): Promise<void> {
  const value = 'x'.repeat(64 * 1024);
  const count = Math.ceil((mb * 1024 * 1024) / value.length);
  for (let i = 0; i < count; i += 16) {
    await Promise.all(
      Array.from({ length: Math.min(16, count - i) }, (_, j) =>
        cache.set(`fill:${tag}:${i + j}`, value, { ttl: 600_000 }),
      ),
    );
  }
}

/**
 * Fills 40 MB, then again (at most 5 more times) while `pattern` still matches `atLeast` keys or more. Redis's LRU
 * clock ticks once a second: keys written in the same second as a fast fill are no older than the fill's own keys,
 * and one fill may evict only those (seen in CI for the cache entry, then for the rate-limit counter). SCAN does not
 * touch a key's LRU clock, so watching does not protect what is watched.
 */
async function fillUntilEvicted(
  server: RedisServerHandle,
  cache: CacheService,
  tag: string,
  pattern: string,
  atLeast = 1,
): Promise<void> {
  await fillCache(cache, tag, 40);
  for (let round = 1; round <= 5 && (await storedKeys(server, pattern)) >= atLeast; round++) {
    await fillCache(cache, `${tag}${round}`, 40);
  }
}

describe('eviction: maxmemory 8 MB, allkeys-lru', () => {
  let server: RedisServerHandle;
  let app: ToolkitApp;

  beforeEach(async () => {
    server = trackForCleanup(
      await startRedisServer({ args: ['--maxmemory', '8mb', '--maxmemory-policy', 'allkeys-lru'] }),
    );
    app = await createToolkitApp({ target: { url: server.url }, commandTimeout: 5_000 });
  });

  it('cache: an evicted entry is a miss and the loader runs again; every read returns the loader value, no error', async () => {
    const cache = app.get(CacheService);
    let loads = 0;
    const loader = async (): Promise<{ v: number }> => {
      loads++;
      return { v: 42 };
    };
    expect(await cache.getOrSet('product:1', loader, { ttl: 600_000 })).toEqual({ v: 42 });
    expect(await cache.getOrSet('product:1', loader, { ttl: 600_000 })).toEqual({ v: 42 });
    expect(loads).toBe(1);
    const entryPattern = `*cache:${KeyBuilder.escape('product:1')}`;
    expect(await storedKeys(server, entryPattern)).toBe(1);
    await fillUntilEvicted(server, cache, 'a', entryPattern);
    expect(await infoNumber(server, 'stats', 'evicted_keys')).toBeGreaterThan(0);
    expect(await cache.get('product:1')).toBeUndefined();
    expect(await cache.getOrSet('product:1', loader, { ttl: 600_000 })).toEqual({ v: 42 });
    expect(loads).toBe(2);
    expect(cache.stats().errors).toBe(0);
  });

  it('sessions: an evicted session is gone (get → null, like a logout), never partial or corrupted', async () => {
    const sessions = app.get(SessionService);
    const created = await Promise.all(
      Array.from({ length: 20 }, (_, i) => sessions.create(`user-${i}`, { cart: [i, i + 1] })),
    );
    const sessionPattern = `*${FEATURES.session}:{*`;
    expect(await storedKeys(server, sessionPattern)).toBe(created.length);
    await fillUntilEvicted(server, app.get(CacheService), 'b', sessionPattern, created.length);
    const after = await Promise.all(created.map((s) => sessions.get(s.id)));
    const kept = after.filter((s) => s !== null);
    // Each session is either entirely there or entirely gone.
    for (const s of kept) {
      const original = created.find((c) => c.id === s?.id);
      expect(s?.userId).toBe(original?.userId);
      expect(s?.data).toEqual(original?.data);
    }
    expect(kept.length).toBeLessThan(created.length); // the fill did evict sessions: the scenario is real
  });

  it('rate limit: an evicted counter starts again from zero (documented: allkeys-* can admit more than the limit)', async () => {
    const rl = app.get(RateLimitService);
    const policy = { limit: 3, ttl: 600_000 };
    const before = await Promise.all(Array.from({ length: 5 }, () => rl.consume('client-a', policy)));
    expect(before.filter((r) => r.allowed)).toHaveLength(3);
    const counterPattern = `*${FEATURES.rateLimit}:*`;
    expect(await storedKeys(server, counterPattern)).toBe(1);
    await fillUntilEvicted(server, app.get(CacheService), 'c', counterPattern);
    expect(await storedKeys(server, counterPattern)).toBe(0);
    const after = await Promise.all(Array.from({ length: 5 }, () => rl.consume('client-a', policy)));
    // The counter was evicted with the rest: the budget is back. Never more than one fresh window's worth, though.
    expect(after.filter((r) => r.allowed)).toHaveLength(3);
  });

  it('locks: after the fence counter is evicted the next token is still drawn (no error)', async () => {
    const locks = app.get(LockService);
    const first = await locks.acquire('invoice-7', { ttl: 60_000 });
    await first.release();
    const fencePattern = `*${FEATURES.lock}:*invoice-7*:fence`;
    expect(await storedKeys(server, fencePattern)).toBe(1);
    await fillUntilEvicted(server, app.get(CacheService), 'd', fencePattern);
    expect(await storedKeys(server, fencePattern)).toBe(0);
    const next = await locks.acquire('invoice-7', { ttl: 60_000 });
    expect(next.fencingToken).toBeGreaterThanOrEqual(1);
    await next.release();
  });

  // issue 17 item 7: tokens are floored by the Redis clock in µs, so a lost counter cannot send them backwards.
  it('locks: fencing tokens never go backwards when the counter is evicted', async () => {
    const locks = app.get(LockService);
    const tokens: number[] = [];
    for (let i = 0; i < 3; i++) {
      const l = await locks.acquire('invoice-8', { ttl: 60_000 });
      tokens.push(l.fencingToken);
      await l.release();
    }
    const fencePattern = `*${FEATURES.lock}:*invoice-8*:fence`;
    expect(await storedKeys(server, fencePattern)).toBe(1);
    await fillUntilEvicted(server, app.get(CacheService), 'e', fencePattern);
    expect(await storedKeys(server, fencePattern)).toBe(0);
    const next = await locks.acquire('invoice-8', { ttl: 60_000 });
    await next.release();
    expect(next.fencingToken).toBeGreaterThan(Math.max(...tokens));
  });
});

describe('restart without persistence (SIGKILL, no RDB/AOF): every key is gone', () => {
  it('sample app: a logged-in session answers 401 after the restart (not 503, not 200)', async () => {
    const server = trackForCleanup(await startRedisServer());
    const app = await startSampleApp({ redisUrl: server.url, env: { LOGIN_LIMIT_PER_MINUTE: '1000' } });
    try {
      const res = await fetch(`${app.baseUrl}/auth/login`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ userId: 'restart-user', username: 'restart-user', password: 'proof' }),
      });
      const cookie = res.headers
        .getSetCookie()
        .map((c) => c.split(';')[0])
        .join('; ');
      expect(cookie).not.toBe('');
      expect((await httpGet(`${app.baseUrl}/me`, 5_000, { cookie })).status).toBe(200);
      await server.kill();
      await server.restart();
      // Wait for the app to be back (bounded), then the session is simply unknown.
      const deadline = Date.now() + 20_000;
      let health = await httpGet(`${app.baseUrl}/health`, 5_000);
      while (!health.body.includes('"up"') && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 100));
        health = await httpGet(`${app.baseUrl}/health`, 5_000);
      }
      expect(health.body).toContain('"up"');
      expect((await httpGet(`${app.baseUrl}/me`, 5_000, { cookie })).status).toBe(401);
      expect(app.troubles()).toEqual([]);
    } finally {
      await app.stop();
    }
  }, 60_000);

  it('rate limit: counters start again from zero after the restart', async () => {
    const server = trackForCleanup(await startRedisServer());
    const app = await createToolkitApp({ target: { url: server.url }, commandTimeout: 5_000 });
    const rl = app.get(RateLimitService);
    const policy = { limit: 2, ttl: 600_000 };
    expect((await Promise.all([0, 1, 2].map(() => rl.consume('k', policy)))).filter((r) => r.allowed)).toHaveLength(2);
    await server.kill();
    await server.restart();
    const connected = await (async () => {
      const deadline = Date.now() + 20_000;
      for (;;) {
        const r = await rl.consume('probe', policy).catch(() => undefined);
        if (r && r.degraded === undefined) return true;
        if (Date.now() > deadline) return false;
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    })();
    expect(connected).toBe(true);
    expect((await Promise.all([0, 1, 2].map(() => rl.consume('k', policy)))).filter((r) => r.allowed)).toHaveLength(2);
  }, 60_000);

  // issue 17 item 7: before the fix, tokens 1, 2, 3 were followed by 1 after the restart.
  it('locks: fencing tokens never go backwards across a restart without persistence', async () => {
    const server = trackForCleanup(await startRedisServer());
    const app = await createToolkitApp({ target: { url: server.url }, commandTimeout: 5_000 });
    const locks = app.get(LockService);
    const tokens: number[] = [];
    for (let i = 0; i < 3; i++) {
      const l = await locks.acquire('ledger', { ttl: 60_000 });
      tokens.push(l.fencingToken);
      await l.release();
    }
    await server.kill();
    await server.restart();
    // Locks fail closed while the connection is reconnecting (RedisUnavailableError at once): retry until it is back.
    const deadline = Date.now() + 20_000;
    let next: Awaited<ReturnType<LockService['acquire']>> | undefined;
    while (!next) {
      try {
        next = await locks.acquire('ledger', { ttl: 60_000, waitMs: 5_000 });
      } catch (err) {
        if (!(err instanceof RedisUnavailableError) || Date.now() > deadline) throw err;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    await next.release();
    expect(next.fencingToken).toBeGreaterThan(Math.max(...tokens));
  }, 60_000);
});
