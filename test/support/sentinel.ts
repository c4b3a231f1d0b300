/**
 * A private redis-sentinel monitoring one master, for tests (killed and its dir removed by `stop()`).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { getFreePort } from './redis-server.js';
import { probePing } from './resp.js';
import { waitFor } from './wait.js';

export interface SentinelHandle {
  readonly port: number;
  stop(): Promise<void>;
}

export interface SentinelOptions {
  /** The master group name. */
  name: string;
  /** The address the sentinel monitors (and reports as the master). */
  master: { host: string; port: number };
  /** Extra sentinel.conf lines (TLS, requirepass, auth-pass ...). */
  extra?: string[];
}

export async function startSentinel(opts: SentinelOptions): Promise<SentinelHandle> {
  const port = await getFreePort();
  const dir = mkdtempSync(join(tmpdir(), 'rtk-sentinel-'));
  const conf = join(dir, 'sentinel.conf');
  writeFileSync(
    conf,
    [
      `port ${port}`,
      'bind 127.0.0.1',
      `dir ${dir}`,
      `sentinel monitor ${opts.name} ${opts.master.host} ${opts.master.port} 1`,
      `sentinel down-after-milliseconds ${opts.name} 2000`,
      ...(opts.extra ?? []),
    ].join('\n') + '\n',
  );
  const child: ChildProcess = spawn('redis-server', [conf, '--sentinel'], { stdio: 'ignore' });
  const up = await waitFor(async () => {
    // A sentinel with requirepass answers NOAUTH (`error`): it is up all the same.
    const reply = await probePing(port);
    return reply === 'pong' || reply === 'error';
  }, 10_000);
  const stop = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGKILL');
      await exited;
    }
    rmSync(dir, { recursive: true, force: true });
  };
  if (!up) {
    await stop();
    throw new Error(`redis-sentinel on port ${port} did not answer PING within 10 s`);
  }
  return { port, stop };
}
