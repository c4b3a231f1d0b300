/**
 * Gathers every `bench/results/<feature>.json` (the quiet profile) and `bench/results/loaded/<feature>.json` (the
 * loaded profile, `npm run bench -- --load`) into `bench/results/latest.json`, `BENCHMARKS.md` (repo root, both
 * profiles side by side) and `bench/results/ratios.svg` (a hand-written bar chart of ours ÷ peer throughput ratios,
 * for README).
 *
 * `npm run bench` calls it after running the benchmarks; on its own (`node dist-bench/bench/report.js`) it reports
 * on whatever results exist.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { machineInfo, resultsDir, type BenchProfile, type BenchRow } from './support/measure.js';

/** Compiled to dist-bench/bench/report.js: the repo root is two levels up (as for measure.ts's results dir). */
const ROOT = new URL('../../', import.meta.url);
const RESULTS = resultsDir('quiet');
export const PROFILES: BenchProfile[] = ['quiet', 'loaded'];
export const OURS = 'nestjs-redis-toolkit';

/** Peer packages whose versions go into the report (name → where to read package.json). */
const PEER_PACKAGES = [
  'ioredis',
  '@nestjs/core',
  '@nestjs/cache-manager',
  'cache-manager',
  'keyv',
  '@keyv/redis',
  'bentocache',
  'rate-limiter-flexible',
  '@nestjs/throttler',
  '@nest-lab/throttler-storage-redis',
  'redlock',
  'redis-semaphore',
  'connect-redis',
  'express-session',
  '@socket.io/redis-adapter',
  'socket.io',
  'autocannon',
];

/** One benchmark's file, as saveResults() writes it. */
export interface FeatureResults {
  feature: string;
  date?: string;
  machine?: Record<string, string>;
  rows: BenchRow[];
  /** Set by a benchmark that could not measure (e.g. http before the cache feature exists). */
  unavailable?: string;
  /** The machine's 1/5/15-minute load averages when the bench started and ended. */
  loadAverage?: { start: string; end: string };
  [extra: string]: unknown;
}

/** What run-all.ts knows about each benchmark process. */
export interface RunEntry {
  name: string;
  status: 'ok' | 'missing' | 'failed' | 'timed out' | 'skipped (total budget)';
  seconds?: number;
  detail?: string;
  loadAverage?: { start: string; end: string };
}

export interface RunInfo {
  profile?: BenchProfile;
  startedAt: string;
  seconds: number;
  redisVersion?: string;
  /** The CPU the bench Redis was pinned to (taskset), when it could be. */
  redisPinnedToCpu?: number;
  /** Whether a CPU-bound neighbour ran beside Redis (the loaded profile). */
  neighbour?: boolean;
  entries: RunEntry[];
}

export interface ReportRow extends BenchRow {
  /** ours ÷ this row's ops/s for the same feature and operation; undefined for our own rows or without ours. */
  ratio?: number;
  profile?: BenchProfile;
}

function readJson<T>(url: URL): T | undefined {
  try {
    return JSON.parse(readFileSync(url, 'utf8')) as T;
  } catch {
    return undefined;
  }
}

export function loadResults(profile: BenchProfile = 'quiet'): FeatureResults[] {
  const dir = resultsDir(profile);
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .filter((f) => f.endsWith('.json') && f !== 'latest.json' && f !== 'run.json')
    .sort()
    .map((f) => readJson<FeatureResults>(new URL(f, dir)))
    .filter((r): r is FeatureResults => r !== undefined && typeof r.feature === 'string' && Array.isArray(r.rows));
}

export function withRatios(results: FeatureResults[], profile: BenchProfile = 'quiet'): ReportRow[] {
  const rows: ReportRow[] = [];
  for (const result of results) {
    for (const row of result.rows) {
      const feature = row.feature || result.feature;
      const ours = result.rows.find((r) => r.library === OURS && r.operation === row.operation);
      // our own variants (another algorithm, another client) are shown but not charted as peers
      const ratio =
        !row.library.startsWith(OURS) && ours && row.opsPerSec > 0 ? ours.opsPerSec / row.opsPerSec : undefined;
      rows.push({ ...row, feature, ratio, profile });
    }
  }
  return rows;
}

export function peerVersions(): Record<string, string> {
  const versions: Record<string, string> = {};
  for (const name of PEER_PACKAGES) {
    const pkg = readJson<{ version?: string }>(new URL(`node_modules/${name}/package.json`, ROOT));
    versions[name] = pkg?.version ?? 'not installed';
  }
  return versions;
}

function redisVersion(run: RunInfo | undefined): string {
  if (run?.redisVersion) return run.redisVersion;
  try {
    return /v=([\d.]+)/.exec(execFileSync('redis-server', ['--version'], { encoding: 'utf8' }))?.[1] ?? 'unknown';
  } catch {
    return 'unknown';
  }
}

const fmtOps = (n: number): string => Math.round(n).toLocaleString('en-US');
const fmtMs = (n: number): string => (Number.isFinite(n) ? n.toFixed(3) : '–');
const fmtRatio = (r: number | undefined): string => (r === undefined ? '–' : `${r.toFixed(2)}×`);
const escapeMd = (s: string): string => s.replace(/\|/g, '\\|');

const fmtCpu = (n: number | undefined): string => (n === undefined || !Number.isFinite(n) ? '–' : n.toFixed(1));
const fmtLoad = (l: { start: string; end: string } | undefined): string =>
  l ? `${l.start.split(' ')[0]} → ${l.end.split(' ')[0]}` : '–';

/** One profile's figures of a row, for the side-by-side table. */
function cells(r: ReportRow | undefined): string[] {
  if (!r) return ['–', '–', '–', '–'];
  const ratio = r.library.startsWith(OURS) ? '(ours)' : fmtRatio(r.ratio);
  return [fmtOps(r.opsPerSec), fmtMs(r.p99Ms), fmtCpu(r.redisCpuUsPerOp), ratio];
}

export interface ProfileData {
  results: FeatureResults[];
  rows: ReportRow[];
  run?: RunInfo;
}

export function markdown(
  profiles: Record<BenchProfile, ProfileData>,
  meta: { machine: Record<string, string>; redis: string; versions: Record<string, string> },
): string {
  const quiet = profiles.quiet;
  const loaded = profiles.loaded;
  const lines: string[] = [
    '# Benchmarks',
    '',
    'Generated by `npm run bench` (every feature benchmark, one private `redis-server`, peers measured in the same run',
    'on the same server) and `npm run bench -- --load` (the same suite with a CPU-bound neighbour process pinned to',
    "Redis's CPU, as on a busy CI box or a shared host). Redis is pinned to one CPU in both profiles.",
    '',
    '- **Fair basis.** Every comparison is interleaved: ours and the peers take turns, one round each, and each figure',
    '  is the median of its rounds after a warm-up. Every ioredis client handed to a peer runs twice, with',
    "  auto-pipelining off (ioredis's default) and on, and the peer's better figure is kept (the notes say which).",
    '  Failed operations are excluded from throughput and reported in the notes.',
    "- **ours ÷ peer** is our throughput divided by the peer's for the same operation: above 1× we are faster.",
    '- **Redis µs/op** is the Redis CPU per successful operation: the `used_cpu_sys + used_cpu_user` delta of the',
    "  bench Redis (INFO cpu) over each round, divided by the round's operations (I/O included, so batching counts).",
    "- **load** is the machine's 1-minute load average at the start → end of each benchmark (see Run).",
    '',
    'Regenerate the tables and chart from saved results with `node dist-bench/bench/report.js`.',
    '',
    '![ours ÷ peer throughput](bench/results/ratios.svg)',
    '',
    `Machine: ${meta.machine.cpu ?? '?'}, ${meta.machine.memory ?? '?'}, ${meta.machine.platform ?? '?'}; Node ${meta.machine.node ?? process.version}; Redis ${meta.redis}.`,
    '',
    '| feature | library | operation | quiet ops/s | p99 ms | Redis µs/op | ours ÷ peer | loaded ops/s | p99 ms | Redis µs/op | ours ÷ peer | notes (quiet run) |',
    '| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |',
  ];
  const key = (r: BenchRow): string => `${r.feature}\u0000${r.library}\u0000${r.operation}`;
  const loadedByKey = new Map(loaded.rows.map((r) => [key(r), r]));
  const seen = new Set<string>();
  const ordered: [ReportRow | undefined, ReportRow | undefined][] = [];
  for (const r of quiet.rows) {
    seen.add(key(r));
    ordered.push([r, loadedByKey.get(key(r))]);
  }
  for (const r of loaded.rows) if (!seen.has(key(r))) ordered.push([undefined, r]);
  for (const [q, l] of ordered) {
    const r = (q ?? l)!;
    const failed = [q, l]
      .map((x, i) => (x?.errors ? `${x.errors} failed (${i === 0 ? 'quiet' : 'loaded'})` : ''))
      .filter(Boolean)
      .join(', ');
    const notes = [q?.notes ?? l?.notes ?? '', failed].filter(Boolean).join('; ');
    lines.push(
      `| ${[escapeMd(r.feature), escapeMd(r.library), escapeMd(r.operation), ...cells(q), ...cells(l), escapeMd(notes)].join(' | ')} |`,
    );
  }
  if (ordered.length === 0) lines.push('| – | – | no results yet | | | | | | | | | |');

  const notes = [...quiet.results, ...loaded.results].filter((r) => r.unavailable || typeof r.summary === 'string');
  if (notes.length > 0) {
    lines.push('', '## Notes', '');
    for (const r of notes) {
      const profile = (r.profile as string | undefined) ?? 'quiet';
      if (r.unavailable) lines.push(`- **${r.feature}** (${profile}): not available yet — ${r.unavailable}`);
      if (typeof r.summary === 'string') lines.push(`- **${r.feature}** (${profile}): ${r.summary}`);
    }
  }
  for (const profile of PROFILES) {
    const run = profiles[profile].run;
    if (!run) continue;
    lines.push(
      '',
      `## Run: ${profile} profile`,
      '',
      `Started ${run.startedAt}, took ${run.seconds.toFixed(0)} s` +
        `${run.redisPinnedToCpu !== undefined ? `; Redis pinned to CPU ${run.redisPinnedToCpu}` : ''}` +
        `${run.neighbour ? '; a CPU-bound neighbour pinned to the same CPU' : ''}.`,
      '',
      '| benchmark | status | seconds | load (1 min) start → end | detail |',
      '| --- | --- | ---: | --- | --- |',
    );
    for (const e of run.entries)
      lines.push(
        `| ${e.name} | ${e.status} | ${e.seconds?.toFixed(0) ?? ''} | ${fmtLoad(e.loadAverage)} | ${escapeMd(e.detail ?? '')} |`,
      );
  }
  lines.push(
    '',
    '## Versions',
    '',
    '| package | version |',
    '| --- | --- |',
    `| node | ${meta.machine.node ?? process.version} |`,
    `| redis-server | ${meta.redis} |`,
  );
  for (const [name, version] of Object.entries(meta.versions)) lines.push(`| ${name} | ${version} |`);
  lines.push('');
  return lines.join('\n');
}

const escapeXml = (s: string): string =>
  s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

/** A horizontal bar chart on a log scale centred on 1×: bars right of the line are faster than the peer. */
export function ratiosSvg(rows: ReportRow[]): string {
  const bars = rows.filter(
    (r): r is ReportRow & { ratio: number } => r.ratio !== undefined && Number.isFinite(r.ratio) && r.ratio > 0,
  );
  const width = 960;
  const labelWidth = 470;
  const right = 90;
  const rowHeight = 24;
  const top = 56;
  const height = top + Math.max(1, bars.length) * rowHeight + 40;
  const lo = Math.min(0.25, ...bars.map((b) => b.ratio)) / 1.2;
  const hi = Math.max(4, ...bars.map((b) => b.ratio)) * 1.2;
  const plot = width - labelWidth - right;
  const x = (v: number): number => labelWidth + ((Math.log(v) - Math.log(lo)) / (Math.log(hi) - Math.log(lo))) * plot;
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="system-ui, -apple-system, Segoe UI, sans-serif" font-size="12">`,
    `<rect width="${width}" height="${height}" fill="#ffffff"/>`,
    `<text x="${width / 2}" y="22" text-anchor="middle" font-size="15" font-weight="600">nestjs-redis-toolkit throughput ÷ peer (log scale; right of 1× = faster)</text>`,
  ];
  // Grid lines at powers of two.
  for (let v = 2 ** Math.ceil(Math.log2(lo)); v <= hi; v *= 2) {
    const gx = x(v).toFixed(1);
    out.push(
      `<line x1="${gx}" y1="${top - 8}" x2="${gx}" y2="${height - 30}" stroke="${v === 1 ? '#333' : '#ddd'}" stroke-width="${v === 1 ? 1.5 : 1}"/>`,
    );
    out.push(
      `<text x="${gx}" y="${height - 14}" text-anchor="middle" fill="#555">${v >= 1 ? v : `1/${1 / v}`}×</text>`,
    );
  }
  if (bars.length === 0)
    out.push(
      `<text x="${width / 2}" y="${top + 16}" text-anchor="middle" fill="#777">no peer comparisons yet: run npm run bench</text>`,
    );
  bars.forEach((b, i) => {
    const y = top + i * rowHeight;
    const x1 = x(1);
    const x2 = x(b.ratio);
    const faster = b.ratio >= 1;
    const label = `${b.profile === 'loaded' ? '[loaded] ' : ''}${b.feature} · ${b.operation} vs ${b.library}`;
    out.push(
      `<text x="${labelWidth - 8}" y="${y + 15}" text-anchor="end" fill="#222">${escapeXml(label.length > 68 ? `${label.slice(0, 65)}...` : label)}</text>`,
    );
    out.push(
      `<rect x="${Math.min(x1, x2).toFixed(1)}" y="${y + 4}" width="${Math.max(1, Math.abs(x2 - x1)).toFixed(1)}" height="${rowHeight - 8}" fill="${faster ? (b.profile === 'loaded' ? '#8ce99a' : '#2f9e44') : b.profile === 'loaded' ? '#ffc078' : '#e8590c'}" rx="2"/>`,
    );
    // The figure sits right of the bar's outer end, or right of the 1× line for slower ones (clear of the labels).
    out.push(
      `<text x="${((faster ? x2 : x1) + 4).toFixed(1)}" y="${y + 15}" text-anchor="start" fill="#222">${b.ratio.toFixed(2)}×</text>`,
    );
  });
  out.push('</svg>', '');
  return out.join('\n');
}

/** Writes latest.json, BENCHMARKS.md and ratios.svg from the saved results of both profiles; returns the markdown. */
export function generateReport(): string {
  mkdirSync(RESULTS, { recursive: true });
  const load = (profile: BenchProfile): ProfileData => {
    const results = loadResults(profile);
    return {
      results,
      rows: withRatios(results, profile),
      run: readJson<RunInfo>(new URL('run.json', resultsDir(profile))),
    };
  };
  const profiles = { quiet: load('quiet'), loaded: load('loaded') };
  const all = [...profiles.quiet.results, ...profiles.loaded.results];
  const machine = all.find((r) => r.machine)?.machine ?? machineInfo();
  const meta = {
    machine,
    redis: redisVersion(profiles.quiet.run ?? profiles.loaded.run),
    versions: peerVersions(),
  };
  // the chart: every peer row of the quiet profile, each followed by the same row of the loaded profile
  const chartRows: ReportRow[] = [];
  for (const r of profiles.quiet.rows) {
    chartRows.push(r);
    const l = profiles.loaded.rows.find(
      (x) => x.feature === r.feature && x.library === r.library && x.operation === r.operation,
    );
    if (l) chartRows.push(l);
  }
  writeFileSync(
    new URL('latest.json', RESULTS),
    JSON.stringify(
      {
        date: new Date().toISOString(),
        machine,
        redis: meta.redis,
        versions: meta.versions,
        runs: { quiet: profiles.quiet.run, loaded: profiles.loaded.run },
        rows: profiles.quiet.rows,
        loadedRows: profiles.loaded.rows,
        unavailable: all.filter((r) => r.unavailable).map((r) => ({ feature: r.feature, reason: r.unavailable })),
      },
      null,
      2,
    ) + '\n',
  );
  const md = markdown(profiles, meta);
  writeFileSync(new URL('BENCHMARKS.md', ROOT), md);
  writeFileSync(new URL('ratios.svg', RESULTS), ratiosSvg(chartRows));
  return md;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const md = generateReport();
  process.stdout.write(`${md}\nwrote BENCHMARKS.md, bench/results/latest.json and bench/results/ratios.svg\n`);
}
