/**
 * The code blocks users copy first: README's Quick start, docs/security.md's ACL config and docs/session.md's
 * session config and express-session store are taken from the Markdown by their marker comment, type-checked with the project's tsc, then booted (Nest testing module) against
 * a real redis-server, so the docs and this test cannot drift apart. The only change made to a block is the package
 * name, pointed at this checkout's `lib/`.
 */
import 'reflect-metadata';
import { spawnSync } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { Controller, Get, Req, type INestApplication, type INestApplicationContext, type Type } from '@nestjs/common';
import { Test } from '@nestjs/testing';
import type { Redis } from 'ioredis';
import request from 'supertest';
import { REDIS_CLIENT, RedisToolkitHealth, SessionService } from '../../lib/index.js';
import { unsignCookieValue } from '../../lib/advanced.js';
import { usePrivateRedis } from '../support/private-servers.js';
import { sharedServers } from '../support/shared-servers.js';
import { docSnippet, repoRoot as root } from '../support/doc-snippets.js';
import { createToolkitApp } from '../support/toolkit-app.js';

const generated = join(root, 'test/docs/.generated');

/** Writes the snippet as a module of this repo, with the package name pointed at lib/. */
function writeSnippet(name: string, code: string): string {
  mkdirSync(generated, { recursive: true });
  const lib = relative(generated, join(root, 'lib/index.js'));
  const advanced = relative(generated, join(root, 'lib/advanced.js'));
  const file = join(generated, `${name}.ts`);
  writeFileSync(
    file,
    code
      .replaceAll(`from 'nestjs-redis-toolkit'`, `from '${lib}'`)
      .replaceAll(`from 'nestjs-redis-toolkit/advanced'`, `from '${advanced}'`),
  );
  return file;
}

/** tsc over the given files with the project's compiler options; returns its diagnostics ('' when clean). */
function typeCheck(files: string[]): string {
  const config = join(generated, 'tsconfig.json');
  writeFileSync(
    config,
    JSON.stringify({ extends: '../../../tsconfig.json', compilerOptions: { noEmit: true }, files, include: [] }),
  );
  const tsc = spawnSync(process.execPath, [join(root, 'node_modules/typescript/bin/tsc'), '-p', config], {
    encoding: 'utf8',
    timeout: 120_000,
  });
  return `${tsc.stdout}${tsc.stderr}`.trim() + (tsc.status === 0 ? '' : `\n(tsc exit ${tsc.status})`);
}

async function boot(file: string, env: Record<string, string>): Promise<INestApplicationContext> {
  Object.assign(process.env, env);
  const { AppModule } = (await import(file)) as { AppModule: Type<unknown> };
  const moduleRef = await Test.createTestingModule({ imports: [AppModule] }).compile();
  const app = moduleRef.createNestApplication({ logger: ['error'] });
  await app.init();
  return app;
}

describe('docs code blocks compile and boot', () => {
  const acl = usePrivateRedis({ aclUser: { name: 'app', password: 'app-secret' } });
  const snippets = {
    quickStart: docSnippet('README.md', 'quick-start'),
    aclConfig: docSnippet('docs/security.md', 'acl-config'),
    namedConnections: docSnippet('docs/connections.md', 'named-connections'),
    sessionConfig: docSnippet('docs/session.md', 'session-config'),
    expressSessionStore: docSnippet('docs/session.md', 'express-session-store'),
  };
  const files = {
    quickStart: writeSnippet('quick-start', snippets.quickStart),
    aclConfig: writeSnippet('acl-config', snippets.aclConfig),
    namedConnections: writeSnippet('named-connections', snippets.namedConnections),
    sessionConfig: writeSnippet('session-config', snippets.sessionConfig),
    expressSessionStore: writeSnippet('express-session-store', snippets.expressSessionStore),
  };
  const apps: INestApplicationContext[] = [];
  const saved = { ...process.env };

  afterAll(async () => {
    await Promise.all(apps.map((a) => a.close()));
    process.env = saved;
    rmSync(generated, { recursive: true, force: true });
  });

  it('type-checks the blocks with the project compiler', () => {
    expect(snippets.quickStart).toContain('RedisToolkitModule.forRootAsync');
    expect(
      typeCheck([
        files.quickStart,
        files.aclConfig,
        files.namedConnections,
        files.sessionConfig,
        files.expressSessionStore,
      ]),
    ).toBe('');
  });

  it("README's Quick start boots with REDIS_URL and answers a health check", async () => {
    const app = await boot(files.quickStart, { REDIS_URL: sharedServers().single.url });
    apps.push(app);
    const health = await app.get(RedisToolkitHealth).check();
    expect(health.status).toBe('up');
  });

  it("docs/security.md's ACL config boots as the ACL user", async () => {
    const app = await boot(files.aclConfig, {
      REDIS_HOST: '127.0.0.1',
      REDIS_PORT: String(acl.server.port),
      REDIS_USER: 'app',
      REDIS_PASSWORD: 'app-secret',
    });
    apps.push(app);
    expect((await app.get(RedisToolkitHealth).check()).status).toBe('up');
  });

  // Between two rotations OLD_SESSION_SECRET is unset: the block must still start, with the current secret alone;
  // a missing current secret must stop it, never leave cookies signed by nothing (or by the old secret).
  it("docs/session.md's session config boots with OLD_SESSION_SECRET unset, with both, and not without the current", async () => {
    const current = 'current-secret-of-32-characters!';
    const old = 'old-secret-of-at-least-32-characters';
    const env = { REDIS_URL: sharedServers().single.url, SESSION_SECRET: current };
    delete process.env.OLD_SESSION_SECRET;
    const alone = await boot(files.sessionConfig, env);
    apps.push(alone);
    expect(alone.get(SessionService).options.cookie.secrets).toEqual([current]);

    const both = await boot(writeSnippet('session-config-both', snippets.sessionConfig), {
      ...env,
      OLD_SESSION_SECRET: old,
    });
    apps.push(both);
    expect(both.get(SessionService).options.cookie.secrets).toEqual([current, old]);

    delete process.env.SESSION_SECRET;
    delete process.env.OLD_SESSION_SECRET;
    await expect(boot(writeSnippet('session-config-none', snippets.sessionConfig), {})).rejects.toThrow(
      'SESSION_SECRET is not set',
    );
  });

  it("docs/session.md's express-session block serves sessions from Redis on Express", async () => {
    const secret = 'express-session-secret-32-chars!';
    process.env.SESSION_SECRET = secret;
    const { useRedisSessions } = (await import(files.expressSessionStore)) as {
      useRedisSessions: (app: INestApplication) => void;
    };
    @Controller()
    class ViewsController {
      @Get('views')
      views(@Req() req: { session: { views?: number } }): { views: number } {
        req.session.views = (req.session.views ?? 0) + 1;
        return { views: req.session.views };
      }
    }
    const { app } = await createToolkitApp({
      http: true,
      controllers: [ViewsController],
      beforeInit: useRedisSessions,
    });
    apps.push(app);
    const agent = request.agent(app.getHttpServer());
    const first = await agent.get('/views').expect(200);
    expect(first.body).toEqual({ views: 1 });
    expect((await agent.get('/views').expect(200)).body).toEqual({ views: 2 });
    const cookie = /connect\.sid=([^;]+)/.exec(String(first.headers['set-cookie']))?.[1] ?? '';
    const id = unsignCookieValue(decodeURIComponent(cookie), [secret]);
    expect(id).toHaveLength(43); // generateSessionId, as the block's genid
    const stored = await app.get<Redis>(REDIS_CLIENT).get(`rtk:sess:{${id}}`);
    expect(stored).toContain('"views"');
  });
});

describe("docs/connections.md's named connections", () => {
  const sessionsServer = usePrivateRedis();
  const cacheServer = usePrivateRedis();
  const saved = { ...process.env };
  afterAll(() => {
    process.env = saved;
    rmSync(generated, { recursive: true, force: true });
  });

  it('boots on three servers, reports each in health, and injects the sessions client', async () => {
    const file = writeSnippet('named-connections', docSnippet('docs/connections.md', 'named-connections'));
    const app = await boot(file, {
      REDIS_URL: sharedServers().single.url,
      SESSIONS_REDIS_URL: sessionsServer.server.url,
      CACHE_REDIS_URL: cacheServer.server.url,
    });
    try {
      const health = await app.get(RedisToolkitHealth).check();
      expect(health.status).toBe('up');
      expect(Object.keys(health.connections ?? {})).toEqual(['default', 'sessions', 'volatile']);
      const { SessionsAdmin } = (await import(file)) as {
        SessionsAdmin: Type<{ sessionsServerMemory(): Promise<string> }>;
      };
      expect(await app.get(SessionsAdmin).sessionsServerMemory()).toContain('used_memory:');
    } finally {
      await app.close();
    }
  });
});

/** Every ```ts block of README.md and docs/*.md, with its file and first line. */
function allTsBlocks(): { where: string; code: string }[] {
  const files = [
    'README.md',
    ...readdirSync(join(root, 'docs'))
      .filter((f) => f.endsWith('.md'))
      .map((f) => `docs/${f}`),
  ];
  return files.flatMap((file) => {
    const text = readFileSync(join(root, file), 'utf8');
    return [...text.matchAll(/```ts\n([\s\S]*?)\n```/g)].map((m) => ({
      where: `${file}:${text.slice(0, m.index).split('\n').length}`,
      code: m[1] ?? '',
    }));
  });
}

describe('docs examples never hand a session id to the page', () => {
  // A Session (from create, get, update, regenerate, or @CurrentSession()) carries its id; returned from a handler
  // it lands in JSON that page scripts can read, defeating the httpOnly cookie.
  const wholeSession = [
    /return\s+(await\s+)?this\.sessions\.(create|get|update|regenerate)\s*[(<]/,
    /=>\s*(await\s+)?this\.sessions\.(create|get|update|regenerate)\s*[(<]/,
    /return\s+(session|current|s)\s*;/,
  ];

  it('no handler in README.md or docs/ returns a whole Session', () => {
    const blocks = allTsBlocks();
    expect(blocks.length).toBeGreaterThan(20);
    const leaks = blocks.flatMap(({ where, code }) =>
      code
        .split('\n')
        .filter((line) => wholeSession.some((re) => re.test(line)))
        .map((line) => `${where}: ${line.trim()}`),
    );
    expect(leaks).toEqual([]);
  });
});
