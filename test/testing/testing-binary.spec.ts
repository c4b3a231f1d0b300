/**
 * `nestjs-redis-toolkit/testing` without a usable redis-server: a newcomer's CI image without Redis, or with a
 * distribution's old one. The test must stop at startRedisServer / startRedisCluster with a typed error naming the
 * remedy, not later with an unknown command inside a feature (PEXPIRETIME: sessions, SPUBLISH: cluster pub/sub).
 */
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RedisToolkitError } from '../../lib/index.js';
import * as testing from '../../lib/testing/index.js';
import { findOnPath } from '../../lib/testing/testing.processes.js';

// A namespace import, so that this file also ran before the error classes existed (and failed on them).
const { RedisServerNotFoundError, RedisServerTooOldError, startRedisCluster, startRedisServer } = testing;
type Typed = Error & { code: string };
const realPath = process.env.PATH;
const realServer = findOnPath('redis-server') as string;
let bin: string;

beforeEach(() => {
  bin = mkdtempSync(join(tmpdir(), 'rtk-fake-bin-'));
});
afterEach(() => {
  process.env.PATH = realPath;
  rmSync(bin, { recursive: true, force: true });
});

/** A `redis-server` on PATH that reports `version` and otherwise runs the real one. */
function fakeServer(version: string): void {
  const script = join(bin, 'redis-server');
  writeFileSync(
    script,
    `#!/bin/sh\nif [ "$1" = "--version" ]; then echo "Redis server v=${version} sha=00000000:0 malloc=libc bits=64 build=0"; exit 0; fi\nexec "${realServer}" "$@"\n`,
  );
  chmodSync(script, 0o755);
}

describe('startRedisServer without a usable redis-server', () => {
  it('none on PATH: RedisServerNotFoundError, a RedisToolkitError with its code and the install line', async () => {
    process.env.PATH = bin; // nothing in it
    const err = await startRedisServer().catch((e: unknown) => e);
    // before: a plain Error ('redis-server not found: apt-get install -y redis-server'), no code
    expect(err).toBeInstanceOf(RedisServerNotFoundError);
    expect(err).toBeInstanceOf(RedisToolkitError);
    expect((err as Typed).code).toBe('E_REDIS_SERVER_NOT_FOUND');
    expect((err as Error).message).toContain('apt-get install -y redis-server');
    expect((err as Error).message).toContain('brew install redis');
  });

  it.each(['6.2.14', '5.0.7'])(
    'redis-server %s: RedisServerTooOldError naming the version found and the one needed',
    async (version) => {
      fakeServer(version);
      process.env.PATH = `${bin}:${realPath}`;
      const err = await startRedisServer().catch((e: unknown) => e);
      // before: it started (resolved with a handle)
      expect(err).toBeInstanceOf(RedisServerTooOldError);
      expect((err as Typed).code).toBe('E_REDIS_SERVER_TOO_OLD');
      expect((err as Error).message).toContain(`redis-server ${version}`);
      expect((err as Error).message).toContain('7.0');
      expect((err as Error).message).toContain(join(bin, 'redis-server'));
    },
  );

  it('a cluster with an old redis-server fails the same way, with no node started', async () => {
    fakeServer('6.2.14');
    process.env.PATH = `${bin}:${realPath}`;
    await expect(startRedisCluster()).rejects.toBeInstanceOf(RedisServerTooOldError);
  });

  it.each(['7.0.15', '7.2.4', '8.0.1'])('redis-server %s starts (so the checks above can fail)', async (version) => {
    fakeServer(version);
    process.env.PATH = `${bin}:${realPath}`;
    const server = await startRedisServer();
    try {
      expect(server.isRunning()).toBe(true);
    } finally {
      await server.stop();
    }
  });
});
