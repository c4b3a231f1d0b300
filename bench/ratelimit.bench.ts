// Rate limiting benchmark: decisions per second and p99 with 50 concurrent callers, Redis round trips per decision
// (MONITOR, commands run inside scripts excluded), and admitted count at limit 1,000 under 5,000 concurrent requests,
// for our three algorithms, rate-limiter-flexible (RateLimiterRedis) and @nestjs/throttler's Redis storage
// (@nest-lab/throttler-storage-redis, its storage service called directly as ThrottlerGuard does).
import 'reflect-metadata';
import { NestFactory } from '@nestjs/core';
import { Redis } from 'ioredis';
import { RateLimiterRedis, RateLimiterRes } from 'rate-limiter-flexible';
import { ThrottlerStorageRedisService } from '@nest-lab/throttler-storage-redis';
import { RateLimitService, RedisToolkitModule, type RateLimitPolicy } from '../lib/index.js';
import { type RateLimitAlgorithm } from '../lib/advanced.js';
import { standaloneRedis } from './support/load-profile.js';
import {
  bestOfPipelining,
  measure,
  median,
  medianOf,
  peerClients,
  printTable,
  saveResults,
  withNote,
  type BenchRow,
  type Measurement,
} from './support/measure.js';
import { runBench } from './support/run-bench.js';

const FEATURE = 'ratelimit';
const OURS = 'nestjs-redis-toolkit';
const KEYS = 1_000;
const BIG_LIMIT = 1_000_000_000;

interface Contender {
  library: string;
  operation: string;
  /** One decision for `key` (window `ttl` ms); resolves true when admitted. */
  decide(key: string, limit: number, ttl?: number): Promise<boolean>;
  /** A peer's run on its auto-pipelining client: merged with its plain run, the better figure kept. */
  piped?: boolean;
}

async function main(): Promise<void> {
  // run alone: Redis pinned as `npm run bench` does, with the neighbour under BENCH_LOAD=1 (--load)
  const redis = await standaloneRedis();
  const url = redis.url;
  const app = await NestFactory.createApplicationContext(
    RedisToolkitModule.forRoot({ connection: { url }, keyPrefix: 'bench-rl:', commandTimeout: 5_000 }),
    { logger: ['error'] },
  );
  const rl = app.get(RateLimitService);
  // The peers get a client tuned like ours (a per-command timeout costs a timer per command), so only the libraries differ.
  // Each peer runs on two clients, auto-pipelining off (ioredis's default) and on; its better figure is kept.
  const peerClientPair = peerClients(url, {
    commandTimeout: 5_000,
    maxRetriesPerRequest: 0,
    autoResendUnfulfilledCommands: false,
  });
  const peerClient = peerClientPair.off;
  const throttlerStorage = new ThrottlerStorageRedisService(peerClient);
  const throttlerStoragePiped = new ThrottlerStorageRedisService(peerClientPair.on);
  const rlfCache = new Map<string, RateLimiterRedis>();
  const rlf = (limit: number, ttl: number, piped = false) => {
    let limiter = rlfCache.get(`${limit}/${ttl}/${piped}`);
    if (!limiter) {
      limiter = new RateLimiterRedis({
        storeClient: piped ? peerClientPair.on : peerClient,
        points: limit,
        duration: ttl / 1000,
        keyPrefix: `bench-rlf-${limit}-${ttl}`,
      });
      rlfCache.set(`${limit}/${ttl}/${piped}`, limiter);
    }
    return limiter;
  };

  const ours = (algorithm: RateLimitAlgorithm): Contender => ({
    library: OURS,
    operation: algorithm,
    // the sliding log keeps one member per admitted request, so its limit is capped (maxSlidingWindowLimit)
    decide: async (key, limit, ttl = 60_000) =>
      (
        await rl.consume(key, {
          limit: algorithm === 'sliding-window' ? Math.min(limit, 10_000) : limit,
          ttl,
          algorithm,
        })
      ).allowed,
  });
  const rlfContender = (piped: boolean): Contender => ({
    library: 'rate-limiter-flexible',
    operation: 'fixed-window',
    piped,
    decide: async (key, limit, ttl = 60_000) => {
      try {
        await rlf(limit, ttl, piped).consume(key);
        return true;
      } catch (err) {
        if (err instanceof RateLimiterRes) return false;
        throw err;
      }
    },
  });
  const throttlerContender = (piped: boolean): Contender => ({
    library: '@nestjs/throttler + @nest-lab/throttler-storage-redis',
    operation: 'fixed-window',
    piped,
    decide: async (key, limit, ttl = 60_000) =>
      !(
        await (piped ? throttlerStoragePiped : throttlerStorage).increment(
          `bench-thr:${key}`,
          ttl,
          limit,
          ttl,
          'default',
        )
      ).isBlocked,
  });
  const contenders: Contender[] = [
    ours('sliding-window'),
    ours('fixed-window'),
    ours('token-bucket'),
    rlfContender(false),
    rlfContender(true),
    throttlerContender(false),
    throttlerContender(true),
  ];

  const rows: BenchRow[] = [];
  const run = Date.now().toString(36);
  // The machine is shared: rounds are interleaved (A B C D E, A B C D E, ...) so that load changes fall on every
  // contender alike, after one warm-up round each (JIT, connections, script cache). Median of ROUNDS rounds.
  const samples = await interleaved(
    contenders.map((c) => {
      let n = 0;
      return () => c.decide(`${run}:${c.library}:${c.operation}:${n++ % KEYS}`, BIG_LIMIT);
    }),
  );
  for (const [i, c] of contenders.entries()) {
    if (c.piped) continue; // merged into its plain run's row below
    const pipedAt = contenders.findIndex((p) => p.piped && p.library === c.library && p.operation === c.operation);
    const best = pipedAt < 0 ? undefined : bestOfPipelining(samples[i], samples[pipedAt]);
    const m = best?.pipelined ? samples[pipedAt] : samples[i];
    // round trips per decision
    const decisions = 200;
    const roundTrips =
      (await countCommands(url, async () => {
        for (let j = 0; j < decisions; j++)
          await c.decide(`${run}:rt:${c.library}:${c.operation}:${j % 10}`, BIG_LIMIT);
      })) / decisions;
    // Redis CPU per decision (script time from INFO commandstats; sequential calls, so no queueing in it)
    const redisUs = await redisMicrosPerCall(url, decisions, async () => {
      for (let j = 0; j < decisions; j++) await c.decide(`${run}:us:${c.library}:${c.operation}:${j % 10}`, BIG_LIMIT);
    });
    // admitted at limit 1,000 under 5,000 concurrent requests on one key (a day-long window, so that a token bucket
    // does not refill noticeably while the burst runs)
    const key = `${run}:admit:${c.library}:${c.operation}`;
    const outcomes = await Promise.all(
      Array.from({ length: 5_000 }, () => c.decide(key, 1_000, 86_400_000).catch(() => false)),
    );
    const admitted = outcomes.filter(Boolean).length;
    rows.push({
      feature: FEATURE,
      library: c.library,
      operation: c.operation,
      opsPerSec: m.opsPerSec,
      p50Ms: m.p50Ms,
      p99Ms: m.p99Ms,
      errors: m.errors,
      redisCpuUsPerOp: m.redisCpuUsPerOp,
      notes: withNote(
        `${roundTrips.toFixed(2)} round trips/decision; ${m.cpuUsPerOp.toFixed(1)} µs app CPU + ${redisUs.toFixed(1)} µs Redis scripts/decision; admitted ${admitted} of 5,000 at limit 1,000${admitted > 1_000 ? ' (OVER-ADMISSION)' : ''}`,
        best?.note ?? '',
      ),
    });
  }

  // Two policies (10/s and 100/min) in one request: ours is one script call, throttler charges each one by one.
  const twoPolicies: RateLimitPolicy[] = [
    { limit: BIG_LIMIT, ttl: 1_000, algorithm: 'fixed-window' },
    { limit: 10_000, ttl: 60_000, algorithm: 'sliding-window' }, // the sliding log's cap (maxSlidingWindowLimit)
  ];
  const multi: Contender[] = [
    {
      library: OURS,
      operation: 'two policies',
      decide: async (key) =>
        (await rl.consumeAll(twoPolicies.map((policy, i) => ({ key, policy, name: `p${i}` })))).allowed,
    },
    ...[false, true].map(
      (piped): Contender => ({
        library: '@nestjs/throttler + @nest-lab/throttler-storage-redis',
        operation: 'two policies',
        piped,
        decide: async (key) => {
          const storage = piped ? throttlerStoragePiped : throttlerStorage;
          const a = await storage.increment(`bench-thr2:${key}`, 1_000, BIG_LIMIT, 1_000, 'second');
          const b = await storage.increment(`bench-thr2:${key}`, 60_000, BIG_LIMIT, 60_000, 'minute');
          return !a.isBlocked && !b.isBlocked;
        },
      }),
    ),
  ];
  const multiSamples = await interleaved(
    multi.map((c) => {
      let n = 0;
      return () => c.decide(`${run}:multi:${c.library}:${n++ % KEYS}`, BIG_LIMIT);
    }),
  );
  for (const [i, c] of multi.entries()) {
    if (c.piped) continue;
    const pipedAt = multi.findIndex((p) => p.piped && p.library === c.library);
    const best = pipedAt < 0 ? undefined : bestOfPipelining(multiSamples[i], multiSamples[pipedAt]);
    const { cpuUsPerOp, ...m } = best?.pipelined ? multiSamples[pipedAt] : multiSamples[i];
    const commands = await countCommands(url, async () => {
      for (let i = 0; i < 200; i++) await c.decide(`${run}:multi-rt:${c.library}:${i % 10}`, BIG_LIMIT);
    });
    const redisUs = await redisMicrosPerCall(url, 200, async () => {
      for (let j = 0; j < 200; j++) await c.decide(`${run}:multi-us:${c.library}:${j % 10}`, BIG_LIMIT);
    });
    rows.push({
      feature: FEATURE,
      library: c.library,
      operation: c.operation,
      ...m,
      notes: withNote(
        `${(commands / 200).toFixed(2)} round trips/decision; ${cpuUsPerOp.toFixed(1)} µs app CPU + ${redisUs.toFixed(1)} µs Redis scripts/decision`,
        best?.note ?? '',
      ),
    });
  }

  const table = printTable('Rate limiting: decisions per second, 50 concurrent callers', rows, OURS);
  const rlfRow = rows.find((r) => r.library === 'rate-limiter-flexible');
  const thrRow = rows.find((r) => r.library.startsWith('@nestjs/throttler') && r.operation === 'fixed-window');
  const ratios = rows
    .filter((r) => r.library === OURS && r.operation !== 'two policies')
    .map((r) => ({
      algorithm: r.operation,
      vsRateLimiterFlexible: rlfRow ? +(r.opsPerSec / rlfRow.opsPerSec).toFixed(2) : null,
      vsThrottlerStorageRedis: thrRow ? +(r.opsPerSec / thrRow.opsPerSec).toFixed(2) : null,
    }));
  process.stdout.write(
    `${ratios.map((r) => `${r.algorithm}: ${r.vsRateLimiterFlexible}× rate-limiter-flexible, ${r.vsThrottlerStorageRedis}× throttler-storage-redis`).join('\n')}\n`,
  );
  saveResults(FEATURE, rows, {
    table,
    ratios,
    targets: { vsRateLimiterFlexible: 1, vsThrottlerStorageRedis: 2, roundTrips: 1, overAdmission: 0 },
  });

  peerClientPair.close();
  await app.close();
  await redis.stop();
}

/**
 * Commands clients sent while `work` ran: MONITOR lines whose source is not `lua` (commands a script runs are not
 * round trips). MONITOR slows the server down, so it runs only around this count, not while measuring throughput.
 */
async function countCommands(url: string, work: () => Promise<void>): Promise<number> {
  const client = new Redis(url);
  const monitor = await client.monitor();
  let n = 0;
  monitor.on('monitor', (_time: string, _args: string[], source: string) => {
    if (source !== 'lua') n++;
  });
  await sleep(100);
  await work();
  await sleep(300);
  monitor.disconnect();
  client.disconnect();
  return n;
}

/** Microseconds Redis spent in EVAL/EVALSHA (every library here decides in a script) per decision while `work` ran. */
async function redisMicrosPerCall(url: string, decisions: number, work: () => Promise<void>): Promise<number> {
  const admin = new Redis(url);
  const scriptMicros = async () => {
    const stats = await admin.info('commandstats');
    let usec = 0;
    for (const m of stats.matchAll(/^cmdstat_(?:eval|evalsha):calls=\d+,usec=(\d+)/gm)) usec += Number(m[1]);
    return usec;
  };
  const before = await scriptMicros();
  await work();
  const after = await scriptMicros();
  admin.disconnect();
  return (after - before) / decisions;
}

const ROUNDS = 3;

/** Measures every op in interleaved rounds (one warm-up round each first); median per op, with app CPU per op. */
async function interleaved(ops: (() => Promise<unknown>)[]): Promise<(Measurement & { cpuUsPerOp: number })[]> {
  for (const op of ops) await measure(op, { rounds: 1, durationMs: 400, warmupMs: 0 });
  const rounds: { m: Measurement; cpu: number }[][] = ops.map(() => []);
  for (let r = 0; r < ROUNDS; r++) {
    for (const [i, op] of ops.entries()) {
      let calls = 0;
      const counted = () => {
        calls++;
        return op();
      };
      const before = process.cpuUsage();
      const m = await measure(counted, { rounds: 1, durationMs: 1_000, warmupMs: 0 });
      const cpu = process.cpuUsage(before);
      rounds[i].push({ m, cpu: (cpu.user + cpu.system) / calls });
    }
  }
  return rounds.map((rs) => ({ ...medianOf(rs.map((x) => x.m)), cpuUsPerOp: median(rs.map((x) => x.cpu)) }));
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

runBench(main);
