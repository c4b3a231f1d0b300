import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { Cluster, Redis } from 'ioredis';
import { ensureBuilt, ROOT } from '../support/built.js';
import { sharedServers } from '../support/shared-servers.js';
import { connectionFor } from '../support/toolkit-app.js';

const child = fileURLToPath(new URL('./fixtures/race-child.mjs', import.meta.url));

/** The children use the compiled library. */
beforeAll(() => ensureBuilt('dist/lib/index.js', ['lib']), 120_000);

interface ChildReport {
  pid: number;
  loads: number;
  loadedBy: number[];
}

function runChild(args: string[]): Promise<ChildReport> {
  return new Promise((resolve, reject) => {
    const proc = spawn(process.execPath, [child, ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    proc.stdout.on('data', (d: Buffer) => (out += d.toString()));
    proc.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const timer = setTimeout(() => proc.kill('SIGKILL'), 25_000);
    proc.on('exit', (code) => {
      clearTimeout(timer);
      if (code !== 0) reject(new Error(`child exited with ${code}: ${err}`));
      else resolve(JSON.parse(out.trim().split('\n').pop()!) as ChildReport);
    });
  });
}

describe.each(['single', 'cluster'] as const)('4 processes racing on one cold key (%s)', (target) => {
  it('call the loader exactly once in total', async () => {
    const connection = connectionFor(target);
    const keyPrefix = `rtk-mp${randomBytes(4).toString('hex')}:`;
    const counterKey = `${keyPrefix}loads`;
    const startAt = Date.now() + 2_500; // every child is connected by then, so they really race
    const reports = await Promise.all(
      Array.from({ length: 4 }, () =>
        runChild([JSON.stringify(connection), keyPrefix, 'hot', counterKey, String(startAt)]),
      ),
    );
    const redis = target === 'cluster' ? new Cluster(sharedServers().cluster) : new Redis(sharedServers().single.url);
    try {
      expect(Number(await redis.get(counterKey))).toBe(1);
      await redis.del(counterKey);
    } finally {
      redis.disconnect();
    }
    expect(reports.reduce((s, r) => s + r.loads, 0)).toBe(1);
    // Every caller in every process got the one loaded value.
    const loaders = new Set(reports.flatMap((r) => r.loadedBy));
    expect(loaders.size).toBe(1);
    expect(reports.map((r) => r.pid)).toContain([...loaders][0]);
  }, 60_000);
});
