/**
 * The "after" blocks of docs/migrating.md's rate-limiting sections (@nestjs/throttler, express-rate-limit,
 * rate-limiter-flexible), taken from the Markdown by their marker and run against a private redis-server: the
 * module blocks are written out as modules (package name pointed at lib/) and booted on Express and Fastify, the
 * service blocks run with their names in scope.
 */
import 'reflect-metadata';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import type { DynamicModule, INestApplication, Type } from '@nestjs/common';
import { Test } from '@nestjs/testing';
import type { Server } from 'node:http';
import { Redis } from 'ioredis';
import request from 'supertest';
import { RateLimitService, RedisToolkitModule, type RateLimitResult } from '../../lib/index.js';
import type { RateLimitDecision } from '../../lib/advanced.js';
import { docSnippet, repoRoot } from '../support/doc-snippets.js';
import { trackForCleanup, usePrivateRedis } from '../support/private-servers.js';
import { PLATFORMS, type Platform } from '../support/toolkit-app.js';

const generated = join(repoRoot, 'test/rate-limit/.generated');

const AsyncFunction = Object.getPrototypeOf(async () => undefined).constructor as new (
  ...args: string[]
) => (...values: unknown[]) => Promise<unknown>;

/** Runs a service block with the given names in scope; returns `result` evaluated at its end. */
function run(name: string, scope: Record<string, unknown>, result: string): Promise<unknown> {
  // the blocks are TypeScript without type annotations: valid JavaScript once the marker comment is dropped
  const code = docSnippet('docs/migrating.md', name).replace(/^\/\/ after\n/, '');
  return new AsyncFunction(...Object.keys(scope), `${code}\nreturn ${result};`)(...Object.values(scope));
}

/** Writes a module block as a file of this repo and imports its AppModule. */
async function moduleOf(name: string): Promise<Type<unknown>> {
  mkdirSync(generated, { recursive: true });
  const file = join(generated, `${name}.ts`);
  const lib = relative(generated, join(repoRoot, 'lib/index.js'));
  writeFileSync(file, docSnippet('docs/migrating.md', name).replaceAll(`from 'nestjs-redis-toolkit'`, `from '${lib}'`));
  return ((await import(file)) as { AppModule: Type<unknown> }).AppModule;
}

async function boot(appModule: Type<unknown>, platform: Platform): Promise<INestApplication> {
  const moduleRef = await Test.createTestingModule({ imports: [appModule] }).compile();
  let app: INestApplication;
  if (platform === 'fastify') {
    const { FastifyAdapter } = await import('@nestjs/platform-fastify');
    app = moduleRef.createNestApplication(new FastifyAdapter(), { logger: ['error'] });
  } else {
    app = moduleRef.createNestApplication({ logger: ['error'] });
  }
  await app.init();
  if (platform === 'fastify') await (app.getHttpAdapter().getInstance() as { ready(): Promise<unknown> }).ready();
  return app;
}

describe('docs/migrating.md: rate limiting', () => {
  const redis = usePrivateRedis();
  const apps: INestApplication[] = [];
  let admin: Redis;
  const saved = process.env.REDIS_URL;
  beforeAll(() => {
    process.env.REDIS_URL = redis.server.url;
    admin = trackForCleanup(new Redis(redis.server.url));
  });
  beforeEach(async () => {
    await admin.flushall(); // a private server: each test starts with no counters
  });
  afterEach(async () => {
    await Promise.all(apps.splice(0).map((a) => a.close()));
  });
  afterAll(() => {
    process.env.REDIS_URL = saved;
    rmSync(generated, { recursive: true, force: true });
  });

  describe.each(PLATFORMS)('on %s', (platform) => {
    it('@nestjs/throttler after block: login, named skips, skipIf, ignoreUserAgents, legacy headers', async () => {
      const app = await boot(await moduleOf('throttler-after'), platform);
      apps.push(app);
      const http = app.getHttpServer() as Server;
      // 5 failed logins are answered 401, then the block: 429 with the configured message, even with the password
      for (let i = 0; i < 5; i++) expect((await request(http).post('/auth/login').send({})).status).toBe(401);
      const refused = await request(http).post('/auth/login').send({ password: 'secret' });
      expect(refused.status).toBe(429);
      expect(refused.body.message).toBe('Slow down');
      expect(Number(refused.headers['retry-after'])).toBeGreaterThan(290);
      // the reset is the block's end too (it said 60, the window's, before 2026-12-03): no retry at 60 s to be refused
      expect([refused.headers['x-ratelimit-remaining'], refused.headers['x-ratelimit-reset']]).toEqual([
        '0',
        refused.headers['retry-after'],
      ]);
      // 'short' (3 per 10 s) applies to /profile, 'long' is skipped: legacy headers of the tightest policy
      const first = await request(http).get('/auth/profile');
      expect([first.status, first.headers['x-ratelimit-limit'], first.headers['x-ratelimit-remaining']]).toEqual([
        200,
        '3',
        '2',
      ]);
      await request(http).get('/auth/profile');
      await request(http).get('/auth/profile');
      expect((await request(http).get('/auth/profile')).status).toBe(429);
      // skipped, by decorator, User-Agent or skipIf: never limited, no headers
      for (let i = 0; i < 4; i++) {
        expect((await request(http).get('/auth/health')).status).toBe(200);
        expect((await request(http).get('/auth/profile').set('User-Agent', 'Googlebot/2.1')).status).toBe(200);
        const internal = await request(http).get('/auth/profile').set('X-Internal', 'yes');
        expect([internal.status, internal.headers['x-ratelimit-limit']]).toEqual([200, undefined]);
      }
    });

    it('express-rate-limit after block: draft-7 headers, prefix, trust proxy, allow list', async () => {
      const app = await boot(await moduleOf('express-rate-limit-after'), platform);
      apps.push(app);
      const http = app.getHttpServer() as Server;
      const res = await request(http).get('/api').set('X-Forwarded-For', '192.0.2.1');
      expect(res.status).toBe(200);
      expect(res.headers.ratelimit).toBe('limit=100, remaining=99, reset=900');
      expect(res.headers['ratelimit-policy']).toBe('100;w=900');
      expect((await admin.keys('rl:rl:*')).length).toBe(1); // keyPrefix 'rl:' + the rate-limit namespace
      // another client (one proxy hop trusted) has its own counter; an allowed one is not counted
      const other = await request(http).get('/api').set('X-Forwarded-For', '192.0.2.2');
      expect(other.headers.ratelimit).toBe('limit=100, remaining=99, reset=900');
      const allowed = await request(http).get('/api').set('X-Forwarded-For', '10.1.2.3');
      expect([allowed.status, allowed.headers.ratelimit]).toEqual([200, undefined]);
      expect((await admin.keys('rl:rl:*')).length).toBe(2);
    });
  });

  it('rate-limiter-flexible module block: client, keyPrefix, blockCache, insurance, denyList', async () => {
    const redisClient = trackForCleanup(new Redis(redis.server.url, { commandTimeout: 1_000 }));
    const toolkit = (await run('rlf-module-after', { RedisToolkitModule, redisClient }, 'toolkit')) as DynamicModule;
    const moduleRef = await Test.createTestingModule({ imports: [toolkit] }).compile();
    const app = moduleRef.createNestApplication({ logger: ['error'] });
    await app.init();
    apps.push(app);
    const rl = app.get(RateLimitService);
    const policy = { limit: 1, ttl: 60_000 };
    expect((await rl.consume('k', policy)).allowed).toBe(true);
    expect((await rl.consume('k', policy)).allowed).toBe(false);
    expect((await rl.consume('k', policy)).allowed).toBe(false);
    expect(rl.stats().deniedLocally).toBe(1); // the block cache answered the second refusal
    expect((await admin.keys('login:rl:*')).length).toBe(1);
  });

  it('rate-limiter-flexible service block: consume, cost, peek, penalty, reward, block, reset, union', async () => {
    const app = await Test.createTestingModule({
      imports: [RedisToolkitModule.forRoot({ connection: { url: redis.server.url } })],
    }).compile();
    const nest = app.createNestApplication({ logger: ['error'] });
    await nest.init();
    apps.push(nest);
    const rateLimit = nest.get(RateLimitService);
    const out = (await run(
      'rlf-service-after',
      { rateLimit, ip: '192.0.2.50' },
      '{ res, heavy, state, blocked, union }',
    )) as Record<'res' | 'heavy' | 'state' | 'blocked', RateLimitResult> & { union: RateLimitDecision };
    expect(out.res).toMatchObject({ allowed: true, remaining: 4 });
    expect(out.heavy).toMatchObject({ allowed: true, remaining: 2 });
    expect(out.state).toMatchObject({ allowed: true, remaining: 2 });
    expect(out.blocked.allowed).toBe(false);
    expect(out.blocked.retryAfterMs).toBeGreaterThan(55_000);
    expect(out.blocked.retryAfterMs).toBeLessThanOrEqual(60_000);
    expect(out.union.allowed).toBe(true);
    expect(out.union.results.map((r) => [r.name, r.remaining])).toEqual([
      ['per-second', 9],
      ['per-minute', 99],
    ]);
    // reset lifted the block and cleared the counter
    expect((await rateLimit.peek('192.0.2.50', { limit: 5, ttl: 60_000 })).remaining).toBe(5);
  });
});
