import { cpus, loadavg, totalmem } from 'node:os';
import { mkdirSync, writeFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { Redis, type RedisOptions } from 'ioredis';

export interface MeasureOptions {
  /** Callers running the operation at once. Default 50. */
  concurrency?: number;
  /** Length of one measured round, ms. Default 2000. */
  durationMs?: number;
  /** Unmeasured run before the rounds, ms. Default 500. */
  warmupMs?: number;
  /** Measured rounds; the median round is reported. Default 3. */
  rounds?: number;
}

export interface Measurement {
  /** Successful operations per second: failed ones are counted in `errors`, never as throughput. */
  opsPerSec: number;
  p50Ms: number;
  p99Ms: number;
  errors: number;
  /**
   * Redis CPU per successful operation, µs: the `used_cpu_sys + used_cpu_user` delta of the bench Redis (every server
   * registered with {@link watchRedisCpu}) over the round, divided by the round's successful operations.
   */
  redisCpuUsPerOp?: number;
  /** Mean latency of the successful operations, ms. */
  meanMs?: number;
  /**
   * Share (0–1) of the successful operations slower than {@link SLOW_OP_MS}: stalls, which decide a closed loop's
   * throughput when they are common (a GC pause of this process, or Redis waiting for its CPU behind the loaded
   * profile's neighbour; docs/session.md measured both).
   */
  slowShare?: number;
  /** Share (0–1) of the summed latency of the successful operations spent in the slow ones. */
  slowTimeShare?: number;
}

/** An operation slower than this (ms) counts as stalled in {@link Measurement.slowShare}. */
export const SLOW_OP_MS = 2;

export interface BenchRow extends Measurement {
  feature: string;
  library: string;
  operation: string;
  /** Anything else a benchmark counts (loader calls, round trips, admitted requests). */
  notes?: string;
}

function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

// ---- Redis CPU per operation -----------------------------------------------------------------------------------

const cpuProbes = new Map<string, Redis>();

/**
 * Registers the bench Redis servers whose CPU every round of {@link measure} reads (INFO cpu before and after).
 * standaloneRedis() registers its server; a bench with servers of its own (a lock quorum) registers them too.
 */
export function watchRedisCpu(...urls: string[]): void {
  for (const url of urls) {
    if (cpuProbes.has(url)) continue;
    const probe = new Redis(url, { maxRetriesPerRequest: 1, lazyConnect: false });
    // the probe must never keep a finished bench process alive
    probe.on('connect', () => (probe as unknown as { stream?: { unref?: () => void } }).stream?.unref?.());
    probe.on('error', () => undefined);
    cpuProbes.set(url, probe);
  }
}

/** Stops reading the CPU of `urls` (all when none given) and closes their probes. */
export function unwatchRedisCpu(...urls: string[]): void {
  for (const url of urls.length > 0 ? urls : [...cpuProbes.keys()]) {
    cpuProbes.get(url)?.disconnect();
    cpuProbes.delete(url);
  }
}

/** used_cpu_sys + used_cpu_user summed over the watched servers, µs; undefined when none is watched or one fails. */
export async function redisCpuMicros(): Promise<number | undefined> {
  if (cpuProbes.size === 0) return undefined;
  try {
    const infos = await Promise.all([...cpuProbes.values()].map((p) => p.info('cpu')));
    let total = 0;
    for (const info of infos) {
      const read = (name: string): number => Number(new RegExp(`^${name}:([\\d.]+)`, 'm').exec(info)?.[1] ?? NaN);
      total += (read('used_cpu_sys') + read('used_cpu_user')) * 1e6;
    }
    return Number.isFinite(total) ? total : undefined;
  } catch {
    return undefined;
  }
}

/** Redis CPU per successful operation while `work` runs (µs); `work` resolves to the number of operations. */
export async function redisCpuPerOp(work: () => Promise<number>): Promise<number | undefined> {
  const before = await redisCpuMicros();
  const ops = await work();
  const after = await redisCpuMicros();
  return before === undefined || after === undefined || ops <= 0 ? undefined : (after - before) / ops;
}

// ---- the peers' clients -----------------------------------------------------------------------------------------

/**
 * The two ioredis clients every peer is measured with: auto-pipelining off (ioredis's default) and on (the peer's
 * best documented setting for many concurrent callers). Measure the peer with each, interleaved with ours, and keep
 * its better figure with {@link bestOfPipelining}.
 */
export function peerClients(url: string, options: RedisOptions = {}): { off: Redis; on: Redis; close(): void } {
  const off = new Redis(url, { ...options, enableAutoPipelining: false });
  const on = new Redis(url, { ...options, enableAutoPipelining: true });
  return {
    off,
    on,
    close: () => {
      off.disconnect();
      on.disconnect();
    },
  };
}

/** The peer's better figure of its two runs (auto-pipelining off and on), with a note naming which and the other. */
export function bestOfPipelining(
  off: Measurement,
  on: Measurement,
): Measurement & { note: string; pipelined: boolean } {
  const onWins = on.opsPerSec > off.opsPerSec;
  const best = onWins ? on : off;
  const other = onWins ? off : on;
  return {
    ...best,
    pipelined: onWins,
    note: `ioredis auto-pipelining ${onWins ? 'on' : 'off'} (better of two; ${onWins ? 'off' : 'on'}: ${Math.round(other.opsPerSec).toLocaleString('en-US')} ops/s)`,
  };
}

/** Appends a note to a row's notes. */
export const withNote = (notes: string | undefined, note: string): string =>
  !note ? (notes ?? '') : notes ? `${notes}; ${note}` : note;

// ---- measuring --------------------------------------------------------------------------------------------------

/** One operation of a benchmark; `caller` is the looping caller's number (0 to concurrency - 1), for ops that need it. */
export type BenchOp = (caller: number) => Promise<unknown>;

async function runRound(op: BenchOp, concurrency: number, durationMs: number): Promise<Measurement> {
  const cpuBefore = await redisCpuMicros();
  const latencies: number[] = [];
  let errors = 0;
  const started = performance.now();
  const deadline = started + durationMs;
  await Promise.all(
    Array.from({ length: concurrency }, async (_, caller) => {
      while (performance.now() < deadline) {
        const t = performance.now();
        try {
          await op(caller);
          latencies.push(performance.now() - t); // failed operations are counted apart, not as throughput
        } catch {
          errors++;
        }
      }
    }),
  );
  const elapsed = (performance.now() - started) / 1000;
  const cpuAfter = await redisCpuMicros();
  const sorted = Float64Array.from(latencies).sort();
  let total = 0;
  let slow = 0;
  let slowTime = 0;
  for (const l of latencies) {
    total += l;
    if (l > SLOW_OP_MS) {
      slow++;
      slowTime += l;
    }
  }
  return {
    opsPerSec: latencies.length / elapsed,
    p50Ms: percentile(sorted, 50),
    p99Ms: percentile(sorted, 99),
    errors,
    ...(latencies.length > 0 && {
      meanMs: total / latencies.length,
      slowShare: slow / latencies.length,
      slowTimeShare: slowTime / total,
    }),
    ...(cpuBefore !== undefined &&
      cpuAfter !== undefined &&
      latencies.length > 0 && { redisCpuUsPerOp: (cpuAfter - cpuBefore) / latencies.length }),
  };
}

/** The middle value (the upper one of an even count); NaN for none. */
export const median = (values: number[]): number =>
  values.length === 0 ? Number.NaN : [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];

/** The median of each figure over rounds (errors summed; an optional figure the median of the rounds that have it). */
export function medianOf(list: Measurement[]): Measurement {
  const optional = (pick: (m: Measurement) => number | undefined): number | undefined => {
    const values = list.map(pick).filter((v): v is number => v !== undefined);
    return values.length > 0 ? median(values) : undefined;
  };
  const figures = {
    redisCpuUsPerOp: optional((m) => m.redisCpuUsPerOp),
    meanMs: optional((m) => m.meanMs),
    slowShare: optional((m) => m.slowShare),
    slowTimeShare: optional((m) => m.slowTimeShare),
  };
  return {
    opsPerSec: median(list.map((m) => m.opsPerSec)),
    p50Ms: median(list.map((m) => m.p50Ms)),
    p99Ms: median(list.map((m) => m.p99Ms)),
    errors: list.reduce((sum, m) => sum + m.errors, 0),
    ...Object.fromEntries(Object.entries(figures).filter(([, v]) => v !== undefined)),
  };
}

/** Warms up, then runs `rounds` rounds of `concurrency` callers looping on `op`; reports the median of each figure. */
export async function measure(op: BenchOp, options: MeasureOptions = {}): Promise<Measurement> {
  const { concurrency = 50, durationMs = 2_000, warmupMs = 500, rounds = 3 } = options;
  if (warmupMs > 0) await runRound(op, concurrency, warmupMs);
  const results: Measurement[] = [];
  for (let i = 0; i < rounds; i++) results.push(await runRound(op, concurrency, durationMs));
  return medianOf(results);
}

/** A Measurement with what `probe` counted per successful operation (e.g. Redis CPU µs). */
export interface ProbedMeasurement extends Measurement {
  perOp?: number;
}

/**
 * The machine is shared, so load drifts during a run: the libraries take turns, one round each, `rounds` times, and
 * each figure is the median of its rounds (so a burst of load hits every library alike). Every other round runs in
 * the reverse order, so no library always follows the same one (and pays for what it left: garbage, timers, a warm
 * or cold CPU cache) or always goes first. `probe`, when given, reads
 * a growing counter (Redis CPU time, commands served) before and after every round: `perOp` is its growth per
 * successful operation (the probe also sees a round's warm-up: give `warmupMs: 0` with a probe).
 */
export async function interleaved(
  ops: Record<string, BenchOp>,
  rounds: number,
  round: MeasureOptions,
  probe?: () => Promise<number>,
): Promise<Record<string, ProbedMeasurement>> {
  const runs: Record<string, ProbedMeasurement[]> = Object.fromEntries(Object.keys(ops).map((k) => [k, []]));
  const durationMs = round.durationMs ?? 2_000;
  const order = Object.entries(ops);
  for (let r = 0; r < rounds; r++) {
    for (const [name, op] of r % 2 === 0 ? order : [...order].reverse()) {
      const before = probe ? await probe() : 0;
      const m: ProbedMeasurement = await measure(op, { ...round, rounds: 1 });
      // per successful operation; the probe also sees the warm-up, so measure with warmupMs 0 where it is read
      if (probe) m.perOp = ((await probe()) - before) / Math.max(1, (m.opsPerSec * durationMs) / 1000);
      runs[name].push(m);
    }
  }
  return Object.fromEntries(
    Object.entries(runs).map(([name, ms]) => [
      name,
      { ...medianOf(ms), ...(probe ? { perOp: median(ms.map((m) => m.perOp ?? 0)) } : {}) },
    ]),
  );
}

/** Prints rows as a markdown table with each row's ops/s relative to ours for the same operation. */
export function printTable(title: string, rows: BenchRow[], ours = 'nestjs-redis-toolkit'): string {
  const lines = [
    `### ${title}`,
    '',
    '| library | operation | ops/s | p50 ms | p99 ms | Redis CPU µs/op | failed | ours ÷ this | notes |',
    '| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |',
  ];
  for (const row of rows) {
    const mine = rows.find((r) => r.operation === row.operation && r.library === ours);
    const ratio = mine && row.opsPerSec > 0 ? (mine.opsPerSec / row.opsPerSec).toFixed(2) + '×' : '–';
    const cpu = row.redisCpuUsPerOp === undefined ? '–' : row.redisCpuUsPerOp.toFixed(1);
    lines.push(
      `| ${row.library} | ${row.operation} | ${Math.round(row.opsPerSec).toLocaleString('en-US')} | ${row.p50Ms.toFixed(3)} | ${row.p99Ms.toFixed(3)} | ${cpu} | ${row.errors} | ${ratio} | ${row.notes ?? ''} |`,
    );
  }
  const table = lines.join('\n');
  process.stdout.write(`${table}\n\n`);
  return table;
}

export function machineInfo(): Record<string, string> {
  return {
    cpu: `${cpus().length} × ${cpus()[0]?.model ?? 'unknown'}`,
    memory: `${Math.round(totalmem() / 2 ** 30)} GiB`,
    node: process.version,
    platform: `${process.platform} ${process.arch}`,
  };
}

/** The profiles `npm run bench` runs: 'quiet', and 'loaded' (`--load`: a CPU-bound neighbour pinned beside Redis). */
export type BenchProfile = 'quiet' | 'loaded';

/** This run's profile: BENCH_PROFILE, set by `npm run bench` (a bench run on its own is 'quiet'). */
export function benchProfile(): BenchProfile {
  return process.env.BENCH_PROFILE === 'loaded' ? 'loaded' : 'quiet';
}

/** Where a profile's results go: bench/results/ for 'quiet', bench/results/loaded/ for 'loaded'. */
export function resultsDir(profile: BenchProfile): URL {
  return new URL(profile === 'loaded' ? '../../../bench/results/loaded/' : '../../../bench/results/', import.meta.url);
}

const startLoad = loadavg();

/**
 * Writes the profile's `<feature>.json` (see resultsDir); `npm run bench` gathers these into latest.json,
 * BENCHMARKS.md and the chart. The machine's load average at the bench's start and end goes with the figures.
 */
export function saveResults(feature: string, rows: BenchRow[], extra: Record<string, unknown> = {}): void {
  const profile = benchProfile();
  const dir = resultsDir(profile);
  mkdirSync(dir, { recursive: true });
  const fmt = (l: number[]): string => l.map((v) => v.toFixed(2)).join(' ');
  const loadAverage = { start: fmt(startLoad), end: fmt(loadavg()) };
  writeFileSync(
    new URL(`${feature}.json`, dir),
    JSON.stringify(
      { feature, profile, date: new Date().toISOString(), machine: machineInfo(), loadAverage, rows, ...extra },
      null,
      2,
    ) + '\n',
  );
}
