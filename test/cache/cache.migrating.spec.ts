import 'reflect-metadata';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import type { INestApplication, Type } from '@nestjs/common';
import { Test } from '@nestjs/testing';
import request from 'supertest';
import { CacheService } from '../../lib/index.js';
import { KeyBuilder, RedisConnection } from '../../lib/advanced.js';
import type { RedisClient } from '../../lib/common/lua-script.js';
import { docSnippet, repoRoot } from '../support/doc-snippets.js';
import { sharedServers } from '../support/shared-servers.js';
import { PLATFORMS, closeToolkitApps, createToolkitApp } from '../support/toolkit-app.js';

/** The "after" blocks of docs/migrating.md's @nestjs/cache-manager section, run as written (issue 13). */

const generated = join(repoRoot, 'test/cache/.generated');

/** Writes a block as a module of this repo, with the package names pointed at lib/, and imports it. */
async function importSnippet<T>(name: string): Promise<T> {
  mkdirSync(generated, { recursive: true });
  const lib = (entry: string) => relative(generated, join(repoRoot, `lib/${entry}`));
  const code = docSnippet('docs/migrating.md', name)
    .replaceAll(`from 'nestjs-redis-toolkit/advanced'`, `from '${lib('advanced.js')}'`)
    .replaceAll(`from 'nestjs-redis-toolkit'`, `from '${lib('index.js')}'`);
  const file = join(generated, `${name}.ts`);
  writeFileSync(file, code);
  return (await import(file)) as T;
}

const AsyncFunction = Object.getPrototypeOf(async () => undefined).constructor as new (
  ...args: string[]
) => (...values: unknown[]) => Promise<unknown>;

afterEach(closeToolkitApps);
afterAll(() => rmSync(generated, { recursive: true, force: true }));

describe('docs/migrating.md: from @nestjs/cache-manager', () => {
  it('module options: boots against Redis with defaultTtl, staleTtl and an L1', async () => {
    const saved = process.env.REDIS_URL;
    process.env.REDIS_URL = sharedServers().single.url; // read when the module's decorator runs, at import
    let app: INestApplication | undefined;
    try {
      const { AppModule } = await importSnippet<{ AppModule: Type<unknown> }>('cache-manager-module');
      const moduleRef = await Test.createTestingModule({ imports: [AppModule] }).compile();
      app = moduleRef.createNestApplication({ logger: ['error'] });
      await app.init();
      const cache = app.get(CacheService);
      const client = app.get(RedisConnection).client as RedisClient;
      await cache.set('migrated', 1);
      // defaultTtl 60 s + staleTtl 10 s: the key lives 70 s
      const pttl = await client.pttl('rtk:cache:migrated');
      expect(pttl).toBeGreaterThan(65_000);
      expect(pttl).toBeLessThanOrEqual(70_000);
      expect(await cache.ttl('migrated')).toBeLessThanOrEqual(60_000);
      await cache.del('migrated');
    } finally {
      process.env.REDIS_URL = saved;
      await app?.close();
    }
  });

  it('the calls: set/get/mset/mget/ttl/getOrSet/del/clear', async () => {
    const app = await createToolkitApp({ keyPrefix: 'rtk-migrating-calls:' });
    const cache = app.get(CacheService);
    const client = app.get(RedisConnection).client as RedisClient;
    await client.set('outside-the-cache', 'kept');
    let loads = 0;
    const loadProfile = async (id: number) => {
      loads++;
      return { id, bio: 'x' };
    };
    const code = docSnippet('docs/migrating.md', 'cache-manager-calls').replace(/^\/\/ after\n/, '');
    const run = new AsyncFunction(
      'cache',
      'loadProfile',
      `${code}\nreturn { user, first, second, msLeft, profile, removed, cleared };`,
    );
    const out = (await run(cache, loadProfile)) as Record<string, unknown>;
    expect(out.user).toEqual({ name: 'Ada' });
    expect(out.first).toEqual({ name: 'Ada' });
    expect(out.second).toEqual({ name: 'Bob' });
    expect(out.msLeft).toBeGreaterThan(55_000);
    expect(out.msLeft).toBeLessThanOrEqual(60_000);
    expect(out.profile).toEqual({ id: 1, bio: 'x' });
    expect(loads).toBe(1);
    expect(out.removed).toBe(2);
    expect(out.cleared).toBe(1); // profile:1 was left; clear() removed it and nothing outside the cache
    expect(await client.get('outside-the-cache')).toBe('kept');
    await client.del('outside-the-cache');
  });

  describe.each(PLATFORMS)('the interceptor on %s', (platform) => {
    it('HIT on the second request, @CacheKey and @CacheTTL (number and function of the body) applied', async () => {
      const { ProductsController } = await importSnippet<{ ProductsController: Type<unknown> }>(
        'cache-manager-interceptor',
      );
      const keyPrefix = `rtk-migrating-${platform}:`;
      const app = await createToolkitApp({ keyPrefix, controllers: [ProductsController], http: true, platform });
      const client = app.get(RedisConnection).client as RedisClient;
      const server = app.app.getHttpServer();
      const first = await request(server).get('/products?page=2').expect(200);
      expect(first.headers['x-cache']).toBe('MISS');
      expect(first.body).toEqual({ page: '2', items: ['tea', 'cake'] });
      expect((await request(server).get('/products?page=2').expect(200)).headers['x-cache']).toBe('HIT');
      const keys = new KeyBuilder(keyPrefix);
      const listTtl = await client.pttl(keys.key('cache', 'http:/products?page=2'));
      expect(listTtl).toBeGreaterThan(25_000);
      expect(listTtl).toBeLessThanOrEqual(30_000);
      expect((await request(server).get('/products/featured').expect(200)).headers['x-cache']).toBe('MISS');
      expect((await request(server).get('/products/featured').expect(200)).headers['x-cache']).toBe('HIT');
      const featuredTtl = await client.pttl(keys.key('cache', 'featured-products'));
      expect(featuredTtl).toBeGreaterThan(55_000);
      expect(featuredTtl).toBeLessThanOrEqual(60_000);
    });
  });
});
