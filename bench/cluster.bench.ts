// `npm run bench:cluster`: every feature's hot call on the harness's 3-master Redis Cluster against the same call on
// one server, in one run: throughput on the cluster ÷ on one server (issue 15's target: ≥ 0.77 for every feature, and
// at least raw ioredis's own ratio). Beside ours: raw ioredis GET (auto-pipelining on and off, both shown) and
// rate-limiter-flexible (the rate-limit peer that runs on a cluster client, its better pipelining figure kept), each
// on the cluster and on the server. 50 callers; rounds interleaved over every contender; failed operations excluded
// and counted; Redis CPU per op from INFO cpu of every server (one server, or the sum of the three masters); then, in
// a pass of its own, the commands this process sends per operation of ours on each (commandsPerOp).
// The three masters are pinned (taskset) to the CPU `npm run bench` pins its one server to (the last CPU; run alone,
// this bench starts that server and pins it there too), so both sides get the same CPU and the ratio is the cost per
// operation, not a second core.
import 'reflect-metadata';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { cpus } from 'node:os';
import type { INestApplicationContext } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { Cluster, Redis } from 'ioredis';
import { RateLimiterRedis, RateLimiterRes } from 'rate-limiter-flexible';
import {
  CacheService,
  LockService,
  PubSubService,
  RateLimitService,
  RedisToolkitModule,
  SessionService,
  type RedisToolkitOptions,
} from '../lib/index.js';
import { startRedisCluster } from '../test/support/redis-cluster.js';
import { startRedisServer } from '../test/support/redis-server.js';
import { runBench } from './support/run-bench.js';
import { interleaved, measure, printTable, saveResults, watchRedisCpu, type BenchRow } from './support/measure.js';

const OURS = 'nestjs-redis-toolkit';
const ONE_SERVER = `${OURS}, one server`;
const WORKERS = 50;
const ROUND_MS = 400;
const ROUNDS = 3;
const KEYS = 1_000;
const SESSIONS = 1_000;
const BIG_LIMIT = 1_000_000_000;

type Target = 'cluster' | 'single';

interface Toolkit {
  app: INestApplicationContext;
  cache: CacheService;
  rl: RateLimitService;
  locks: LockService;
  sessions: SessionService;
  pubsub: PubSubService;
  sessionIds: string[];
}

const pick = <T>(list: readonly T[]): T => list[Math.floor(Math.random() * list.length)];

/**
 * Commands this process has sent to Redis: ioredis's `Redis.sendCommand`, counted from before any client exists (the
 * toolkit's clients keep the method they were created with). Every server's and cluster node's connection goes
 * through it; a script call is one command. The same increment for every contender.
 */
let sentCommands = 0;
const send = Redis.prototype.sendCommand;
Redis.prototype.sendCommand = function (this: Redis, ...args: Parameters<Redis['sendCommand']>) {
  sentCommands++;
  return send.apply(this, args);
};

/**
 * Commands sent per operation, in a pass of its own after the timed rounds: `total` operations, WORKERS at a time. It
 * shows why a cluster costs more per operation: a multi-key command or a batch script takes keys of one slot only, so
 * the calls of a turn that one command serves on one server take about one command each on a cluster.
 */
async function commandsPerOp(op: () => Promise<unknown>, total = 5_000): Promise<number> {
  const before = sentCommands;
  let started = 0;
  await Promise.all(
    Array.from({ length: WORKERS }, async () => {
      while (started < total) {
        started++;
        await op();
      }
    }),
  );
  return (sentCommands - before) / started;
}
const keyAt = (i: number) => `k${i}`;

async function toolkit(connection: RedisToolkitOptions['connection']): Promise<Toolkit> {
  const app = await NestFactory.createApplicationContext(
    RedisToolkitModule.forRoot({
      connection,
      keyPrefix: `bench-cl-${randomBytes(3).toString('hex')}:`,
      commandTimeout: 5_000,
      session: { cookie: { secret: 'bench-cluster-secret-of-32-chars!!' } },
    }),
    { logger: ['error'] },
  );
  const t: Toolkit = {
    app,
    cache: app.get(CacheService),
    rl: app.get(RateLimitService),
    locks: app.get(LockService),
    sessions: app.get(SessionService),
    pubsub: app.get(PubSubService),
    sessionIds: [],
  };
  // the set-up is not a load test: 50 at a time
  for (let i = 0; i < KEYS; i += 50)
    await Promise.all(Array.from({ length: 50 }, (_, j) => t.cache.set(keyAt(i + j), { n: i + j }, { ttl: 600_000 })));
  for (let i = 0; i < SESSIONS; i += 50) {
    const created = await Promise.all(
      Array.from({ length: 50 }, (_, j) => t.sessions.create(`user-${(i + j) % 100}`, { n: i + j })),
    );
    t.sessionIds.push(...created.map((s) => s.id));
  }
  return t;
}

function rlfOn(client: Redis | Cluster): RateLimiterRedis {
  return new RateLimiterRedis({
    storeClient: client,
    points: BIG_LIMIT,
    duration: 60,
    keyPrefix: `bench-cl-rlf-${randomBytes(3).toString('hex')}`,
  });
}

async function rlfConsume(limiter: RateLimiterRedis, key: string): Promise<void> {
  try {
    await limiter.consume(key);
  } catch (err) {
    if (!(err instanceof RateLimiterRes)) throw err;
  }
}

/** The CPU `npm run bench` pins its Redis to. */
const REDIS_CPU = cpus().length - 1;

function pin(pid: number | undefined): void {
  if (pid === undefined) return;
  const r = spawnSync('taskset', ['-cp', String(REDIS_CPU), String(pid)], { encoding: 'utf8' });
  if (r.status !== 0)
    process.stdout.write(`warning: taskset could not pin pid ${pid}: ${r.error?.message ?? r.stderr}\n`);
}

/** BENCH_REDIS_URL (already pinned by `npm run bench`), else a private server pinned here. */
async function singleServer(): Promise<{ url: string; stop(): Promise<void> }> {
  const shared = process.env.BENCH_REDIS_URL;
  if (shared) return { url: shared, stop: async () => undefined };
  const server = await startRedisServer();
  pin(server.pid);
  return server;
}

async function main(): Promise<void> {
  const single = await singleServer();
  watchRedisCpu(single.url);
  const cluster = await startRedisCluster();
  for (const node of cluster.nodes) pin(node.pid);
  const nodes = cluster.masters.map(({ host, port }) => ({ host, port }));
  watchRedisCpu(...cluster.masters.map((m) => m.url));
  const apps: Record<Target, Toolkit> = {
    single: await toolkit({ url: single.url }),
    cluster: await toolkit({ cluster: nodes }),
  };
  const peerOptions = { commandTimeout: 5_000, maxRetriesPerRequest: 0 };
  const raw = {
    single: {
      off: new Redis(single.url, peerOptions),
      on: new Redis(single.url, { ...peerOptions, enableAutoPipelining: true }),
    },
    cluster: {
      off: new Cluster(nodes, { redisOptions: peerOptions }),
      on: new Cluster(nodes, { redisOptions: peerOptions, enableAutoPipelining: true }),
    },
  };
  await Promise.all([raw.cluster.off.set('warm', '1'), raw.cluster.on.set('warm', '1')]);
  for (let i = 0; i < KEYS; i += 50)
    await Promise.all(
      Array.from({ length: 50 }, (_, j) =>
        Promise.all([raw.single.off.set(`raw:${keyAt(i + j)}`, 'v'), raw.cluster.off.set(`raw:${keyAt(i + j)}`, 'v')]),
      ),
    );
  const rlf = {
    single: { off: rlfOn(raw.single.off), on: rlfOn(raw.single.on) },
    cluster: { off: rlfOn(raw.cluster.off), on: rlfOn(raw.cluster.on) },
  };

  let lockCounter = 0;
  const ops: Record<string, () => Promise<unknown>> = {};
  for (const target of ['cluster', 'single'] as const) {
    const t = apps[target];
    ops[`cache/${target}`] = () => t.cache.get(keyAt(Math.floor(Math.random() * KEYS)));
    ops[`rl/${target}`] = () =>
      t.rl.consume(`u${Math.floor(Math.random() * KEYS)}`, {
        limit: BIG_LIMIT,
        ttl: 60_000,
        algorithm: 'fixed-window',
      });
    ops[`session/${target}`] = () => t.sessions.get(pick(t.sessionIds));
    ops[`lock/${target}`] = async () => (await t.locks.acquire(`r${lockCounter++}`)).release();
    ops[`pubsub/${target}`] = () => t.pubsub.publish('bench-cluster', { n: 1 });
    for (const piped of ['off', 'on'] as const) {
      const client = raw[target][piped];
      ops[`raw-${piped}/${target}`] = () => client.get(`raw:${keyAt(Math.floor(Math.random() * KEYS))}`);
      ops[`rlf-${piped}/${target}`] = () => rlfConsume(rlf[target][piped], `u${Math.floor(Math.random() * KEYS)}`);
    }
  }
  // one short warm-up each (loads scripts, opens every node's connection), then interleaved rounds
  for (const op of Object.values(ops))
    await measure(op, { concurrency: WORKERS, durationMs: 150, warmupMs: 0, rounds: 1 });
  const figures = await interleaved(ops, ROUNDS, { concurrency: WORKERS, durationMs: ROUND_MS, warmupMs: 0 });

  const rows: BenchRow[] = [];
  const ratio = (name: string) =>
    figures[`${name}/cluster`].opsPerSec / Math.max(1, figures[`${name}/single`].opsPerSec);
  const cpuRatio = (name: string) =>
    (figures[`${name}/cluster`].redisCpuUsPerOp ?? NaN) / (figures[`${name}/single`].redisCpuUsPerOp ?? NaN);
  const ratios: Record<string, number> = {};
  const commands: Record<string, number> = {};
  for (const name of ['cache', 'rl', 'session', 'lock', 'pubsub'])
    for (const target of ['cluster', 'single'] as const)
      commands[`${name}/${target}`] = await commandsPerOp(ops[`${name}/${target}`]);
  const ours = (name: string, operation: string) => {
    ratios[operation] = ratio(name);
    const note =
      `cluster ÷ one server ${ratio(name).toFixed(2)}, Redis CPU per op ${cpuRatio(name).toFixed(2)}×; ` +
      `commands sent per op ${commands[`${name}/cluster`].toFixed(3)} (one server: ${commands[`${name}/single`].toFixed(3)})`;
    rows.push({ feature: 'cluster', library: OURS, operation, ...figures[`${name}/cluster`], notes: note });
    rows.push({ feature: 'cluster', library: ONE_SERVER, operation, ...figures[`${name}/single`] });
  };
  ours('cache', 'cache get (Redis hit), 3-master cluster');
  ours('rl', 'rate limit fixed window, 3-master cluster');
  ours('session', 'session get+touch, 3-master cluster');
  ours('lock', 'lock acquire+release, 3-master cluster');
  ours('pubsub', 'publish, 3-master cluster');
  for (const piped of ['off', 'on'] as const) {
    const name = `raw-${piped}`;
    const operation = `raw ioredis GET, auto-pipelining ${piped}`;
    ratios[operation] = ratio(name);
    rows.push({
      feature: 'cluster',
      library: 'ioredis',
      operation,
      ...figures[`${name}/cluster`],
      notes: `cluster ÷ one server ${ratio(name).toFixed(2)}; one server: ${Math.round(figures[`${name}/single`].opsPerSec).toLocaleString('en-US')} ops/s`,
    });
  }
  // rate-limiter-flexible on the cluster, beside our cluster row (its better pipelining figure)
  const rlfBest = figures['rlf-on/cluster'].opsPerSec > figures['rlf-off/cluster'].opsPerSec ? 'on' : 'off';
  const rlfBestSingle = figures['rlf-on/single'].opsPerSec > figures['rlf-off/single'].opsPerSec ? 'on' : 'off';
  rows.push({
    feature: 'cluster',
    library: 'rate-limiter-flexible',
    operation: 'rate limit fixed window, 3-master cluster',
    ...figures[`rlf-${rlfBest}/cluster`],
    notes: `auto-pipelining ${rlfBest}; cluster ÷ one server ${(figures[`rlf-${rlfBest}/cluster`].opsPerSec / figures[`rlf-${rlfBestSingle}/single`].opsPerSec).toFixed(2)} (one server, pipelining ${rlfBestSingle}: ${Math.round(figures[`rlf-${rlfBestSingle}/single`].opsPerSec).toLocaleString('en-US')} ops/s)`,
  });
  const table = printTable(
    `Redis Cluster (3 masters) vs one server, ${WORKERS} callers (ours ÷ this: on the cluster rows, cluster ÷ one server)`,
    rows,
  );
  saveResults('cluster', rows, { table, clusterOverSingle: ratios, commandsPerOp: commands });

  await Promise.all(Object.values(apps).map((t) => t.app.close()));
  for (const pair of Object.values(raw)) for (const c of Object.values(pair)) c.disconnect();
  await cluster.stop();
  await single.stop();
}

runBench(main);
