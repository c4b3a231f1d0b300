// `npm run bench:cache-tracking`: how long after a write the L1 of another process stops serving the old value
// (issue 15). A plain ioredis client (not the toolkit, as redis-cli would) writes a cached key; two delays from
// sending that write: until the L1 entry is gone, and until the first `cache.get` returns the new value (a miss, so
// it includes that GET's round trip). Polled every event-loop turn (setImmediate), which lets the invalidation
// socket be read. Rows: tracking on one server and on the harness's 3-master cluster; for scale, the bus (a toolkit
// instance's own `set`: writes by foreign clients are never seen by it). Median, p99, max, and the load average.
// First, on one server: Redis CPU per `cache.set` (INFO cpu before and after a run of writes) with tracking, with the
// bus and with no L1, two instances each (one writes, one holds the keys in L1), the three modes taking turns.
import 'reflect-metadata';
import { loadavg } from 'node:os';
import type { INestApplicationContext } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { Cluster, Redis } from 'ioredis';
import { CacheService, RedisToolkitModule, type RedisToolkitOptions } from '../lib/index.js';
import { startRedisCluster } from '../test/support/redis-cluster.js';
import { startRedisServer } from '../test/support/redis-server.js';
import { median, redisCpuPerOp, unwatchRedisCpu, watchRedisCpu } from './support/measure.js';
import { runBench } from './support/run-bench.js';

const WRITES = Number(process.env.TRACKING_BENCH_WRITES ?? 300);
/** A write that is never seen gives up after this (counted as lost, not as a delay). */
const GIVE_UP_MS = 2_000;
const KEYS = 50;

type Connection = RedisToolkitOptions['connection'];

async function app(
  connection: Connection,
  invalidation: 'tracking' | 'bus' | 'off',
  keyPrefix = 'bench:trk:',
): Promise<INestApplicationContext> {
  const l1 = invalidation === 'off' ? {} : { l1: { max: 10_000, ttl: 600_000, invalidation } };
  return NestFactory.createApplicationContext(
    RedisToolkitModule.forRoot({
      connection,
      keyPrefix,
      commandTimeout: 5_000,
      cache: { defaultTtl: 600_000, ...l1 },
    }),
    { logger: ['error'] },
  );
}

const turn = (): Promise<void> => new Promise((r) => setImmediate(r));

function stats(delays: number[]): { median: number; p99: number; max: number } {
  const s = [...delays].sort((a, b) => a - b);
  const at = (q: number) => s[Math.min(s.length - 1, Math.floor(q * s.length))];
  return { median: at(0.5), p99: at(0.99), max: s[s.length - 1] };
}

/** The reader's L1 (internal: only to check that it held the entry, and when it dropped it). */
const l1Of = (cache: CacheService): { get(key: string): unknown } =>
  (cache as unknown as { l1: { get(key: string): unknown } }).l1;

interface Run {
  /** Write sent → the L1 entry gone. */
  dropped: number[];
  /** Write sent → the first `get` returning the new value (a miss read from Redis). */
  served: number[];
  /** Writes whose key the L1 did not hold just before (they measure nothing: must be 0). */
  notHeld: number;
  lost: number;
}

/**
 * `write(key, n)` stores value n under `key` from elsewhere; the reader's L1 holds n - 1 before each write.
 */
async function run(reader: CacheService, write: (key: string, n: number) => Promise<void>): Promise<Run> {
  const out: Run = { dropped: [], served: [], notHeld: 0, lost: 0 };
  const l1 = l1Of(reader);
  for (let i = 0; i < WRITES; i++) {
    const key = `k${i % KEYS}`;
    const redisKey = `bench:trk:cache:${key}`;
    const n = Math.floor(i / KEYS) + 1;
    // Fill L1 with the current value (n - 1).
    await reader.get(key);
    await reader.get(key);
    await turn();
    if (l1.get(redisKey) === undefined) out.notHeld++;
    const started = performance.now();
    const written = write(key, n);
    while (l1.get(redisKey) !== undefined && performance.now() - started < GIVE_UP_MS) await turn();
    const dropped = performance.now() - started;
    await written;
    for (;;) {
      if ((await reader.get<number>(key)) === n) {
        out.dropped.push(dropped);
        out.served.push(performance.now() - started);
        break;
      }
      if (performance.now() - started > GIVE_UP_MS) {
        out.lost++;
        break;
      }
      await turn();
    }
  }
  return out;
}

function print(name: string, r: Run): void {
  const f = (v: number) => `${v.toFixed(2)} ms`.padStart(9);
  const line = (what: string, delays: number[]) => {
    const st = stats(delays);
    return `${what} median ${f(st.median)} p99 ${f(st.p99)} max ${f(st.max)}`;
  };
  console.log(
    `${name} (${r.served.length} writes, L1 held the key before ${WRITES - r.notHeld}, never seen ${r.lost})`,
  );
  console.log(`  ${line('L1 entry dropped:', r.dropped)}`);
  console.log(`  ${line('new value read:  ', r.served)}`);
}

async function scenario(label: string, connection: Connection, foreign: Redis | Cluster): Promise<void> {
  const reader = await app(connection, 'tracking');
  const cache = reader.get(CacheService);
  const writer = await app(connection, 'tracking');
  const writerCache = writer.get(CacheService);
  // Every key starts at 0, so the reader's L1 holds each one before its first write too.
  for (let k = 0; k < KEYS; k++) await writerCache.set(`k${k}`, 0);
  // The bytes of an entry holding n, as the toolkit stores it, for the plain client to write (made beforehand).
  const raw = new Map<number, Buffer>();
  for (let n = 1; n <= Math.ceil(WRITES / KEYS); n++) {
    await writerCache.set('template', n);
    raw.set(n, (await foreign.getBuffer('bench:trk:cache:template')) as Buffer);
  }
  const foreignRun = await run(cache, async (key, n) => {
    await foreign.set(`bench:trk:cache:${key}`, raw.get(n) as Buffer, 'PX', 600_000);
  });
  print(`${label}, tracking, foreign SET`, foreignRun);
  print(`${label}, tracking, toolkit set`, await run(cache, (key, n) => writerCache.set(key, n)));
  await Promise.all([reader.close(), writer.close()]);
  const busReader = await app(connection, 'bus');
  const busWriter = await app(connection, 'bus');
  const busCache = busReader.get(CacheService);
  const busWriterCache = busWriter.get(CacheService);
  print(`${label}, bus, toolkit set`, await run(busCache, (key, n) => busWriterCache.set(key, n)));
  await Promise.all([busReader.close(), busWriter.close()]);
}

const CPU_WRITES = Number(process.env.TRACKING_BENCH_CPU_WRITES ?? 5_000);
const CPU_ROUNDS = 5;
const CPU_CONCURRENCY = 20;

/**
 * Redis CPU (µs) per `cache.set` of a small value from one instance while another holds the keys in L1: with
 * tracking (Redis sends the reader one invalidation message per write), the bus (one PUBLISH per write, delivered to
 * both instances) and no L1 (the SET alone). Each mode has its own key prefix, so no mode hears another's writes.
 */
async function redisCpuPerWrite(url: string): Promise<void> {
  const modes = ['off', 'bus', 'tracking'] as const;
  const setups = await Promise.all(
    modes.map(async (mode) => {
      const prefix = `bench:cpu-${mode}:`;
      const [reader, writer] = [await app({ url }, mode, prefix), await app({ url }, mode, prefix)];
      const writerCache = writer.get(CacheService);
      for (let k = 0; k < KEYS; k++) await writerCache.set(`k${k}`, 0);
      for (let k = 0; k < KEYS; k++) await reader.get(CacheService).get(`k${k}`);
      return { mode, reader, writer, writerCache, perWrite: [] as number[] };
    }),
  );
  watchRedisCpu(url);
  try {
    for (let r = 0; r < CPU_ROUNDS; r++) {
      for (const setup of setups) {
        let next = 0;
        const worker = async () => {
          while (next < CPU_WRITES) {
            const i = next++;
            await setup.writerCache.set(`k${i % KEYS}`, i);
          }
        };
        const perWrite = await redisCpuPerOp(async () => {
          await Promise.all(Array.from({ length: CPU_CONCURRENCY }, worker));
          await turn(); // the reader's invalidations of the last writes are Redis's work too
          return CPU_WRITES;
        });
        if (perWrite !== undefined) setup.perWrite.push(perWrite);
      }
    }
  } finally {
    unwatchRedisCpu(url);
  }
  const off = median(setups[0].perWrite);
  console.log(
    `single server, Redis CPU per cache.set (${CPU_WRITES} writes x ${CPU_ROUNDS} rounds, ${CPU_CONCURRENCY} at once, median):`,
  );
  for (const setup of setups) {
    const us = median(setup.perWrite);
    const extra = setup.mode === 'off' ? '' : ` (+${(us - off).toFixed(2)} over no L1)`;
    console.log(`  ${setup.mode.padEnd(8)} ${us.toFixed(2)} µs/write${extra}`);
  }
  await Promise.all(setups.flatMap((s) => [s.reader.close(), s.writer.close()]));
}

async function main(): Promise<void> {
  console.log(
    `load average before: ${loadavg()
      .map((l) => l.toFixed(2))
      .join(' ')}`,
  );
  const server = await startRedisServer();
  const single = new Redis(server.url);
  try {
    await redisCpuPerWrite(server.url);
    await scenario('single server', { url: server.url }, single);
  } finally {
    single.disconnect();
    await server.stop();
  }
  const cluster = await startRedisCluster();
  const foreign = new Cluster(cluster.startupNodes);
  try {
    await scenario('3-master cluster', { cluster: cluster.startupNodes }, foreign);
  } finally {
    foreign.disconnect();
    await cluster.stop();
  }
  console.log(
    `load average after: ${loadavg()
      .map((l) => l.toFixed(2))
      .join(' ')}`,
  );
}

runBench(main);
