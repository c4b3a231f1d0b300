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
// Nest's lazy imports of packages the app does not have (microservices, class-validator, class-transformer) are left
// out as each recipe does: esbuild `external`, webpack IgnorePlugin.
import { cpSync, mkdirSync, readdirSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';

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

async function esbuildBundle(repoModules, dir, format) {
  const esbuild = await import(join(repoModules, 'esbuild/lib/main.js'));
  const outfile = join(dir, 'bundle', format === 'esm' ? 'main.mjs' : 'main.cjs');
  await esbuild.build({
    entryPoints: [join(dir, 'dist/main.js')],
    bundle: true,
    platform: 'node',
    format,
    outfile,
    external: lazyMissing(dir),
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

const BUNDLERS = [
  { name: 'esbuild --format=cjs', type: 'module', build: (m, dir) => esbuildBundle(m, dir, 'cjs') },
  { name: 'esbuild --format=esm', type: 'module', build: (m, dir) => esbuildBundle(m, dir, 'esm') },
  { name: "webpack 5 (Nest's serverless recipe)", type: 'commonjs', build: webpackBundle },
];

/**
 * The report lines ([ok, name, detail]) of each bundler. `ctx`: run.mjs's work directory, makeApp, tsconfig, run,
 * the fixture's sources and tsc.
 */
export async function bundledApps({ work, repoModules, appSources, tsc, makeApp, tsconfig, run }) {
  const one = async ({ name, type, build }, i) => {
    const out = [];
    const dir = join(work, `bundle-${i}`);
    makeApp(dir, type, ['@nestjs/platform-express']);
    mkdirSync(join(dir, 'src'));
    for (const file of ['app.module.ts', 'main.ts', 'results.ts'])
      cpSync(join(appSources, file), join(dir, 'src', file));
    cpSync(join(appSources, 'platform-express.ts'), join(dir, 'src/platform.ts'));
    tsconfig(dir, ['src']);
    const compiled = await run(process.execPath, [tsc, '-p', dir, '--pretty', 'false'], dir);
    if (!compiled.ok) return [[false, `${name}: the fixture app compiles`, compiled.output]];
    let entry;
    try {
      entry = await build(repoModules, dir);
    } catch (err) {
      return [[false, `${name}: bundles the fixture app`, err instanceof Error ? err.message : String(err)]];
    }
    // the bundle alone in an empty directory, the app (its node_modules, the package) gone
    const alone = join(work, `bundled-${i}`);
    mkdirSync(alone);
    for (const file of readdirSync(join(dir, 'bundle'))) cpSync(join(dir, 'bundle', file), join(alone, file));
    rmSync(dir, { recursive: true, force: true });
    const entryName = entry.slice(entry.lastIndexOf('/') + 1);
    const booted = await run(process.execPath, [entryName], alone, 90_000);
    const lines = booted.output.split('\n').filter((l) => /^(not )?ok - /.test(l));
    for (const line of lines) out.push([line.startsWith('ok - '), `${name}: ${line.replace(/^(not )?ok - /, '')}`]);
    if (!booted.ok || lines.length < 6) out.push([false, `${name}: the bundled app ran every check`, booted.output]);
    return out;
  };
  return (await Promise.all(BUNDLERS.map(one))).flat();
}
