/**
 * HTTP end to end: autocannon against the sample app's `GET /products` (cached and rate-limited by the toolkit)
 * vs a plain NestJS app returning the same JSON (bench/http-baseline.ts). Reports req/s, p50, p99 and the overhead
 * on a cache hit; the target is at most 20 %.
 *
 * Both apps run as child processes (the sample from dist-bench/sample/main.js, built by `npm run bench:build`, or
 * dist/sample/main.js); autocannon runs here. The sample's rate limit is lifted with RATE_LIMIT_LIMIT so 429s do not
 * make the numbers meaningless. Until the cache feature gives the sample a `GET /products`, the benchmark reports
 * "not available yet".
 */
import autocannon from 'autocannon';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { httpGet } from '../test/faults/harness/sample-app.js';
import { startRedisServer, type RedisServerHandle } from '../test/support/redis-server.js';
import { startApp, type Child } from './support/sample-app.js';
import { median, printTable, redisCpuMicros, saveResults, watchRedisCpu, type BenchRow } from './support/measure.js';
import { runBench } from './support/run-bench.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const OURS = 'nestjs-redis-toolkit';
const OURS_FIXED = 'nestjs-redis-toolkit, fixed-window limit';
const BASELINE = 'plain NestJS (no toolkit)';
const OPERATION = 'GET /products (cache hit)';
const TARGET_OVERHEAD_PCT = 20;
const CONNECTIONS = 32;
const WARMUP_S = 1;
const ROUND_S = 2.5;
const ROUNDS = 3;

type Run = autocannon.Result & { redisCpuUsPerOp?: number };

/** One autocannon run, with the bench Redis's CPU per successful request. */
async function cannon(url: string, seconds: number): Promise<Run> {
  const before = await redisCpuMicros();
  const result = await autocannon({ url, connections: CONNECTIONS, duration: seconds, pipelining: 1, timeout: 10 });
  const after = await redisCpuMicros();
  const ok = result.requests.total - result.non2xx;
  return before === undefined || after === undefined || ok <= 0
    ? result
    : Object.assign(result, { redisCpuUsPerOp: (after - before) / ok });
}

function row(library: string, results: Run[], notes?: string): BenchRow {
  const cpu = results.map((r) => r.redisCpuUsPerOp).filter((v): v is number => v !== undefined);
  return {
    feature: 'http',
    library,
    operation: OPERATION,
    // successful requests only (a non-2xx answer is an error, not throughput)
    opsPerSec: median(results.map((r) => (r.requests.total - r.non2xx) / (r.duration || 1))),
    ...(cpu.length > 0 && { redisCpuUsPerOp: median(cpu) }),
    p50Ms: median(results.map((r) => r.latency.p50)),
    p99Ms: median(results.map((r) => r.latency.p99)),
    errors: results.reduce((s, r) => s + r.errors + r.non2xx, 0),
    ...(notes !== undefined && { notes }),
  };
}

async function main(): Promise<void> {
  let privateRedis: RedisServerHandle | undefined;
  const redisUrl = process.env.BENCH_REDIS_URL ?? (privateRedis = await startRedisServer()).url;
  watchRedisCpu(redisUrl);
  // BENCH_SAMPLE_MAIN: bench another build of the app (path relative to the repo root).
  const candidates = [process.env.BENCH_SAMPLE_MAIN, 'dist-bench/sample/main.js', 'dist/sample/main.js'].filter(
    (p): p is string => !!p,
  );
  const sampleMain = candidates.map((p) => join(ROOT, p)).find((p) => existsSync(p));
  const baselineMain = fileURLToPath(new URL('./http-baseline.js', import.meta.url));
  const dir = mkdtempSync(join(tmpdir(), 'rtk-http-bench-'));
  const children: Child[] = [];
  try {
    if (!sampleMain) throw new Error('the sample is not built: run npm run bench:build (or npm run build)');
    const sample = await startApp(
      sampleMain,
      // RATE_LIMIT_LIMIT: the sample's default limit (100/min) would turn the run into 429s.
      {
        REDIS_URL: redisUrl,
        REDIS_KEY_PREFIX: 'rtk-bench-http:',
        // the sliding log keeps one member per request: the largest limit it accepts, never reached in this run
        RATE_LIMIT_LIMIT: '100000',
        RATE_LIMIT_MAX_SLIDING_WINDOW_LIMIT: '100000',
        REDIS_COMMAND_TIMEOUT_MS: '1000',
      },
      '/health',
    );
    children.push(sample);
    // The same app with the cheaper fixed-window counter instead of the exact sliding log: splits the overhead into
    // what the limiter algorithm costs in Redis and what any Redis round trip per request costs.
    const sampleFixed = await startApp(
      sampleMain,
      {
        REDIS_URL: redisUrl,
        REDIS_KEY_PREFIX: 'rtk-bench-http-fixed:',
        RATE_LIMIT_LIMIT: '1000000000',
        RATE_LIMIT_ALGORITHM: 'fixed-window',
        REDIS_COMMAND_TIMEOUT_MS: '1000',
      },
      '/health',
    );
    children.push(sampleFixed);
    const probe = await httpGet(`${sample.url}/products`);
    if (probe.status !== 200) {
      const reason = `GET /products on the sample answered ${probe.status}${probe.status === 404 ? ' (the cache feature has not given the sample its products endpoint yet)' : ''}`;
      process.stdout.write(`### HTTP end to end\n\nnot available yet: ${reason}\n\n`);
      saveResults('http', [], { unavailable: reason });
      return;
    }
    const bodyFile = join(dir, 'products.json');
    writeFileSync(bodyFile, probe.body);
    const baseline = await startApp(baselineMain, { BASELINE_BODY_FILE: bodyFile }, '/products');
    children.push(baseline);
    const same = await httpGet(`${baseline.url}/products`);
    if (same.body !== probe.body) throw new Error('the baseline does not return the same JSON as the sample');

    // Warm both (JIT, the cache entry), then alternate rounds so drift on a shared machine hits both alike.
    await cannon(`${sample.url}/products`, WARMUP_S);
    await cannon(`${sampleFixed.url}/products`, WARMUP_S);
    await cannon(`${baseline.url}/products`, WARMUP_S);
    const ours: Run[] = [];
    const oursFixed: Run[] = [];
    const theirs: Run[] = [];
    for (let i = 0; i < ROUNDS; i++) {
      ours.push(await cannon(`${sample.url}/products`, ROUND_S));
      oursFixed.push(await cannon(`${sampleFixed.url}/products`, ROUND_S));
      theirs.push(await cannon(`${baseline.url}/products`, ROUND_S));
    }
    const oursRow = row(OURS, ours, 'sample app: RateLimitGuard (sliding window) + @Cacheable, cache hit');
    const fixedRow = row(OURS_FIXED, oursFixed, 'the same with RATE_LIMIT_ALGORITHM=fixed-window');
    const baseRow = row(BASELINE, theirs, 'same JSON, no Redis');
    const overheadPct = (1 - oursRow.opsPerSec / baseRow.opsPerSec) * 100;
    const fixedOverheadPct = (1 - fixedRow.opsPerSec / baseRow.opsPerSec) * 100;
    const p99OverheadPct = (oursRow.p99Ms / baseRow.p99Ms - 1) * 100;
    const met = overheadPct <= TARGET_OVERHEAD_PCT;
    const summary =
      `throughput overhead on a cache hit ${overheadPct.toFixed(1)} % (target ≤ ${TARGET_OVERHEAD_PCT} %: ${met ? 'met' : 'missed'}), ` +
      `p99 ${oursRow.p99Ms.toFixed(1)} ms vs ${baseRow.p99Ms.toFixed(1)} ms; with a fixed-window limit ${fixedOverheadPct.toFixed(1)} %; ${CONNECTIONS} connections, median of ${ROUNDS} × ${ROUND_S} s` +
      (oursRow.errors > 0
        ? `; ${oursRow.errors} non-2xx/errors on ours (rate limit not lifted? set RATE_LIMIT_LIMIT in the sample)`
        : '');
    printTable('HTTP end to end', [oursRow, fixedRow, baseRow]);
    process.stdout.write(`${summary}\n\n`);
    saveResults('http', [oursRow, fixedRow, baseRow], {
      summary,
      overheadPct,
      fixedOverheadPct,
      p99OverheadPct,
      targetOverheadPct: TARGET_OVERHEAD_PCT,
      met,
    });
  } finally {
    await Promise.all(children.map((c) => c.stop()));
    rmSync(dir, { recursive: true, force: true });
    await privateRedis?.stop();
  }
}

runBench(main);
