import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import type { Server } from 'node:http';
import {
  RateLimitService,
  RedisUnavailableError,
  type RateLimitOptions,
  type RateLimitPolicy,
} from '../../lib/index.js';
import type { RateLimitCheck } from '../../lib/advanced.js';
import { trackForCleanup } from '../support/private-servers.js';
import { masterPortOf, restoreKilledMaster, twoTrackerController } from '../support/cluster-outage.js';
import { recordingLogger } from '../support/recording-logger.js';
import { startRedisCluster, type RedisClusterHandle } from '../support/redis-cluster.js';
import { startRedisServer, type RedisServerHandle } from '../support/redis-server.js';
import { PLATFORMS, closeToolkitApps, createToolkitApp, type Platform } from '../support/toolkit-app.js';

/**
 * A rate-limit decision on a Redis Cluster meets a dead master the way it meets a dead single server (DESIGN.md: one
 * failure policy, nothing fails silently):
 * - the fail-open (and insurance) warning's count counts decisions, not script calls: a consumeAll of a per-IP and a
 *   per-user tracker is one script call on one server, one per tracker on a cluster, and it is one decision on both;
 * - with `failOpen: false`, a decision Redis refused for one tracker is a refusal (429), whatever another tracker's
 *   master; only a decision Redis could not make is a 503.
 * One private single server and one private 3-master cluster; a test kills the server or one master, and restores it.
 */

const COMMAND_TIMEOUT = 400;
const policy: RateLimitPolicy = { limit: 100, ttl: 60_000 };
const tight: RateLimitPolicy = { limit: 2, ttl: 60_000 };

let single: RedisServerHandle;
let cluster: RedisClusterHandle;
beforeAll(async () => {
  [single, cluster] = await Promise.all([
    startRedisServer().then((s) => trackForCleanup(s)),
    startRedisCluster().then((c) => trackForCleanup(c)),
  ]);
}, 60_000);
afterEach(async () => {
  await closeToolkitApps();
  if (!single.isRunning()) await single.restart();
  await restoreKilledMaster(cluster);
});

type Target = 'single server' | 'cluster';

/** An app on `target`, its warnings recorded; `dead(n, tag)` gives n keys whose counters are on the victim. */
async function boot(
  target: Target,
  rateLimit: RateLimitOptions = {},
  extra: { http?: boolean; platform?: Platform } = {},
) {
  const rec = recordingLogger();
  const app = await createToolkitApp({
    target: target === 'cluster' ? { cluster: cluster.startupNodes } : { url: single.url },
    keyPrefix: `rtk-cod-${randomBytes(3).toString('hex')}:`,
    commandTimeout: COMMAND_TIMEOUT,
    maxReconnectDelay: 100,
    logger: rec.logger,
    rateLimit: { warnIntervalMs: 60_000, ...rateLimit },
    controllers: extra.http ? [OutageController] : [],
    ...extra,
  });
  const rl = app.get(RateLimitService);
  const portOf = target === 'cluster' ? await masterPortOf(cluster, rl) : () => single.port;
  const victim = target === 'cluster' ? cluster.masters[0] : single;
  const pick = (n: number, tag: string, onVictim: boolean) => {
    const keys: string[] = [];
    for (let i = 0; keys.length < n; i++) {
      const key = `${tag}-${i}`;
      if ((portOf(key) === victim.port) === onVictim) keys.push(key);
    }
    return keys;
  };
  return {
    app,
    rl,
    victim,
    dead: (n: number, tag: string) => pick(n, tag, true),
    live: (n: number, tag: string) => (target === 'cluster' ? pick(n, tag, false) : []),
    warnings: () => rec.warnings.filter((w) => w.includes('rate limiting')),
  };
}

describe.each<[Target]>([['single server'], ['cluster']])(
  'the rate-limit outage warning counts decisions (%s)',
  (target) => {
    it.each([
      ['fail open', {}, 'failedOpen', 'allowing requests (failOpen)'],
      ['insurance', { insurance: true }, 'insurance', 'the in-process insurance limiter decides'],
    ] as const)(
      '%s: one count per decision, a consumeAll of two trackers included',
      async (_, options, counter, means) => {
        const { app, rl, victim, dead, warnings } = await boot(target, options);
        const keys = dead(16, 'k');
        const pair = (i: number): RateLimitCheck[] => [
          { key: keys[2 * i], policy, name: 'ip' },
          { key: keys[2 * i + 1], policy, name: 'user' },
        ];
        await rl.consume(keys[0], policy); // connected, the eviction check done
        await victim.kill();
        // 3 decisions one after another, then 4 decisions of one tick (one pipeline per master on a cluster), then 2
        // single consumes of one tick: 9 decisions, 16 script calls on a cluster
        for (let i = 0; i < 3; i++) expect((await rl.consumeAll(pair(i))).allowed).toBe(true);
        const tick = await Promise.all([3, 4, 5, 6].map((i) => rl.consumeAll(pair(i))));
        expect(tick.map((d) => d.allowed)).toEqual([true, true, true, true]);
        const singles = await Promise.all([keys[14], keys[15]].map((k) => rl.consume(k, policy)));
        expect(singles.map((r) => r.allowed)).toEqual([true, true]);
        expect(rl.stats()[counter]).toBe(9);
        await app.close(); // logs the count not reported yet at once
        expect(warnings().filter((w) => w.includes(means))).toHaveLength(1);
        expect(warnings().filter((w) => w.includes('more since the last warning'))).toEqual([
          'failed rate limiting calls (Redis unavailable): 8 more since the last warning, not logged one by one',
        ]);
      },
    );
  },
);

describe('a cluster with failOpen: false: a decision Redis refused for one tracker is a refusal, another master dead', () => {
  it('refused then dead, dead then refused: refused (denied), not RedisUnavailableError; dead and admitted: thrown', async () => {
    const { app, rl, victim, dead, live, warnings } = await boot('cluster', { failOpen: false });
    const [deadKey] = dead(1, 'ip');
    const [spent, fresh] = live(2, 'user');
    for (let i = 0; i < tight.limit; i++) await rl.consume(spent, tight);
    await victim.kill();
    const before = rl.stats();
    const spentFirst = await rl.consumeAll([
      { key: spent, policy: tight, name: 'user' },
      { key: deadKey, policy: tight, name: 'ip' },
    ]);
    const deadFirst = await rl.consumeAll([
      { key: deadKey, policy: tight, name: 'ip' },
      { key: spent, policy: tight, name: 'user' },
    ]);
    for (const decision of [spentFirst, deadFirst]) {
      expect(decision.allowed).toBe(false);
      expect(decision.degraded).toBeUndefined();
      expect(decision.retryAfterMs).toBeGreaterThan(0);
      expect(decision.results.find((r) => r.name === 'user')).toMatchObject({ allowed: false, remaining: 0 });
    }
    // no tracker Redis could read refused: Redis could not make the decision
    await expect(
      rl.consumeAll([
        { key: deadKey, policy: tight, name: 'ip' },
        { key: fresh, policy: tight, name: 'user' },
      ]),
    ).rejects.toBeInstanceOf(RedisUnavailableError);
    // a call refused (503) charges nothing: the fresh tracker still has its whole limit
    expect((await rl.peek(fresh, tight)).remaining).toBe(tight.limit);
    const after = rl.stats();
    expect({
      denied: after.denied - before.denied,
      failedClosed: after.failedClosed - before.failedClosed,
      failedOpen: after.failedOpen - before.failedOpen,
      allowed: after.allowed - before.allowed,
    }).toEqual({ denied: 2, failedClosed: 1, failedOpen: 0, allowed: 0 });
    await app.close();
    // three decisions met the dead master (the peek above went to a live one): one warning and a count of 2
    expect(warnings().filter((w) => w.includes('decision failed'))).toHaveLength(1);
    expect(warnings().filter((w) => w.includes('more since the last warning'))).toEqual([
      'failed rate limiting calls (Redis unavailable): 2 more since the last warning, not logged one by one',
    ]);
  });
});

const OutageController = twoTrackerController('o', tight);

describe.each(PLATFORMS)('over HTTP on %s, a cluster with failOpen: false and a master dead', (platform) => {
  it('a user over its limit is told 429 (Retry-After), whatever order its IP policy has; a fresh user gets 503', async () => {
    const { app, victim, dead, live } = await boot('cluster', { failOpen: false }, { http: true, platform });
    const { port } = (app.app.getHttpServer() as Server).address() as { port: number };
    const [deadIp] = dead(1, 'ip');
    const liveIps = live(4, 'ip');
    const [spent, fresh] = live(2, 'user');
    const get = async (path: string, user: string, ip: string) => {
      const res = await fetch(`http://127.0.0.1:${port}/o/${path}`, { headers: { 'x-user-id': user, 'x-ip': ip } });
      const text = await res.text();
      return {
        status: res.status,
        retryAfter: res.headers.get('retry-after'),
        body: text === 'ok' ? text : JSON.parse(text),
      };
    };
    for (const path of ['user-first', 'ip-first'])
      for (const ip of liveIps.slice(0, tight.limit)) expect((await get(path, spent, ip)).status).toBe(200);
    await victim.kill();
    for (const path of ['user-first', 'ip-first']) {
      const refused = await get(path, spent, deadIp);
      expect({ path, status: refused.status, body: refused.body }).toMatchObject({
        path,
        status: 429,
        body: { statusCode: 429 },
      });
      expect(Number(refused.retryAfter)).toBeGreaterThan(0);
      const unavailable = await get(path, fresh, deadIp);
      expect({ path, status: unavailable.status }).toEqual({ path, status: 503 });
    }
  });
});
