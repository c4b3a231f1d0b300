/**
 * `nestjs-redis-toolkit/testing` under Node's permission model (`--permission`; `--experimental-permission` on Node
 * 20): an operator who hardens the test runner as the app. The helpers need a child process, writes under their state
 * dir and, on Node 25+, the network; a process without one of them must stop at the start with one typed error naming
 * every missing flag, not with Node's ERR_ACCESS_DENIED from inside a spawn or a mkdtemp, one flag per try. And the
 * flags that error names must be enough, from a machine where the state dir does not exist yet.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { findOnPath } from '../../lib/testing/testing.processes.js';
import { repoRoot } from '../support/doc-snippets.js';
import { TESTING_CHILD_PRELUDE } from '../support/testing-child.js';

const TESTING_DIR = fileURLToPath(new URL('../../lib/testing/', import.meta.url));
const PERMISSION = process.allowedNodeEnvironmentFlags.has('--permission')
  ? '--permission'
  : '--experimental-permission';
/** Node 25+ gates the network: the helpers' free-port probe and PING need --allow-net there. */
const NET_GATED = process.allowedNodeEnvironmentFlags.has('--allow-net');

let work: string;
let built: string;

/** Runs `script` as an ES module in a Node process of its own with `flags`; resolves with its stdout and stderr. */
function node(flags: string[], script: string, args: string[], env: NodeJS.ProcessEnv = process.env) {
  return new Promise<{ stdout: string; stderr: string; code: number | null }>((resolve) => {
    const child = spawn(process.execPath, [...flags, '--input-type=module', '-e', script, ...args], {
      cwd: repoRoot,
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ stdout, stderr, code });
    });
  });
}

/**
 * A child script that calls `call` (a function of the transpiled `testing/<file>`'s exports) and prints what became of
 * it as one JSON line: what it returned, or the error it threw.
 */
const helperScript = (file: string, call: string) => `
  const { join } = await import('node:path');
  const { pathToFileURL } = await import('node:url');
  const [built] = process.argv.slice(1);
  const helpers = await import(pathToFileURL(join(built, 'testing/${file}')).href);
  try {
    console.log(JSON.stringify(await (${call})(helpers)));
  } catch (err) {
    console.log(JSON.stringify({ name: err.constructor.name, code: err.code, message: err.message }));
  }
`;

const START = helperScript(
  'testing.redis-server.js',
  `async ({ startRedisServer }) => {
    const server = await startRedisServer();
    await server.stop();
    return { started: server.port > 0, dir: server.dir };
  }`,
);
const SWEEP = helperScript('testing.processes.js', '({ sweepStaleServers }) => ({ swept: sweepStaleServers() })');

/** Runs `script` under `flags` with `tmp` as its os.tmpdir(); its JSON line. */
async function reportOf(flags: string[], script: string, tmp: string) {
  const ran = await node(flags, script, [built], { ...process.env, TMPDIR: tmp });
  const line = ran.stdout.split('\n').find((l) => l.startsWith('{'));
  if (line === undefined)
    throw new Error(`no report (exit ${ran.code}).\nstdout: ${ran.stdout}\nstderr: ${ran.stderr}`);
  return { report: JSON.parse(line) as Record<string, unknown>, stderr: ran.stderr };
}

/**
 * startRedisServer under --permission with `grants`, its os.tmpdir() a fresh dir (no state dir in it yet); every file
 * readable unless `read` says which.
 */
async function startUnder(grants: (tmp: string, stateDir: string) => string[], read = ['*']) {
  const tmp = mkdtempSync(join(work, 'tmp-'));
  const stateDir = join(tmp, 'rtk-test-redis');
  const flags = [PERMISSION, ...read.map((path) => `--allow-fs-read=${path}`), ...grants(tmp, stateDir)];
  return { ...(await reportOf(flags, START, tmp)), stateDir };
}

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), 'rtk-permissions-'));
  built = join(work, 'built');
  mkdirSync(built);
  // the transpile writes files: without the permission model, then the files are loaded under it
  const ran = await node([], TESTING_CHILD_PRELUDE, [TESTING_DIR, built, 'build']);
  if (ran.code !== 0) throw new Error(`transpile failed: ${ran.stderr}`);
}, 60_000);

afterAll(() => rmSync(work, { recursive: true, force: true }));

describe(`startRedisServer under ${PERMISSION}`, () => {
  it('with --allow-fs-read alone: RedisServerPermissionError naming every missing flag, before anything starts', async () => {
    const { report, stateDir, stderr } = await startUnder(() => []);
    expect(report.name).toBe('RedisServerPermissionError');
    expect(report.code).toBe('E_REDIS_SERVER_PERMISSION');
    const named = ['--allow-child-process', `--allow-fs-write=${join(stateDir, '*')}`, '--allow-net'].filter((flag) =>
      String(report.message).includes(flag),
    );
    expect(named).toEqual([
      '--allow-child-process',
      `--allow-fs-write=${join(stateDir, '*')}`,
      ...(NET_GATED ? ['--allow-net'] : []),
    ]);
    expect(stderr).not.toMatch(/ERR_ACCESS_DENIED/);
  });

  it('the state dir granted alone while it did not exist (Node grants it as a file): the error says so', async () => {
    const { report, stateDir } = await startUnder((_tmp, stateDir) => [
      '--allow-child-process',
      `--allow-fs-write=${stateDir}`,
      ...(NET_GATED ? ['--allow-net'] : []),
    ]);
    expect(report.code).toBe('E_REDIS_SERVER_PERMISSION');
    expect(report.message).toContain(`--allow-fs-write=${join(stateDir, '*')}`);
    expect(report.message).toContain('granted as a file');
    expect(report.message).not.toContain('--allow-child-process');
  });

  it("redis-server's dir on PATH not readable: the error names the dirs and --allow-fs-read, not 'redis-server not found'", async () => {
    const everyGrant = (_tmp: string, stateDir: string) => [
      '--allow-child-process',
      `--allow-fs-write=${join(stateDir, '*')}`,
      ...(NET_GATED ? ['--allow-net'] : []),
    ];
    // the repo (the transpiled files' imports) and this spec's dir (them, and the state dir) only
    const { report } = await startUnder(everyGrant, [join(repoRoot, '*'), join(work, '*')]);
    // showed: RedisServerNotFoundError "redis-server not found: apt-get install -y redis-server …", installed
    expect(report.name).toBe('RedisServerPermissionError');
    expect(report.message).toMatch(/cannot look for redis-server: .* keep it from reading .* Grant --allow-fs-read=/);
    expect(report.message).toContain(dirname(findOnPath('redis-server') as string));
  });

  it("sweepStaleServers without --allow-fs-write: RedisServerPermissionError naming it, a crashed run's dir left", async () => {
    const tmp = mkdtempSync(join(work, 'tmp-'));
    const stateDir = join(tmp, 'rtk-test-redis');
    // a crashed run's server dir: its owner pid (the largest Linux allows) runs no process
    const stale = join(stateDir, 'srv-4194304-abcdef');
    mkdirSync(stale, { recursive: true });
    const { report } = await reportOf([PERMISSION, '--allow-fs-read=*'], SWEEP, tmp);
    // showed: Error [ERR_ACCESS_DENIED] from inside its rmSync
    expect(report.name).toBe('RedisServerPermissionError');
    expect(report.message).toContain(`--allow-fs-write=${join(stateDir, '*')}`);
    expect(report.message).not.toContain('--allow-child-process');
    expect(existsSync(stale)).toBe(true);
  });

  it('with the flags the error names, a server starts from a machine without the state dir', async () => {
    const { report, stateDir } = await startUnder((_tmp, stateDir) => [
      '--allow-child-process',
      `--allow-fs-write=${join(stateDir, '*')}`,
      ...(NET_GATED ? ['--allow-net'] : []),
    ]);
    expect(report).toEqual({ started: true, dir: expect.stringContaining(join(stateDir, 'srv-')) });
  });
});
