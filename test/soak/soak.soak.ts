/**
 * `npm run test:soak` (minutes; not part of `npm test` or CI by default). One workload slot per feature:
 *   foundation  1M raw ops through the toolkit's client (SET/GET/DEL, a Lua script, health checks) — runs today;
 *   cache       1M CacheService ops (getOrSet / get / set)
 *   rate limit  1M RateLimitService.consume decisions
 *   lock        100k LockService acquire/release cycles
 *   pub/sub     100k PubSubService notifications, every one received
 *   sessions    1M SessionService ops over 1,000 live sessions (get, update, now and then destroy + create)
 * Every slot runs against the real services (a missing method is a type error and a failure). For each: heap after GC
 * grows < 10 % from the first to the last quarter, listener and timer counts do not grow, no errors.
 * SOAK_SCALE=0.05 runs 5 % of the counts (a quick check of the framework).
 */
import 'reflect-metadata';
import {
  CacheService,
  LockService,
  PubSubService,
  RateLimitService,
  RedisToolkitHealth,
  SessionService,
} from '../../lib/index.js';
import { KeyBuilder, RedisConnection } from '../../lib/advanced.js';
import { LuaScript } from '../../lib/common/lua-script.js';
import { startRedisServer, type RedisServerHandle } from '../support/redis-server.js';
import { closeToolkitApps, createToolkitApp, type ToolkitApp } from '../support/toolkit-app.js';
import { waitFor } from '../support/wait.js';
import { formatSoak, runSoak, type SoakResult } from './harness.js';

const SCALE = Number(process.env.SOAK_SCALE ?? 1);
const n = (full: number): number => Math.max(1_000, Math.round(full * SCALE));

let redis: RedisServerHandle;
let app: ToolkitApp;
const results: SoakResult[] = [];

beforeAll(async () => {
  redis = await startRedisServer();
  app = await createToolkitApp({ target: { url: redis.url }, commandTimeout: 2_000, session: {} });
});

afterAll(async () => {
  await closeToolkitApps();
  await redis?.stop();
  process.stdout.write(`\n${results.map(formatSoak).join('\n')}\n`);
});

const clients = () => {
  const connection = app.get(RedisConnection);
  return [connection.client];
};

function expectNoLeak(r: SoakResult): void {
  results.push(r);
  expect(r.errors).toBe(0);
  expect(r.heapGrowth).toBeLessThan(0.1);
  expect(r.listenerGrowth).toBeLessThanOrEqual(0);
  expect(r.timerGrowth).toBeLessThanOrEqual(0);
  expect(r.handleGrowth).toBeLessThanOrEqual(0);
}

/** SessionNotFoundError: the session was destroyed by another caller of the soak in the meantime. */
const ignoreNotFound = (err: unknown): undefined => {
  if ((err as Error).name !== 'SessionNotFoundError') throw err;
  return undefined;
};

const incr = new LuaScript<number>('rtk_soak_incr', "return redis.call('INCR', KEYS[1])", 1);

describe('soak', () => {
  it(`foundation: ${n(1_000_000).toLocaleString('en-US')} raw ops through the toolkit client`, async () => {
    const connection = app.get(RedisConnection);
    const keys = app.get(KeyBuilder);
    const health = app.get(RedisToolkitHealth);
    const client = connection.client;
    expectNoLeak(
      await runSoak({
        name: 'foundation',
        ops: n(1_000_000),
        op: async (i) => {
          const key = keys.key('soak', String(i % 10_000));
          switch (i % 5) {
            case 0:
              return client.set(key, JSON.stringify({ i, at: Date.now() }), 'PX', 60_000);
            case 1:
              return client.get(key);
            case 2:
              return incr.run(client, [keys.tagged('soak', String(i % 100), ':n')]);
            case 3:
              return client.del(key);
            default:
              return i % 1000 === 4 ? health.check() : client.exists(key);
          }
        },
        emitters: clients,
      }),
    );
  });

  it(`cache: ${n(1_000_000).toLocaleString('en-US')} CacheService ops`, async () => {
    const cache = app.get(CacheService);
    expectNoLeak(
      await runSoak({
        name: 'cache',
        ops: n(1_000_000),
        op: (i) => {
          const key = `soak:${i % 10_000}`;
          if (i % 10 === 0) return cache.set(key, { i }, { ttl: 60_000 });
          if (i % 10 === 1) return cache.get(key);
          return cache.getOrSet(key, async () => ({ i, loaded: true }), { ttl: 60_000 });
        },
        emitters: clients,
      }),
    );
  });

  it(`rate limit: ${n(1_000_000).toLocaleString('en-US')} decisions`, async () => {
    const rl = app.get(RateLimitService);
    expectNoLeak(
      await runSoak({
        name: 'rate limit',
        ops: n(1_000_000),
        op: (i) => rl.consume(`soak:${i % 1_000}`, { limit: 100, ttl: 1_000 }),
        emitters: clients,
      }),
    );
  });

  it(`lock: ${n(100_000).toLocaleString('en-US')} acquire/release cycles`, async () => {
    const lock = app.get(LockService);
    expectNoLeak(
      await runSoak({
        name: 'lock',
        ops: n(100_000),
        concurrency: 20,
        op: async (i) => {
          const held = await lock.acquire(`soak:${i % 100}`, { ttl: 5_000, waitMs: 5_000 });
          await held.release();
        },
        emitters: clients,
      }),
    );
  });

  it(`pub/sub: ${n(100_000).toLocaleString('en-US')} notifications, all received`, async () => {
    const pubsub = app.get(PubSubService);
    let received = 0;
    const unsubscribe = await Promise.all(
      Array.from({ length: 10 }, (_, c) => pubsub.subscribe(`soak:${c}`, () => void received++)),
    );
    const total = n(100_000);
    const r = await runSoak({
      name: 'pub/sub',
      ops: total,
      op: (i) => pubsub.publish(`soak:${i % 10}`, { i }),
      emitters: clients,
      // Every notification published so far has been delivered before counting timers and handles.
      quiesce: async (done) => {
        if (!(await waitFor(() => received >= done, 10_000))) throw new Error(`only ${received}/${done} received`);
      },
    });
    expect(await waitFor(() => received >= total, 10_000)).toBe(true);
    await Promise.all(unsubscribe.map((u) => u()));
    expectNoLeak(r);
  });

  it(`sessions: ${n(1_000_000).toLocaleString('en-US')} SessionService ops over 1,000 live sessions`, async () => {
    const sessions = app.get(SessionService);
    const ids: string[] = [];
    for (let i = 0; i < 1_000; i += 50)
      ids.push(
        ...(await Promise.all(
          Array.from({ length: 50 }, async (_, j) => (await sessions.create(`soak-${(i + j) % 100}`, { n: 0 })).id),
        )),
      );
    expectNoLeak(
      await runSoak({
        name: 'sessions',
        ops: n(1_000_000),
        op: async (i) => {
          const at = i % 1_000;
          // a logout and a login now and then: tombstones, the user index and the recent-value caches turn over
          if (i % 100 === 0) {
            const old = ids[at];
            ids[at] = (await sessions.create(`soak-${at % 100}`, { n: i })).id;
            return sessions.destroy(old);
          }
          // a session destroyed by the line above and read by a caller already on its way is a miss, not an error
          if (i % 5 === 0) return sessions.update(ids[at], { n: i }).catch(ignoreNotFound);
          return sessions.get(ids[at]);
        },
        emitters: clients,
      }),
    );
  });
});
