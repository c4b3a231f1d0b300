/**
 * Starts real `redis-server` processes for tests, on free loopback ports, and makes sure none outlive the run.
 *
 * Leak protection has three layers:
 *  1. every process is tracked in a registry, and an `exit` hook on the (real) Node process SIGKILLs whatever is
 *     still tracked and removes the temp dirs; so do SIGINT, SIGTERM and SIGHUP (which end a process without
 *     `exit`), unless the process handles that signal itself;
 *  2. each server also gets a pid file in `os.tmpdir()/rtk-test-redis/`, and {@link sweepStaleServers} kills
 *     servers whose owning test process has died (crash, SIGKILL) on the next run: the first startRedisServer of
 *     each process calls it;
 *  3. children are `unref()`ed, so a test that forgets `stop()` cannot keep jest alive — layer 1 reaps it.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { InvalidOptionsError, RedisToolkitError } from '../common/errors.js';
import {
  FORBIDDEN_PORT,
  HOST,
  hostProcess,
  installExitHook,
  redisServerBinary,
  registry,
  STATE_DIR,
  sweepStaleServers,
  signalChild,
  writePidFile,
} from './testing.processes.js';
import { RedisServerStartError, RedisServerStateError } from './testing.errors.js';
import { refuseDeniedHelpers } from './testing.permissions.js';
import { getFreeClusterPort, getFreePort, reservePort } from './testing.ports.js';
import { checkServerOptions, type RedisServerOptions } from './testing.server-options.js';
import { errorCode, rawCommand, rawCommands, RespError, type RawAuth } from './testing.resp.js';

export { findOnPath, STATE_DIR, sweepStaleServers } from './testing.processes.js';
export { getFreePort } from './testing.ports.js';
export type { RedisServerOptions } from './testing.server-options.js';

export interface RedisServerHandle {
  readonly host: '127.0.0.1';
  readonly port: number;
  /** `redis://127.0.0.1:PORT`, with credentials when `password`/`aclUser` was given. */
  readonly url: string;
  /** Pid of the running process; undefined while stopped. */
  readonly pid: number | undefined;
  /** Working dir (`--dir`); kept across stop/restart so cluster nodes keep nodes.conf, removed at process exit. */
  readonly dir: string;
  /**
   * Graceful shutdown (SIGTERM, no save), SIGKILL after 5 s; resolves once the process has exited. No-op if stopped.
   */
  stop(): Promise<void>;
  /** SIGKILL; resolves once the process has exited. No-op if stopped. */
  kill(): Promise<void>;
  /**
   * SIGSTOP: the port still accepts TCP connections but nothing is answered. RedisServerStateError once stopped (so
   * are `resume()` and `flush()`).
   */
  pause(): void;
  /** SIGCONT. */
  resume(): void;
  /**
   * Starts again on the same port and dir (after stop/kill); resolves once it answers PING. Rejects with
   * RedisServerStateError while the server runs.
   */
  restart(): Promise<void>;
  /** FLUSHALL on this server. */
  flush(): Promise<void>;
  isRunning(): boolean;
}

const READY_TIMEOUT_MS = 10_000;
const STOP_GRACE_MS = 5_000;
const BIND_ATTEMPTS = 5;

function buildUrl(port: number, opts: RedisServerOptions): string {
  const enc = encodeURIComponent;
  if (opts.aclUser) return `redis://${enc(opts.aclUser.name)}:${enc(opts.aclUser.password)}@${HOST}:${port}`;
  if (opts.password !== undefined) return `redis://:${enc(opts.password)}@${HOST}:${port}`;
  return `redis://${HOST}:${port}`;
}

function authFor(opts: RedisServerOptions): RawAuth | undefined {
  if (opts.aclUser) return { username: opts.aclUser.name, password: opts.aclUser.password };
  if (opts.password !== undefined) return { password: opts.password };
  return undefined;
}

function tail(file: string, bytes = 4000): string {
  try {
    const text = readFileSync(file, 'utf8');
    return text.length > bytes ? `...${text.slice(-bytes)}` : text;
  } catch {
    return '(no log)';
  }
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Redis could not bind its port: startRedisServer retries on a new port (typed: the last try's error is thrown). */
class PortInUseError extends RedisServerStartError {}

class RedisServer implements RedisServerHandle {
  readonly host = HOST;
  readonly url: string;
  readonly dir: string;
  private child: ChildProcess | undefined;
  private exited: Promise<void> = Promise.resolve();
  private readonly logFile: string;
  private readonly auth: RawAuth | undefined;

  constructor(
    readonly port: number,
    private readonly opts: RedisServerOptions,
  ) {
    this.url = buildUrl(port, opts);
    this.auth = authFor(opts);
    mkdirSync(STATE_DIR, { recursive: true });
    // The owner pid in the name lets sweepStaleServers() find dirs of crashed runs.
    this.dir = mkdtempSync(join(STATE_DIR, `srv-${hostProcess.pid}-`));
    registry.dirs.add(this.dir);
    this.logFile = join(this.dir, 'redis.log');
  }

  get pid(): number | undefined {
    return this.isRunning() ? this.child?.pid : undefined;
  }

  isRunning(): boolean {
    const child = this.child;
    return child !== undefined && child.pid !== undefined && child.exitCode === null && child.signalCode === null;
  }

  private args(): string[] {
    const args = [
      '--bind',
      HOST,
      '--port',
      String(this.port),
      '--save',
      '',
      '--appendonly',
      'no',
      '--dir',
      this.dir,
      '--daemonize',
      'no',
    ];
    if (this.opts.cluster)
      args.push('--cluster-enabled', 'yes', '--cluster-config-file', 'nodes.conf', '--cluster-node-timeout', '2000');
    if (this.opts.password !== undefined) args.push('--requirepass', this.opts.password);
    if (this.opts.aclUser)
      args.push('--user', this.opts.aclUser.name, 'on', `>${this.opts.aclUser.password}`, '~*', '&*', '+@all');
    return [...args, ...(this.opts.args ?? [])];
  }

  /** Spawns the process and waits for PONG; on failure the process is gone and the error carries the log. */
  async launch(): Promise<void> {
    if (this.isRunning()) throw new RedisServerStateError(`redis-server on port ${this.port} is already running`);
    const bin = redisServerBinary();
    // stdout/stderr go to a file rather than pipes: no stream handles for jest to track, and the log survives
    // for error messages. Appending keeps the history of restarts in one place.
    const logFd = openSync(this.logFile, 'a');
    let child: ChildProcess;
    try {
      child = spawn(bin, this.args(), { cwd: this.dir, stdio: ['ignore', logFd, logFd] });
    } finally {
      closeSync(logFd);
    }
    let spawnError: Error | undefined;
    child.on('error', (err) => {
      spawnError = err;
    });
    this.child = child;
    this.exited = new Promise((resolve) => child.once('exit', () => resolve()));
    // See the header: the exit hook reaps a forgotten server, so it must not keep the event loop alive.
    child.unref();

    const pid = child.pid;
    if (pid !== undefined) {
      installExitHook();
      const pidFile = writePidFile({ pid, owner: hostProcess.pid, port: this.port, dir: this.dir });
      registry.tracked.set(pid, { pidFile });
      child.once('exit', () => {
        registry.tracked.delete(pid);
        rmSync(pidFile, { force: true });
      });
    }

    const deadline = Date.now() + READY_TIMEOUT_MS;
    let lastProbe = 'not probed';
    for (;;) {
      if (spawnError || !this.isRunning()) {
        // A failed spawn (no pid) reports through 'error' on a later tick; don't rely on 'exit' then.
        if (child.pid === undefined) await sleep(10);
        else await this.exited;
        const log = tail(this.logFile);
        const reason = spawnError
          ? `failed to spawn (${spawnError.message})`
          : `exited early (code ${child.exitCode}, signal ${child.signalCode})`;
        const message = `redis-server on ${HOST}:${this.port} ${reason}. Log ${this.logFile}:\n${log}`;
        throw /Address already in use/i.test(log) ? new PortInUseError(message) : new RedisServerStartError(message);
      }
      lastProbe = await this.probe(pid);
      if (lastProbe === 'ready') return;
      if (Date.now() > deadline) break;
      await sleep(50);
    }
    await this.kill();
    throw new RedisServerStartError(
      `redis-server on ${HOST}:${this.port} did not answer PING within ${READY_TIMEOUT_MS} ms (last probe: ` +
        `${lastProbe}). Log ${this.logFile}:\n${tail(this.logFile)}`,
    );
  }

  /**
   * 'ready' when the port answers PONG *and* the answering server is our process: a PONG from a server that
   * already held the port (our process is about to die with "Address already in use") must not count.
   */
  private async probe(pid: number | undefined): Promise<string> {
    try {
      const [pong, info] = await rawCommands(this.port, [['PING'], ['INFO', 'server']], {
        timeoutMs: 500,
        auth: this.auth,
      });
      if (pong instanceof RespError) return `PING failed: ${pong.message}`;
      const answeredBy = /^process_id:(\d+)/m.exec(typeof info === 'string' ? info : '')?.[1];
      if (answeredBy !== String(pid)) return `port answered by another process (pid ${answeredBy ?? '?'})`;
      return pong === 'PONG' ? 'ready' : `unexpected PING reply ${JSON.stringify(pong)}`;
    } catch (err) {
      // a socket error by its code (ECONNREFUSED); the raw client's own (a refused AUTH, a peer that is not Redis) by
      // what it says, not by its E_ code
      return err instanceof RedisToolkitError ? err.message : (errorCode(err) ?? String(err));
    }
  }

  /** Signals the process and waits for it to exit; escalates to SIGKILL after `graceMs`. */
  private async terminate(signal: NodeJS.Signals, graceMs: number): Promise<void> {
    const child = this.child;
    if (!child || !this.isRunning()) return;
    child.ref(); // keep the loop alive while we wait for the exit event
    try {
      if (signal !== 'SIGKILL') signalChild(child, 'SIGCONT'); // a SIGSTOPped server would never act on SIGTERM
      signalChild(child, signal);
      // Clear the grace timer once the process is gone: a pending timer would keep jest from exiting.
      let timer: NodeJS.Timeout | undefined;
      const timedOut = await Promise.race([
        this.exited.then(() => false),
        new Promise<boolean>((resolve) => (timer = setTimeout(resolve, graceMs, true))),
      ]);
      clearTimeout(timer);
      if (timedOut) {
        signalChild(child, 'SIGKILL');
        await this.exited;
      }
    } finally {
      child.unref();
    }
  }

  stop(): Promise<void> {
    // SIGTERM makes redis shut down like SHUTDOWN; with `--save ''` nothing is written. Unlike a SHUTDOWN
    // command it needs no connection or credentials and works on a paused server (after SIGCONT).
    return this.terminate('SIGTERM', STOP_GRACE_MS);
  }

  kill(): Promise<void> {
    return this.terminate('SIGKILL', STOP_GRACE_MS);
  }

  pause(): void {
    signalChild(this.requireRunning('pause'), 'SIGSTOP');
  }

  resume(): void {
    signalChild(this.requireRunning('resume'), 'SIGCONT');
  }

  restart(): Promise<void> {
    return this.launch();
  }

  async flush(): Promise<void> {
    this.requireRunning('flush');
    await rawCommand(this.port, ['FLUSHALL'], { auth: this.auth, timeoutMs: 5000 });
  }

  private requireRunning(action: string): ChildProcess {
    if (!this.child || !this.isRunning())
      throw new RedisServerStateError(`cannot ${action}: redis-server on port ${this.port} is not running`);
    return this.child;
  }

  /** Forget the dir right away (used when the very first launch failed). */
  discard(): void {
    rmSync(this.dir, { recursive: true, force: true });
    registry.dirs.delete(this.dir);
    registry.ports.delete(this.port);
  }
}

/**
 * Starts a redis-server bound to 127.0.0.1 and resolves once it answers PING.
 * Without `opts.port`, a free port is picked, and a new one is tried when redis loses the race for it.
 */
export async function startRedisServer(opts: RedisServerOptions = {}): Promise<RedisServerHandle> {
  checkServerOptions(opts);
  if (opts.port === FORBIDDEN_PORT)
    throw new InvalidOptionsError(
      `refusing to start a test server on port ${FORBIDDEN_PORT}: it is reserved for a real Redis`,
    );
  refuseDeniedHelpers();
  redisServerBinary(); // fail fast with the install hint
  // Servers left by a crashed earlier run (its owner gone): removed by the first start of each process.
  if (!registry.swept) {
    registry.swept = true;
    sweepStaleServers();
  }
  const attempts = opts.port === undefined ? BIND_ATTEMPTS : 1;
  let lastError: Error | undefined;
  for (let attempt = 0; attempt < attempts; attempt++) {
    const port = opts.port ?? (opts.cluster ? await getFreeClusterPort() : await getFreePort());
    registry.ports.add(port);
    // a port given (a restart, one from getFreePort) is held as one picked here is (false: held already, maybe by
    // this process): its clients may come back to it
    if (opts.port !== undefined) reservePort(port);
    const server = new RedisServer(port, opts);
    try {
      await server.launch();
      return server;
    } catch (err) {
      server.discard();
      lastError = err instanceof Error ? err : new RedisServerStartError(String(err));
      if (!(err instanceof PortInUseError)) throw lastError;
    }
  }
  throw lastError ?? new RedisServerStartError('startRedisServer failed');
}
