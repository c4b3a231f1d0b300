// The published types under the TypeScript settings of apps other than run.mjs's fixtures (NodeNext only): an app
// that imports the root and every documented subpath compiles, and its types are the package's, not `any` (each
// import is used in a wrong call under `@ts-expect-error`: were it `any`, tsc reports the unused directive, TS2578).
// Settings: moduleResolution node16, nodenext, node20 and bundler (module esnext and preserve) for ESM apps;
// nodenext and commonjs (TypeScript 6+'s default resolution for it, bundler) for CommonJS apps; the strict consumer
// flags (exactOptionalPropertyTypes, noUncheckedIndexedAccess, skipLibCheck: false, isolatedModules,
// verbatimModuleSyntax in ESM, noPropertyAccessFromIndexSignature); all with this repo's TypeScript. Then TypeScript
// 5.9 (the newest 5.x, the devDependency `typescript-5` (npm:typescript@5.9.3): the one other version, since
// TypeScript 7 refuses moduleResolution node10 and 6 deprecates it) for the old `nest new` template's `module:
// commonjs` (resolution node10, which ignores `exports`: the subpaths resolve through package.json's
// `typesVersions`) and for a CommonJS app on nodenext (require of an ES module, TypeScript ≥ 5.8). A CommonJS app on
// module node16 or node18 gets TS1479 from TypeScript itself (those model a Node without require(esm)); README's
// "Supported" table says so and the last case keeps that row true.
//
// From run.mjs: `consumerSettings({ unpacked, work })` returns its [ok, name, detail] lines. On its own:
// `node test/package/consumer-settings.mjs [unpacked-package-dir]` packs this checkout (as run.mjs does) unless given
// an unpacked tarball, and prints ok / not ok lines and a closing count; exits 1 on any failure.
import { execFileSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { run } from './processes.mjs';

const repo = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const repoModules = join(repo, 'node_modules');
const repoTsc = join(repoModules, 'typescript/bin/tsc');
/** The one other TypeScript: the newest 5.x, the last that accepts moduleResolution node10 without a flag. */
const OTHER_TS = '5.9.3';

/** The consumer app: the root and every documented subpath, each used rightly and wrongly. */
const CONSUMER = `import { CacheService, RedisToolkitModule, type Session } from 'nestjs-redis-toolkit';
import { getRedisClientToken, type ResolvedCacheOptions } from 'nestjs-redis-toolkit/advanced';
import { RedisToolkitDashboardModule, type RedisToolkitDashboardOptions } from 'nestjs-redis-toolkit/dashboard';
import { NotificationsGatewayModule, sessionAuthenticate } from 'nestjs-redis-toolkit/notifications';
import { RedisToolkitInstrumentation, type RedisToolkitInstrumentationConfig } from 'nestjs-redis-toolkit/otel';
import { RedisToolkitHealthIndicator } from 'nestjs-redis-toolkit/terminus';
import { type RedisServerHandle, startRedisServer } from 'nestjs-redis-toolkit/testing';

type IsAny<T> = 0 extends 1 & T ? true : false;
type NotAny<T> = IsAny<T> extends true ? never : T;

export async function uses(cache: CacheService, health: RedisToolkitHealthIndicator): Promise<unknown[]> {
  const value: number | undefined = await cache.get<number>('k');
  // @ts-expect-error a key is a string
  await cache.get(42);
  const session: NotAny<Session> | undefined = undefined;
  const root = RedisToolkitModule.forRoot({ connection: { url: 'redis://127.0.0.1:1' } });
  // @ts-expect-error connection is required
  RedisToolkitModule.forRoot({ keyPrefix: 'x:' });
  const token: NotAny<ReturnType<typeof getRedisClientToken>> = getRedisClientToken();
  const l1: NotAny<ResolvedCacheOptions['l1']> | undefined = undefined;
  const dashboard: RedisToolkitDashboardOptions = { unsafeNoAuth: true };
  // @ts-expect-error register takes the options object
  RedisToolkitDashboardModule.register('/_toolkit');
  const gateway: NotAny<ReturnType<typeof NotificationsGatewayModule.register>> = NotificationsGatewayModule.register();
  // @ts-expect-error sessionAuthenticate takes a session lookup
  sessionAuthenticate(42);
  const otel: RedisToolkitInstrumentationConfig = { traces: false };
  const instrumentation = new RedisToolkitInstrumentation(otel);
  // @ts-expect-error traces is a boolean
  new RedisToolkitInstrumentation({ traces: 'yes' });
  const healthy: NotAny<Awaited<ReturnType<RedisToolkitHealthIndicator['isHealthy']>>> = await health.isHealthy();
  // @ts-expect-error a key is a string
  await health.isHealthy(1);
  const server: NotAny<RedisServerHandle> = await startRedisServer();
  // @ts-expect-error port is a number
  await startRedisServer({ port: '6380' });
  const notAny: [
    NotAny<typeof CacheService>,
    NotAny<typeof RedisToolkitDashboardModule>,
    NotAny<typeof NotificationsGatewayModule>,
    NotAny<typeof RedisToolkitInstrumentation>,
    NotAny<typeof RedisToolkitHealthIndicator>,
    NotAny<typeof startRedisServer>,
  ] = [
    CacheService,
    RedisToolkitDashboardModule,
    NotificationsGatewayModule,
    RedisToolkitInstrumentation,
    RedisToolkitHealthIndicator,
    startRedisServer,
  ];
  return [value, session, root, token, l1, dashboard, gateway, instrumentation, healthy, server, notAny];
}
`;

const BASE = {
  target: 'ES2022',
  strict: true,
  experimentalDecorators: true,
  emitDecoratorMetadata: true,
  skipLibCheck: true,
  types: ['node'],
  noEmit: true,
};
const STRICT = {
  exactOptionalPropertyTypes: true,
  noUncheckedIndexedAccess: true,
  skipLibCheck: false,
  isolatedModules: true,
  noPropertyAccessFromIndexSignature: true,
};
/** The old `nest new` template (Nest ≤ 11): module commonjs, no moduleResolution (node10 before TypeScript 6). */
const OLD_NEST = {
  module: 'commonjs',
  target: 'ES2021',
  declaration: true,
  removeComments: true,
  allowSyntheticDefaultImports: true,
  strict: false,
  strictNullChecks: false,
  noImplicitAny: false,
  strictBindCallApply: false,
  forceConsistentCasingInFileNames: false,
  noFallthroughCasesInSwitch: false,
};

/**
 * name, TypeScript ('repo' or 'other'), the app's package.json type, compilerOptions, and the error codes expected
 * (none: it compiles).
 */
const CASES = [
  ['ESM, module node16', 'repo', 'module', { module: 'node16', moduleResolution: 'node16' }],
  ['ESM, bundler + module esnext', 'repo', 'module', { module: 'esnext', moduleResolution: 'bundler' }],
  ['ESM, bundler + module preserve', 'repo', 'module', { module: 'preserve', moduleResolution: 'bundler' }],
  [
    'ESM, nodenext + strict flags + verbatimModuleSyntax',
    'repo',
    'module',
    { module: 'nodenext', moduleResolution: 'nodenext', ...STRICT, verbatimModuleSyntax: true },
  ],
  [
    'CommonJS, nodenext + strict flags',
    'repo',
    'commonjs',
    { module: 'nodenext', moduleResolution: 'nodenext', ...STRICT },
  ],
  ['CommonJS, module commonjs (resolution bundler)', 'repo', 'commonjs', { module: 'commonjs' }],
  [
    'CommonJS, module node16: TS1479 from TypeScript itself (README: unsupported)',
    'repo',
    'commonjs',
    { module: 'node16', moduleResolution: 'node16' },
    ['TS1479'],
  ],
  ["CommonJS, the old `nest new` template's module commonjs (node10)", 'other', 'commonjs', OLD_NEST],
  ['CommonJS, module nodenext', 'other', 'commonjs', { module: 'nodenext', moduleResolution: 'nodenext' }],
];

/**
 * An app dir of package.json `type`: the unpacked tarball as node_modules/nestjs-redis-toolkit, its dependencies and
 * peers linked, the consumer source in src/. Each case adds its own tsconfig beside it.
 */
function makeApp(dir, unpacked, type) {
  const nodeModules = join(dir, 'node_modules');
  mkdirSync(join(dir, 'src'), { recursive: true });
  mkdirSync(nodeModules, { recursive: true });
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: 'consumer', private: true, type }));
  cpSync(unpacked, join(nodeModules, 'nestjs-redis-toolkit'), { recursive: true });
  const pkg = JSON.parse(readFileSync(join(unpacked, 'package.json'), 'utf8'));
  const names = [...Object.keys(pkg.dependencies ?? {}), ...Object.keys(pkg.peerDependencies ?? {}), '@types/node'];
  for (const name of new Set(names)) {
    const target = join(repoModules, name);
    if (!existsSync(target)) throw new Error(`${name} is not installed in ${repoModules}`);
    mkdirSync(dirname(join(nodeModules, name)), { recursive: true });
    symlinkSync(target, join(nodeModules, name), 'dir');
  }
  writeFileSync(join(dir, 'src/consumer.ts'), CONSUMER);
}

/** TypeScript OTHER_TS: the devDependency `typescript-5` (an npm alias, installed by npm ci: no network here). */
function otherTypeScript() {
  const tsc = join(repoModules, 'typescript-5/bin/tsc');
  if (!existsSync(tsc)) return { error: `${tsc} is missing: npm install (devDependency typescript-5)` };
  const { version } = JSON.parse(readFileSync(join(repoModules, 'typescript-5/package.json'), 'utf8'));
  return version === OTHER_TS ? { tsc } : { error: `typescript-5 is ${version}, this file names ${OTHER_TS}` };
}

/** The report lines ([ok, name, detail]) for the tarball unpacked at `unpacked`; apps go under `work`. */
export async function consumerSettings({ unpacked, work }) {
  const out = [];
  const root = join(work, 'consumer-settings');
  const pkg = JSON.parse(readFileSync(join(unpacked, 'package.json'), 'utf8'));

  // moduleResolution node10 (and TypeScript < 4.7) ignore `exports`: each subpath needs its typesVersions entry,
  // naming the same .d.ts as its `exports` types.
  const subpaths = Object.keys(pkg.exports).filter((s) => s !== '.' && s !== './package.json');
  const mapped = pkg.typesVersions?.['*'] ?? {};
  const wrong = subpaths.filter((s) => JSON.stringify(mapped[s.slice(2)]) !== JSON.stringify([pkg.exports[s].types]));
  out.push([
    wrong.length === 0,
    `package.json typesVersions maps every subpath (${subpaths.length}) to its exports types`,
    wrong.map((s) => `${s}: ${JSON.stringify(mapped[s.slice(2)])}, exports types ${pkg.exports[s].types}`).join('\n'),
  ]);

  const other = otherTypeScript();
  out.push([Boolean(other.tsc), `TypeScript ${OTHER_TS} installed (devDependency typescript-5)`, other.error]);

  const apps = { module: join(root, 'esm'), commonjs: join(root, 'cjs') };
  for (const [type, dir] of Object.entries(apps)) makeApp(dir, unpacked, type);
  const check = async ([name, ts, type, options, expected = []], i) => {
    const version = ts === 'repo' ? 'repo TypeScript' : `TypeScript ${OTHER_TS}`;
    const tsc = ts === 'repo' ? repoTsc : other.tsc;
    if (!tsc) return [false, `${name} (${version}): no tsc`];
    const tsconfig = join(apps[type], `tsconfig.${i}.json`);
    writeFileSync(tsconfig, JSON.stringify({ compilerOptions: { ...BASE, ...options }, include: ['src'] }, null, 2));
    const compiled = await run(process.execPath, [tsc, '-p', tsconfig, '--pretty', 'false'], apps[type]);
    const codes = [...new Set([...compiled.output.matchAll(/error (TS\d+)/g)].map((m) => m[1]))].sort();
    const ok = expected.length ? codes.join() === expected.join() : compiled.ok;
    const what = expected.length ? `fails with ${expected.join(', ')} only` : 'compiles, its types not any';
    return [ok, `${name} (${version}): root and every subpath ${what}`, compiled.output];
  };
  // Two at a time: tsc of the Nest types is CPU-bound, and run.mjs runs its apps beside these.
  const results = [];
  let next = 0;
  const worker = async () => {
    while (next < CASES.length) {
      const i = next++;
      results[i] = await check(CASES[i], i);
    }
  };
  await Promise.all([worker(), worker()]);
  out.push(...results);
  return out;
}

/** `npm pack` of a clean copy of this checkout (git's files, no dist/), unpacked in `work`; returns the directory. */
function pack(work) {
  const checkout = join(work, 'checkout');
  const listed = execFileSync('git', ['ls-files', '-z', '--cached', '--others', '--exclude-standard'], {
    cwd: repo,
    encoding: 'utf8',
  });
  for (const file of listed.split('\0').filter(Boolean)) {
    if (!existsSync(join(repo, file))) continue; // deleted, not yet committed
    mkdirSync(dirname(join(checkout, file)), { recursive: true });
    cpSync(join(repo, file), join(checkout, file));
  }
  symlinkSync(repoModules, join(checkout, 'node_modules'), 'dir');
  const output = execFileSync('npm', ['pack', '--json', '--pack-destination', work], {
    cwd: checkout,
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const [packed] = JSON.parse(output.slice(output.search(/^\[\s*\{/m)));
  execFileSync('tar', ['xzf', join(work, packed.filename), '-C', work]);
  return join(work, 'package');
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const work = mkdtempSync(join(tmpdir(), 'rtk-consumer-'));
  let passed = 0;
  let failed = 0;
  const started = Date.now();
  try {
    const unpacked = process.argv[2] ? resolve(process.argv[2]) : pack(work);
    const lines = await consumerSettings({ unpacked, work });
    for (const [ok, name, detail] of lines) {
      if (ok) passed++;
      else failed++;
      const more = ok || !detail ? '' : `\n${String(detail).trim().replace(/^/gm, '    ')}`;
      process.stdout.write(`${ok ? 'ok' : 'not ok'} - ${name}${more}\n`);
    }
  } catch (err) {
    failed++;
    process.stdout.write(`not ok - the consumer settings ran to the end\n    ${err?.stack ?? err}\n`);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
  process.stdout.write(`(${Math.round((Date.now() - started) / 1000)} s)\n${passed} passed, ${failed} failed\n`);
  process.exitCode = failed ? 1 : 0;
}
