/** Starting the sample app (or the HTTP baseline) as a child process for a benchmark: http.bench.ts, sizing.ts. */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { httpGet } from '../../test/faults/harness/sample-app.js';
import { getFreePort } from '../../test/support/redis-server.js';

const SESSION_SECRET = randomBytes(32).toString('base64');

/** Compiled to dist-bench/bench/support/: the repo root is three levels up. */
const ROOT = fileURLToPath(new URL('../../../', import.meta.url));

export interface Child {
  url: string;
  /** The child's process id (to read its CPU time). */
  pid: number | undefined;
  stop(): Promise<void>;
}

/** Spawns `node file` with env and waits until `readyPath` answers anything but a connection error. */
export async function startApp(file: string, env: Record<string, string>, readyPath: string): Promise<Child> {
  const port = await getFreePort();
  let output = '';
  const child: ChildProcess = spawn(process.execPath, [file], {
    cwd: ROOT,
    // the sample refuses to start in production without SESSION_SECRET
    env: { ...process.env, NODE_ENV: 'production', SESSION_SECRET, PORT: String(port), HOST: '127.0.0.1', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stdout?.on('data', (c: Buffer) => (output += c.toString('utf8')));
  child.stderr?.on('data', (c: Buffer) => (output += c.toString('utf8')));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const stop = async (): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
    await exited;
    clearTimeout(timer);
  };
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 30_000;
  while ((await httpGet(`${url}${readyPath}`)).status === 0) {
    if (child.exitCode !== null || Date.now() > deadline) {
      await stop();
      throw new Error(`${file} did not start:\n${output}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return { url, pid: child.pid, stop };
}
