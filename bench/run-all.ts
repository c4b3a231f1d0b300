/**
 * `npm run bench`: starts ONE private redis-server, points every benchmark at it (BENCH_REDIS_URL), runs each
 * compiled `dist-bench/bench/<name>.bench.js` that exists as a child process in turn (each with a time budget, the
 * whole run under 10 minutes on 2 cores), then gathers bench/results/*.json into latest.json, BENCHMARKS.md and
 * ratios.svg (bench/report.ts).
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { startRedisServer } from '../test/support/redis-server.js';
import { rawCommand } from '../test/support/resp.js';
import { generateReport, type RunEntry, type RunInfo } from './report.js';

/** In the order they run, with their time budgets (s). Feature benches aim at ~90 s; http boots two apps. */
const BENCHES: { name: string; budgetS: number }[] = [
  { name: 'cache', budgetS: 110 },
  { name: 'ratelimit', budgetS: 110 },
  { name: 'session', budgetS: 110 },
  { name: 'lock', budgetS: 110 },
  { name: 'semaphore', budgetS: 60 },
  { name: 'pubsub', budgetS: 110 },
  { name: 'http', budgetS: 100 },
];
/** The whole run must end within 10 minutes: leave room for the report. */
const TOTAL_BUDGET_S = 570;

function runChild(
  file: string,
  env: NodeJS.ProcessEnv,
  budgetS: number,
): Promise<{ status: RunEntry['status']; detail?: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [file], { env, stdio: 'inherit' });
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGTERM');
      setTimeout(() => child.kill('SIGKILL'), 5_000).unref();
    }, budgetS * 1000);
    child.on('error', (err) => {
      clearTimeout(timer);
      resolve({ status: 'failed', detail: err.message });
    });
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      if (timedOut) resolve({ status: 'timed out', detail: `stopped after its ${budgetS} s budget` });
      else if (code === 0) resolve({ status: 'ok' });
      else resolve({ status: 'failed', detail: `exit code ${code ?? signal}` });
    });
  });
}

async function main(): Promise<void> {
  const started = Date.now();
  const redis = await startRedisServer();
  const stopRedis = (): void => void redis.stop();
  process.once('SIGINT', stopRedis);
  const info = String(await rawCommand(redis.port, ['INFO', 'server']));
  const redisVersion = /redis_version:(\S+)/.exec(info)?.[1];
  process.stdout.write(`npm run bench: redis-server ${redisVersion ?? '?'} at ${redis.url}\n\n`);
  const entries: RunEntry[] = [];
  try {
    for (const { name, budgetS } of BENCHES) {
      const file = fileURLToPath(new URL(`./${name}.bench.js`, import.meta.url));
      if (!existsSync(file)) {
        process.stdout.write(`-- ${name}: no benchmark yet (${name}.bench.ts not written or not merged), skipped\n\n`);
        entries.push({ name, status: 'missing', detail: `bench/${name}.bench.ts does not exist yet` });
        continue;
      }
      const elapsedS = (Date.now() - started) / 1000;
      const remaining = TOTAL_BUDGET_S - elapsedS;
      if (remaining < 20) {
        process.stdout.write(`-- ${name}: skipped, the run has used its ${TOTAL_BUDGET_S} s\n\n`);
        entries.push({ name, status: 'skipped (total budget)' });
        continue;
      }
      // Each bench starts from an empty server.
      await rawCommand(redis.port, ['FLUSHALL'], { timeoutMs: 10_000 });
      process.stdout.write(`== ${name} (budget ${Math.min(budgetS, Math.floor(remaining))} s)\n`);
      const t0 = Date.now();
      const { status, detail } = await runChild(
        file,
        { ...process.env, BENCH_REDIS_URL: redis.url },
        Math.min(budgetS, Math.floor(remaining)),
      );
      const seconds = (Date.now() - t0) / 1000;
      entries.push({ name, status, seconds, detail });
      process.stdout.write(`-- ${name}: ${status} in ${seconds.toFixed(0)} s${detail ? ` (${detail})` : ''}\n\n`);
    }
  } finally {
    await redis.stop();
  }
  const run: RunInfo = {
    startedAt: new Date(started).toISOString(),
    seconds: (Date.now() - started) / 1000,
    redisVersion,
    entries,
  };
  const resultsDir = new URL('../../bench/results/', import.meta.url);
  mkdirSync(resultsDir, { recursive: true });
  writeFileSync(new URL('run.json', resultsDir), JSON.stringify(run, null, 2) + '\n');
  const md = generateReport(run);
  process.stdout.write(
    `${md}\nwrote BENCHMARKS.md, bench/results/latest.json and bench/results/ratios.svg in ${run.seconds.toFixed(0)} s\n`,
  );
  process.exitCode = entries.some((e) => e.status === 'failed' || e.status === 'timed out') ? 1 : 0;
}

main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
