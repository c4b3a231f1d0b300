// The package inside a bundled app: the fixture app (test/package/app, Express), compiled by tsc against the installed
// tarball, bundled with every node_modules package inside (nestjs-redis-toolkit too), the bundle moved into an empty
// directory and the build directory deleted, so nothing can be read from the package's files or resolved from any
// node_modules; then it runs and each of its route checks must pass. Called by run.mjs (`npm run test:package`).
//
// - esbuild, --format=cjs: the ES module build of the app (its `import`s, as when bundling the TypeScript itself);
// - esbuild, --format=esm, with the usual createRequire banner (a bundled CommonJS package calls require());
// - webpack 5 with Nest's serverless recipe (docs.nestjs.com/faq/serverless): target node, `externals: []`, an
//   IgnorePlugin for Nest's lazy imports that are not installed; the CommonJS build of the app (`require()`s, as the
//   Nest CLI's ts-loader emits). webpack's output is a directory (chunks for Nest's lazy imports): moved whole.
// - @vercel/ncc, `ncc build dist/main.js -o bundle`, of each build of the app: ncc (webpack inside, with its own
//   resolver conditions: require or import, node, production; not `module`) writes an ES module bundle for the ES
//   module app (its package.json "type": "module") and a CommonJS one for the CommonJS app. Its output is a directory
//   too (chunks, socket.io's client files it relocates, the ESM bundle's package.json): moved whole.
// Nest's lazy imports of packages the app does not have (microservices, class-validator, class-transformer) are left
// out as each recipe does: esbuild `external`, webpack IgnorePlugin; ncc needs nothing, it turns a require it cannot
// resolve into one at run time, which Nest's lazy loader catches.
// Then the gateway app (GATEWAY_BUNDLERS below): bundled, run alone, and a Socket.IO client from this process receives a
// notification through it.
import { spawn } from 'node:child_process';
import { cpSync, mkdirSync, readdirSync, rmSync, symlinkSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';

/** Nest 12's lazy imports (Nest's recipe lists them without `.js`, as Nest 11 wrote them). */
const NEST_LAZY = [
  '@nestjs/microservices',
  '@nestjs/microservices/microservices-module',
  '@nestjs/microservices/microservices-module.js',
  '@nestjs/websockets/socket-module',
  '@nestjs/websockets/socket-module.js',
  'class-validator',
  'class-transformer',
  'class-transformer/storage',
];

/** Those of NEST_LAZY the app at `dir` cannot resolve: what the recipes leave out of the bundle. */
function lazyMissing(dir) {
  const require = createRequire(join(dir, 'package.json'));
  return NEST_LAZY.filter((name) => {
    try {
      require.resolve(name);
      return false;
    } catch {
      return true;
    }
  });
}

async function esbuildBundle(repoModules, dir, format, external = []) {
  const esbuild = await import(join(repoModules, 'esbuild/lib/main.js'));
  const outfile = join(dir, 'bundle', format === 'esm' ? 'main.mjs' : 'main.cjs');
  await esbuild.build({
    entryPoints: [join(dir, 'dist/main.js')],
    bundle: true,
    platform: 'node',
    format,
    outfile,
    external: [...lazyMissing(dir), ...external],
    logLevel: 'silent',
    // a bundled CommonJS module's require() of a Node built-in, in an ES module bundle
    banner:
      format === 'esm'
        ? {
            js: "import { createRequire as __rtkCreateRequire } from 'node:module'; const require = __rtkCreateRequire(import.meta.url);",
          }
        : undefined,
  });
  return outfile;
}

async function webpackBundle(repoModules, dir) {
  const { default: webpack } = await import(join(repoModules, 'webpack/lib/index.js'));
  const missing = lazyMissing(dir);
  const config = {
    mode: 'none',
    target: 'node',
    context: dir,
    entry: './dist/main.js',
    externals: [],
    output: { path: join(dir, 'bundle'), filename: 'main.js', libraryTarget: 'commonjs2' },
    node: { __filename: false, __dirname: false },
    plugins: [new webpack.IgnorePlugin({ checkResource: (resource) => missing.includes(resource) })],
  };
  const stats = await new Promise((resolve, reject) =>
    webpack(config, (err, result) => (err ? reject(err) : resolve(result))),
  );
  const { errors } = stats.toJson({ all: false, errors: true });
  if (errors.length > 0) throw new Error(errors.map((e) => `${e.moduleName ?? ''} ${e.message}`).join('\n'));
  return join(dir, 'bundle/main.js');
}

/** The ncc CLI as a user runs it, in the app's directory; `--no-cache`: no build cache left in its node_modules. */
async function nccBundle(repoModules, dir, run) {
  const cli = join(repoModules, '@vercel/ncc/dist/ncc/cli.js');
  const built = await run(
    process.execPath,
    [cli, 'build', 'dist/main.js', '-o', 'bundle', '--quiet', '--no-cache'],
    dir,
  );
  if (!built.ok) throw new Error(built.output);
  return join(dir, 'bundle/index.js');
}

/** README's Bundling: the gateway's peers, loaded by a name known only at run time, kept external for esbuild. */
const GATEWAY_PEERS_EXTERNAL = ['@nestjs/websockets', 'socket.io'];

const BUNDLERS = [
  { name: 'esbuild --format=cjs', type: 'module', build: (m, dir) => esbuildBundle(m, dir, 'cjs') },
  { name: 'esbuild --format=esm', type: 'module', build: (m, dir) => esbuildBundle(m, dir, 'esm') },
  { name: "webpack 5 (Nest's serverless recipe)", type: 'commonjs', build: webpackBundle },
  { name: 'ncc, ES module app', type: 'module', build: nccBundle },
  { name: 'ncc, CommonJS app', type: 'commonjs', build: nccBundle },
];

/**
 * The gateway fixture (app/gateway-main.ts, app/gateway.module.ts: `notificationsGateway: true`, its peers installed
 * in the app) bundled by webpack (the CommonJS app, as the recipe) and ncc (the ES module app: its CommonJS bundle
 * takes the same path, the gateway's peer check skipped in a webpack bundle). Until 2026-12-07 neither bundle started:
 * the gateway's run-time peer check, `import(peer)` with a name known only then, is webpack's empty context there and
 * rejected every peer though bundled (MissingPeerError). esbuild as README's Bundling says: socket.io and
 * @nestjs/websockets kept external and installed beside the bundle (`beside`).
 */
const GATEWAY_BUNDLERS = [
  { name: "gateway app, webpack 5 (Nest's serverless recipe)", type: 'commonjs', build: webpackBundle },
  { name: 'gateway app, ncc, ES module app', type: 'module', build: nccBundle },
  {
    name: 'gateway app, esbuild --format=esm, socket.io and @nestjs/websockets external',
    type: 'module',
    build: (m, dir) => esbuildBundle(m, dir, 'esm', GATEWAY_PEERS_EXTERNAL),
    beside: GATEWAY_PEERS_EXTERNAL,
  },
];

/**
 * The app in `dir` (test/package/app's `files`, copied as src/<to>) compiled by tsc, bundled by `build`, the bundle
 * moved alone into `alone` (with `beside` linked into a node_modules there, what a user installs beside the bundle) and
 * `dir` deleted: `{ entryName, out }`, or `{ out }` (the failure lines) when it did not compile or bundle.
 */
async function bundleAlone({ name, type, build, beside = [] }, dir, alone, files, ctx) {
  const { repoModules, appSources, tsc, makeApp, tsconfig, run } = ctx;
  makeApp(dir, type, ['@nestjs/platform-express']);
  mkdirSync(join(dir, 'src'));
  for (const [from, to] of files) cpSync(join(appSources, from), join(dir, 'src', to));
  tsconfig(dir, ['src']);
  const compiled = await run(process.execPath, [tsc, '-p', dir, '--pretty', 'false'], dir);
  if (!compiled.ok) return { out: [[false, `${name}: the fixture app compiles`, compiled.output]] };
  let entry;
  const started = Date.now();
  try {
    entry = await build(repoModules, dir, run);
  } catch (err) {
    return { out: [[false, `${name}: bundles the fixture app`, err instanceof Error ? err.message : String(err)]] };
  }
  // how long each bundler takes, in every run's report
  const out = [[true, `${name}: bundles the fixture app (${Math.round((Date.now() - started) / 1000)} s)`]];
  // the bundle alone in an empty directory, the app (its node_modules, the package) gone
  mkdirSync(alone);
  for (const file of readdirSync(join(dir, 'bundle')))
    cpSync(join(dir, 'bundle', file), join(alone, file), { recursive: true });
  for (const pkg of beside) {
    mkdirSync(dirname(join(alone, 'node_modules', pkg)), { recursive: true });
    symlinkSync(join(repoModules, pkg), join(alone, 'node_modules', pkg), 'dir');
  }
  rmSync(dir, { recursive: true, force: true });
  return { entryName: entry.slice(entry.lastIndexOf('/') + 1), out };
}

const FIXTURE_FILES = [
  ['app.module.ts', 'app.module.ts'],
  ['main.ts', 'main.ts'],
  ['results.ts', 'results.ts'],
  ['checks.ts', 'checks.ts'],
  ['platform-express.ts', 'platform.ts'],
];
const GATEWAY_FILES = [
  ['gateway.module.ts', 'gateway.module.ts'],
  ['gateway-main.ts', 'main.ts'],
  ['platform-express.ts', 'platform.ts'],
];

/**
 * Runs the bundled gateway app alone (`node <entryName>` in `alone`) and, from this process, a Socket.IO client of the
 * repo's socket.io-client: a session token from POST /login, a handshake with it on /notifications, a subscribe to
 * user:alice, then POST /notify publishes to that channel through PubSubService and the client must receive it.
 * `command`: [command, args] that runs the app (run.mjs's RTK_PACKAGE_RUNTIME: Bun or Deno); default `node <entryName>`.
 */
export async function gatewayRoundTrip(name, alone, entryName, repoModules, command = undefined) {
  const { io } = createRequire(join(repoModules, 'package.json'))('socket.io-client');
  const [cmd, args] = command ?? [process.execPath, [entryName]];
  const app = spawn(cmd, args, { cwd: alone, env: { ...process.env, FORCE_COLOR: '0' } });
  let output = '';
  const closed = new Promise((resolve) => app.once('close', resolve));
  const url = await new Promise((resolve) => {
    const timer = setTimeout(resolve, 90_000); // a bound for a hung start, reported below with the app's output
    const listening = (chunk) => {
      output += chunk;
      const found = /^listening (\S+)$/m.exec(output);
      if (found) {
        clearTimeout(timer);
        resolve(found[1]);
      }
    };
    app.stdout.on('data', listening);
    app.stderr.on('data', (chunk) => (output += chunk));
    closed.then(() => {
      clearTimeout(timer);
      resolve(undefined);
    });
  });
  const out = [
    [url !== undefined, `${name}: the ${command ? '' : 'bundled '}app starts with notificationsGateway: true`, output],
  ];
  if (url === undefined) {
    app.kill('SIGKILL');
    return out;
  }
  let socket;
  try {
    const { token } = await fetch(`${url}/login`, { method: 'POST' }).then((r) => r.json());
    socket = io(`${url}/notifications`, { auth: { token }, transports: ['websocket'], reconnection: false });
    await new Promise((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('connect_error', (err) => reject(new Error(`connect_error ${err.message} ${err.data?.code}`)));
    });
    const ack = await socket.timeout(10_000).emitWithAck('subscribe', { channel: 'user:alice' });
    if (ack?.ok !== true) throw new Error(`subscribe ack ${JSON.stringify(ack)}`);
    const received = new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('no notification within 10 s')), 10_000);
      socket.once('notification', (message) => {
        clearTimeout(timer);
        resolve(message);
      });
    });
    const notified = await fetch(`${url}/notify`, { method: 'POST' });
    const message = await received;
    const ok = notified.status === 200 && message?.channel === 'user:alice' && message.data?.hello === 'gateway';
    out.push([ok, `${name}: a Socket.IO client authenticates, subscribes and receives a notification`, message]);
  } catch (err) {
    const detail = `${err instanceof Error ? err.message : String(err)}\n${output}`;
    out.push([false, `${name}: a Socket.IO client authenticates, subscribes and receives a notification`, detail]);
  } finally {
    socket?.close();
    app.stdin.end(); // the app closes, and stops its redis-server
    const stopped = setTimeout(() => app.kill('SIGKILL'), 20_000);
    await closed;
    clearTimeout(stopped);
  }
  return out;
}

/**
 * The report lines ([ok, name, detail]) of each bundler, and of the gateway app's. `ctx`: run.mjs's work directory,
 * makeApp, tsconfig, run, the fixture's sources and tsc.
 */
export async function bundledApps(ctx) {
  const { work, repoModules, run } = ctx;
  const one = async (bundler, i) => {
    const dir = join(work, `bundle-${i}`);
    const alone = join(work, `bundled-${i}`);
    const { entryName, out } = await bundleAlone(bundler, dir, alone, FIXTURE_FILES, ctx);
    if (entryName === undefined) return out;
    const booted = await run(process.execPath, [entryName], alone, 90_000);
    const lines = booted.output.split('\n').filter((l) => /^(not )?ok - /.test(l));
    for (const line of lines)
      out.push([line.startsWith('ok - '), `${bundler.name}: ${line.replace(/^(not )?ok - /, '')}`]);
    if (!booted.ok || lines.length < 6)
      out.push([false, `${bundler.name}: the bundled app ran every check`, booted.output]);
    return out;
  };
  const gateway = async (bundler, i) => {
    const dir = join(work, `gateway-bundle-${i}`);
    const alone = join(work, `gateway-bundled-${i}`);
    const { entryName, out } = await bundleAlone(bundler, dir, alone, GATEWAY_FILES, ctx);
    if (entryName === undefined) return out;
    return [...out, ...(await gatewayRoundTrip(bundler.name, alone, entryName, repoModules))];
  };
  return (await Promise.all([...BUNDLERS.map(one), ...GATEWAY_BUNDLERS.map(gateway)])).flat();
}
