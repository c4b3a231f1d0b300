/**
 * Starts real `redis-server` processes for tests, on free loopback ports, and makes sure none outlive the run.
 *
 * Leak protection has three layers:
 *  1. every process is tracked in a registry, and an `exit` hook on the (real) Node process SIGKILLs whatever is
 *     still tracked and removes the temp dirs;
 *  2. each server also gets a pid file in `os.tmpdir()/rtk-test-redis/`, and {@link sweepStaleServers} kills
 *     servers whose owning test process has died (crash, SIGKILL, Ctrl-C) on the next run;
 *  3. children are `unref()`ed, so a test that forgets `stop()` cannot keep jest alive — layer 1 reaps it.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import {
  accessSync,
  closeSync,
  constants as fsConstants,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { errorCode, rawCommands, RespError, rawCommand, type RawAuth } from './resp.js';

export interface RedisServerOptions {
  /** Fixed port (e.g. to re-create a server); default: a free loopback port. 6379 is refused. */
  port?: number;
  /** Extra `redis-server` arguments, appended after the harness defaults (so they win). */
  args?: string[];
  /** `requirepass` for the default user. */
  password?: string;
  /** An extra ACL user with full permissions; the handle's `url` then carries these credentials. */
  aclUser?: { name: string; password: string };
  /** Start as a cluster node (`cluster-enabled yes`); the bus port is `port + 10000`. */
  cluster?: boolean;
}

export interface RedisServerHandle {
  readonly host: '127.0.0.1';
  readonly port: number;
  /** `redis://127.0.0.1:PORT`, with credentials when `password`/`aclUser` was given. */
  readonly url: string;
  /** Pid of the running process; undefined while stopped. */
  readonly pid: number | undefined;
  /** Working dir (`--dir`); kept across stop/restart so cluster nodes keep nodes.conf, removed at process exit. */
  readonly dir: string;
  /** Graceful shutdown (SIGTERM, no save), SIGKILL after 5 s; resolves once the process has exited. No-op if stopped. */
  stop(): Promise<void>;
  /** SIGKILL; resolves once the process has exited. No-op if stopped. */
  kill(): Promise<void>;
  /** SIGSTOP: the port still accepts TCP connections but nothing is answered. */
  pause(): void;
  /** SIGCONT. */
  resume(): void;
  /** Starts again on the same port and dir (after stop/kill); resolves once it answers PING. */
  restart(): Promise<void>;
  /** FLUSHALL on this server. */
  flush(): Promise<void>;
  isRunning(): boolean;
}

const HOST = '127.0.0.1';
/** Never touch the conventional port: a developer's (or CI's) real Redis may live there. */
const FORBIDDEN_PORT = 6379;
const READY_TIMEOUT_MS = 10_000;
const STOP_GRACE_MS = 5_000;
const BIND_ATTEMPTS = 5;
const CLUSTER_BUS_OFFSET = 10_000;

/** Shared by every test process; pid files and per-server dirs live here so a later run can sweep them. */
export const STATE_DIR = join(tmpdir(), 'rtk-test-redis');

// ---------------------------------------------------------------------------------------------------------------
// Process-wide registry
// ---------------------------------------------------------------------------------------------------------------

interface TrackedServer {
  readonly pidFile: string;
}

interface HostState {
  /** Running servers by pid. */
  readonly tracked: Map<number, TrackedServer>;
  /** Temp dirs to delete at exit. */
  readonly dirs: Set<string>;
  /** Ports handed out to servers of this process, so parallel starts do not race for the same one. */
  readonly ports: Set<number>;
  exitHookInstalled: boolean;
}

/**
 * Jest runs every test file in its own vm context with its own module registry and a *copy* of `process`:
 * `process.on('exit')` inside a test file registers on that copy, which never fires. A function built by the
 * Function constructor of the outer realm (any core-module function's `.constructor`; `spawn` is always the real
 * one) evaluates against the real globals, giving us the real `process` and a `globalThis` shared by the jest
 * parent (globalSetup), every test file and this module, so there is one registry and one exit hook per process.
 * Outside jest this is simply `globalThis`.
 */
function hostGlobal(): typeof globalThis {
  try {
    const OuterFunction = spawn.constructor as FunctionConstructor;
    return OuterFunction('return globalThis')() as typeof globalThis;
  } catch {
    return globalThis; // code generation from strings disabled: fall back to the local realm
  }
}

const host = hostGlobal();
const hostProcess: NodeJS.Process = host.process;
const STATE_KEY = Symbol.for('rtk-test-redis.state');

function hostState(): HostState {
  const slot = host as unknown as Record<symbol, HostState | undefined>;
  const existing = slot[STATE_KEY];
  if (existing) return existing;
  const state: HostState = { tracked: new Map(), dirs: new Set(), ports: new Set(), exitHookInstalled: false };
  slot[STATE_KEY] = state;
  return state;
}

/** Module-level handle on the process-wide registry. */
const registry = hostState();

function installExitHook(): void {
  if (registry.exitHookInstalled) return;
  registry.exitHookInstalled = true;
  // 'exit' handlers must be synchronous: SIGKILL (no waiting possible) and sync fs calls only.
  hostProcess.on('exit', () => {
    for (const [pid, tracked] of registry.tracked) {
      trySignal(pid, 'SIGKILL');
      rmSync(tracked.pidFile, { force: true });
    }
    registry.tracked.clear();
    for (const dir of registry.dirs) rmSync(dir, { recursive: true, force: true });
    registry.dirs.clear();
  });
}

function trySignal(pid: number, signal: NodeJS.Signals | 0): boolean {
  try {
    hostProcess.kill(pid, signal);
    return true;
  } catch {
    return false;
  }
}

function isAlive(pid: number): boolean {
  try {
    hostProcess.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: exists but belongs to someone else — still alive.
    return errorCode(err) === 'EPERM';
  }
}

interface PidFileRecord {
  readonly pid: number;
  /** Pid of the test process that started the server. */
  readonly owner: number;
  readonly port: number;
  readonly dir: string;
}

function writePidFile(record: PidFileRecord): string {
  mkdirSync(STATE_DIR, { recursive: true });
  const file = join(STATE_DIR, `${record.pid}.pid`);
  // Write-then-rename so a concurrent sweep never reads a half-written file.
  const tmp = `${file}.${hostProcess.pid}.tmp`;
  writeFileSync(tmp, JSON.stringify(record));
  renameSync(tmp, file);
  return file;
}

function readPidFile(file: string): PidFileRecord | undefined {
  try {
    const parsed: unknown = JSON.parse(readFileSync(file, 'utf8'));
    if (typeof parsed !== 'object' || parsed === null) return undefined;
    const { pid, owner, port, dir } = parsed as Record<string, unknown>;
    if (typeof pid !== 'number' || typeof owner !== 'number' || typeof port !== 'number' || typeof dir !== 'string')
      return undefined;
    return { pid, owner, port, dir };
  } catch {
    return undefined;
  }
}

function isRedisServerProcess(pid: number): boolean {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('redis-server');
  } catch {
    return false;
  }
}

/**
 * Kills redis-servers left behind by crashed earlier runs and deletes their pid files and temp dirs.
 * Only entries whose owning test process is gone are touched, so concurrent test runs are safe, and only pids
 * whose /proc/<pid>/cmdline mentions redis-server are signalled (pids get reused). Returns how many were killed.
 */
export function sweepStaleServers(): number {
  let entries: string[];
  try {
    entries = readdirSync(STATE_DIR);
  } catch {
    return 0; // nothing was ever started on this machine
  }
  let killed = 0;
  // Pid files first, so servers die before their dirs are removed.
  for (const name of entries.filter((n) => n.endsWith('.pid'))) {
    const file = join(STATE_DIR, name);
    const record = readPidFile(file);
    if (record && isAlive(record.owner)) continue;
    if (record && isRedisServerProcess(record.pid) && trySignal(record.pid, 'SIGKILL')) killed++;
    rmSync(file, { force: true });
  }
  for (const name of entries) {
    const owner = /^srv-(\d+)-/.exec(name)?.[1];
    if (owner !== undefined && !isAlive(Number(owner))) rmSync(join(STATE_DIR, name), { recursive: true, force: true });
  }
  return killed;
}

// ---------------------------------------------------------------------------------------------------------------
// Ports and binaries
// ---------------------------------------------------------------------------------------------------------------

function canBind(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.unref();
    srv.once('error', () => resolve(false));
    srv.listen(port, HOST, () => srv.close(() => resolve(true)));
  });
}

/** A port the kernel considers free on 127.0.0.1 right now (bind to port 0, read it back, release it). */
export async function getFreePort(): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const port = await new Promise<number>((resolve, reject) => {
      const srv = createServer();
      srv.unref();
      srv.once('error', reject);
      srv.listen(0, HOST, () => {
        const address = srv.address();
        const picked = typeof address === 'object' && address !== null ? address.port : 0;
        srv.close(() => resolve(picked));
      });
    });
    if (port !== 0 && port !== FORBIDDEN_PORT && !registry.ports.has(port)) return port;
  }
  throw new Error('getFreePort: could not find a free loopback port');
}

/** Cluster nodes also listen on port + 10000 (the cluster bus), which must be free and below 65536. */
async function getFreeClusterPort(): Promise<number> {
  for (let attempt = 0; attempt < 100; attempt++) {
    const port = await getFreePort();
    if (port + CLUSTER_BUS_OFFSET <= 65_535 && (await canBind(port + CLUSTER_BUS_OFFSET))) return port;
  }
  throw new Error('getFreePort: could not find a free port pair (port, port + 10000) for a cluster node');
}

/** Absolute path of `name` on PATH, or undefined. */
export function findOnPath(name: string): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (!dir) continue;
    const candidate = join(dir, name);
    try {
      accessSync(candidate, fsConstants.X_OK);
      if (statSync(candidate).isFile()) return candidate;
    } catch {
      // not here
    }
  }
  return undefined;
}

function redisServerBinary(): string {
  const bin = findOnPath('redis-server');
  if (!bin) throw new Error('redis-server not found: apt-get install -y redis-server');
  return bin;
}

// ---------------------------------------------------------------------------------------------------------------
// Server handle
// ---------------------------------------------------------------------------------------------------------------

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

/** Thrown when redis could not bind its port; startRedisServer retries on a new port. */
class PortInUseError extends Error {}

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
    if (this.isRunning()) throw new Error(`redis-server on port ${this.port} is already running`);
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
        throw /Address already in use/i.test(log) ? new PortInUseError(message) : new Error(message);
      }
      lastProbe = await this.probe(pid);
      if (lastProbe === 'ready') return;
      if (Date.now() > deadline) break;
      await sleep(50);
    }
    await this.kill();
    throw new Error(
      `redis-server on ${HOST}:${this.port} did not answer PING within ${READY_TIMEOUT_MS} ms (last probe: ${lastProbe}). Log ${this.logFile}:\n${tail(this.logFile)}`,
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
      return errorCode(err) ?? String(err);
    }
  }

  /** Signals the process and waits for it to exit; escalates to SIGKILL after `graceMs`. */
  private async terminate(signal: NodeJS.Signals, graceMs: number): Promise<void> {
    const child = this.child;
    if (!child || !this.isRunning()) return;
    child.ref(); // keep the loop alive while we wait for the exit event
    try {
      if (signal !== 'SIGKILL') child.kill('SIGCONT'); // a SIGSTOPped server would never act on SIGTERM
      child.kill(signal);
      // Clear the grace timer once the process is gone: a pending timer would keep jest from exiting.
      let timer: NodeJS.Timeout | undefined;
      const timedOut = await Promise.race([
        this.exited.then(() => false),
        new Promise<boolean>((resolve) => (timer = setTimeout(resolve, graceMs, true))),
      ]);
      clearTimeout(timer);
      if (timedOut) {
        child.kill('SIGKILL');
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
    this.requireRunning('pause').kill('SIGSTOP');
  }

  resume(): void {
    this.requireRunning('resume').kill('SIGCONT');
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
      throw new Error(`cannot ${action}: redis-server on port ${this.port} is not running`);
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
  if (opts.port === FORBIDDEN_PORT)
    throw new Error(`refusing to start a test server on port ${FORBIDDEN_PORT}: it is reserved for a real Redis`);
  redisServerBinary(); // fail fast with the install hint
  const attempts = opts.port === undefined ? BIND_ATTEMPTS : 1;
  let lastError: Error | undefined;
  for (let attempt = 0; attempt < attempts; attempt++) {
    const port = opts.port ?? (opts.cluster ? await getFreeClusterPort() : await getFreePort());
    registry.ports.add(port);
    const server = new RedisServer(port, opts);
    try {
      await server.launch();
      return server;
    } catch (err) {
      server.discard();
      lastError = err instanceof Error ? err : new Error(String(err));
      if (!(err instanceof PortInUseError)) throw lastError;
    }
  }
  throw lastError ?? new Error('startRedisServer failed');
}
