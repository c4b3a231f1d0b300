/**
 * A Node `cluster` started for a test: a primary fixture (loaded from its TypeScript source through ts-hooks.mjs) in a
 * process group of its own, which forks the workers and reports on stdout, one `@@rtk <json>` line per event: `ready`
 * (what the spec needs to reach the workers), a worker's `exit`, an `unhandled` rejection (`in` the process that had
 * it). Used by the gateway's cluster-adapter and sticky specs.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { waitFor } from './wait.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const HOOKS = pathToFileURL(fileURLToPath(new URL('./ts-hooks.mjs', import.meta.url))).href;

export interface ClusterExit {
  index: number;
  pid: number;
  code: number | null;
  signal: string | null;
}

export interface ClusterEvent<Ready> {
  ready?: Ready;
  exit?: ClusterExit;
  unhandled?: string;
  in?: string;
}

/** The primary process and its workers, as the primary reports them. */
export class ClusterRun<Ready, Worker extends { pid: number }> {
  readonly events: ClusterEvent<Ready>[] = [];
  workers: Worker[] = [];
  private output = '';
  private readonly exited: Promise<void>;

  constructor(readonly proc: ChildProcess) {
    let pending = '';
    proc.stdout?.on('data', (chunk: Buffer) => {
      this.keep(chunk);
      pending += chunk.toString();
      const lines = pending.split('\n');
      pending = lines.pop() ?? '';
      for (const line of lines) if (line.startsWith('@@rtk ')) this.events.push(JSON.parse(line.slice(6)));
    });
    proc.stderr?.on('data', (chunk: Buffer) => this.keep(chunk));
    this.exited = new Promise((resolve) => proc.once('exit', () => resolve()));
  }

  private keep(chunk: Buffer): void {
    // The end is what explains a failure; a run prints little unless something goes wrong.
    this.output = (this.output + chunk.toString()).slice(-20_000);
  }

  get running(): boolean {
    return this.proc.exitCode === null && this.proc.signalCode === null;
  }

  /** What the primary and the workers wrote (stdout and stderr), for a failure's message. */
  log(): string {
    return this.output;
  }

  exits(): ClusterExit[] {
    return this.events.flatMap((e) => (e.exit ? [e.exit] : []));
  }

  unhandled(): string[] {
    return this.events.flatMap((e) => (e.unhandled ? [`${e.in}: ${e.unhandled}`] : []));
  }

  /** Kills the primary's whole process group (it and its workers), then each worker by pid, and waits for the exit. */
  async stop(): Promise<void> {
    const pids = this.workers.map((w) => w.pid);
    if (this.running && this.proc.pid) {
      try {
        process.kill(-this.proc.pid, 'SIGKILL');
      } catch {
        this.proc.kill('SIGKILL');
      }
    }
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    await this.exited;
  }
}

/**
 * Starts the primary fixture at `primary` with `env` added to this process's, and waits for its `ready` event (a
 * bound: a cold start transpiles lib/ in each worker and boots Nest, seconds on a busy 2-core machine). A primary that
 * exits, or a worker that does, first is stopped and thrown with what it wrote.
 */
export async function startClusterRun<Ready, Worker extends { pid: number }>(
  primary: string,
  env: Record<string, string>,
): Promise<{ run: ClusterRun<Ready, Worker>; ready: Ready }> {
  const proc = spawn(process.execPath, ['--no-warnings', '--import', HOOKS, primary], {
    cwd: ROOT,
    // Its own process group, so that stop() ends the workers with it whatever state they are in.
    detached: true,
    stdio: ['pipe', 'pipe', 'pipe'],
    env: { ...process.env, ...env },
  });
  const run = new ClusterRun<Ready, Worker>(proc);
  const ready = () => run.events.find((e) => e.ready)?.ready;
  await waitFor(() => ready() !== undefined || !run.running || run.exits().length > 0, 60_000);
  const reported = ready();
  if (reported === undefined) {
    await run.stop();
    throw new Error(`the cluster did not start:\n${run.log()}`);
  }
  return { run, ready: reported };
}
