/**
 * The two bench profiles' machinery (bench/run-all.ts; a bench run on its own uses it through standaloneRedis):
 * Redis pinned to one CPU in both, and in the 'loaded' one a CPU-bound neighbour spinning on that CPU.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { cpus, setPriority } from 'node:os';
import { startRedisServer } from '../../test/support/redis-server.js';
import { unwatchRedisCpu, watchRedisCpu, type BenchProfile } from './measure.js';

/** Pins a process to one CPU with taskset; false (with a warning) when taskset is missing or refuses. */
export function pin(pid: number, cpu: number): boolean {
  const r = spawnSync('taskset', ['-cp', String(cpu), String(pid)], { encoding: 'utf8' });
  if (r.status === 0) return true;
  process.stdout.write(`warning: taskset could not pin pid ${pid} to CPU ${cpu}: ${r.error?.message ?? r.stderr}\n`);
  return false;
}

/**
 * The loaded profile's neighbour: a process spinning on the CPU Redis is pinned to (a tight loop, yielding every
 * 100 ms so it stays killable), so Redis gets about half of its core, as beside a busy process on a shared host.
 */
export function startNeighbour(cpu: number): ChildProcess {
  const child = spawn(
    'taskset',
    [
      '-c',
      String(cpu),
      process.execPath,
      '-e',
      'const spin=()=>{const t=Date.now();while(Date.now()-t<100);setImmediate(spin)};spin()',
    ],
    { stdio: 'ignore' },
  );
  child.on('error', (err) => process.stdout.write(`warning: the neighbour did not start: ${err.message}\n`));
  return child;
}

/**
 * Raises this process (a load generator) above normal priority (nice -5), so that on a 2-core box, where it has to
 * share the CPU of Redis and, in the loaded profile, the neighbour, it is not what sets the pace: measured on the
 * URL-cache bench's Fastify apps in the loaded profile, the no-cache app answered 7.8k req/s with autocannon at normal
 * priority and 19.4k at nice -5 (22-25k in the quiet profile). Redis and the neighbour still share what it leaves.
 * Needs root or CAP_SYS_NICE; without, the run goes on at normal priority and says so.
 */
export function favourLoadGenerator(): string {
  try {
    setPriority(process.pid, -5);
    return 'autocannon at nice -5';
  } catch (err) {
    return `autocannon at normal priority (nice -5 refused: ${(err as NodeJS.ErrnoException).code ?? String(err)})`;
  }
}

/** The profile asked for on the command line of a bench run on its own: `--load` or BENCH_LOAD=1 → 'loaded'. */
export const cliProfile = (): BenchProfile =>
  process.argv.includes('--load') || process.env.BENCH_LOAD === '1' ? 'loaded' : 'quiet';

/**
 * For a bench run on its own (no BENCH_REDIS_URL): a private Redis set up as `npm run bench` does for the profile
 * (pinned to the last CPU; with `--load`, a neighbour spinning beside it), BENCH_PROFILE set so the results go to
 * that profile's folder. Under `npm run bench` the shared server is used as it is.
 */
export async function standaloneRedis(): Promise<{ url: string; profile: BenchProfile; stop(): Promise<void> }> {
  const shared = process.env.BENCH_REDIS_URL;
  if (shared) {
    watchRedisCpu(shared);
    const profile: BenchProfile = process.env.BENCH_PROFILE === 'loaded' ? 'loaded' : 'quiet';
    return { url: shared, profile, stop: async () => unwatchRedisCpu(shared) };
  }
  const profile = cliProfile();
  process.env.BENCH_PROFILE = profile;
  const server = await startRedisServer();
  const cpu = cpus().length - 1;
  if (server.pid !== undefined) pin(server.pid, cpu);
  const neighbour = profile === 'loaded' ? startNeighbour(cpu) : undefined;
  watchRedisCpu(server.url);
  return {
    url: server.url,
    profile,
    stop: async () => {
      neighbour?.kill('SIGKILL');
      unwatchRedisCpu(server.url);
      await server.stop();
    },
  };
}
