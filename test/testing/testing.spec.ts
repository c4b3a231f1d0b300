/**
 * `nestjs-redis-toolkit/testing`: docs/testing.md's Jest example is taken from the Markdown and run here as part of
 * this file (its describe blocks are registered by importing it), then the helpers are checked one by one.
 * The Vitest example runs in test/package/run.mjs, against the packed package.
 */
import 'reflect-metadata';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createConnection } from 'node:net';
import { join, relative } from 'node:path';
import { Injectable } from '@nestjs/common';
import { CacheService, RedisToolkitHealth, REDIS_CLIENT } from '../../lib/index.js';
import type { RedisClient } from '../../lib/common/lua-script.js';
import {
  createRedisTestingModule,
  startRedisCluster,
  startRedisServer,
  testConnection,
} from '../../lib/testing/index.js';
import { STATE_DIR } from '../../lib/testing/testing.processes.js';
import { docSnippet, repoRoot } from '../support/doc-snippets.js';
import { isLiveRedisServer } from '../support/redis-processes.js';
import { spawnTestingChild, TESTING_CHILD_PRELUDE } from '../support/testing-child.js';

const generated = join(repoRoot, 'test/testing/.generated');

function writeExample(name: string, code: string): string {
  mkdirSync(generated, { recursive: true });
  const to = (path: string) => relative(generated, join(repoRoot, path));
  const file = join(generated, `${name}.ts`);
  writeFileSync(
    file,
    code
      .replaceAll(`from 'nestjs-redis-toolkit/testing'`, `from '${to('lib/testing/index.js')}'`)
      .replaceAll(`from 'nestjs-redis-toolkit'`, `from '${to('lib/index.js')}'`),
  );
  return file;
}

// Top-level await: the example's describe/it blocks join this file's.
await import(writeExample('jest-example', docSnippet('docs/testing.md', 'jest-example')));

const portAnswers = (port: number): Promise<boolean> =>
  new Promise((resolve) => {
    const socket = createConnection({ host: '127.0.0.1', port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });

@Injectable()
class Visits {
  constructor(private readonly cache: CacheService) {}
  record(page: string): Promise<void> {
    return this.cache.set(`visits:${page}`, 1, { ttl: 60_000 });
  }
}

describe('nestjs-redis-toolkit/testing', () => {
  it('startRedisServer: a private server on a free loopback port, gone after stop()', async () => {
    const a = await startRedisServer();
    const b = await startRedisServer();
    try {
      expect(a.port).not.toBe(b.port);
      expect([a.port, b.port]).not.toContain(6379);
      expect(a.url).toBe(`redis://127.0.0.1:${a.port}`);
      expect(await portAnswers(a.port)).toBe(true);
    } finally {
      await a.stop();
      await b.stop();
    }
    expect(a.isRunning()).toBe(false);
    expect(await portAnswers(a.port)).toBe(false);
  });

  it('createRedisTestingModule: the toolkit on that server, with the given options', async () => {
    const redis = await startRedisServer();
    const moduleRef = await createRedisTestingModule({
      redis,
      toolkit: { keyPrefix: 'mine:' },
      providers: [Visits],
    }).compile();
    await moduleRef.init();
    try {
      await moduleRef.get(Visits).record('home');
      const client = moduleRef.get<RedisClient>(REDIS_CLIENT);
      const keys = await client.scan('0', 'MATCH', '*', 'COUNT', 100);
      expect(keys[1]).toHaveLength(1);
      expect(keys[1][0]).toMatch(/^mine:cache:visits.*home$/);
      expect((await moduleRef.get(RedisToolkitHealth).check()).status).toBe('up');
    } finally {
      await moduleRef.close();
      await redis.stop();
    }
  });

  it('a 3-master cluster from startRedisCluster serves the toolkit through createRedisTestingModule', async () => {
    const cluster = await startRedisCluster();
    try {
      expect(cluster.masters).toHaveLength(3);
      expect(testConnection(cluster)).toEqual({ cluster: cluster.startupNodes });
      const moduleRef = await createRedisTestingModule({ redis: cluster, providers: [Visits] }).compile();
      await moduleRef.init();
      try {
        const cache = moduleRef.get(CacheService);
        await Promise.all(['a', 'b', 'c', 'd', 'e', 'f'].map((p) => moduleRef.get(Visits).record(p)));
        expect(await Promise.all(['a', 'f', 'z'].map((p) => cache.get(`visits:${p}`)))).toEqual([1, 1, undefined]);
      } finally {
        await moduleRef.close();
      }
    } finally {
      await cluster.stop();
    }
  });
});

describe('a test process that dies leaves no redis-server behind', () => {
  // Runs startRedisServer in a Node process of its own (lib/testing transpiled with @swc/core, as the jest transform
  // does), so the test can send it a signal or let it crash.
  const CHILD_SCRIPT = `${TESTING_CHILD_PRELUDE}
    if (mode === 'own-handler') process.on('SIGTERM', () => { console.log('own handler'); process.exit(7); });
    const server = await startRedisServer();
    console.log(JSON.stringify({ pid: server.pid, port: server.port, dir: server.dir }));
    if (mode === 'crash') process.kill(process.pid, 'SIGKILL');
    if (mode !== 'exit') setInterval(() => undefined, 1_000); // alive until signalled
  `;

  interface Child {
    server: { pid: number; port: number; dir: string };
    /** Sends `signal`; resolves with how the process ended. */
    end(signal?: NodeJS.Signals): Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string }>;
  }

  async function startChild(mode: 'signal' | 'own-handler' | 'crash' | 'exit'): Promise<Child> {
    const outDir = mkdtempSync(join(STATE_DIR, 'child-build-'));
    const { child, output } = spawnTestingChild(CHILD_SCRIPT, outDir, mode);
    const closed = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
      child.once('close', (code, signal) => resolve({ code, signal })),
    );
    const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
    const report = () => output.stdout.split('\n').find((l) => l.startsWith('{'));
    while (report() === undefined && child.exitCode === null && child.signalCode === null)
      await new Promise((r) => setTimeout(r, 25));
    const line = report();
    if (line === undefined) {
      await closed;
      clearTimeout(timer);
      rmSync(outDir, { recursive: true, force: true });
      throw new Error(`child (${mode}) reported no server.\nstdout: ${output.stdout}\nstderr: ${output.stderr}`);
    }
    return {
      server: JSON.parse(line) as Child['server'],
      end: async (signal) => {
        if (signal) child.kill(signal);
        const ended = await closed;
        clearTimeout(timer);
        rmSync(outDir, { recursive: true, force: true });
        return { ...ended, stdout: output.stdout };
      },
    };
  }

  const gone = async (pid: number): Promise<boolean> => {
    for (let i = 0; i < 80 && isLiveRedisServer(pid); i++) await new Promise((r) => setTimeout(r, 25));
    return !isLiveRedisServer(pid);
  };

  it.each(['SIGTERM', 'SIGINT', 'SIGHUP'] as const)(
    'killed by %s: its servers are killed and their files removed, and it still dies of that signal',
    async (signal) => {
      const child = await startChild('signal');
      try {
        const ended = await child.end(signal);
        expect(ended.signal).toBe(signal);
        // before: the server outlived the process (no 'exit' event on a fatal signal)
        expect(await gone(child.server.pid)).toBe(true);
        expect(await portAnswers(child.server.port)).toBe(false);
        expect(existsSync(join(STATE_DIR, `${child.server.pid}.pid`))).toBe(false);
        expect(existsSync(child.server.dir)).toBe(false);
      } finally {
        if (isLiveRedisServer(child.server.pid)) process.kill(child.server.pid, 'SIGKILL');
      }
    },
  );

  it("a SIGTERM handler of the process's own keeps its behaviour; the servers go when it exits", async () => {
    const child = await startChild('own-handler');
    try {
      const ended = await child.end('SIGTERM');
      expect(ended.stdout).toContain('own handler');
      expect(ended).toMatchObject({ code: 7, signal: null });
      expect(await gone(child.server.pid)).toBe(true);
    } finally {
      if (isLiveRedisServer(child.server.pid)) process.kill(child.server.pid, 'SIGKILL');
    }
  });

  it('the first startRedisServer of a later process removes the servers a crashed one left', async () => {
    const crashed = await startChild('crash');
    try {
      expect((await crashed.end()).signal).toBe('SIGKILL');
      // No hook ran: the server is orphaned.
      expect(isLiveRedisServer(crashed.server.pid)).toBe(true);
      const later = await startChild('exit');
      await later.end();
      // before: only sweepStaleServers() (called by nobody but this repo's jest setup) removed it
      expect(await gone(crashed.server.pid)).toBe(true);
      expect(existsSync(join(STATE_DIR, `${crashed.server.pid}.pid`))).toBe(false);
      expect(existsSync(crashed.server.dir)).toBe(false);
    } finally {
      if (isLiveRedisServer(crashed.server.pid)) process.kill(crashed.server.pid, 'SIGKILL');
    }
  });
});
