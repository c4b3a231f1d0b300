// `npm run bench:lock`: acquire+release throughput of our LockService vs redlock (v5) and redis-semaphore (Mutex /
// RedlockMutex), on one Redis and on a 3-node quorum: uncontended (every caller its own resource) and contended
// (20 callers, one resource). Each library gets the same ttl and the same retry pause.
import 'reflect-metadata';
import { Redis } from 'ioredis';
import { Mutex, RedlockMutex } from 'redis-semaphore';
import { LockService } from '../lib/index.js';
import {
  KeyBuilder,
  RedisConnection,
  REDIS_TOOLKIT_OPTIONS,
  type ResolvedRedisToolkitOptions,
} from '../lib/advanced.js';
import { lockApp, type LockMode, runSingleAndQuorum } from './support/lock-servers.js';
import { type BenchRow, type Measurement, type MeasureOptions, interleaved } from './support/measure.js';

// redlock 5 ships types its package.json "exports" do not expose under NodeNext resolution: declare what we use.
interface RedlockLock {
  release(): Promise<unknown>;
}
interface RedlockInstance {
  acquire(resources: string[], duration: number): Promise<RedlockLock>;
  on(event: 'error', listener: (err: unknown) => void): unknown;
}
type RedlockConstructor = new (clients: Redis[], settings: Record<string, number>) => RedlockInstance;
// @ts-expect-error -- see above: the module resolves, its declaration file does not.
const { default: Redlock } = (await import('redlock')) as { default: RedlockConstructor };

const TTL = 10_000;
const RETRY_MS = 10; // pause between attempts for every library (ours and redlock add up to the same again as jitter)
const WORKERS = 20;
const ROUND: MeasureOptions = { concurrency: WORKERS, durationMs: 600, warmupMs: 100, rounds: 1 };
const ROUNDS = 5;

/** Hands each concurrent caller its own resource name (uncontended, and no key growth). */
function resourcePool(prefix: string): <T>(fn: (resource: string) => Promise<T>) => Promise<T> {
  const free: string[] = Array.from({ length: WORKERS * 2 }, (_, i) => `${prefix}:${i}`);
  return async (fn) => {
    const name = free.pop()!;
    try {
      return await fn(name);
    } finally {
      free.push(name);
    }
  };
}

async function scenario(mode: LockMode, urls: string[], rows: BenchRow[]): Promise<void> {
  const app = await lockApp(urls, mode, { ttl: TTL, retryMs: RETRY_MS, jitterMs: RETRY_MS });
  const locks = app.get(LockService);
  // The same service as N separate app instances would have it: no in-process hand-over between callers.
  const options = app.get<ResolvedRedisToolkitOptions>(REDIS_TOOLKIT_OPTIONS);
  const separate = Array.from(
    { length: WORKERS },
    () => new LockService(options.lock, app.get(RedisConnection), app.get(KeyBuilder)),
  );
  let nextSeparate = 0;
  const clients = urls.map((url) => new Redis(url, { maxRetriesPerRequest: 0 }));
  const redlock = new Redlock(clients, {
    retryCount: 100_000,
    retryDelay: RETRY_MS,
    retryJitter: RETRY_MS,
    driftFactor: 0.01,
  });
  redlock.on('error', () => undefined);
  const semaphoreOptions = { lockTimeout: TTL, acquireTimeout: 60_000, retryInterval: RETRY_MS, refreshInterval: 0 };
  const mutex = (key: string) =>
    mode === 'quorum' ? new RedlockMutex(clients, key, semaphoreOptions) : new Mutex(clients[0], key, semaphoreOptions);

  const label = mode === 'single' ? '1 server' : '3-node quorum';
  const pools = { ours: resourcePool('u-ours'), redlock: resourcePool('u-redlock'), sem: resourcePool('u-sem') };
  const uncontended = await interleaved(
    {
      ours: () => pools.ours(async (r) => (await locks.acquire(r)).release()),
      redlock: () => pools.redlock(async (r) => (await redlock.acquire([r], TTL)).release()),
      sem: () =>
        pools.sem(async (r) => {
          const m = mutex(r);
          await m.acquire();
          await m.release();
        }),
    },
    ROUNDS,
    ROUND,
  );
  const contended = await interleaved(
    {
      ours: async () => (await locks.acquire('c-ours')).release(),
      oursSeparate: async () => {
        const service = separate[nextSeparate++ % separate.length];
        return (await service.acquire('c-ours-separate')).release();
      },
      redlock: async () => (await redlock.acquire(['c-redlock'], TTL)).release(),
      sem: async () => {
        const m = mutex('c-sem');
        await m.acquire();
        await m.release();
      },
    },
    ROUNDS,
    ROUND,
  );
  const semName = mode === 'quorum' ? 'redis-semaphore RedlockMutex' : 'redis-semaphore Mutex';
  const add = (library: string, operation: string, m: Measurement, notes?: string) =>
    rows.push({ feature: 'lock', library, operation, ...m, notes });
  const unOp = `uncontended acquire+release, ${label}`;
  add('nestjs-redis-toolkit', unOp, uncontended.ours, 'with a fencing token (SET NX + INCR in one script)');
  add('redlock', unOp, uncontended.redlock);
  add(semName, unOp, uncontended.sem);
  const cOp = `contended (20 callers, 1 resource), ${label}`;
  add(
    'nestjs-redis-toolkit',
    cOp,
    contended.ours,
    'callers in one process: a release hands the lock to the oldest local waiter (FIFO)',
  );
  add(
    'nestjs-redis-toolkit (20 separate services)',
    cOp,
    contended.oursSeparate,
    'like 20 app instances: polling only',
  );
  add('redlock', cOp, contended.redlock);
  add(semName, cOp, contended.sem);

  await Promise.all(clients.map((c) => c.quit()));
  await app.close();
}

await runSingleAndQuorum(
  'lock',
  'Locks: acquire + release per second (ours ÷ this: higher is better for us)',
  scenario,
  { ttlMs: TTL, retryPauseMs: RETRY_MS, workers: WORKERS, roundMs: ROUND.durationMs, rounds: ROUNDS },
);
