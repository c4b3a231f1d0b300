import { cpus, totalmem } from 'node:os';
import { mkdirSync, writeFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';

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
  opsPerSec: number;
  p50Ms: number;
  p99Ms: number;
  errors: number;
}

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

async function runRound(op: () => Promise<unknown>, concurrency: number, durationMs: number): Promise<Measurement> {
  const latencies: number[] = [];
  let errors = 0;
  const started = performance.now();
  const deadline = started + durationMs;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (performance.now() < deadline) {
        const t = performance.now();
        try {
          await op();
          latencies.push(performance.now() - t); // failed operations are counted apart, not as throughput
        } catch {
          errors++;
        }
      }
    }),
  );
  const elapsed = (performance.now() - started) / 1000;
  const sorted = Float64Array.from(latencies).sort();
  return {
    opsPerSec: latencies.length / elapsed,
    p50Ms: percentile(sorted, 50),
    p99Ms: percentile(sorted, 99),
    errors,
  };
}

const median = (values: number[]): number => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];

/** Warms up, then runs `rounds` rounds of `concurrency` callers looping on `op`; reports the median of each figure. */
export async function measure(op: () => Promise<unknown>, options: MeasureOptions = {}): Promise<Measurement> {
  const { concurrency = 50, durationMs = 2_000, warmupMs = 500, rounds = 3 } = options;
  if (warmupMs > 0) await runRound(op, concurrency, warmupMs);
  const results: Measurement[] = [];
  for (let i = 0; i < rounds; i++) results.push(await runRound(op, concurrency, durationMs));
  return {
    opsPerSec: median(results.map((r) => r.opsPerSec)),
    p50Ms: median(results.map((r) => r.p50Ms)),
    p99Ms: median(results.map((r) => r.p99Ms)),
    errors: results.reduce((s, r) => s + r.errors, 0),
  };
}

/** A Measurement with what `probe` counted per successful operation (e.g. Redis CPU µs). */
export interface ProbedMeasurement extends Measurement {
  perOp?: number;
}

/**
 * The machine is shared, so load drifts during a run: the libraries take turns, one round each, `rounds` times, and
 * each figure is the median of its rounds (so a burst of load hits every library alike). `probe`, when given, reads
 * a growing counter (Redis CPU time, commands served) before and after every round: `perOp` is its growth per
 * successful operation (the probe also sees a round's warm-up: give `warmupMs: 0` with a probe).
 */
export async function interleaved(
  ops: Record<string, () => Promise<unknown>>,
  rounds: number,
  round: MeasureOptions,
  probe?: () => Promise<number>,
): Promise<Record<string, ProbedMeasurement>> {
  const runs: Record<string, ProbedMeasurement[]> = Object.fromEntries(Object.keys(ops).map((k) => [k, []]));
  const durationMs = round.durationMs ?? 2_000;
  for (let r = 0; r < rounds; r++) {
    for (const [name, op] of Object.entries(ops)) {
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
      {
        opsPerSec: median(ms.map((m) => m.opsPerSec)),
        p50Ms: median(ms.map((m) => m.p50Ms)),
        p99Ms: median(ms.map((m) => m.p99Ms)),
        errors: ms.reduce((sum, m) => sum + m.errors, 0),
        ...(probe ? { perOp: median(ms.map((m) => m.perOp ?? 0)) } : {}),
      },
    ]),
  );
}

/** Prints rows as a markdown table with each row's ops/s relative to ours for the same operation. */
export function printTable(title: string, rows: BenchRow[], ours = 'nestjs-redis-toolkit'): string {
  const lines = [
    `### ${title}`,
    '',
    '| library | operation | ops/s | p50 ms | p99 ms | ours ÷ this | notes |',
    '| --- | --- | ---: | ---: | ---: | ---: | --- |',
  ];
  for (const row of rows) {
    const mine = rows.find((r) => r.operation === row.operation && r.library === ours);
    const ratio = mine && row.opsPerSec > 0 ? (mine.opsPerSec / row.opsPerSec).toFixed(2) + '×' : '–';
    lines.push(
      `| ${row.library} | ${row.operation} | ${Math.round(row.opsPerSec).toLocaleString('en-US')} | ${row.p50Ms.toFixed(3)} | ${row.p99Ms.toFixed(3)} | ${ratio} | ${row.notes ?? ''} |`,
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

/** Writes bench/results/<feature>.json; `npm run bench` gathers these into latest.json, BENCHMARKS.md and the chart. */
export function saveResults(feature: string, rows: BenchRow[], extra: Record<string, unknown> = {}): void {
  const dir = new URL('../../../bench/results/', import.meta.url);
  mkdirSync(dir, { recursive: true });
  writeFileSync(
    new URL(`${feature}.json`, dir),
    JSON.stringify({ feature, date: new Date().toISOString(), machine: machineInfo(), rows, ...extra }, null, 2) + '\n',
  );
}
