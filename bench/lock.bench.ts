// `npm run bench:lock`: acquire+release throughput of our LockService vs redlock (v5) and redis-semaphore (Mutex /
// RedlockMutex), on one Redis and on a 3-node quorum: uncontended (every caller its own resource) and contended
// (20 callers, one resource). Each library gets the same ttl and the same mean retry pause (RETRY_MS).
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
import {
  bestOfPipelining,
  peerClients,
  unwatchRedisCpu,
  watchRedisCpu,
  type BenchRow,
  type Measurement,
  type MeasureOptions,
  interleaved,
} from './support/measure.js';

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
/**
 * Mean pause between attempts, ms, for every library. redlock pauses retryDelay ± retryJitter (10 ± 10: 0–20 ms),
 * ours delay + up to jitter: 0 + up to 20 gives the same 0–20 ms. redis-semaphore waits its retryInterval, 10 ms,
 * without jitter.
 */
const RETRY_MS = 10;
const WORKERS = 20;
const ROUND: MeasureOptions = { concurrency: WORKERS, durationMs: 350, warmupMs: 50, rounds: 1 };
const ROUNDS = 4;

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
  const app = await lockApp(urls, mode, { ttl: TTL, retryMs: 0, jitterMs: 2 * RETRY_MS });
  const locks = app.get(LockService);
  // The same service as N separate app instances would have it, each caller its own: no in-process hand-over or
  // waiting between callers. They are in this one process and share the app's connection (and its lock-call
  // batching), as the peers' callers share one set of clients: 20 real app instances would each send their own calls.
  // (Until 2026-12-02 each operation took the next service in turn, so callers sometimes shared a service and then
  // waited for each other in-process: on one server that flattered us, on the quorum it cost us; docs/lock.md.)
  const options = app.get<ResolvedRedisToolkitOptions>(REDIS_TOOLKIT_OPTIONS);
  const separate = Array.from(
    { length: WORKERS },
    () => new LockService(options.lock, app.get(RedisConnection), app.get(KeyBuilder)),
  );
  // The same with lock.wakeOnRelease the other way round: by default a release grants the lock to the oldest waiting
  // service on one server, and polling is the default on a quorum.
  const otherWay = mode === 'single' ? { wakeOnRelease: false } : { wakeOnRelease: true };
  const otherSetting = Array.from(
    { length: WORKERS },
    () => new LockService({ ...options.lock, ...otherWay }, app.get(RedisConnection), app.get(KeyBuilder)),
  );
  // Connected (and checked) before the first round, as each app instance's module init does.
  await Promise.all([...separate, ...otherSetting].map((service) => service.onModuleInit()));
  // Every peer runs on ioredis clients with auto-pipelining off (the default) and on; its better figure is kept.
  const pairs = urls.map((url) => peerClients(url, { maxRetriesPerRequest: 0 }));
  const clients = pairs.map((p) => p.off);
  const pipedClients = pairs.map((p) => p.on);
  const redlockOn = (on: Redis[]) => {
    const r = new Redlock(on, { retryCount: 100_000, retryDelay: RETRY_MS, retryJitter: RETRY_MS, driftFactor: 0.01 });
    r.on('error', () => undefined);
    return r;
  };
  const redlock = redlockOn(clients);
  const redlockPiped = redlockOn(pipedClients);
  const semaphoreOptions = { lockTimeout: TTL, acquireTimeout: 60_000, retryInterval: RETRY_MS, refreshInterval: 0 };
  const mutex = (key: string, on = clients) =>
    mode === 'quorum' ? new RedlockMutex(on, key, semaphoreOptions) : new Mutex(on[0], key, semaphoreOptions);
  watchRedisCpu(...urls);

  const label = mode === 'single' ? '1 server' : '3-node quorum';
  const pools = {
    ours: resourcePool('u-ours'),
    redlock: resourcePool('u-redlock'),
    redlockPiped: resourcePool('u-redlock-piped'),
    sem: resourcePool('u-sem'),
    semPiped: resourcePool('u-sem-piped'),
  };
  const uncontended = await interleaved(
    {
      ours: () => pools.ours(async (r) => (await locks.acquire(r)).release()),
      redlock: () => pools.redlock(async (r) => (await redlock.acquire([r], TTL)).release()),
      redlockPiped: () => pools.redlockPiped(async (r) => (await redlockPiped.acquire([r], TTL)).release()),
      sem: () =>
        pools.sem(async (r) => {
          const m = mutex(r);
          await m.acquire();
          await m.release();
        }),
      semPiped: () =>
        pools.semPiped(async (r) => {
          const m = mutex(r, pipedClients);
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
      oursSeparate: async (caller) => (await separate[caller].acquire('c-ours-separate')).release(),
      oursOtherSetting: async (caller) => (await otherSetting[caller].acquire('c-ours-other')).release(),
      redlock: async () => (await redlock.acquire(['c-redlock'], TTL)).release(),
      redlockPiped: async () => (await redlockPiped.acquire(['c-redlock-piped'], TTL)).release(),
      sem: async () => {
        const m = mutex('c-sem');
        await m.acquire();
        await m.release();
      },
      semPiped: async () => {
        const m = mutex('c-sem-piped', pipedClients);
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
  const addPeer = (library: string, operation: string, off: Measurement, on: Measurement) => {
    const best = bestOfPipelining(off, on);
    add(library, operation, best, best.note);
  };
  const unOp = `uncontended acquire+release, ${label}`;
  add('nestjs-redis-toolkit', unOp, uncontended.ours, 'with a fencing token (SET NX + INCR in one script)');
  addPeer('redlock', unOp, uncontended.redlock, uncontended.redlockPiped);
  addPeer(semName, unOp, uncontended.sem, uncontended.semPiped);
  // The peers model separate processes contending, so our charted row is the 20 separate services (like 20 app
  // instances, no in-process hand-over); the in-process FIFO row is shown as a variant.
  const cOp = `contended (20 callers, 1 resource), ${label}`;
  add(
    'nestjs-redis-toolkit',
    cOp,
    contended.oursSeparate,
    // Honest about what "separate" means here: no in-process hand-over, but the 20 services are in one process and
    // share one connection (its batching), as the peers' 20 callers share their clients.
    '20 separate LockService instances, one caller each (no in-process hand-over; one process, one shared ' +
      "connection, as the peers' callers share theirs; the default: " +
      (mode === 'single'
        ? 'a release grants the lock to the oldest waiting service, the poll is the fallback)'
        : 'polling)'),
  );
  add(
    mode === 'single'
      ? 'nestjs-redis-toolkit (20 separate services, polling: wakeOnRelease false)'
      : 'nestjs-redis-toolkit (20 separate services, wakeOnRelease true)',
    cOp,
    contended.oursOtherSetting,
    mode === 'single'
      ? 'waiters poll with the same pauses as the peers'
      : 'a release wakes the oldest waiting service (pub/sub); the poll is the fallback',
  );
  add(
    'nestjs-redis-toolkit (in-process FIFO hand-over)',
    cOp,
    contended.ours,
    'callers in one process: a release hands the lock to the oldest local waiter (FIFO)',
  );
  addPeer('redlock', cOp, contended.redlock, contended.redlockPiped);
  addPeer(semName, cOp, contended.sem, contended.semPiped);

  unwatchRedisCpu(...urls);
  for (const p of pairs) p.close();
  await app.close();
}

await runSingleAndQuorum(
  'lock',
  'Locks: acquire + release per second (ours ÷ this: higher is better for us)',
  scenario,
  { ttlMs: TTL, retryPauseMs: RETRY_MS, workers: WORKERS, roundMs: ROUND.durationMs, rounds: ROUNDS },
);
