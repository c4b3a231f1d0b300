import 'reflect-metadata';
import { randomBytes, randomUUID } from 'node:crypto';
import type { Server } from 'node:http';
import {
  RateLimitService,
  RedisUnavailableError,
  type RateLimitOptions,
  type RateLimitPolicy,
} from '../../lib/index.js';
import type { RateLimitCheck } from '../../lib/advanced.js';
import { shiftDateNow, useClockShift } from '../support/clock-shift.js';
import { trackForCleanup } from '../support/private-servers.js';
import { masterPortOf, restoreKilledMaster, twoTrackerController } from '../support/cluster-outage.js';
import { startRedisCluster, type RedisClusterHandle } from '../support/redis-cluster.js';
import { PLATFORMS, closeToolkitApps, createToolkitApp, type RedisTarget } from '../support/toolkit-app.js';
import { bootToolkitApp, useKillableRedis } from '../support/toolkit-boot.js';
import { sleep } from '../support/wait.js';

// docs/rate-limit.md, "Block cache (`blockCache`)", held to the code where no other spec does:
// - what another process's reset() or block() does to a refusal learnt here (until its time, and no longer);
// - maxKeys drops the least recently used counter (not the oldest learnt);
// - the refusals it answers do not move with this process's wall clock (Redis time: app clocks do not matter);
// - with Redis unreachable, a counter it refuses keeps the decision refused (denied, no `degraded`), on a cluster
//   beside a tracker whose master is dead (service and HTTP on Express and Fastify, where the 429 carries its
//   rate-limit headers), and on one server in a decision beside a counter it knows nothing of. Fixed 2026-12-06: on
//   one server such a decision went to the failure policy (admitted failing open, admitted by insurance, or a 503
//   with failOpen: false), where the same decision on a cluster, or the counter alone, was refused.

afterAll(closeToolkitApps);
useClockShift();

const WINDOW: RateLimitPolicy = { limit: 1, ttl: 60_000, algorithm: 'fixed-window' };

async function service(
  target: RedisTarget,
  rateLimit: RateLimitOptions,
  keyPrefix = `rtk-${randomUUID().slice(0, 8)}:`,
): Promise<RateLimitService> {
  const app = await createToolkitApp({ target, rateLimit, keyPrefix });
  return app.get(RateLimitService);
}

/** Admitted once, then refused by Redis: the block cache has learnt the refusal. Resolves with that refusal. */
async function spend(rl: RateLimitService, key: string, policy: RateLimitPolicy) {
  expect((await rl.consume(key, policy)).allowed).toBe(true);
  const refused = await rl.consume(key, policy);
  expect(refused.allowed).toBe(false);
  return refused;
}

describe.each(['single', 'cluster'] as const)('the block cache on %s', (target) => {
  it("another process's reset() is not seen: refused here until Redis's time, and admitted from then", async () => {
    const prefix = `rtk-${randomUUID().slice(0, 8)}:`;
    const cached = await service(target, { blockCache: true }, prefix);
    const peer = await service(target, {}, prefix);
    const policy: RateLimitPolicy = { limit: 1, ttl: 1_500, algorithm: 'fixed-window' };
    const key = randomUUID();
    const refused = await spend(cached, key, policy);
    await peer.reset(key, policy);
    expect((await peer.peek(key, policy)).allowed).toBe(true); // Redis would admit it now
    const before = cached.stats().deniedLocally;
    const stale = await cached.consume(key, policy);
    expect(stale.allowed).toBe(false);
    expect(stale.retryAfterMs).toBeLessThanOrEqual(refused.retryAfterMs);
    expect(cached.stats().deniedLocally - before).toBe(1);
    // the refusal's own time (counted from when it was sent) is over: Redis decides again, and admits
    await sleep(refused.retryAfterMs);
    expect((await cached.consume(key, policy)).allowed).toBe(true);
    expect(cached.stats().deniedLocally - before).toBe(1);
  });

  it("another process's block() needs no forgetting: once the refusal learnt here ends, Redis refuses (blocked)", async () => {
    const prefix = `rtk-${randomUUID().slice(0, 8)}:`;
    const cached = await service(target, { blockCache: true }, prefix);
    const peer = await service(target, {}, prefix);
    const policy: RateLimitPolicy = { limit: 1, ttl: 1_000, algorithm: 'fixed-window' };
    const key = randomUUID();
    const refused = await spend(cached, key, policy);
    await peer.block(key, 30_000, policy);
    await sleep(refused.retryAfterMs);
    const before = cached.stats().deniedLocally;
    const blocked = await cached.consume(key, policy);
    expect(blocked.allowed).toBe(false);
    expect(blocked.retryAfterMs).toBeGreaterThan(20_000);
    expect(cached.stats().deniedLocally - before).toBe(0); // Redis's refusal, learnt: the next one is answered here
    expect((await cached.consume(key, policy)).retryAfterMs).toBeGreaterThan(20_000);
    expect(cached.stats().deniedLocally - before).toBe(1);
  });

  it('maxKeys: the least recently used counter is dropped (asked of Redis again), not the first learnt', async () => {
    const rl = await service(target, { blockCache: { maxKeys: 2 } });
    const [a, b, c] = [randomUUID(), randomUUID(), randomUUID()];
    await spend(rl, a, WINDOW);
    await spend(rl, b, WINDOW);
    const start = rl.stats().deniedLocally;
    expect((await rl.consume(a, WINDOW)).allowed).toBe(false); // answered here: a is now the most recently used
    expect(rl.stats().deniedLocally - start).toBe(1);
    await spend(rl, c, WINDOW); // a third counter: b, the least recently used, is dropped
    expect((await rl.consume(a, WINDOW)).allowed).toBe(false);
    expect(rl.stats().deniedLocally - start).toBe(2);
    expect((await rl.consume(b, WINDOW)).allowed).toBe(false); // Redis refuses it: asked, not answered here
    expect(rl.stats().deniedLocally - start).toBe(2);
  });

  it("its answers do not move with this process's wall clock (an hour back, an hour ahead)", async () => {
    const rl = await service(target, { blockCache: true });
    const key = randomUUID();
    const refused = await spend(rl, key, WINDOW);
    const start = rl.stats().deniedLocally;
    const seen: [boolean, boolean][] = [];
    for (const shift of [-3_600_000, 3_600_000]) {
      shiftDateNow(shift);
      const r = await rl.consume(key, WINDOW);
      seen.push([r.allowed, r.retryAfterMs > refused.retryAfterMs - 10_000 && r.retryAfterMs <= refused.retryAfterMs]);
    }
    expect(seen).toEqual([
      [false, true],
      [false, true],
    ]);
    expect(rl.stats().deniedLocally - start).toBe(2);
  });
});

describe('the block cache with the single server killed', () => {
  const redis = useKillableRedis();

  async function boot(rateLimit: RateLimitOptions) {
    const app = await bootToolkitApp({
      target: { url: redis.server.url },
      commandTimeout: 300,
      maxReconnectDelay: 100,
      keyPrefix: `rtk-${randomUUID().slice(0, 8)}:`,
      rateLimit: { warnIntervalMs: 60_000, blockCache: true, ...rateLimit },
    });
    return app.get(RateLimitService);
  }

  it.each([
    ['failing open', {}, 'fail-open'],
    ['with insurance', { insurance: true }, 'insurance'],
  ] as const)(
    '%s: a decision holding a counter it refuses is refused (denied, no degraded), the counter alone or not',
    async (_, options, degraded) => {
      const rl = await boot(options);
      const [spent, fresh, other] = [randomUUID(), randomUUID(), randomUUID()];
      await spend(rl, spent, WINDOW);
      await redis.server.kill();
      const pair: RateLimitCheck[] = [
        { key: spent, policy: WINDOW, name: 'spent' },
        { key: fresh, policy: WINDOW, name: 'fresh' },
      ];
      const before = rl.stats();
      const alone = await rl.consume(spent, WINDOW);
      const both = await rl.consumeAll(pair);
      const reversed = await rl.consumeAll([...pair].reverse());
      const peeked = await rl.peekAll(pair);
      const unrelated = await rl.consume(other, WINDOW);
      expect([alone, both, reversed, peeked, unrelated].map((d) => `${d.allowed} ${d.degraded ?? 'redis'}`)).toEqual([
        'false redis',
        'false redis',
        'false redis',
        'false redis',
        `true ${degraded}`,
      ]);
      // the counter it knows nothing of is reported as the failure policy reports an unread one; nothing charged
      expect(both.results.map((r) => [r.name, r.allowed, r.remaining])).toEqual([
        ['spent', false, 0],
        ['fresh', true, 1],
      ]);
      expect(both.retryAfterMs).toBeGreaterThan(50_000);
      const after = rl.stats();
      expect({
        denied: after.denied - before.denied,
        deniedLocally: after.deniedLocally - before.deniedLocally,
        failedOpen: after.failedOpen - before.failedOpen,
        insurance: after.insurance - before.insurance,
      }).toEqual({
        denied: 3,
        deniedLocally: 3,
        failedOpen: degraded === 'fail-open' ? 1 : 0,
        insurance: degraded === 'insurance' ? 1 : 0,
      });
    },
  );

  it('failOpen: false: refused (as Redis would), not RedisUnavailableError; a decision it cannot refuse still throws', async () => {
    const rl = await boot({ failOpen: false });
    const [spent, fresh] = [randomUUID(), randomUUID()];
    await spend(rl, spent, WINDOW);
    await redis.server.kill();
    const decision = await rl
      .consumeAll([
        { key: fresh, policy: WINDOW, name: 'fresh' },
        { key: spent, policy: WINDOW, name: 'spent' },
      ])
      .catch((err: unknown) => err);
    expect(decision).toMatchObject({ allowed: false });
    expect((decision as { degraded?: string }).degraded).toBeUndefined();
    await expect(rl.consume(fresh, WINDOW)).rejects.toBeInstanceOf(RedisUnavailableError);
    expect(rl.stats()).toMatchObject({ denied: 2, deniedLocally: 1, failedClosed: 1 });
  });
});

const tight: RateLimitPolicy = { limit: 2, ttl: 60_000 };
const BlockedController = twoTrackerController('bc', tight);

describe('the block cache on a cluster with a master killed', () => {
  let cluster: RedisClusterHandle;
  beforeAll(async () => {
    cluster = trackForCleanup(await startRedisCluster());
  }, 60_000);
  afterEach(async () => {
    await closeToolkitApps();
    await restoreKilledMaster(cluster);
  });

  /** An app with the block cache; `dead(tag)` and `live(n, tag)` give keys whose counters are on the victim or not. */
  async function boot(extra: { http?: boolean; platform?: (typeof PLATFORMS)[number] } = {}) {
    const app = await bootToolkitApp({
      target: { cluster: cluster.startupNodes },
      keyPrefix: `rtk-bcc-${randomBytes(3).toString('hex')}:`,
      commandTimeout: 400,
      maxReconnectDelay: 100,
      rateLimit: { warnIntervalMs: 60_000, blockCache: true },
      controllers: extra.http ? [BlockedController] : [],
      ...extra,
    });
    const rl = app.get(RateLimitService);
    const portOf = await masterPortOf(cluster, rl);
    const victim = cluster.masters[0];
    const onVictim = (key: string) => portOf(key) === victim.port;
    const pick = (n: number, tag: string, dead: boolean) => {
      const keys: string[] = [];
      for (let i = 0; keys.length < n; i++) if (onVictim(`${tag}-${i}`) === dead) keys.push(`${tag}-${i}`);
      return keys;
    };
    return {
      app,
      rl,
      victim,
      dead: (tag: string) => pick(1, tag, true)[0],
      live: (n: number, tag: string) => pick(n, tag, false),
    };
  }

  it('a tracker refused here beside one on the dead master, in either order: refused, denied, no degraded', async () => {
    const { rl, victim, dead, live } = await boot();
    const deadKey = dead('ip');
    const [spent] = live(1, 'user');
    await spend(rl, spent, WINDOW);
    await victim.kill();
    const before = rl.stats();
    const decisions = [
      await rl.consumeAll([
        { key: deadKey, policy: WINDOW, name: 'ip' },
        { key: spent, policy: WINDOW, name: 'user' },
      ]),
      await rl.consumeAll([
        { key: spent, policy: WINDOW, name: 'user' },
        { key: deadKey, policy: WINDOW, name: 'ip' },
      ]),
    ];
    expect(decisions.map((d) => `${d.allowed} ${d.degraded ?? 'redis'}`)).toEqual(['false redis', 'false redis']);
    const after = rl.stats();
    expect({
      denied: after.denied - before.denied,
      deniedLocally: after.deniedLocally - before.deniedLocally,
      failedOpen: after.failedOpen - before.failedOpen,
    }).toEqual({ denied: 2, deniedLocally: 2, failedOpen: 0 });
  });

  it.each(PLATFORMS)(
    'over HTTP on %s: a 429 with its rate-limit headers and Retry-After, either order',
    async (platform) => {
      const { app, rl, victim, dead, live } = await boot({ http: true, platform });
      const { port } = (app.app.getHttpServer() as Server).address() as { port: number };
      const deadIp = dead('ip');
      const ips = live(3, 'ip');
      const [spent] = live(1, 'user');
      const get = async (path: string, ip: string) => {
        const res = await fetch(`http://127.0.0.1:${port}/bc/${path}`, { headers: { 'x-user-id': spent, 'x-ip': ip } });
        await res.text();
        return { status: res.status, retryAfter: res.headers.get('retry-after'), state: res.headers.get('ratelimit') };
      };
      for (const path of ['user-first', 'ip-first']) {
        expect([await get(path, ips[0]), await get(path, ips[1])].map((r) => r.status)).toEqual([200, 200]);
        expect((await get(path, ips[2])).status).toBe(429); // Redis refused the user: learnt
      }
      await victim.kill();
      const start = rl.stats().deniedLocally;
      for (const path of ['user-first', 'ip-first']) {
        const r = await get(path, deadIp);
        expect({ path, status: r.status, user: r.state?.match(/"user";r=(\d+)/)?.[1] }).toEqual({
          path,
          status: 429,
          user: '0',
        });
        expect(Number(r.retryAfter)).toBeGreaterThan(50);
      }
      expect(rl.stats().deniedLocally - start).toBe(2);
    },
  );
});
