// `npm run bench:semaphore`: a counting semaphore's acquire+release per second, ours (LockService.semaphore) vs
// redis-semaphore's Semaphore (one server) and RedlockSemaphore (3 independent servers). Two shapes: a limit no caller
// waits for (20 callers, limit 20: the cost of acquire+release) and a contended one (20 callers, limit 3). Every
// library gets the same ttl and the same 10 ms retry pause; redis-semaphore runs with its refresh timer off (ours has
// none unless asked) and with ioredis auto-pipelining on and off — its better figure is kept. Rounds are interleaved
// between libraries; failed operations are not counted. Redis CPU per op is read from INFO cpu around each round.
import 'reflect-metadata';
import type { INestApplicationContext } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { Redis } from 'ioredis';
import { RedlockSemaphore, Semaphore as PeerSemaphore } from 'redis-semaphore';
import { LockService, RedisToolkitModule } from '../lib/index.js';
import { startRedisServer, type RedisServerHandle } from '../test/support/redis-server.js';
import { printTable, saveResults, type BenchRow, type Measurement, measure } from './support/measure.js';

const TTL = 10_000;
const RETRY_MS = 10;
const WORKERS = 20;
const ROUND_MS = 600;
const ROUNDS = 5;

async function ours(urls: string[], quorum: boolean): Promise<INestApplicationContext> {
  return NestFactory.createApplicationContext(
    RedisToolkitModule.forRoot({
      connection: { url: urls[0] },
      keyPrefix: 'bench:rtk:',
      commandTimeout: 5_000,
      lock: {
        ttl: TTL,
        retry: { count: 100_000, delay: RETRY_MS, jitter: 0 },
        ...(quorum ? { quorum: { nodes: urls.map((url) => ({ url })) } } : {}),
      },
    }),
    { logger: ['error'] },
  );
}

/** used_cpu_sys + used_cpu_user of one server, in µs. */
async function cpuUs(client: Redis): Promise<number> {
  const info = await client.info('cpu');
  const read = (name: string): number => Number(new RegExp(`${name}:([\\d.]+)`).exec(info)?.[1] ?? 0);
  return (read('used_cpu_sys') + read('used_cpu_user')) * 1e6;
}

interface Figures extends Measurement {
  /** Redis CPU (all servers) per successful operation, µs. */
  cpuUsPerOp: number;
}

const median = (values: number[]): number => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];

/** Interleaved rounds; each figure is the median of its rounds, CPU per op measured around every round. */
async function run(ops: Record<string, () => Promise<unknown>>, probes: Redis[]): Promise<Record<string, Figures>> {
  const runs: Record<string, Figures[]> = Object.fromEntries(Object.keys(ops).map((k) => [k, []]));
  for (const op of Object.values(ops))
    await measure(op, { concurrency: WORKERS, durationMs: 200, warmupMs: 0, rounds: 1 });
  for (let r = 0; r < ROUNDS; r++) {
    for (const [name, op] of Object.entries(ops)) {
      const before = (await Promise.all(probes.map(cpuUs))).reduce((a, b) => a + b, 0);
      const m = await measure(op, { concurrency: WORKERS, durationMs: ROUND_MS, warmupMs: 0, rounds: 1 });
      const after = (await Promise.all(probes.map(cpuUs))).reduce((a, b) => a + b, 0);
      const okOps = Math.max(1, (m.opsPerSec * ROUND_MS) / 1000 - m.errors);
      runs[name].push({ ...m, cpuUsPerOp: (after - before) / okOps });
    }
  }
  return Object.fromEntries(
    Object.entries(runs).map(([name, ms]) => [
      name,
      {
        opsPerSec: median(ms.map((m) => m.opsPerSec)),
        p50Ms: median(ms.map((m) => m.p50Ms)),
        p99Ms: median(ms.map((m) => m.p99Ms)),
        errors: ms.reduce((s, m) => s + m.errors, 0),
        cpuUsPerOp: median(ms.map((m) => m.cpuUsPerOp)),
      },
    ]),
  );
}

async function scenario(mode: 'single' | 'quorum', urls: string[], rows: BenchRow[]): Promise<void> {
  const app = await ours(urls, mode === 'quorum');
  const locks = app.get(LockService);
  const probes = urls.map((url) => new Redis(url));
  const plain = urls.map((url) => new Redis(url, { maxRetriesPerRequest: 0 }));
  const piped = urls.map((url) => new Redis(url, { maxRetriesPerRequest: 0, enableAutoPipelining: true }));
  const peerOptions = { lockTimeout: TTL, acquireTimeout: 60_000, retryInterval: RETRY_MS, refreshInterval: 0 };
  const peer = (clients: Redis[], key: string, limit: number) =>
    mode === 'quorum'
      ? new RedlockSemaphore(clients, key, limit, peerOptions)
      : new PeerSemaphore(clients[0], key, limit, peerOptions);
  const peerName = mode === 'quorum' ? 'redis-semaphore RedlockSemaphore' : 'redis-semaphore Semaphore';
  const label = mode === 'single' ? '1 server' : '3-node quorum';

  for (const limit of [WORKERS, 3]) {
    const sem = locks.semaphore(`s-ours-${limit}`, { limit, ttl: TTL });
    const figures = await run(
      {
        ours: async () => (await sem.acquire()).release(),
        peer: async () => {
          const s = peer(plain, `s-peer-${limit}`, limit);
          await s.acquire();
          await s.release();
        },
        peerPiped: async () => {
          const s = peer(piped, `s-peer-piped-${limit}`, limit);
          await s.acquire();
          await s.release();
        },
      },
      probes,
    );
    const op = `${limit === WORKERS ? `limit ${limit}, ${WORKERS} callers (no wait)` : `limit ${limit}, ${WORKERS} callers`}, ${label}`;
    const cpu = (f: Figures): string => `Redis CPU ${f.cpuUsPerOp.toFixed(1)} µs/op`;
    const bestPeer = figures.peerPiped.opsPerSec > figures.peer.opsPerSec ? 'peerPiped' : 'peer';
    const other = bestPeer === 'peer' ? 'peerPiped' : 'peer';
    rows.push({
      feature: 'semaphore',
      library: 'nestjs-redis-toolkit',
      operation: op,
      ...figures.ours,
      notes: cpu(figures.ours),
    });
    rows.push({
      feature: 'semaphore',
      library: peerName,
      operation: op,
      ...figures[bestPeer],
      notes: `${cpu(figures[bestPeer])}; auto-pipelining ${bestPeer === 'peerPiped' ? 'on' : 'off'} (${other === 'peerPiped' ? 'on' : 'off'}: ${Math.round(figures[other].opsPerSec).toLocaleString('en-US')} ops/s)`,
    });
  }
  await Promise.all([...probes, ...plain, ...piped].map((c) => c.quit()));
  await app.close();
}

async function main(): Promise<void> {
  const started = Date.now();
  const servers: RedisServerHandle[] = [];
  const singleUrl = process.env.BENCH_REDIS_URL ?? (servers[servers.length] = await startRedisServer()).url;
  const quorum = await Promise.all([0, 1, 2].map(() => startRedisServer()));
  servers.push(...quorum);
  const rows: BenchRow[] = [];
  try {
    await scenario('single', [singleUrl], rows);
    await scenario(
      'quorum',
      quorum.map((s) => s.url),
      rows,
    );
  } finally {
    await Promise.all(servers.map((s) => s.stop()));
  }
  const table = printTable('Semaphores: acquire + release per second (ours ÷ this: higher is better for us)', rows);
  saveResults('semaphore', rows, {
    table,
    settings: { ttlMs: TTL, retryPauseMs: RETRY_MS, workers: WORKERS, roundMs: ROUND_MS, rounds: ROUNDS },
    durationMs: Date.now() - started,
  });
  process.exit(0);
}

await main();
