/**
 * `npm run bench:url-cache`: HTTP response caching by URL, through HTTP (autocannon), our HttpCacheInterceptor vs
 * @nestjs/cache-manager's CacheInterceptor with its Redis store (cache-manager + @keyv/redis, the store
 * bench/cache.bench.ts uses), on the same controller and routes (bench/url-cache-app.ts, one child process each,
 * Express). 200 URLs (path and query), warmed so every measured request is a hit; the apps take turns, round by
 * round (interleaved), and each figure is the median round. Target: ours ≥ 1.2× cache-manager, like for like (L1
 * off: one Redis GET per hit on both sides); ours with the L1 on (no Redis call on a hit) is a row of its own.
 */
import autocannon from 'autocannon';
import { fileURLToPath } from 'node:url';
import { loadavg } from 'node:os';
import { httpGet } from '../test/faults/harness/sample-app.js';
import { benchRedis } from './support/bench-redis.js';
import { startApp, type Child } from './support/sample-app.js';
import { printTable, redisCpuMicros, saveResults, type BenchRow } from './support/measure.js';
import { runBench } from './support/run-bench.js';

const OURS = 'nestjs-redis-toolkit';
const OURS_L1 = 'nestjs-redis-toolkit, L1 on';
const PEER = '@nestjs/cache-manager + @keyv/redis';
const OPERATION = 'GET by URL, cache hit (HTTP)';
const TARGET = 1.2;
const URLS = 200;
const CONNECTIONS = 32;
const WARMUP_S = 1;
const ROUND_S = Number(process.env.URL_CACHE_ROUND_S ?? 2);
const ROUNDS = Number(process.env.URL_CACHE_ROUNDS ?? 3);

const path = (i: number) => `/catalog/p${i % 20}?page=${i % URLS}`;

type Run = { rps: number; p50: number; p99: number; errors: number; cpuUs?: number };

async function cannon(base: string, seconds: number): Promise<Run> {
  let i = 0;
  const before = await redisCpuMicros();
  const result = await autocannon({
    url: base,
    connections: CONNECTIONS,
    duration: seconds,
    pipelining: 1,
    timeout: 10,
    requests: [{ method: 'GET', setupRequest: (req) => ({ ...req, path: path(i++) }) }],
  });
  const after = await redisCpuMicros();
  const ok = result.requests.total - result.non2xx;
  return {
    rps: ok / (result.duration || 1),
    p50: result.latency.p50,
    p99: result.latency.p99,
    errors: result.errors + result.non2xx,
    cpuUs: before === undefined || after === undefined || ok <= 0 ? undefined : (after - before) / ok,
  };
}

const median = (values: number[]): number => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];

function row(library: string, runs: Run[], notes: string): BenchRow {
  const cpu = runs.map((r) => r.cpuUs).filter((v): v is number => v !== undefined);
  return {
    feature: 'cache',
    library,
    operation: OPERATION,
    opsPerSec: median(runs.map((r) => r.rps)),
    p50Ms: median(runs.map((r) => r.p50)),
    p99Ms: median(runs.map((r) => r.p99)),
    errors: runs.reduce((s, r) => s + r.errors, 0),
    ...(cpu.length > 0 && { redisCpuUsPerOp: median(cpu) }),
    notes,
  };
}

async function main(): Promise<void> {
  const redis = await benchRedis();
  const appFile = fileURLToPath(new URL('./url-cache-app.js', import.meta.url));
  const children: Child[] = [];
  try {
    const ours = await startApp(appFile, { URL_CACHE: 'ours', REDIS_URL: redis.url }, '/catalog/health');
    children.push(ours);
    const peer = await startApp(appFile, { URL_CACHE: 'cache-manager', REDIS_URL: redis.url }, '/catalog/health');
    children.push(peer);
    const oursL1 = await startApp(appFile, { URL_CACHE: 'ours-l1', REDIS_URL: redis.url }, '/catalog/health');
    children.push(oursL1);
    const apps = { ours, peer, oursL1 };
    // Same answer from both, and every URL stored (the first request of each is a miss, the second a hit).
    for (let i = 0; i < URLS; i++) {
      const [a, b, c] = await Promise.all(Object.values(apps).map((app) => httpGet(`${app.url}${path(i)}`)));
      if (a.status !== 200 || a.body !== b.body || a.body !== c.body)
        throw new Error(`the apps answer ${path(i)} differently`);
    }
    const hit = await httpGet(`${ours.url}${path(0)}`);
    if (hit.status !== 200) throw new Error(`ours answered ${hit.status}`);
    for (const app of Object.values(apps)) await cannon(app.url, WARMUP_S);
    const runs: Record<keyof typeof apps, Run[]> = { ours: [], peer: [], oursL1: [] };
    const load: string[] = [];
    for (let r = 0; r < ROUNDS; r++) {
      // rotate who goes first, so a drift in load hits every app alike
      const names = Object.keys(apps) as (keyof typeof apps)[];
      const order = [...names.slice(r % names.length), ...names.slice(0, r % names.length)];
      for (const who of order) runs[who].push(await cannon(apps[who].url, ROUND_S));
      load.push(loadavg()[0].toFixed(2));
    }
    const oursRow = row(OURS, runs.ours, 'HttpCacheInterceptor, L1 off (one Redis GET per hit), X-Cache header');
    const peerRow = row(PEER, runs.peer, 'CacheInterceptor, CacheModule.register({ stores: [new KeyvRedis(url)] })');
    const l1Row = row(OURS_L1, runs.oursL1, 'HttpCacheInterceptor, l1: { max: 10_000 } (no Redis call on a hit)');
    const l1Ratio = l1Row.opsPerSec / peerRow.opsPerSec;
    const ratio = oursRow.opsPerSec / peerRow.opsPerSec;
    const met = ratio >= TARGET;
    const summary =
      `URL cache hit through HTTP: ${ratio.toFixed(2)}× @nestjs/cache-manager's CacheInterceptor (target ≥ ${TARGET}×: ` +
      `${met ? 'met' : 'missed'}); ${CONNECTIONS} connections, ${URLS} URLs, median of ${ROUNDS} × ${ROUND_S} s ` +
      `interleaved; with the L1 on ${l1Ratio.toFixed(2)}×; 1-min load average after each round: ${load.join(', ')}`;
    printTable('Cache: HTTP responses by URL (Express)', [oursRow, peerRow, l1Row]);
    process.stdout.write(`${summary}\n\n`);
    saveResults('url-cache', [oursRow, peerRow, l1Row], { summary, ratio, l1Ratio, target: TARGET, met });
  } finally {
    await Promise.all(children.map((c) => c.stop()));
    await redis.stop();
  }
}

runBench(main);
