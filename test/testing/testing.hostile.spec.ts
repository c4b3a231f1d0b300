/**
 * `nestjs-redis-toolkit/testing` against hostile options and a hostile temp dir: what docs/testing.md promises (a
 * loopback server on a free port, never 6379, nothing on disk, killed when the process ends, swept after a crash,
 * InvalidOptionsError before anything starts) must hold whatever the options say, and a pid file someone else wrote
 * must not make the sweep kill a Redis that is not the harness's.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { InvalidOptionsError, RedisToolkitError } from '../../lib/index.js';
import * as testing from '../../lib/testing/index.js';
import { getFreePort, startRedisCluster, startRedisServer, sweepStaleServers } from '../../lib/testing/index.js';
import { findOnPath, STATE_DIR, writePidFile } from '../../lib/testing/testing.processes.js';
import { probePing } from '../../lib/testing/testing.resp.js';
import { deadPid, isLiveRedisServer } from '../support/redis-processes.js';

describe('startRedisServer: args cannot take over what the harness owns', () => {
  // `args` are appended after the harness's own (so they win): `--dir` moved the server out of its dir (files left on
  // disk, and a crashed run's server never swept: the sweep knows it by its dir), `--port 6379` put it on the port the
  // harness promises never to touch, `--bind 0.0.0.0` off loopback, `--daemonize yes` forked it away from the process
  // that reaps it (the started process exits at once, the daemon lives on, untracked), `--include` any of these.
  it.each([
    ['--dir', 'elsewhere'],
    ['--port', '6379'],
    ['--PORT', '6390'],
    ['--bind', '0.0.0.0'],
    ['--daemonize', 'yes'],
    ['--include', '/etc/redis/redis.conf'],
  ])('%s %s: InvalidOptionsError before anything starts', async (flag, value) => {
    const args = [flag, flag === '--dir' ? mkdtempSync(join(tmpdir(), 'rtk-hostile-dir-')) : value];
    const before = existsSync(STATE_DIR) ? readdirSync(STATE_DIR).filter((n) => n.endsWith('.pid')).length : 0;
    const started = await startRedisServer({ args }).catch((err: unknown) => err);
    try {
      // before (--dir): a server started in that dir
      expect(started).toBeInstanceOf(InvalidOptionsError);
      expect((started as Error).message).toContain(`args must not set ${flag.slice(2).toLowerCase()}`);
      expect(readdirSync(STATE_DIR).filter((n) => n.endsWith('.pid')).length).toBe(before);
    } finally {
      if (!(started instanceof Error)) await (started as { stop(): Promise<void> }).stop();
      if (flag === '--dir') rmSync(args[1], { recursive: true, force: true });
    }
  });

  it("'--bind 0.0.0.0' as one argument (redis-server reads it as the directive and its value): refused alike", async () => {
    const started = await startRedisServer({ args: ['--bind 0.0.0.0'] }).catch((err: unknown) => err);
    try {
      expect(started).toBeInstanceOf(InvalidOptionsError);
      expect((started as Error).message).toContain('args must not set bind');
    } finally {
      if (!(started instanceof Error)) await (started as { stop(): Promise<void> }).stop();
    }
  });

  it('a server that exits at once (a directive it refuses): RedisServerStartError with its log, not a plain Error', async () => {
    const err = await startRedisServer({ args: ['--maxmemory', 'lots'] }).catch((e: unknown) => e);
    // before: a plain Error with the same text, told apart from a test's own failure only by it
    expect(err).toBeInstanceOf(testing.RedisServerStartError);
    expect(err).toBeInstanceOf(RedisToolkitError);
    expect((err as Error & { code: string }).code).toBe('E_REDIS_SERVER_START');
    expect((err as Error).message).toMatch(/exited early[\s\S]*maxmemory/);
  });

  it('other args still reach the server (they win over the defaults)', async () => {
    const server = await startRedisServer({ args: ['--maxmemory', '12mb', '--maxmemory-policy', 'allkeys-lru'] });
    try {
      expect(await probePing(server.port)).toBe('pong');
      const { rawCommand } = await import('../../lib/testing/testing.resp.js');
      expect(await rawCommand(server.port, ['CONFIG', 'GET', 'maxmemory-policy'])).toEqual([
        'maxmemory-policy',
        'allkeys-lru',
      ]);
    } finally {
      await server.stop();
    }
  });
});

describe('startRedisCluster: counts past any sensible cluster', () => {
  it.each([
    [{ replicasPerMaster: 2 ** 32 }, 'replicasPerMaster'],
    [{ masters: Number.MAX_SAFE_INTEGER }, 'masters'],
  ])('%j: InvalidOptionsError before any node starts', async (options, name) => {
    const err = await startRedisCluster(options).catch((e: unknown) => e);
    // before: RangeError (Invalid array length) from building the list of nodes; a smaller large count started that
    // many redis-server processes
    expect(err).toBeInstanceOf(InvalidOptionsError);
    expect((err as Error).message).toContain(`${name} must be an integer`);
  });
});

describe('sweepStaleServers and a pid file it did not write', () => {
  it("a pid file naming a live redis-server and that server's own dir (not a harness dir): the server lives", async () => {
    // What anyone who can write to the shared temp dir can leave there (or a stale file of a hand-made setup): the
    // record of a "crashed run" whose pid is a Redis of someone else, with that Redis's real working dir.
    const dir = mkdtempSync(join(tmpdir(), 'rtk-not-ours-'));
    const port = await getFreePort();
    const child = spawn(
      findOnPath('redis-server') as string,
      ['--bind', '127.0.0.1', '--port', String(port), '--save', '', '--dir', dir],
      { cwd: dir, stdio: 'ignore' },
    );
    try {
      for (let i = 0; i < 200 && (await probePing(port, { timeoutMs: 200 })) !== 'pong'; i++)
        await new Promise((r) => setTimeout(r, 25));
      expect(await probePing(port)).toBe('pong');
      const pidFile = writePidFile({ pid: child.pid as number, owner: await deadPid(), port, dir });
      sweepStaleServers();
      // before: SIGKILLed (its cmdline says redis-server and its cwd is the recorded dir)
      expect(isLiveRedisServer(child.pid as number)).toBe(true);
      expect(await probePing(port)).toBe('pong');
      expect(existsSync(pidFile)).toBe(false);
      expect(existsSync(dir)).toBe(true);
    } finally {
      child.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
