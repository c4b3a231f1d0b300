/**
 * The package's type declarations as an app sees them. express-session is an optional peer (needed only for
 * RedisSessionStore), so the root entry's .d.ts must compile without it: before, `dist/lib/session/session.store.d.ts`
 * and `session.store-options.d.ts` imported 'express-session', which failed with `skipLibCheck: false` (TS2307) and,
 * with Nest's default `skipLibCheck: true`, silently made RedisSessionStore's base class and options `any`. With
 * express-session installed, the store must still be an express-session `Store` (`session({ store })` type-checks).
 *
 * The declarations are emitted from lib/ (tsconfig.build.json) into a temporary directory whose node_modules links
 * every package of this checkout but express-session and @types/express-session; a second directory links them all.
 */
import { spawnSync } from 'node:child_process';
import { jest } from '@jest/globals';
import { cpSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { repoRoot as root } from '../support/doc-snippets.js';

jest.setTimeout(240_000);

const tsc = join(root, 'node_modules/typescript/bin/tsc');
const hidden = new Set(['express-session', '@types/express-session', '.bin']);

function run(args: string[]): string {
  const out = spawnSync(process.execPath, [tsc, ...args], { encoding: 'utf8', timeout: 200_000 });
  return `${out.stdout}${out.stderr}`.trim() + (out.status === 0 ? '' : `\n(tsc exit ${out.status})`);
}

/** node_modules of `dir`: a link to each package of the checkout, except `without`. */
function linkModules(dir: string, without: Set<string>): void {
  const target = join(dir, 'node_modules');
  mkdirSync(target, { recursive: true });
  for (const name of readdirSync(join(root, 'node_modules'))) {
    if (without.has(name)) continue;
    if (name.startsWith('@')) {
      mkdirSync(join(target, name));
      for (const sub of readdirSync(join(root, 'node_modules', name))) {
        if (!without.has(`${name}/${sub}`)) symlinkSync(join(root, 'node_modules', name, sub), join(target, name, sub));
      }
    } else symlinkSync(join(root, 'node_modules', name), join(target, name));
  }
}

/** A consumer project in `dir` (ESM, strict, NodeNext) compiling `files`; returns tsc's diagnostics ('' if clean). */
function compileApp(dir: string, files: Record<string, string>, skipLibCheck: boolean): string {
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ type: 'module' }));
  for (const [name, code] of Object.entries(files)) writeFileSync(join(dir, name), code);
  const config = join(dir, `tsconfig.${skipLibCheck ? 'skip' : 'full'}.json`);
  writeFileSync(
    config,
    JSON.stringify({
      compilerOptions: {
        target: 'ES2022',
        module: 'NodeNext',
        moduleResolution: 'NodeNext',
        strict: true,
        noEmit: true,
        skipLibCheck,
        experimentalDecorators: true,
        esModuleInterop: true,
        types: ['node'],
      },
      files: Object.keys(files).map((f) => join(dir, f)),
    }),
  );
  return run(['-p', config]);
}

const isAny = 'type IsAny<T> = 0 extends 1 & T ? true : false;\n';

/** README's quick start, plus the store's public members, which must not be `any`. */
const withoutExpressSession = `import { Module } from '@nestjs/common';
import { RedisSessionStore, RedisToolkitModule, SessionService } from './out/lib/index.js';
import type { RedisSessionStoreOptions } from './out/lib/advanced.js';
${isAny}
@Module({
  imports: [
    RedisToolkitModule.forRootAsync({
      useFactory: () => ({ connection: { url: process.env.REDIS_URL ?? 'redis://127.0.0.1:6379' } }),
    }),
  ],
})
export class AppModule {
  constructor(readonly sessions: SessionService) {}
}

export const checks: [
  IsAny<RedisSessionStore>,
  IsAny<RedisSessionStore['on']>,
  IsAny<RedisSessionStore['createSession']>,
  IsAny<RedisSessionStore['regenerate']>,
  IsAny<RedisSessionStore['get']>,
  IsAny<Parameters<RedisSessionStore['set']>[1]>,
  IsAny<RedisSessionStoreOptions['ttl']>,
  IsAny<Parameters<Exclude<RedisSessionStoreOptions['ttl'], number | undefined>>[0]>,
] = [false, false, false, false, false, false, false, false];
`;

/** express-session installed, its SessionData augmented with a required field, as apps do. */
const withExpressSession = `import express from 'express';
import session, { type SessionData, type Store } from 'express-session';
import { Redis } from 'ioredis';
import { RedisSessionStore } from './out/lib/index.js';

declare module 'express-session' {
  interface SessionData {
    userId: string;
    views?: number;
  }
}

const store = new RedisSessionStore({
  client: new Redis({ lazyConnect: true }),
  ttl: (s: SessionData) => (s.userId === 'admin' ? 60_000 : (s.cookie.maxAge ?? 86_400_000)),
});
const asStore: Store = store;
const app = express();
app.use(session({ store, secret: 'a secret of at least 32 characters!', resave: false, saveUninitialized: false }));
app.use(session({ store: asStore, secret: ['new secret', 'old secret'] }));
app.get('/', (req, res) => {
  req.session.views = (req.session.views ?? 0) + 1;
  res.json({ userId: req.session.userId });
});
store.get('id', (err, data) => void (err ?? data?.cookie.originalMaxAge));
export const read: Promise<number | null | undefined> = store.get('id').then((d) => d?.cookie.originalMaxAge);
export const typed: Promise<number | undefined> = store.get<SessionData>('id').then((d) => d?.userId.length);
export const fields: Promise<unknown> = store.all().then((all) => all[0]?.userId);
`;

describe("the root entry's declarations and express-session", () => {
  const dir = mkdtempSync(join(tmpdir(), 'rtk-session-types-'));
  let emitted = '';

  beforeAll(() => {
    const config = join(dir, 'tsconfig.emit.json');
    writeFileSync(
      config,
      JSON.stringify({
        extends: join(root, 'tsconfig.build.json'),
        compilerOptions: {
          rootDir: root,
          outDir: join(dir, 'out'),
          declaration: true,
          emitDeclarationOnly: true,
          sourceMap: false,
          inlineSources: false,
          typeRoots: [join(root, 'node_modules/@types')],
        },
        include: [join(root, 'lib')],
      }),
    );
    emitted = run(['-p', config]);
    for (const [name, without] of [
      ['without', hidden],
      ['with', new Set(['.bin'])],
    ] as const) {
      mkdirSync(join(dir, name));
      linkModules(join(dir, name), without);
      cpSync(join(dir, 'out'), join(dir, name, 'out'), { recursive: true });
    }
  });

  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("lib emits its declarations, and none of the root entry's names express-session", () => {
    expect(emitted).toBe('');
    const sessionDeclarations = readdirSync(join(dir, 'out/lib/session')).filter((f) => f.endsWith('.d.ts'));
    expect(sessionDeclarations).toContain('session.store.d.ts');
    const naming = sessionDeclarations.filter((f) =>
      /['"]express-session['"]/.test(readFileSync(join(dir, 'out/lib/session', f), 'utf8')),
    );
    expect(naming).toEqual([]);
  });

  it('compile without express-session installed, with skipLibCheck false', () => {
    expect(compileApp(join(dir, 'without'), { 'app.ts': withoutExpressSession }, false)).toBe('');
  });

  it("without express-session and skipLibCheck true (Nest's default), nothing of the store is any", () => {
    expect(compileApp(join(dir, 'without'), { 'app.ts': withoutExpressSession }, true)).toBe('');
  });

  it('with express-session installed, the store is its Store, for an app whose SessionData has required fields', () => {
    expect(compileApp(join(dir, 'with'), { 'app.ts': withExpressSession }, false)).toBe('');
  });
});
