/**
 * `npm run bench:url-cache`: HTTP response caching by URL, through HTTP (autocannon), our HttpCacheInterceptor vs
 * @nestjs/cache-manager's CacheInterceptor with its Redis store (cache-manager + @keyv/redis, the store
 * bench/cache.bench.ts uses), on the same controller and routes (bench/url-cache-app.ts, one child process each), on
 * Express and again on Fastify. 200 URLs (path and query), warmed so every measured request is a hit; the apps of one
 * platform take turns, round by round (interleaved), ours right before or after its peer; each app's figure is its
 * median round, each ratio the median of the rounds' ours ÷ theirs. Target: ours ≥ 1.2× cache-manager, like for
 * like: one Redis GET per hit on both sides (our L1 off, their Redis store alone), and again with an in-process tier
 * on both sides (our L1; their in-memory Keyv before the Redis one). A row without any cache shows the HTTP stack's
 * ceiling, and the ceiling ÷ theirs is the most any cache could show on that platform: Express's stack costs about
 * 200 µs of CPU per request, which kept that bound at 1.2-1.4× in the runs of 2026-12-01; Fastify's costs about 40 µs,
 * so the caches' own cost shows.
 * Every app runs pinned to CPU 0 and autocannon (this process) to the other CPUs, above normal priority (see
 * favourLoadGenerator), so a round measures the app, not the app and its load generator sharing a core; the app's own
 * CPU per request is reported beside req/s.
 * `--load` (or BENCH_LOAD=1): run on its own, Redis pinned to one CPU with a busy neighbour (see load-profile.ts).
 */
import autocannon from 'autocannon';
import { fileURLToPath } from 'node:url';
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { httpGet } from '../test/faults/harness/sample-app.js';
import { favourLoadGenerator, standaloneRedis } from './support/load-profile.js';
import { startApp, type Child } from './support/sample-app.js';
import { median, printTable, redisCpuMicros, saveResults, type BenchRow } from './support/measure.js';
import { runBench } from './support/run-bench.js';

const OURS = 'nestjs-redis-toolkit';
const PEER = '@nestjs/cache-manager + @keyv/redis';
const PEER_L1 = '@nestjs/cache-manager, memory + @keyv/redis';
const NONE = 'no cache (plain handler)';
const OPERATION = 'GET by URL, cache hit (HTTP)';
/** The in-process tier's own operation: BENCHMARKS.md divides a peer's row by ours of the same operation. */
const OPERATION_L1 = 'GET by URL, in-process hit (HTTP)';
const TARGET = 1.2;
const URLS = 200;
const CONNECTIONS = 32;
// Many short rounds, the apps' order rotating, to fit its budget in npm run bench (ten apps): a burst of
// load from elsewhere on the box lands in one or two rounds of every app, and the median drops it. Run on its own,
// URL_CACHE_ROUND_S / _ROUNDS lengthen them. 0.4 s rounds: with 0.25 s the same app's CPU per request moved by
// 10-30 % between rounds of one run (session 41), and 8 of 0.4 s fit the budget as 10 of 0.25 s did, with 7 s more.
// The warm-up, before any app is measured: WARMUP_PASSES turns of WARMUP_S per app, the apps of both platforms taking
// turns (V8 compiles in the background between them). One second per app, each right before its platform's rounds,
// left the first 3-5 measured rounds of every app at up to twice the CPU per request of the later ones (the per-round
// figures in bench/results/url-cache.json).
const WARMUP_S = Number(process.env.URL_CACHE_WARMUP_S ?? 0.5);
const WARMUP_PASSES = Number(process.env.URL_CACHE_WARMUP_PASSES ?? 3);
const ROUND_S = Number(process.env.URL_CACHE_ROUND_S ?? 0.4);
const ROUNDS = Number(process.env.URL_CACHE_ROUNDS ?? 8);
/** The CPU every app is pinned to; the load generator (this process) runs on the others. */
const APP_CPU = 0;

const path = (i: number) => `/catalog/p${i % 20}?page=${i % URLS}`;

type Run = {
  rps: number;
  p50: number;
  p99: number;
  errors: number;
  cpuUs?: number;
  appCpuUs?: number;
  /** Share of one CPU this process (autocannon) used over the round: near 1 it, not the app, set the pace. */
  generatorCpu: number;
};

/**
 * The CPU time a process has used, µs (Linux; undefined elsewhere): the run time of its threads in nanoseconds from
 * /proc/<pid>/task/<tid>/schedstat, summed. /proc/<pid>/stat counts in 10 ms ticks, ±4 % of a 0.25 s round's app
 * CPU, more than the differences this bench is after; stat is the fallback where schedstat is missing.
 */
function processCpuMicros(pid: number | undefined): number | undefined {
  if (pid === undefined) return undefined;
  try {
    let ns = 0;
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      ns += Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ')[0]);
    }
    if (Number.isFinite(ns) && ns > 0) return ns / 1e3;
  } catch {
    // a thread that ended between readdir and read, or no schedstat: the tick counts below
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // fields 14 and 15 of stat (utime, stime), counted from the state field (3rd): indexes 11 and 12
    return ((Number(fields[11]) + Number(fields[12])) * 1e6) / CLOCK_TICKS;
  } catch {
    return undefined;
  }
}
const CLOCK_TICKS = 100;

async function cannon(base: string, seconds: number, pid?: number): Promise<Run> {
  let i = 0;
  const appBefore = processCpuMicros(pid);
  const before = await redisCpuMicros();
  const selfBefore = process.cpuUsage();
  const started = performance.now();
  const result = await autocannon({
    url: base,
    connections: CONNECTIONS,
    duration: seconds,
    // autocannon stops at its first sample tick after `duration` (1 s by default): a 0.5 s round would last 1 s
    sampleInt: seconds * 1000,
    pipelining: 1,
    timeout: 10,
    requests: [{ method: 'GET', setupRequest: (req) => ({ ...req, path: path(i++) }) }],
  });
  const self = process.cpuUsage(selfBefore);
  const elapsedUs = (performance.now() - started) * 1000;
  const after = await redisCpuMicros();
  const appAfter = processCpuMicros(pid);
  const ok = result.requests.total - result.non2xx;
  return {
    rps: ok / (result.duration || 1),
    p50: result.latency.p50,
    p99: result.latency.p99,
    errors: result.errors + result.non2xx,
    cpuUs: before === undefined || after === undefined || ok <= 0 ? undefined : (after - before) / ok,
    appCpuUs: appBefore === undefined || appAfter === undefined || ok <= 0 ? undefined : (appAfter - appBefore) / ok,
    generatorCpu: (self.user + self.system) / elapsedUs,
  };
}

/**
 * Pins every thread of a process (its GC and libuv threads too) to `cpuList` (taskset syntax); false with a warning
 * when taskset is missing or refuses.
 */
function pinAll(pid: number | undefined, cpuList: string): boolean {
  if (pid === undefined) return false;
  const r = spawnSync('taskset', ['-a', '-cp', cpuList, String(pid)], { encoding: 'utf8' });
  if (r.status === 0) return true;
  process.stdout.write(
    `warning: taskset could not pin pid ${pid} to CPU ${cpuList}: ${r.error?.message ?? r.stderr}\n`,
  );
  return false;
}

/**
 * Gives each app a CPU of its own and the load generator (autocannon, in this process) the others, Redis's among
 * them on a 2-core box: otherwise the scheduler puts autocannon beside the app for part of a round and the figure
 * measures their sum, which swings from round to round and pulls every ratio towards 1. The same CPU for every app.
 */
function pinApps(apps: Child[]): string {
  const n = cpus().length;
  if (n < 2) return 'not pinned (one CPU)';
  // on 3 or more CPUs the last is Redis's own (load-profile.ts): the generator stays off it
  const others = n > 2 ? `1-${n - 2}` : '1';
  const ok = apps.every((app) => pinAll(app.pid, String(APP_CPU))) && pinAll(process.pid, others);
  return ok ? `apps pinned to CPU ${APP_CPU}, autocannon to CPU ${others}` : 'pinning failed (taskset)';
}

/** The app's own CPU per request, µs (median round): steadier than req/s on a shared box. */
const appCpu = (runs: Run[]): number | undefined => {
  const values = runs.map((r) => r.appCpuUs).filter((v): v is number => v !== undefined);
  return values.length > 0 ? median(values) : undefined;
};

function row(library: string, operation: string, runs: Run[], notes: string): BenchRow {
  const cpu = runs.map((r) => r.cpuUs).filter((v): v is number => v !== undefined);
  const app = appCpu(runs);
  if (app !== undefined) notes = `${notes}; app CPU ${app.toFixed(0)} µs/request`;
  return {
    feature: 'cache',
    library,
    operation,
    opsPerSec: median(runs.map((r) => r.rps)),
    p50Ms: median(runs.map((r) => r.p50)),
    p99Ms: median(runs.map((r) => r.p99)),
    errors: runs.reduce((s, r) => s + r.errors, 0),
    ...(cpu.length > 0 && { redisCpuUsPerOp: median(cpu) }),
    notes,
  };
}

/** The apps, in the order of the table. */
const APPS = [
  {
    id: 'ours',
    library: OURS,
    operation: OPERATION,
    notes: 'HttpCacheInterceptor, L1 off (one Redis GET per hit), X-Cache header',
  },
  {
    id: 'cache-manager',
    library: PEER,
    operation: OPERATION,
    notes: 'CacheInterceptor, CacheModule.register({ stores: [new KeyvRedis(url)] }) (one Redis GET per hit)',
  },
  {
    id: 'ours-l1',
    library: OURS,
    operation: OPERATION_L1,
    notes: 'HttpCacheInterceptor, l1: { max: 10_000 } (no Redis call on a hit)',
  },
  {
    id: 'cache-manager-l1',
    library: PEER_L1,
    operation: OPERATION_L1,
    notes: 'CacheInterceptor, stores: [new Keyv({ store: new Map(), serialize: undefined }), new KeyvRedis(url)]',
  },
  {
    id: 'none',
    library: NONE,
    operation: OPERATION,
    notes: 'the same routes without any cache: the HTTP stack alone (the ceiling)',
  },
] as const;
type AppId = (typeof APPS)[number]['id'];
/** Measured back to back in every round: ours and the peer of the same tier. */
const GROUPS: AppId[][] = [['ours', 'cache-manager'], ['ours-l1', 'cache-manager-l1'], ['none']];

/** The median over the rounds of value(a) ÷ value(b) in the same round (a and b measured back to back). */
function pairedRatio(a: Run[], b: Run[], value: (r: Run) => number): number {
  const ratios = a.map((run, i) => value(run) / value(b[i])).filter((x) => Number.isFinite(x));
  return ratios.length > 0 ? median(ratios) : NaN;
}

/** The HTTP platforms, each with its own five apps: the same controller, routes and caches on each. */
const PLATFORMS = [
  { id: 'express', name: 'Express', suffix: '' },
  { id: 'fastify', name: 'Fastify', suffix: ', Fastify' },
] as const;
type Platform = (typeof PLATFORMS)[number];

/** One platform's figures: its table rows and its sentence of the summary. */
type PlatformResult = {
  rows: BenchRow[];
  summary: string;
  ratio: number;
  l1Ratio: number;
  met: boolean;
  /** The most any cache could show here: the no-cache ceiling's req/s ÷ theirs (median of the rounds' ratios). */
  bound: number;
  l1Bound: number;
  appCpuUsPerRequest: Record<AppId, number | undefined>;
  perRound: Record<AppId, number[][]>;
};

/** Measures one platform's five apps, round by round (see GROUPS). */
async function measurePlatform(
  platform: Platform,
  apps: Record<AppId, Child>,
  profile: string,
): Promise<PlatformResult> {
  const runs = Object.fromEntries(APPS.map(({ id }) => [id, [] as Run[]])) as Record<AppId, Run[]>;
  const load: string[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    // ours and its peer back to back (the one first alternating), the pairs' order rotating: a drift in load hits
    // every app alike, and a burst from elsewhere on the box mostly hits both of a pair (see pairedRatio)
    const groups = GROUPS.map((g) => (r % 2 === 0 ? g : [...g].reverse()));
    const order = [...groups.slice(r % groups.length), ...groups.slice(0, r % groups.length)].flat();
    for (const id of order) runs[id].push(await cannon(apps[id].url, ROUND_S, apps[id].pid));
    load.push(loadavg()[0].toFixed(2));
  }
  const rows = APPS.map(({ id, library, operation, notes }) =>
    row(library, operation.replace('(HTTP)', `(HTTP${platform.suffix})`), runs[id], notes),
  );
  const ops = Object.fromEntries(APPS.map(({ id }, i) => [id, rows[i].opsPerSec])) as Record<AppId, number>;
  // ours ÷ theirs round by round (measured back to back), the median of those: the headline figures
  const ratio = pairedRatio(runs.ours, runs['cache-manager'], (r) => r.rps);
  const l1Ratio = pairedRatio(runs['ours-l1'], runs['cache-manager-l1'], (r) => r.rps);
  const bound = pairedRatio(runs.none, runs['cache-manager'], (r) => r.rps);
  const l1Bound = pairedRatio(runs.none, runs['cache-manager-l1'], (r) => r.rps);
  const cpuPaired = (a: Run[], b: Run[]): string => {
    const x = pairedRatio(b, a, (r) => r.appCpuUs ?? NaN);
    return Number.isFinite(x) ? `${x.toFixed(2)}×` : '?';
  };
  // The same comparisons by the apps' own CPU per request (theirs ÷ ours: the capacity ratio on a CPU-bound app)
  const cpuOf = Object.fromEntries(APPS.map(({ id }) => [id, appCpu(runs[id])])) as Record<AppId, number | undefined>;
  const cpuRatio = (a: AppId, b: AppId): string => {
    const x = cpuOf[a];
    const y = cpuOf[b];
    return x === undefined || y === undefined ? '?' : `${(y / x).toFixed(2)}×`;
  };
  const generatorBusiest = Math.max(...APPS.map(({ id }) => median(runs[id].map((r) => r.generatorCpu))));
  const met = ratio >= TARGET && l1Ratio >= TARGET;
  const ofNone = (id: AppId): string => `${((100 * ops[id]) / ops.none).toFixed(0)} %`;
  const summary =
    `${platform.name}: req/s ours ÷ theirs (median of the rounds' ratios): ` +
    `Redis on both sides ${ratio.toFixed(2)}× @nestjs/cache-manager's CacheInterceptor, in-process tier on both ` +
    `sides ${l1Ratio.toFixed(2)}× (target ≥ ${TARGET}×: ${met ? 'met' : 'missed'}); the most any cache could show ` +
    `here, no cache at all ÷ theirs: ${bound.toFixed(2)}× and ${l1Bound.toFixed(2)}×; ratio of the median req/s: ` +
    `${(ops.ours / ops['cache-manager']).toFixed(2)}× and ${(ops['ours-l1'] / ops['cache-manager-l1']).toFixed(2)}×; ` +
    `by app CPU per request (theirs ÷ ours, median of the rounds' ratios): Redis ` +
    `${cpuPaired(runs.ours, runs['cache-manager'])}, in-process ${cpuPaired(runs['ours-l1'], runs['cache-manager-l1'])}` +
    ` (of the medians: ${cpuRatio('ours', 'cache-manager')}, ${cpuRatio('ours-l1', 'cache-manager-l1')}); ` +
    `of the no-cache ceiling: ours ${ofNone('ours')}, theirs ${ofNone('cache-manager')}, ours L1 ` +
    `${ofNone('ours-l1')}, theirs L1 ${ofNone('cache-manager-l1')}; no cache vs ours by CPU ${cpuRatio('none', 'ours')}; ` +
    `autocannon at ${(100 * generatorBusiest).toFixed(0)} % of its CPU (median round of the busiest app); ` +
    `1-min load average after each round: ${load.join(', ')}`;
  printTable(`Cache: HTTP responses by URL (${platform.name}, ${profile})`, rows);
  process.stdout.write(`${summary}\n\n`);
  const perRound = Object.fromEntries(
    APPS.map(({ id }) => [
      id,
      runs[id].map((r) => [Math.round(r.rps), Math.round(r.appCpuUs ?? NaN), Math.round(100 * r.generatorCpu)]),
    ]),
  ) as Record<AppId, number[][]>;
  process.stdout.write(`[ops/s, app CPU µs/request, autocannon % of a CPU] per round: ${JSON.stringify(perRound)}\n\n`);
  return { rows, summary, ratio, l1Ratio, met, bound, l1Bound, appCpuUsPerRequest: cpuOf, perRound };
}

async function main(): Promise<void> {
  const startedAt = performance.now();
  const redis = await standaloneRedis();
  const appFile = fileURLToPath(new URL('./url-cache-app.js', import.meta.url));
  const children: Child[] = [];
  try {
    const apps = Object.fromEntries(PLATFORMS.map(({ id }) => [id, {}])) as Record<
      Platform['id'],
      Record<AppId, Child>
    >;
    await Promise.all(
      PLATFORMS.flatMap((platform) =>
        APPS.map(async ({ id }) => {
          const env = { URL_CACHE: id, PLATFORM: platform.id, REDIS_URL: redis.url };
          apps[platform.id][id] = await startApp(appFile, env, '/catalog/health');
          children.push(apps[platform.id][id]);
        }),
      ),
    );
    const all = PLATFORMS.flatMap((platform) => APPS.map(({ id }) => ({ id, app: apps[platform.id][id], platform })));
    // The same answer from all, and every URL stored (the first request of each is a miss, the second a hit).
    for (let i = 0; i < URLS; i++) {
      const answers = await Promise.all(all.map(({ app }) => httpGet(`${app.url}${path(i)}`)));
      if (answers.some((a) => a.status !== 200 || a.body !== answers[0].body))
        throw new Error(`the apps answer ${path(i)} differently`);
    }
    // A hit answers like the peer's: the same status, X-Cache and content type.
    for (const { id, app, platform } of all.filter((a) => a.id !== 'none')) {
      const hit = await fetch(`${app.url}${path(0)}`);
      const type = hit.headers.get('content-type');
      if (hit.status !== 200 || hit.headers.get('x-cache') !== 'HIT' || type !== 'application/json; charset=utf-8')
        throw new Error(
          `${id} on ${platform.name} answered a hit with ${hit.status}, X-Cache ${hit.headers.get('x-cache')}, ${type}`,
        );
    }
    const pinning = `${pinApps(children)}, ${favourLoadGenerator()}`;
    for (let pass = 0; pass < WARMUP_PASSES; pass++) for (const { app } of all) await cannon(app.url, WARMUP_S);
    const bootS = (performance.now() - startedAt) / 1000;
    const results: PlatformResult[] = [];
    for (const platform of PLATFORMS) results.push(await measurePlatform(platform, apps[platform.id], redis.profile));
    const tookS = (performance.now() - startedAt) / 1000;
    const setup =
      `${CONNECTIONS} connections, ${URLS} URLs, median of ${ROUNDS} × ${ROUND_S} s interleaved per platform; ` +
      `${pinning}; ${tookS.toFixed(0)} s (${bootS.toFixed(0)} s to start and warm the apps)`;
    // each platform's sentence was printed under its table: only the run's set-up is new here
    process.stdout.write(`${setup}\n\n`);
    const summary = `URL cache hit through HTTP (${redis.profile} profile). ${results.map((r) => r.summary).join('. ')}. ${setup}`;
    saveResults(
      'url-cache',
      results.flatMap((r) => r.rows),
      {
        summary,
        target: TARGET,
        pinning,
        platforms: Object.fromEntries(PLATFORMS.map(({ id }, i) => [id, { ...results[i], rows: undefined }])),
      },
    );
  } finally {
    await Promise.all(children.map((c) => c.stop()));
    await redis.stop();
  }
}

runBench(main);
