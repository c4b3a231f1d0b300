/**
 * `nestjs-redis-toolkit/testing`: docs/testing.md's Jest example is taken from the Markdown and run here as part of
 * this file (its describe blocks are registered by importing it), then the helpers are checked one by one.
 * The Vitest example runs in test/package/run.mjs, against the packed package.
 */
import 'reflect-metadata';
import { mkdirSync, writeFileSync } from 'node:fs';
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
import { docSnippet, repoRoot } from '../support/doc-snippets.js';

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
