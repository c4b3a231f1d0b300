/**
 * The process side of the test servers: a registry of every redis-server this Node process started (shared across
 * Jest's per-file module registries), pid files so a later run can reap servers of a crashed one, free ports and the
 * redis-server binary.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import {
  mkdirSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  realpathSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { basename, delimiter, dirname, join } from 'node:path';
import { enforcedPermissions, isPermissionRefusal } from '../common/runtime-permissions.js';
import {
  INSTALL_HINT,
  RedisServerNotFoundError,
  RedisServerPermissionError,
  RedisServerTooOldError,
} from './testing.errors.js';
import { FORBIDDEN_PORT, HOST, STATE_DIR } from './testing.paths.js';
import { refuseDeniedHelpers } from './testing.permissions.js';
import { errorCode } from './testing.resp.js';

export { FORBIDDEN_PORT, HOST, STATE_DIR };

// ---------------------------------------------------------------------------------------------------------------
// Process-wide registry
// ---------------------------------------------------------------------------------------------------------------

interface TrackedServer {
  readonly pidFile: string;
}

export interface HostState {
  /** Running servers by pid. */
  readonly tracked: Map<number, TrackedServer>;
  /** Temp dirs to delete at exit. */
  readonly dirs: Set<string>;
  /** Ports handed out to servers of this process, so parallel starts do not race for the same one. */
  readonly ports: Set<number>;
  /** This process's port reservations (reservePort), removed at its exit; optional: another copy made the state. */
  reservations?: Set<string>;
  exitHookInstalled: boolean;
  /** Whether this process swept the servers of crashed earlier runs (on its first startRedisServer). */
  swept: boolean;
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
export const hostProcess: NodeJS.Process = host.process;
const STATE_KEY = Symbol.for('rtk-test-redis.state');

function hostState(): HostState {
  const slot = host as unknown as Record<symbol, HostState | undefined>;
  const existing = slot[STATE_KEY];
  if (existing) return existing;
  const state: HostState = {
    tracked: new Map(),
    dirs: new Set(),
    ports: new Set(),
    exitHookInstalled: false,
    swept: false,
  };
  slot[STATE_KEY] = state;
  return state;
}

/** Module-level handle on the process-wide registry. */
export const registry = hostState();

/** Signals whose default action ends the process without an 'exit' event: its servers would outlive it. */
const FATAL_SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;

/** Kills every server this process still tracks and removes their files: synchronous (SIGKILL, sync fs calls). */
function reapAll(): void {
  for (const [pid, tracked] of registry.tracked) {
    trySignal(pid, 'SIGKILL');
    rmSync(tracked.pidFile, { force: true });
  }
  registry.tracked.clear();
  for (const dir of registry.dirs) rmSync(dir, { recursive: true, force: true });
  registry.dirs.clear();
  for (const file of registry.reservations ?? []) rmSync(file, { force: true });
  registry.reservations?.clear();
}

/**
 * Reaps this process's servers when it exits, and when it is killed by SIGINT, SIGTERM or SIGHUP (Ctrl-C, a CI
 * runner's timeout), which end it without an 'exit' event. On such a signal, when no other listener of the process
 * handles it, the servers are reaped and the signal raised again with its default action, so the process still dies
 * of it (exit status included). When another listener handles it (a graceful shutdown), that listener decides what
 * happens; the servers go with the 'exit' event if the process exits.
 */
export function installExitHook(): void {
  if (registry.exitHookInstalled) return;
  registry.exitHookInstalled = true;
  hostProcess.on('exit', reapAll);
  for (const signal of FATAL_SIGNALS) {
    const onSignal = (): void => {
      if (hostProcess.listenerCount(signal) > 1) return;
      reapAll();
      hostProcess.off(signal, onSignal); // the default action again: the signal below ends the process
      hostProcess.kill(hostProcess.pid, signal);
    };
    hostProcess.on(signal, onSignal);
  }
}

function trySignal(pid: number, signal: NodeJS.Signals | 0): boolean {
  try {
    hostProcess.kill(pid, signal);
    return true;
  } catch {
    return false;
  }
}

/**
 * Signals a server the harness started, by its pid rather than `child.kill()`: Deno 2.9's ChildProcess sends only the
 * first kill() and ignores later ones, so stop() sent SIGCONT and never SIGTERM, nor SIGKILL after the grace, and hung
 * there. A process already gone is no error, as with child.kill().
 */
export function signalChild(child: ChildProcess, signal: NodeJS.Signals): void {
  if (child.pid !== undefined) trySignal(child.pid, signal);
}

export function isAlive(pid: number): boolean {
  try {
    hostProcess.kill(pid, 0);
    return true;
  } catch (err) {
    // a runtime that may not signal (Deno without --allow-run) knows nothing of the pid: read as gone, a live run's
    // server dir and pid file were removed (until 2026-12-07)
    if (isPermissionRefusal(err)) throw err;
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

export function writePidFile(record: PidFileRecord): string {
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

/**
 * Whether the record's server still runs: a redis-server at its pid whose working dir is the record's dir (each server
 * is started in a dir of its own). A pid file can outlive its server (killed by hand, a reboot with a persistent temp
 * dir), and its pid be reused by a redis-server that is not ours — a developer's Redis, another run's server — which
 * the name alone does not tell apart; and a record whose dir is not a harness dir (`STATE_DIR/srv-*`) is never one of
 * ours. Linux only (/proc); elsewhere nothing is killed.
 */
function isServerOf(record: PidFileRecord): boolean {
  // Only a server the harness started runs in a dir of its own under STATE_DIR (`srv-<owner pid>-...`): a record
  // naming any other dir (written by hand, or by anyone who may write to the shared temp dir) is not a harness server,
  // whatever runs there. Until 2026-12-06 a record naming the pid and working dir of any live redis-server got it
  // SIGKILLed (test/testing/testing.hostile.spec.ts).
  if (dirname(record.dir) !== STATE_DIR || !basename(record.dir).startsWith('srv-')) return false;
  try {
    if (!readFileSync(`/proc/${record.pid}/cmdline`, 'utf8').includes('redis-server')) return false;
    const cwd = readlinkSync(`/proc/${record.pid}/cwd`).replace(/ \(deleted\)$/, '');
    // /proc shows the resolved path: the temp dir may sit behind a symlink (TMPDIR)
    return cwd === record.dir || cwd === join(realpathSync(dirname(record.dir)), basename(record.dir));
  } catch {
    return false; // gone, or not ours to inspect (another user's process)
  }
}

/**
 * Kills redis-servers left behind by crashed earlier runs and deletes their pid files, temp dirs and port
 * reservations (testing.ports.ts).
 * Only entries whose owning test process is gone are touched, so concurrent test runs are safe, and only a pid that
 * is still the recorded server (a redis-server running in the recorded dir: pids get reused) is signalled. Returns
 * how many were killed. Under a permission model without what it needs (the state dir; on Deno --allow-run, without
 * which no owner could be told alive) it throws RedisServerPermissionError before touching anything.
 */
export function sweepStaleServers(): number {
  refuseDeniedHelpers('sweep');
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
    if (record && isServerOf(record) && trySignal(record.pid, 'SIGKILL')) killed++;
    rmSync(file, { force: true });
  }
  for (const name of entries) {
    const owner = /^srv-(\d+)-/.exec(name)?.[1] ?? (name.startsWith(PORT_FILE) ? portOwner(name) : undefined);
    if (owner !== undefined && !isAlive(Number(owner))) rmSync(join(STATE_DIR, name), { recursive: true, force: true });
  }
  return killed;
}

// ---------------------------------------------------------------------------------------------------------------
// Port reservations (testing.ports.ts) and binaries
// ---------------------------------------------------------------------------------------------------------------

/** A reservation's file in STATE_DIR is this and the port; it holds the owning process's pid. */
export const PORT_FILE = 'port-';

/** The pid in a reservation's file (as a string), or undefined when it cannot be read. */
export function portOwner(name: string): string | undefined {
  try {
    const pid = readFileSync(join(STATE_DIR, name), 'utf8');
    return /^\d+$/.test(pid) ? pid : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Absolute path of `name` on PATH, or undefined. A file with an execute bit, read by stat alone (access(X_OK) needs
 * Deno's --allow-sys too). A PATH dir the runtime's permissions keep it from reading is not a dir without it: when
 * `name` is found nowhere else, RedisServerPermissionError names the dirs and the grant (until 2026-12-07 "redis-server
 * not found", with redis-server installed, under Node's --allow-fs-read of the app alone or Deno without --allow-sys).
 */
export function findOnPath(name: string): string | undefined {
  const refused = new Set<string>();
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (!dir) continue;
    const candidate = join(dir, name);
    try {
      const stat = statSync(candidate);
      if (stat.isFile() && (stat.mode & 0o111) !== 0) return candidate;
    } catch (err) {
      if (isPermissionRefusal(err)) refused.add(dir);
      // else: not here
    }
  }
  if (refused.size === 0) return undefined;
  const grant = enforcedPermissions() === undefined ? '--allow-read' : '--allow-fs-read';
  throw new RedisServerPermissionError(
    `nestjs-redis-toolkit/testing cannot look for ${name}: the runtime's permissions keep it from reading ` +
      `${[...refused].join(', ')} on PATH, and it is in no other dir there. ` +
      `Grant ${grant}=<the dir that holds ${name}>.`,
  );
}

/** The redis-server major version the toolkit needs (PEXPIRETIME for sessions, SPUBLISH for pub/sub on a cluster). */
const MIN_MAJOR = 7;
/** Binaries whose version was checked (once per process: `--version` is a process of its own). */
const checkedBinaries = new Set<string>();

/**
 * The redis-server on PATH; RedisServerNotFoundError without one, RedisServerTooOldError when it is older than 7.0
 * (it would start, and a test fail later on an unknown command). A version it cannot read is let through.
 */
export function redisServerBinary(): string {
  const bin = findOnPath('redis-server');
  if (!bin) throw new RedisServerNotFoundError(`redis-server not found: ${INSTALL_HINT}; it must be on PATH`);
  if (checkedBinaries.has(bin)) return bin;
  let out = '';
  try {
    out = execFileSync(bin, ['--version'], { encoding: 'utf8', timeout: 5_000, stdio: ['ignore', 'pipe', 'ignore'] });
  } catch {
    // unreadable: the launch reports what is wrong with it, with its log
  }
  const version = /\bv=(\d+)\.(\d+)\.(\d+)/.exec(out);
  if (version && Number(version[1]) < MIN_MAJOR)
    throw new RedisServerTooOldError(
      `redis-server ${version[1]}.${version[2]}.${version[3]} (${bin}) is older than ${MIN_MAJOR}.0, which the ` +
        `toolkit needs (PEXPIRETIME for sessions, SPUBLISH for pub/sub on a cluster): install Redis ${MIN_MAJOR}.0 ` +
        `or later (${INSTALL_HINT}, on a current release) or put it first on PATH`,
    );
  checkedBinaries.add(bin);
  return bin;
}

/** redis-cli (for `--cluster create`); RedisServerNotFoundError without it. */
export function redisCliBinary(): string {
  const bin = findOnPath('redis-cli');
  if (!bin)
    throw new RedisServerNotFoundError(`redis-cli not found on PATH (it comes with redis-server): ${INSTALL_HINT}`);
  return bin;
}
