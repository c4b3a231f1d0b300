// Rate limiting under attack: one key far over its limit, hammered by 50 concurrent callers. Decisions per second and
// Redis commands per decision (INFO commandstats, every command the server ran, divided by the decisions made) for
// our in-process block cache (rateLimit.blockCache) against rate-limiter-flexible's inMemoryBlockOnConsumed, with
// both libraries' Redis-only runs beside them. Interleaved rounds; the peer runs on ioredis with auto-pipelining off
// and on, its better figure kept.
import 'reflect-metadata';
import { NestFactory } from '@nestjs/core';
import { Redis } from 'ioredis';
import { RateLimiterRedis, RateLimiterRes } from 'rate-limiter-flexible';
import { RateLimitService, RedisToolkitModule, type RateLimitPolicy } from '../lib/index.js';
import { standaloneRedis } from './support/load-profile.js';
import {
  bestOfPipelining,
  interleaved,
  peerClients,
  printTable,
  saveResults,
  withNote,
  type BenchRow,
  type ProbedMeasurement,
} from './support/measure.js';
import { runBench } from './support/run-bench.js';

const FEATURE = 'ratelimit-attack';
const OURS = 'nestjs-redis-toolkit';
const LIMIT = 10;
/** Long enough that the attacked key stays refused for the whole run. */
const WINDOW_MS = 600_000;

async function main(): Promise<void> {
  const redis = await standaloneRedis();
  const url = redis.url;
  const boot = async (blockCache: boolean) => {
    const app = await NestFactory.createApplicationContext(
      RedisToolkitModule.forRoot({
        connection: { url },
        keyPrefix: `bench-rla-${blockCache ? 'c' : 'n'}:`,
        commandTimeout: 5_000,
        rateLimit: { blockCache },
      }),
      { logger: ['error'] },
    );
    return { app, rl: app.get(RateLimitService) };
  };
  const cached = await boot(true);
  const plain = await boot(false);
  const peer = peerClients(url, {
    commandTimeout: 5_000,
    maxRetriesPerRequest: 0,
    autoResendUnfulfilledCommands: false,
  });
  // rate-limiter-flexible at its best for this pattern: the in-memory block from the first point over (it must be
  // >= points) for the rest of the window (no inMemoryBlockDuration: it blocks for msBeforeNext)
  const rlf = (client: Redis, inMemory: boolean, prefix: string) =>
    new RateLimiterRedis({
      storeClient: client,
      points: LIMIT,
      duration: WINDOW_MS / 1000,
      keyPrefix: prefix,
      ...(inMemory && { inMemoryBlockOnConsumed: LIMIT }),
    });
  const rlfDecide = (limiter: RateLimiterRedis) => async (key: string) => {
    try {
      await limiter.consume(key);
      return true;
    } catch (err) {
      if (err instanceof RateLimiterRes) return false; // refused: a decision, not a failure
      throw err;
    }
  };
  const policy: RateLimitPolicy = { limit: LIMIT, ttl: WINDOW_MS, algorithm: 'fixed-window' };
  const run = Date.now().toString(36);
  const key = `${run}:attacker`;
  const contenders: Record<string, (k: string) => Promise<boolean>> = {
    ours: async (k) => (await cached.rl.consume(k, policy)).allowed,
    oursNoCache: async (k) => (await plain.rl.consume(k, policy)).allowed,
    rlfOff: rlfDecide(rlf(peer.off, true, `bench-rla-rlf-off-${run}`)),
    rlfOn: rlfDecide(rlf(peer.on, true, `bench-rla-rlf-on-${run}`)),
    rlfNoCache: rlfDecide(rlf(peer.off, false, `bench-rla-rlf-n-${run}`)),
  };
  // every contender's key far over its limit before measuring: LIMIT admitted, then refused
  for (const decide of Object.values(contenders)) {
    for (let i = 0; i < LIMIT * 2; i++) await decide(key);
    if (await decide(key)) throw new Error('the attacked key was admitted over its limit');
  }

  const admin = new Redis(url);
  const commandsServed = async (): Promise<number> => {
    const info = String(await admin.info('commandstats'));
    let total = 0;
    for (const m of info.matchAll(/^cmdstat_([a-z|_-]+):calls=(\d+)/gm)) if (m[1] !== 'info') total += Number(m[2]);
    return total;
  };
  let admitted = 0;
  const ops = Object.fromEntries(
    Object.entries(contenders).map(([name, decide]) => [
      name,
      async () => {
        if (await decide(key)) admitted++;
      },
    ]),
  );
  const m = await interleaved(ops, 3, { durationMs: 1_000, warmupMs: 0, concurrency: 50 }, commandsServed);

  const rows: BenchRow[] = [];
  const row = (library: string, operation: string, x: ProbedMeasurement, note = ''): BenchRow => ({
    feature: FEATURE,
    library,
    operation,
    opsPerSec: x.opsPerSec,
    p50Ms: x.p50Ms,
    p99Ms: x.p99Ms,
    errors: x.errors,
    ...(x.redisCpuUsPerOp !== undefined && { redisCpuUsPerOp: x.redisCpuUsPerOp }),
    notes: withNote(
      `${(x.perOp ?? 0).toFixed(4)} Redis commands/decision (INFO commandstats: calls + commands scripts ran)`,
      note,
    ),
  });
  rows.push(row(OURS, 'in-process block', m.ours, 'rateLimit.blockCache'));
  const best = bestOfPipelining(m.rlfOff, m.rlfOn);
  rows.push(
    row(
      'rate-limiter-flexible',
      'in-process block',
      { ...best, perOp: (best.pipelined ? m.rlfOn : m.rlfOff).perOp },
      `inMemoryBlockOnConsumed: ${LIMIT}; ${best.note}`,
    ),
  );
  rows.push(row(OURS, 'Redis only', m.oursNoCache, 'blockCache off'));
  rows.push(row('rate-limiter-flexible', 'Redis only', m.rlfNoCache, 'no in-memory block; auto-pipelining off'));
  const table = printTable('Rate limiting under attack: one key over its limit, 50 concurrent callers', rows, OURS);
  const ratio = +(m.ours.opsPerSec / best.opsPerSec).toFixed(2);
  process.stdout.write(`block cache: ${ratio}× rate-limiter-flexible inMemoryBlockOnConsumed; admitted ${admitted}\n`);
  saveResults(FEATURE, rows, {
    table,
    ratios: { vsRateLimiterFlexibleInMemoryBlock: ratio },
    admittedDuringAttack: admitted,
  });

  admin.disconnect();
  peer.close();
  await cached.app.close();
  await plain.app.close();
  await redis.stop();
}

runBench(main);
