/**
 * sweepStaleServers (run by the first startRedisServer of every test process) kills the servers that a crashed test
 * process left, found through their pid files. A pid file outlives its server when that server died without the
 * harness seeing it (killed by hand, the machine rebooted with a persistent temp dir, an OOM kill of the whole
 * group); its pid then gets reused, possibly by a redis-server that is not ours: a developer's Redis, or a server of
 * another test run on the same machine. That one must not be killed.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { getFreePort, startRedisServer, sweepStaleServers } from '../../lib/testing/index.js';
import { findOnPath, STATE_DIR, writePidFile } from '../../lib/testing/testing.processes.js';
import { probePing } from '../../lib/testing/testing.resp.js';
import { deadPid, isLiveRedisServer } from '../support/redis-processes.js';

/** A redis-server the harness did not start (its own dir, its own port), as a developer's would be. */
async function foreignServer(): Promise<{ pid: number; port: number; stop(): void }> {
  const dir = mkdtempSync(join(tmpdir(), 'rtk-foreign-redis-'));
  const port = await getFreePort();
  const bin = findOnPath('redis-server') as string;
  const child = spawn(bin, ['--bind', '127.0.0.1', '--port', String(port), '--save', '', '--dir', dir], {
    cwd: dir,
    stdio: 'ignore',
  });
  for (let i = 0; i < 200 && (await probePing(port, { timeoutMs: 200 })) !== 'pong'; i++)
    await new Promise((r) => setTimeout(r, 25));
  return {
    pid: child.pid as number,
    port,
    stop: () => {
      child.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

describe('sweepStaleServers and reused pids', () => {
  it('a stale pid file whose pid now belongs to a redis-server that is not ours: that server lives, the file goes', async () => {
    const foreign = await foreignServer();
    try {
      expect(await probePing(foreign.port)).toBe('pong');
      const owner = await deadPid();
      // What a crashed test process left for a server of its own, long gone, whose pid the foreign server now has.
      const pidFile = writePidFile({
        pid: foreign.pid,
        owner,
        port: await getFreePort(),
        dir: join(STATE_DIR, `srv-${owner}-gone`),
      });

      sweepStaleServers();

      // before: the foreign server was gone (SIGKILL), its port refused
      expect(isLiveRedisServer(foreign.pid)).toBe(true);
      expect(await probePing(foreign.port)).toBe('pong');
      expect(existsSync(pidFile)).toBe(false);
    } finally {
      foreign.stop();
    }
  });

  it('a server a crashed process left behind is still swept (its pid file names its dir and port)', async () => {
    const server = await startRedisServer();
    const owner = await deadPid();
    const pid = server.pid as number;
    // The same server, as if its owner had crashed: its pid file now names a dead owner.
    const pidFile = writePidFile({ pid, owner, port: server.port, dir: server.dir });
    try {
      expect(sweepStaleServers()).toBeGreaterThanOrEqual(1);
      for (let i = 0; i < 80 && isLiveRedisServer(pid); i++) await new Promise((r) => setTimeout(r, 25));
      expect(isLiveRedisServer(pid)).toBe(false);
      expect(existsSync(pidFile)).toBe(false);
    } finally {
      await server.stop();
    }
  });
});
