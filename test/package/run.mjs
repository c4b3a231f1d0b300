// The package as users get it: `npm pack` from a clean copy of this checkout (no dist/, so the package's own prepack
// script must build it), then apps OUTSIDE this repository (a temp dir) install the tarball, compile against its
// published types and call one route per feature on a private redis-server. Also checks what the tarball holds
// (LICENSE, docs/, every exports target and nothing a stale build left, source maps that reach their sources,
// README's and docs' relative links), runs docs/testing.md's Vitest and Jest examples against it, and runs the fixture
// app bundled by esbuild, webpack and @vercel/ncc, and a Socket.IO client against a bundled gateway app (bundlers.mjs).
// Prints `ok` / `not ok` lines and a closing count; exits 1 on any failure.
//
// `npm run test:package` and CI run `node test/package/run.mjs`; it needs no build of this checkout.
// `RTK_PACKAGE_RUNTIME=bun` or `=deno` runs the fixture apps under that runtime instead (RUNTIMES below);
// `RTK_PACKAGE_NODE_FLAGS="--disable-proto=throw"` runs them on Node with those flags (hardened Node, nodeFlags below).
// The tarball is unpacked into each app's node_modules the way npm would, and the packages it needs (its
// dependencies and peers, the HTTP platform, vitest, jest) are symlinked from this repo's node_modules: `npm install
// --prefer-offline` of the tarball took 52 s per app here (registry metadata), `--offline` cannot resolve peers.
import { execFileSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, posix, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';
import { bundledApps, gatewayRoundTrip } from './bundlers.mjs';
import { consumerSettings } from './consumer-settings.mjs';
import { declaredDependencyProblems } from './declared-dependencies.mjs';
import { run } from './processes.mjs';

const repo = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const appSources = join(repo, 'test/package/app');
const repoModules = join(repo, 'node_modules');
const pkg = JSON.parse(readFileSync(join(repo, 'package.json'), 'utf8'));

/**
 * The fixture apps: module format × HTTP platform. `platform` names `test/package/app/platform-<platform>.ts` (how
 * the app is created) and `packages` what that platform needs besides the tarball's own dependencies and peers.
 */
const FIXTURES = [
  { name: 'esm-express', type: 'module', platform: 'express', packages: ['@nestjs/platform-express'] },
  { name: 'cjs-express', type: 'commonjs', platform: 'express', packages: ['@nestjs/platform-express'] },
  { name: 'esm-fastify', type: 'module', platform: 'fastify', packages: ['@nestjs/platform-fastify'] },
];

/**
 * What each entry point loads at import time of the optional peers (package.json's peerDependenciesMeta): without
 * them the import throws MissingPeerError (E_MISSING_PEER) naming the subpath, the missing package and the install
 * line (`install`). Entry points not listed load with no optional peer installed.
 */
const NEEDS = {
  './notifications': {
    missing: ['@nestjs/websockets'],
    install: ['@nestjs/websockets', '@nestjs/platform-socket.io', 'socket.io'],
  },
  './testing': { missing: ['@nestjs/testing'], install: ['@nestjs/testing'] },
  './otel': { missing: ['@opentelemetry/api'], install: ['@opentelemetry/api'] },
  './terminus': { missing: ['@nestjs/terminus'], install: ['@nestjs/terminus'] },
};
const LOAD_WITHOUT_PEERS = ['.', './advanced', './dashboard'];

/**
 * RTK_PACKAGE_RUNTIME=bun or =deno: the fixture apps (compiled by Node's tsc as on Node) run under that runtime, the one
 * on PATH (Deno as `deno run -A`, on the app's node_modules), with the runtime fixture (app/runtime-main.ts: the URL
 * cache, the L1 under tracking, rate-limit headers and refunds, a client that aborts, lock auto-extension and
 * LockService.current(), diagnostics_channel and TracingChannel, each feature with Redis paused, the reconnection after
 * a restart; then app/runtime-cluster.ts: the features on a 3-master cluster) after main.ts; the gateway app with a
 * Socket.IO client from this process; and the app without optional peers (each gated subpath throws
 * MissingPeerError). The tarball's own checks run as on Node; docs/testing.md's examples, the bundles and the consumer
 * settings do not (they check the package and the compilers, not the runtime).
 */
const RUNTIMES = {
  bun: (file) => ['bun', [file]],
  deno: (file) => ['deno', ['run', '-A', file]],
};
const runtime = process.env.RTK_PACKAGE_RUNTIME;
if (runtime !== undefined && !RUNTIMES[runtime]) {
  process.stdout.write(
    `not ok - RTK_PACKAGE_RUNTIME=${runtime}: expected one of ${Object.keys(RUNTIMES).join(', ')}\n`,
  );
  process.exit(1);
}
/**
 * RTK_PACKAGE_NODE_FLAGS="--disable-proto=throw" (flags split on spaces): the fixture apps run on this process's Node
 * with those flags (hardened Node: --disable-proto, --permission, --disallow-code-generation-from-strings), and only
 * they: tsc, npm pack and this script run without them. The same parts run as under RTK_PACKAGE_RUNTIME (the runtime
 * fixture, the gateway, the app without optional peers); the bundles, docs/testing.md's examples and the consumer
 * settings do not. The fixture's redis-servers come from the package's /testing helpers, which need a temp dir and a
 * child process: under --permission give the flags --allow-fs-write and --allow-child-process for them, and the
 * permission app (permissionApp) checks the toolkit with only --allow-fs-read (and --allow-net) on a server of ours.
 */
const nodeFlags = (process.env.RTK_PACKAGE_NODE_FLAGS ?? '').split(' ').filter(Boolean);
if (runtime && nodeFlags.length) {
  process.stdout.write('not ok - RTK_PACKAGE_NODE_FLAGS is for Node: not with RTK_PACKAGE_RUNTIME\n');
  process.exit(1);
}
const hardened = nodeFlags.length > 0;
/** Under another runtime or hardened flags only the apps run: no bundles, docs examples or consumer settings. */
const appsOnly = Boolean(runtime) || hardened;
/**
 * What cannot run under a flag by its own code, not the toolkit's (`app`: a fixture's platform, or `gateway`): that
 * app must stop at start with that error (checked, so a fix upstream shows), and its other checks are not run. The
 * toolkit's hostile-input checks still run beside a refused platform (app/hostile-main.ts needs no HTTP platform).
 */
const PLATFORM_REFUSALS = [
  {
    flag: '--disallow-code-generation-from-strings',
    app: 'fastify',
    error: /EvalError: Code generation from strings disallowed[\s\S]*find-my-way/,
    why: "Fastify's router (find-my-way) compiles each route with new Function (EvalError)",
  },
  {
    flag: '--disable-proto=throw',
    app: 'gateway',
    error: /Accessing Object\.prototype\.__proto__ has been disallowed[\s\S]*object-hash[\s\S]*@nestjs\/websockets/,
    why: "@nestjs/websockets hashes each gateway's options with object-hash, which reads __proto__",
  },
];
/** The refusal of `app` under this run's flags, if any. */
const refusalOf = (app) => PLATFORM_REFUSALS.find((r) => r.app === app && nodeFlags.includes(r.flag));

/** A refused app's run (`file` under the flags): it must exit non-zero with the refusal's error and no `ok` line. */
async function refusedStart(refusal, name, dir, file) {
  const booted = await run(...runUnder(file), dir, 60_000);
  const ok = !booted.ok && !/^ok - /m.test(booted.output) && refusal.error.test(booted.output);
  return [ok, `${name}: the app stops at start, ${refusal.why}`, booted.output];
}
/**
 * The checks an app printed (its `ok - ` / `not ok - ` lines) under `name`, and a failed one (`missing`, with the
 * output) when it exited non-zero or printed fewer than `least`.
 */
function appChecks(ran, name, least, missing) {
  const lines = ran.output.split('\n').filter((l) => /^(not )?ok - /.test(l));
  const out = lines.map((line) => [line.startsWith('ok - '), `${name}: ${line.replace(/^(not )?ok - /, '')}`]);
  if (!ran.ok || lines.length < least) out.push([false, `${name}: ${missing}`, ran.output]);
  return out;
}

/**
 * Runs `source` as a module of `type` in `dir`: with `-e` on Node (with the run's flags), from a file `<base>.mjs` or
 * `.cjs` under another runtime (Node's --input-type is Node's own).
 */
async function runSource(dir, base, type, source) {
  if (!runtime) return run(process.execPath, [...nodeFlags, `--input-type=${type}`, '-e', source], dir);
  const file = `${base}.${type === 'commonjs' ? 'cjs' : 'mjs'}`;
  writeFileSync(join(dir, file), source);
  return run(...runUnder(file), dir);
}
const underRuntime = runtime ? ` under ${runtime}` : hardened ? ` under node ${nodeFlags.join(' ')}` : '';
/** [command, args] running `file` under the selected runtime (Node: this process's, with RTK_PACKAGE_NODE_FLAGS). */
const runUnder = (file) => (runtime ? RUNTIMES[runtime](file) : [process.execPath, [...nodeFlags, file]]);
if (runtime === 'deno') process.env.DENO_NO_UPDATE_CHECK = '1'; // no registry or network call of its own

let passed = 0;
let failed = 0;
function report(ok, name, detail = '') {
  if (ok) passed++;
  else failed++;
  process.stdout.write(`${ok ? 'ok' : 'not ok'} - ${name}${ok || !detail ? '' : `\n${indent(detail)}`}\n`);
}
const indent = (text) =>
  String(text)
    .trim()
    .split('\n')
    .map((l) => `    ${l}`)
    .join('\n');

function link(nodeModules, name) {
  const target = join(repoModules, name);
  if (!existsSync(target)) throw new Error(`${name} is not installed in ${repoModules}`);
  const at = join(nodeModules, name);
  mkdirSync(dirname(at), { recursive: true });
  if (!existsSync(at)) symlinkSync(target, at, 'dir');
}

/**
 * A directory with the tarball unpacked as node_modules/nestjs-redis-toolkit and `packages` linked beside it, with
 * the package's dependencies and peers (`optionalPeers: false`: only the required ones).
 */
function makeApp(dir, type, packages, { optionalPeers = true } = {}) {
  const nodeModules = join(dir, 'node_modules');
  mkdirSync(nodeModules, { recursive: true });
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: 'fixture', private: true, type }, null, 2));
  cpSync(unpacked, join(nodeModules, 'nestjs-redis-toolkit'), { recursive: true });
  const peers = Object.keys(pkg.peerDependencies ?? {}).filter(
    (name) => optionalPeers || !pkg.peerDependenciesMeta?.[name]?.optional,
  );
  const own = [...Object.keys(pkg.dependencies ?? {}), ...peers];
  for (const name of new Set([...own, ...packages, '@types/node'])) link(nodeModules, name);
}

function tsconfig(dir, include, types = ['node']) {
  writeFileSync(
    join(dir, 'tsconfig.json'),
    JSON.stringify({
      compilerOptions: {
        target: 'ES2022',
        module: 'NodeNext',
        moduleResolution: 'NodeNext',
        strict: true,
        experimentalDecorators: true,
        emitDecoratorMetadata: true,
        useDefineForClassFields: false,
        // as the Nest CLI's tsconfig: every type a handler returns must be nameable from the package (results.ts)
        declaration: true,
        skipLibCheck: true,
        types,
        rootDir: 'src',
        outDir: 'dist',
      },
      include,
    }),
  );
}

/** Builds and runs one fixture app; returns its report lines ([ok, name, detail]). */
async function fixtureApp(fixture) {
  const out = [];
  const dir = join(work, fixture.name);
  makeApp(dir, fixture.type, fixture.packages);
  mkdirSync(join(dir, 'src'));
  const sources = [
    'app.module.ts',
    'main.ts',
    'results.ts',
    'checks.ts',
    ...(appsOnly ? ['runtime.module.ts', 'runtime-main.ts', 'runtime-cluster.ts'] : []),
    ...(hardened ? ['permission-main.ts', 'hostile-main.ts'] : runtime === 'deno' ? ['permission-main.ts'] : []),
  ];
  for (const file of sources) cpSync(join(appSources, file), join(dir, 'src', file));
  cpSync(join(appSources, `platform-${fixture.platform}.ts`), join(dir, 'src/platform.ts'));
  tsconfig(dir, ['src']);
  const compiled = await run(process.execPath, [tsc, '-p', dir, '--pretty', 'false'], dir);
  out.push([compiled.ok, `${fixture.name}: compiles against the published types`, compiled.output]);
  if (!compiled.ok) return out;

  // Every entry point loads the way this app loads modules (require for CommonJS, import for ESM), with the names of
  // the module its `types` describe (an entry point may be a gate in front of it that checks the optional peers).
  const entries = Object.entries(pkg.exports)
    .filter(([s]) => s !== './package.json')
    .map(([s, entry]) => [posix.join('nestjs-redis-toolkit', s), entry.types.replace(/\.d\.ts$/, '.js')]);
  const subpaths = entries.map(([s]) => s);
  const load = fixture.type === 'commonjs' ? 'require' : 'await import';
  const loader = `const { join } = ${load}('node:path'); const { pathToFileURL } = ${load}('node:url');
    const names = (m) => Object.keys(m).filter((k) => !['default', '__esModule', 'module.exports'].includes(k)).sort();
    for (const [s, file] of ${JSON.stringify(entries)}) {
      const m = ${load}(s);
      if (!Object.keys(m).length) throw new Error(s + ' is empty');
      const at = join(process.cwd(), 'node_modules/nestjs-redis-toolkit', file);
      const types = ${load}(${fixture.type === 'commonjs' ? 'at' : 'pathToFileURL(at).href'});
      if (names(m).join() !== names(types).join())
        throw new Error(s + ' exports ' + names(m).join(', ') + ' where ' + file + ' has ' + names(types).join(', '));
    }`;
  const loaded = await runSource(dir, 'load', fixture.type, loader);
  const how = fixture.type === 'commonjs' ? 'require' : 'import';
  const loadedName = `${fixture.name}${underRuntime}: ${how} ${subpaths.join(', ')}, each with its types' names`;
  out.push([loaded.ok, loadedName, loaded.output]);

  // the platform's own limit: its app must stop at start with the platform's error, never serve half the routes
  const refusal = refusalOf(fixture.platform);
  if (refusal) out.push(await refusedStart(refusal, `${fixture.name}${underRuntime}`, dir, 'dist/main.js'));
  const mains = [
    ...(refusal ? [] : [['dist/main.js', 5]]),
    ...(runtime || (hardened && !refusal) ? [['dist/runtime-main.js', 20]] : []),
    ...(hardened ? [['dist/hostile-main.js', 4]] : []),
  ];
  for (const [main, least] of mains) {
    const booted = await run(...runUnder(main), dir, 90_000);
    out.push(...appChecks(booted, `${fixture.name}${underRuntime}`, least, `${main} ran every check and exited`));
  }
  if (nodeFlags.includes('--permission')) out.push(...(await permissionApp(fixture, dir)));
  if (runtime === 'deno') out.push(...(await denoNetDenied(fixture, dir)));
  return out;
}

/**
 * `fn(server)` with a redis-server started by the package's own startRedisServer, loaded from the app's install in
 * `dir` (this script runs without the apps' flags), and stopped after.
 */
async function onPackageServer(dir, fn) {
  const testing = createRequire(join(dir, 'package.json'))('nestjs-redis-toolkit/testing');
  const server = await testing.startRedisServer();
  try {
    return await fn(server);
  } finally {
    await server.stop();
  }
}

/**
 * Under --permission: the fixture app (app/permission-main.ts, one route per feature) on a redis-server of
 * onPackageServer, with only `--permission`, reads of the app's dir and of the repo's node_modules (where the app's
 * peers link to) and, where this Node gates the network (25+), `--allow-net`: the toolkit reads nothing else, and
 * needs no fs write, child process or worker. Then, on such a Node, without --allow-net: the start fails with
 * RedisUnavailableError naming --allow-net.
 */
function permissionApp(fixture, dir) {
  return onPackageServer(dir, async ({ url }) => {
    const gated = process.allowedNodeEnvironmentFlags.has('--allow-net');
    const least = [
      '--permission',
      `--allow-fs-read=${dir}/*`,
      `--allow-fs-read=${repoModules}/*`,
      ...(gated ? ['--allow-net'] : []),
    ];
    const runs = [[least, [url], 7], ...(gated ? [[least.slice(0, -1), [url, 'net-denied'], 3]] : [])];
    const out = [];
    for (const [flags, args, count] of runs) {
      const ran = await run(process.execPath, [...flags, 'dist/permission-main.js', ...args], dir, 60_000);
      out.push(...appChecks(ran, `${fixture.name} under node ${flags.join(' ')}`, count, 'ran every check and exited'));
    }
    return out;
  });
}

/**
 * Under Deno, each run reading only the app's files and modules (and what the helpers read: their state dir,
 * redis-server's dir), no prompt: the permission app (app/permission-main.ts) with every grant but the network
 * (`--allow-read=… --allow-env --allow-sys`): the /testing helpers must refuse with RedisServerPermissionError naming
 * Deno's grants (their free-port probe threw uncaught and ended the process, until 2026-12-07), and the start must fail
 * with RedisUnavailableError naming --allow-net, not as a server that is down (Deno's own "Requires net access" with
 * "check that the server is running", and with lazyConnect an app whose every call failed as an outage, until
 * 2026-12-07). Then with only the grants that refusal names (and read, env): the helpers start a server. And
 * sweepStaleServers with the state dir writable but no --allow-run must refuse, leaving this process's live server as
 * it is (it removed the dir and pid file of every live run's server, each owner read as gone, until 2026-12-07).
 * Last, on a 3-master cluster with only its first master granted: the start must stop naming the other two, and a
 * lazy one log that error (app/permission-main.ts clusterMastersDenied).
 */
function denoNetDenied(fixture, dir) {
  return onPackageServer(dir, async (server) => {
    const stateDir = join(tmpdir(), 'rtk-test-redis');
    // the app's own files and modules (its peers link to the repo's node_modules)
    const appReads = `${dir},${repoModules}`;
    const redisServerPath = execFileSync('which', ['redis-server'], { encoding: 'utf8' }).trim();
    const { url } = server;
    const testing = createRequire(join(dir, 'package.json'))('nestjs-redis-toolkit/testing');
    const cluster = await testing.startRedisCluster();
    const [first] = cluster.startupNodes;
    const runs = [
      [['--no-prompt', `--allow-read=${appReads}`, '--allow-env', '--allow-sys'], 'net-denied', 3],
      [
        ['--no-prompt', `--allow-read=${appReads},${stateDir}`, '--allow-env', `--allow-write=${stateDir}`],
        `sweep-denied=${server.dir}`,
        1,
      ],
      [
        [
          '--no-prompt',
          `--allow-read=${appReads},${stateDir},${dirname(redisServerPath)}`,
          '--allow-env',
          '--allow-run',
          `--allow-write=${stateDir}`,
          '--allow-net=127.0.0.1',
        ],
        'helpers-granted',
        1,
      ],
      [
        [
          '--no-prompt',
          `--allow-read=${appReads}`,
          '--allow-env',
          '--allow-sys',
          `--allow-net=${first.host}:${first.port}`,
        ],
        `cluster-net=${JSON.stringify(cluster.startupNodes)}`,
        2,
      ],
    ];
    const out = [];
    try {
      for (const [flags, mode, count] of runs) {
        const ran = await run('deno', ['run', ...flags, 'dist/permission-main.js', url, mode], dir, 60_000);
        if (mode.startsWith('sweep-denied') && !existsSync(server.dir))
          out.push([false, `${fixture.name}: under deno, sweepStaleServers leaves a live server's dir`, server.dir]);
        out.push(
          ...appChecks(ran, `${fixture.name} under deno run ${flags.join(' ')}`, count, 'ran every check and exited'),
        );
      }
    } finally {
      await cluster.stop();
    }
    return out;
  });
}

/**
 * Under RTK_PACKAGE_RUNTIME: the gateway fixture (app/gateway-main.ts, `notificationsGateway: true`, its peers
 * installed) compiled by Node's tsc and run under the runtime; a Socket.IO client from this process authenticates,
 * subscribes and receives a notification through it (bundlers.mjs's gatewayRoundTrip, as for the bundled gateway).
 */
async function gatewayApp() {
  const dir = join(work, 'gateway');
  makeApp(dir, 'module', ['@nestjs/platform-express']);
  mkdirSync(join(dir, 'src'));
  cpSync(join(appSources, 'gateway.module.ts'), join(dir, 'src/gateway.module.ts'));
  cpSync(join(appSources, 'gateway-main.ts'), join(dir, 'src/main.ts'));
  cpSync(join(appSources, 'platform-express.ts'), join(dir, 'src/platform.ts'));
  tsconfig(dir, ['src']);
  const compiled = await run(process.execPath, [tsc, '-p', dir, '--pretty', 'false'], dir);
  const name = `gateway app (Express)${underRuntime}`;
  if (!compiled.ok) return [[false, `${name}: compiles against the published types`, compiled.output]];
  const refusal = refusalOf('gateway');
  if (refusal) return [await refusedStart(refusal, name, dir, 'dist/main.js')];
  return gatewayRoundTrip(name, dir, 'dist/main.js', repoModules, runUnder('dist/main.js'));
}

/**
 * An app with only the required peers (no optional one installed) loads every entry point, from ESM and from CommonJS:
 * those of LOAD_WITHOUT_PEERS load; each of NEEDS throws MissingPeerError (E_MISSING_PEER, a RedisToolkitError of the
 * same class as the root's) naming the subpath, the missing package and the install line, not Node's own
 * ERR_MODULE_NOT_FOUND from inside dist/. The subpaths are loaded before the root, which is then loaded too.
 */
async function peerlessApp() {
  const out = [];
  const dir = join(work, 'peerless');
  makeApp(dir, 'module', [], { optionalPeers: false });
  const subpaths = Object.keys(pkg.exports).filter((s) => s !== './package.json');
  const unknown = subpaths.filter((s) => !NEEDS[s] && !LOAD_WITHOUT_PEERS.includes(s));
  out.push([unknown.length === 0, 'every entry point says whether it loads without optional peers', unknown.join()]);
  for (const type of ['module', 'commonjs']) {
    const load = type === 'commonjs' ? 'require' : 'await import';
    const specifiers = Object.fromEntries(subpaths.map((s) => [s, posix.join('nestjs-redis-toolkit', s)]));
    // Under Bun or Deno the ES module imports run side by side: Deno 2.9.6 never settles the third of failing dynamic
    // imports awaited one after another of modules with top-level await (the gates have one), without the toolkit too.
    const entries = `Object.entries(${JSON.stringify(specifiers)})`;
    const [open, close] =
      runtime && type === 'module'
        ? [`await Promise.all(${entries}.map(async ([s, specifier]) => {`, '}));']
        : [`for (const [s, specifier] of ${entries}) {`, '}'];
    const script = `const results = {};
      ${open}
        try { results[s] = { keys: Object.keys(${load}(specifier)).length }; }
        catch (e) { results[s] = { error: e }; }
      ${close}
      const root = ${load}('nestjs-redis-toolkit');
      let advanced = {}; try { advanced = ${load}('nestjs-redis-toolkit/advanced'); } catch {}
      for (const r of Object.values(results)) if (r.error) {
        const e = r.error;
        r.error = { name: e?.name, code: e?.code, message: String(e?.message),
          toolkit: typeof root.RedisToolkitError === 'function' && e instanceof root.RedisToolkitError,
          missingPeer: typeof advanced.MissingPeerError === 'function' && e instanceof advanced.MissingPeerError };
      }
      console.log(JSON.stringify(results));`;
    const how = `${type === 'commonjs' ? 'CommonJS require' : 'ESM import'}${underRuntime}`;
    const ran = await runSource(dir, 'peerless', type, script);
    let results;
    try {
      // the last JSON line: under --permission Node's warnings (stderr) may come after it
      results = JSON.parse(
        ran.output
          .trim()
          .split('\n')
          .findLast((l) => l.startsWith('{')),
      );
    } catch {
      out.push([false, `without optional peers, ${how}: the script ran`, ran.output]);
      continue;
    }
    const loads = LOAD_WITHOUT_PEERS.filter((s) => !results[s]?.keys);
    out.push([
      loads.length === 0,
      `without optional peers, ${how}: ${LOAD_WITHOUT_PEERS.join(', ')} load`,
      JSON.stringify(Object.fromEntries(loads.map((s) => [s, results[s]])), null, 2),
    ]);
    for (const [s, { missing, install }] of Object.entries(NEEDS)) {
      const e = results[s]?.error;
      const name = posix.join('nestjs-redis-toolkit', s);
      const ok =
        e?.name === 'MissingPeerError' &&
        e.code === 'E_MISSING_PEER' &&
        e.toolkit &&
        e.missingPeer &&
        e.message.includes(name) &&
        missing.every((p) => e.message.includes(p)) &&
        e.message.includes(`npm install ${install.join(' ')}`);
      out.push([
        ok,
        `without ${missing.join(', ')}, ${how} '${name}' throws MissingPeerError (E_MISSING_PEER) naming it, ` +
          `the package and npm install ${install.join(' ')}`,
        JSON.stringify(results[s], null, 2),
      ]);
    }
  }
  return out;
}

/** The fenced block right after `<!-- name: ... -->` in docs/testing.md (undefined when there is none). */
function testingDocBlock(name) {
  const text = readFileSync(join(repo, 'docs/testing.md'), 'utf8');
  const marker = text.indexOf(`<!-- ${name}:`);
  return marker < 0 ? undefined : /```\w*\n([\s\S]*?)\n```/.exec(text.slice(marker))?.[1];
}

/** docs/testing.md's Vitest example, type-checked and run by Vitest against the installed tarball. */
async function vitestExample() {
  const dir = join(work, 'vitest');
  makeApp(dir, 'module', ['@nestjs/testing', 'vitest']);
  const block = testingDocBlock('vitest-example');
  mkdirSync(join(dir, 'src'));
  writeFileSync(join(dir, 'src/export.test.ts'), block ?? '');
  tsconfig(dir, ['src']);
  const checked = await run(process.execPath, [tsc, '-p', dir, '--noEmit', '--pretty', 'false'], dir);
  const vitest = await run(process.execPath, [join(repoModules, 'vitest/vitest.mjs'), 'run', '--root', dir], dir);
  const summary = /Tests\s+(\d+) passed \((\d+)\)/.exec(vitest.output.replace(/\x1b\[[0-9;]*m/g, ''));
  return [
    [Boolean(block) && checked.ok, "docs/testing.md's Vitest example type-checks", checked.output],
    [
      vitest.ok && summary !== null && summary[1] === summary[2] && Number(summary[1]) >= 2,
      `docs/testing.md's Vitest example passes under Vitest (${summary ? `${summary[1]} tests` : 'no summary'})`,
      vitest.output,
    ],
  ];
}

/** A file an earlier build left behind (its source since deleted): prepack must not ship it. */
const STALE = 'dist/lib/removed-before-this-build.js';

/**
 * A clean checkout in `dir`: the files git tracks or would track (what a fresh clone has, plus work not yet
 * committed), no dist/, node_modules linked from this repo, and one stale file in dist/lib as an old build leaves.
 */
function cleanCheckout(dir) {
  const listed = execFileSync('git', ['ls-files', '-z', '--cached', '--others', '--exclude-standard'], {
    cwd: repo,
    encoding: 'utf8',
  });
  for (const file of listed.split('\0').filter(Boolean)) {
    if (!existsSync(join(repo, file))) continue; // deleted, not yet committed
    mkdirSync(dirname(join(dir, file)), { recursive: true });
    cpSync(join(repo, file), join(dir, file));
  }
  symlinkSync(repoModules, join(dir, 'node_modules'), 'dir');
  mkdirSync(join(dir, dirname(STALE)), { recursive: true });
  writeFileSync(join(dir, STALE), 'export const removed = true;\n');
}

/**
 * docs/testing.md's Jest setup as a CommonJS Nest app has it (package.json without "type"): the doc's jest.config.mjs
 * and test script, and its Jest example as src/price.service.spec.ts, type-checked, then run by `npm test`.
 */
async function jestExample() {
  const dir = join(work, 'jest');
  makeApp(dir, 'commonjs', ['@nestjs/testing', 'jest', '@swc/core', '@swc/jest', '@types/jest']);
  mkdirSync(join(dir, 'node_modules/.bin'));
  symlinkSync('../jest/bin/jest.js', join(dir, 'node_modules/.bin/jest')); // as npm installs it, for `jest` in scripts
  const config = testingDocBlock('jest-config');
  const script = testingDocBlock('jest-script');
  const example = testingDocBlock('jest-example');
  const setup = Boolean(config && script);
  if (config) writeFileSync(join(dir, 'jest.config.mjs'), config);
  const app = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'));
  if (script) writeFileSync(join(dir, 'package.json'), JSON.stringify({ ...app, ...JSON.parse(script) }, null, 2));
  mkdirSync(join(dir, 'src'));
  writeFileSync(join(dir, 'src/price.service.spec.ts'), example ?? '');
  tsconfig(dir, ['src'], ['node', 'jest']);
  const checked = await run(process.execPath, [tsc, '-p', dir, '--noEmit', '--pretty', 'false'], dir);
  const jest = await run('npm', ['test', '--silent'], dir);
  const summary = /Tests:\s+(\d+) passed, (\d+) total/.exec(jest.output);
  const count = summary ? `${summary[1]} tests` : 'no summary';
  return [
    [setup, 'docs/testing.md gives the Jest setup (<!-- jest-config --> and <!-- jest-script --> blocks)'],
    [Boolean(example) && checked.ok, "docs/testing.md's Jest example type-checks", checked.output],
    [
      setup && jest.ok && summary !== null && summary[1] === summary[2] && Number(summary[1]) >= 2,
      `docs/testing.md's Jest example passes under the doc's Jest setup in a CommonJS app (${count})`,
      jest.output,
    ],
  ];
}

/**
 * The tarball this run checks: `npm pack` of a clean copy of the checkout (no dist/, so prepack builds it), or, with
 * RTK_PACKAGE_TARBALL=<file>, the one an earlier run packed there (with npm's report of it, `<file>.json`; packed and
 * kept there when absent). .ci/run packs once and checks that tarball on every Node line, under the hardened flags
 * and under Bun and Deno, as one published package is installed on each (~8 s a run).
 */
function tarballOf(kept) {
  if (kept && existsSync(kept) && existsSync(`${kept}.json`))
    return { packed: JSON.parse(readFileSync(`${kept}.json`, 'utf8')), tarball: kept, how: 'packed by an earlier run' };
  const checkout = join(work, 'checkout');
  cleanCheckout(checkout);
  const packStarted = Date.now();
  const packOutput = execFileSync('npm', ['pack', '--json', '--pack-destination', work], {
    cwd: checkout,
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  // Lifecycle scripts (prepack) may print before npm's JSON: take the JSON array that closes the output.
  const [packed] = JSON.parse(packOutput.slice(packOutput.search(/^\[\s*\{/m)));
  const tarball = join(work, packed.filename);
  if (kept) {
    cpSync(tarball, kept);
    writeFileSync(`${kept}.json`, JSON.stringify(packed));
  }
  return { packed, tarball, how: `packed in ${Math.round((Date.now() - packStarted) / 1000)} s` };
}

const tsc = join(repoModules, 'typescript/bin/tsc');
const work = mkdtempSync(join(tmpdir(), 'rtk-package-'));
let unpacked;
const started = Date.now();
if (hardened) process.stdout.write(`# node ${process.version} ${nodeFlags.join(' ')} (the fixture apps only)\n`);
if (runtime) {
  const version = await run(runtime, ['--version'], work);
  process.stdout.write(`# runtime: ${runtime} ${version.output.trim().split('\n')[0]}\n`);
  report(version.ok, `${runtime} is on PATH`, version.output);
}
try {
  // --- the tarball -------------------------------------------------------------------------------------------------
  const { packed, tarball, how } = tarballOf(process.env.RTK_PACKAGE_TARBALL);
  execFileSync('tar', ['xzf', tarball, '-C', work]);
  unpacked = join(work, 'package');
  const files = new Set(packed.files.map((f) => f.path));
  const missing = ['LICENSE', 'README.md', 'package.json', 'docs/testing.md', 'docs/session.md'].filter(
    (f) => !files.has(f),
  );
  report(missing.length === 0, 'the tarball holds LICENSE, README.md and docs/', `missing: ${missing.join(', ')}`);
  const license = readFileSync(join(unpacked, 'LICENSE'), 'utf8');
  report(pkg.license === 'MIT' && /^MIT License/.test(license), 'LICENSE is the MIT text package.json names');

  const targets = Object.entries(pkg.exports).flatMap(([sub, entry]) =>
    (typeof entry === 'string' ? [entry] : Object.values(entry)).map((t) => [sub, t.replace(/^\.\//, '')]),
  );
  const absent = targets.filter(([, t]) => !files.has(t)).map(([sub, t]) => `${sub} → ${t}`);
  report(
    absent.length === 0,
    `npm pack from a checkout without dist/ ships every exports target (${targets.length}; ${how})`,
    absent.join('\n'),
  );
  report(!files.has(STALE), `the tarball holds nothing an earlier build left in dist/lib (${STALE})`);
  // The Lua scripts and the dashboard's page are compiled into the modules (scripts/embed-assets.mjs): a bundled app
  // has no package directory, so the package reads no file of its own and ships none of them.
  const assets = [...files].filter((f) => f.endsWith('.lua') || f.includes('/page/'));
  report(
    assets.length === 0,
    'the tarball ships no .lua or dashboard page file (compiled into its modules)',
    assets.join('\n'),
  );

  // A shipped source map must let a debugger or a stack trace reach the code: its sources inlined, or shipped too.
  const maps = [...files].filter((f) => f.endsWith('.map'));
  const blind = maps.flatMap((file) => {
    const map = JSON.parse(readFileSync(join(unpacked, file), 'utf8'));
    return map.sources
      .map((source, i) => [source, map.sourcesContent?.[i]])
      .filter(([source, content]) => typeof content !== 'string' && !files.has(posix.join(posix.dirname(file), source)))
      .map(([source]) => `${file}: ${source}`);
  });
  report(
    blind.length === 0,
    `every shipped source map (${maps.length}) inlines its sources or they are in the tarball`,
    `${blind.length} sources neither inlined nor shipped, e.g.\n${blind.slice(0, 5).join('\n')}`,
  );

  const docs = [...files].filter((f) => f === 'README.md' || /^docs\/[^/]+\.md$/.test(f));
  const dead = docs.flatMap((doc) => {
    const text = readFileSync(join(unpacked, doc), 'utf8');
    return [...text.matchAll(/\]\(([^)\s]+)\)/g)]
      .map((m) => m[1])
      .filter((href) => !/^[a-z]+:|^#/.test(href))
      .map((href) => [href, posix.normalize(posix.join(posix.dirname(doc), href.split('#')[0]))])
      .filter(([, path]) => !files.has(path) && ![...files].some((f) => f.startsWith(`${path}/`)))
      .map(([href]) => `${doc}: ${href}`);
  });
  report(
    dead.length === 0,
    `README.md and docs/*.md: every relative link resolves inside the tarball`,
    dead.join('\n'),
  );
  const undeclared = declaredDependencyProblems(unpacked); // what pnpm and Yarn PnP would refuse, found without them
  report(
    undeclared.length === 0,
    'dist/lib loads only declared packages, and its optional peers behind MissingPeerError',
    undeclared.join('\n'),
  );

  // --- apps, one per fixture, one without optional peers, docs/testing.md's Vitest and Jest examples, side by side --
  // bundlers.mjs: the fixture app bundled (esbuild cjs and esm, webpack, ncc esm and cjs), and the gateway app (webpack,
  // ncc esm, esbuild esm with its peers external), each bundle run alone in an empty directory
  // RTK_PACKAGE_BUNDLES=skip: not on this run (.ci/run bundles on the machine's Node only, not on the other lines: the
  // bundles are most of this suite's time, and what they prove depends on the bundlers more than on Node's line)
  const bundling = process.env.RTK_PACKAGE_BUNDLES !== 'skip' && !appsOnly;
  if (!bundling && !appsOnly) process.stdout.write('# the bundles are skipped (RTK_PACKAGE_BUNDLES=skip)\n');
  const bundled = bundling ? bundledApps({ work, repoModules, appSources, tsc, makeApp, tsconfig, run }) : [];
  const results = await Promise.all(
    appsOnly
      ? [...FIXTURES.map(fixtureApp), peerlessApp(), gatewayApp()]
      : [
          ...FIXTURES.map(fixtureApp),
          peerlessApp(),
          vitestExample(),
          jestExample(),
          bundled,
          consumerSettings({ unpacked, work }),
        ],
  );
  for (const lines of results) for (const [ok, name, detail] of lines) report(ok, name, detail);
} catch (err) {
  report(false, 'the package suite ran to the end', err instanceof Error ? err.stack : String(err));
} finally {
  rmSync(work, { recursive: true, force: true });
}
process.stdout.write(
  `\nPackage: ${passed} passed, ${failed} failed (${Math.round((Date.now() - started) / 1000)} s)\n`,
);
process.exit(failed === 0 ? 0 : 1);
