/**
 * `npm run bench`: starts ONE private redis-server, points every benchmark at it (BENCH_REDIS_URL), runs each
 * compiled `dist-bench/bench/<name>.bench.js` that exists as a child process in turn (each with a time budget, the
 * whole run under 10 minutes on 2 cores), then gathers the results into latest.json, BENCHMARKS.md and ratios.svg
 * (bench/report.ts).
 *
 * Two profiles, the same suite: 'quiet' (`npm run bench`) and 'loaded' (`npm run bench -- --load`, or
 * BENCH_LOAD=1): a CPU-bound neighbour process runs pinned to Redis's CPU for the whole run, as on a busy CI box or
 * a shared host. In both, Redis is pinned to one CPU (taskset) so the profiles differ only by the neighbour. Each
 * profile keeps its own results (bench/results/ and bench/results/loaded/); BENCHMARKS.md shows both side by side.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { fileURLToPath } from 'node:url';
import { startRedisServer } from '../test/support/redis-server.js';
import { rawCommand } from '../test/support/resp.js';
import { generateReport, type RunEntry, type RunInfo } from './report.js';
import { cliProfile, pin, startNeighbour } from './support/load-profile.js';
import { resultsDir, type BenchProfile } from './support/measure.js';

const PROFILE: BenchProfile = cliProfile();

/** The 1/5/15-minute load averages, as text ("1.02 0.87 0.60"). */
const loadNow = (): string =>
  loadavg()
    .map((v) => v.toFixed(2))
    .join(' ');

/**
 * In the order they run, with their time budgets (s). The budgets add up to at most TOTAL_BUDGET_S less
 * RESERVE_S, so no bench is cut or skipped for the total; each bench takes about three quarters of its budget on an
 * idle 2-core box, the rest is room for a loaded profile (a bench that boots apps or fills data slows down under load,
 * its measured windows do not). A new bench gets a budget here and shorter windows elsewhere, not a bigger total.
 */
const BENCHES: { name: string; budgetS: number }[] = [
  // cache took 45-47 s loaded in six runs and was stopped at 48 once: 6 s from the rate-limit benches (39-41 and 17 s)
  { name: 'cache', budgetS: 54 },
  { name: 'url-cache', budgetS: 90 },
  { name: 'ratelimit', budgetS: 45 },
  { name: 'ratelimit-attack', budgetS: 21 },
  { name: 'session', budgetS: 66 },
  { name: 'lock', budgetS: 56 },
  { name: 'semaphore', budgetS: 33 },
  { name: 'pubsub', budgetS: 68 },
  { name: 'http', budgetS: 41 },
  { name: 'observability', budgetS: 31 },
  { name: 'cluster', budgetS: 42 },
];
/** The whole run must end within 10 minutes: leave room for the report. */
const TOTAL_BUDGET_S = 570;
/** Redis start, a FLUSHALL per bench and the report. */
const RESERVE_S = 20;

/**
 * Signals the process group `pgid` (a bench and every process it started: the http bench's sample apps and its
 * plain-Nest baseline); false when the group is already gone.
 */
function killGroup(pgid: number, signal: NodeJS.Signals): boolean {
  try {
    process.kill(-pgid, signal);
    return true;
  } catch {
    return false; // ESRCH: nobody left in the group
  }
}

/** The process group of the bench running now, for SIGINT. */
let runningGroup: number | undefined;

/**
 * Runs one bench as the leader of its own process group (detached), so that stopping it at its budget also stops
 * the processes it spawned; whatever of the group is still alive when the bench exits is killed as well.
 */
function runChild(
  file: string,
  env: NodeJS.ProcessEnv,
  budgetS: number,
): Promise<{ status: RunEntry['status']; detail?: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [file], { env, stdio: ['ignore', 'inherit', 'inherit'], detached: true });
    const pgid = child.pid;
    runningGroup = pgid;
    let timedOut = false;
    let killTimer: NodeJS.Timeout | undefined;
    const timer = setTimeout(() => {
      timedOut = true;
      if (pgid !== undefined) killGroup(pgid, 'SIGTERM');
      killTimer = setTimeout(() => pgid !== undefined && killGroup(pgid, 'SIGKILL'), 5_000);
    }, budgetS * 1000);
    const done = (result: { status: RunEntry['status']; detail?: string }): void => {
      clearTimeout(timer);
      clearTimeout(killTimer);
      // the bench is gone; a grandchild it left behind (SIGTERM ignored, or the bench died first) is not
      if (pgid !== undefined) killGroup(pgid, 'SIGKILL');
      runningGroup = undefined;
      resolve(result);
    };
    child.on('error', (err) => done({ status: 'failed', detail: err.message }));
    child.on('exit', (code, signal) => {
      if (timedOut) done({ status: 'timed out', detail: `stopped after its ${budgetS} s budget` });
      else if (code === 0) done({ status: 'ok' });
      else done({ status: 'failed', detail: `exit code ${code ?? signal}` });
    });
  });
}

async function main(): Promise<void> {
  const started = Date.now();
  const redis = await startRedisServer();
  // Redis on the last CPU, in both profiles; in the loaded one the neighbour spins on the same CPU.
  const redisCpu = cpus().length - 1;
  const pinned = redis.pid !== undefined && pin(redis.pid, redisCpu);
  const neighbour = PROFILE === 'loaded' ? startNeighbour(redisCpu) : undefined;
  const stopAll = (): void => {
    // the bench runs in its own process group, so Ctrl-C does not reach it: stop it and what it started
    if (runningGroup !== undefined) killGroup(runningGroup, 'SIGKILL');
    neighbour?.kill('SIGKILL');
    void redis.stop().finally(() => process.exit(130));
  };
  process.once('SIGINT', stopAll);
  const budgetSum = BENCHES.reduce((sum, b) => sum + b.budgetS, 0);
  if (budgetSum > TOTAL_BUDGET_S - RESERVE_S)
    process.stdout.write(
      `warning: the bench budgets add up to ${budgetSum} s, more than the ${TOTAL_BUDGET_S - RESERVE_S} s they may ` +
        'take: the last benches will be cut or skipped. Shorten some measurement windows and rebalance BENCHES.\n',
    );
  const info = String(await rawCommand(redis.port, ['INFO', 'server']));
  const redisVersion = /redis_version:(\S+)/.exec(info)?.[1];
  process.stdout.write(
    `npm run bench (${PROFILE} profile): redis-server ${redisVersion ?? '?'} at ${redis.url}` +
      `${pinned ? `, pinned to CPU ${redisCpu}` : ''}${neighbour ? `, a CPU-bound neighbour pinned beside it` : ''}` +
      `; load average ${loadNow()}\n\n`,
  );
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
      const loadStart = loadNow();
      const { status, detail } = await runChild(
        file,
        { ...process.env, BENCH_REDIS_URL: redis.url, BENCH_PROFILE: PROFILE },
        Math.min(budgetS, Math.floor(remaining)),
      );
      const seconds = (Date.now() - t0) / 1000;
      entries.push({ name, status, seconds, detail, loadAverage: { start: loadStart, end: loadNow() } });
      process.stdout.write(`-- ${name}: ${status} in ${seconds.toFixed(0)} s${detail ? ` (${detail})` : ''}\n\n`);
    }
  } finally {
    neighbour?.kill('SIGKILL');
    await redis.stop();
  }
  const run: RunInfo = {
    profile: PROFILE,
    startedAt: new Date(started).toISOString(),
    seconds: (Date.now() - started) / 1000,
    redisVersion,
    redisPinnedToCpu: pinned ? redisCpu : undefined,
    neighbour: neighbour !== undefined,
    entries,
  };
  const dir = resultsDir(PROFILE);
  mkdirSync(dir, { recursive: true });
  writeFileSync(new URL('run.json', dir), JSON.stringify(run, null, 2) + '\n');
  const md = generateReport();
  process.stdout.write(
    `${md}\nwrote BENCHMARKS.md, bench/results/latest.json and bench/results/ratios.svg in ${run.seconds.toFixed(0)} s\n`,
  );
  process.exitCode = entries.some((e) => e.status === 'failed' || e.status === 'timed out') ? 1 : 0;
}

main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
