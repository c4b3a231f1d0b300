/**
 * Runs the compiled sample app (`dist/sample/main.js`, or `dist-bench/sample/main.js`) as a child process against
 * a given Redis, on a free loopback port, and stops it afterwards. Its output is kept so a test can check that it
 * never crashed or reported an unhandled rejection.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { request } from 'node:http';
import { fileURLToPath } from 'node:url';
import { getFreePort } from '../../support/redis-server.js';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));

export interface SampleAppOptions {
  redisUrl: string;
  /** REDIS_COMMAND_TIMEOUT_MS for the app. Default 500 (the sample's default). */
  commandTimeout?: number;
  /** Extra environment (e.g. a high rate limit for benchmarks). */
  env?: Record<string, string>;
  /** Which build to run. Default: dist/sample/main.js. */
  main?: string;
  /** How long boot may take. Default 90 s (a cold Nest boot took 20 s on this 2-core box at load average 24). */
  bootTimeoutMs?: number;
}

export interface SampleApp {
  readonly baseUrl: string;
  readonly port: number;
  readonly pid: number | undefined;
  /** Everything the app wrote to stdout and stderr so far. */
  output(): string;
  /** Still running (no crash). */
  alive(): boolean;
  /** Lines that mean something went wrong on the inside: crashes, unhandled rejections, uncaught exceptions. */
  troubles(): string[];
  stop(): Promise<void>;
}

/** One GET; resolves with status and body (or status 0 and the error message). */
export function httpGet(
  url: string,
  timeoutMs = 5_000,
  headers: Record<string, string> = {},
): Promise<{ status: number; body: string }> {
  return new Promise((resolve) => {
    const req = request(url, { method: 'GET', headers, timeout: timeoutMs }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', (err) => resolve({ status: 0, body: err.message }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', (err) => resolve({ status: 0, body: err.message }));
    req.end();
  });
}

export function sampleMain(preferred?: string): string {
  const candidates = [preferred, 'dist/sample/main.js', 'dist-bench/sample/main.js'].filter(
    (c): c is string => c !== undefined,
  );
  for (const c of candidates) {
    const path = c.startsWith('/') ? c : `${ROOT}${c}`;
    if (existsSync(path)) return path;
  }
  throw new Error(`the sample is not built (looked for ${candidates.join(', ')}): run \`npm run build\` first`);
}

const SESSION_SECRET = randomBytes(32).toString('base64');

const TROUBLE =
  /unhandled ?rejection|uncaught ?exception|UnhandledPromiseRejection|FATAL|Segmentation|heap out of memory/i;

/** The sample exits at boot when its first Redis call times out (fail fast at start). */
const BOOT_TIMED_OUT = /Cannot connect to Redis at .*(Command timed out|ETIMEDOUT)/;

/**
 * Starts the sample. On a busy machine its startup check (one command, bounded by the app's commandTimeout of
 * 500 ms) can time out and the app exits by design (fail fast); that is the test's own setup, not what a fault test
 * looks at, so such a boot is retried (at most 3 attempts). Any other boot failure is thrown at once.
 */
export async function startSampleApp(opts: SampleAppOptions): Promise<SampleApp> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await startSampleAppOnce(opts);
    } catch (err) {
      if (attempt >= 3 || !(err instanceof Error) || !BOOT_TIMED_OUT.test(err.message)) throw err;
    }
  }
}

async function startSampleAppOnce(opts: SampleAppOptions): Promise<SampleApp> {
  const main = sampleMain(opts.main);
  const port = await getFreePort();
  let output = '';
  const child: ChildProcess = spawn(process.execPath, [main], {
    cwd: ROOT,
    env: {
      ...process.env,
      NODE_ENV: 'production',
      // the sample refuses to start in production without one; one per run, so its instances read each other's cookies
      SESSION_SECRET,
      REDIS_URL: opts.redisUrl,
      PORT: String(port),
      HOST: '127.0.0.1',
      REDIS_COMMAND_TIMEOUT_MS: String(opts.commandTimeout ?? 500),
      REDIS_KEY_PREFIX: `rtk-proof-${port}:`,
      ...opts.env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stdout?.on('data', (c: Buffer) => (output += c.toString('utf8')));
  child.stderr?.on('data', (c: Buffer) => (output += c.toString('utf8')));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const alive = (): boolean => child.exitCode === null && child.signalCode === null;
  const baseUrl = `http://127.0.0.1:${port}`;

  const stop = async (): Promise<void> => {
    if (!alive()) return;
    child.kill('SIGTERM');
    let timer: NodeJS.Timeout | undefined;
    const late = await Promise.race([
      exited.then(() => false),
      new Promise<boolean>((r) => (timer = setTimeout(r, 5_000, true))),
    ]);
    clearTimeout(timer);
    if (late) {
      child.kill('SIGKILL');
      await exited;
    }
  };

  const deadline = Date.now() + (opts.bootTimeoutMs ?? 90_000);
  for (;;) {
    if (!alive()) throw new Error(`the sample app exited during boot (code ${child.exitCode}):\n${output}`);
    const r = await httpGet(`${baseUrl}/health`, 1_000);
    if (r.status === 200) break;
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`the sample app did not answer GET /health within the boot timeout:\n${output}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }

  return {
    baseUrl,
    port,
    get pid() {
      return child.pid;
    },
    output: () => output,
    alive,
    troubles: () => output.split('\n').filter((l) => TROUBLE.test(l)),
    stop,
  };
}
