// `npm run bench:semaphore`: a counting semaphore's acquire+release per second, ours (LockService.semaphore) vs
// redis-semaphore's Semaphore (one server) and RedlockSemaphore (3 independent servers). Two shapes: a limit no caller
// waits for (20 callers, limit 20: the cost of acquire+release) and a contended one (20 callers, limit 3). Every
// library gets the same ttl and the same 10 ms retry pause; redis-semaphore runs with its refresh timer off (ours has
// none unless asked) and with ioredis auto-pipelining on and off — its better figure is kept. Rounds are interleaved
// between libraries; failed operations are not counted. Redis CPU per op is read from INFO cpu around each round.
import 'reflect-metadata';
import { Redis } from 'ioredis';
import { RedlockSemaphore, Semaphore as PeerSemaphore } from 'redis-semaphore';
import { LockService } from '../lib/index.js';
import { lockApp, type LockMode, runSingleAndQuorum } from './support/lock-servers.js';
import { type BenchRow, interleaved, measure, type ProbedMeasurement } from './support/measure.js';

const TTL = 10_000;
const RETRY_MS = 10;
const WORKERS = 20;
const ROUND_MS = 400;
const ROUNDS = 5;

/** used_cpu_sys + used_cpu_user of every server, in µs. */
async function cpuUs(clients: Redis[]): Promise<number> {
  let total = 0;
  for (const info of await Promise.all(clients.map((c) => c.info('cpu')))) {
    const read = (name: string): number => Number(new RegExp(`${name}:([\\d.]+)`).exec(info)?.[1] ?? 0);
    total += (read('used_cpu_sys') + read('used_cpu_user')) * 1e6;
  }
  return total;
}

/** Interleaved rounds after one warm-up each; each figure is the median of its rounds, Redis CPU per op per round. */
async function run(
  ops: Record<string, () => Promise<unknown>>,
  probes: Redis[],
): Promise<Record<string, ProbedMeasurement>> {
  for (const op of Object.values(ops))
    await measure(op, { concurrency: WORKERS, durationMs: 100, warmupMs: 0, rounds: 1 });
  return interleaved(ops, ROUNDS, { concurrency: WORKERS, durationMs: ROUND_MS, warmupMs: 0 }, () => cpuUs(probes));
}

async function scenario(mode: LockMode, urls: string[], rows: BenchRow[]): Promise<void> {
  const app = await lockApp(urls, mode, { ttl: TTL, retryMs: RETRY_MS, jitterMs: 0 });
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
    const cpu = (f: ProbedMeasurement): string => `Redis CPU ${(f.perOp ?? 0).toFixed(1)} µs/op`;
    const bestPeer = figures.peerPiped.opsPerSec > figures.peer.opsPerSec ? 'peerPiped' : 'peer';
    const other = bestPeer === 'peer' ? 'peerPiped' : 'peer';
    rows.push({
      feature: 'semaphore',
      library: 'nestjs-redis-toolkit',
      operation: op,
      ...figures.ours,
      redisCpuUsPerOp: figures.ours.perOp,
      notes: cpu(figures.ours),
    });
    rows.push({
      feature: 'semaphore',
      library: peerName,
      operation: op,
      ...figures[bestPeer],
      redisCpuUsPerOp: figures[bestPeer].perOp,
      notes: `${cpu(figures[bestPeer])}; auto-pipelining ${bestPeer === 'peerPiped' ? 'on' : 'off'} (${other === 'peerPiped' ? 'on' : 'off'}: ${Math.round(figures[other].opsPerSec).toLocaleString('en-US')} ops/s)`,
    });
  }
  await Promise.all([...probes, ...plain, ...piped].map((c) => c.quit()));
  await app.close();
}

await runSingleAndQuorum(
  'semaphore',
  'Semaphores: acquire + release per second (ours ÷ this: higher is better for us)',
  scenario,
  { ttlMs: TTL, retryPauseMs: RETRY_MS, workers: WORKERS, roundMs: ROUND_MS, rounds: ROUNDS },
);
