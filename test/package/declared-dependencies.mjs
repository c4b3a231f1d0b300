// What the package loads, checked without installing it: under pnpm (a package sees only what it declares) and Yarn
// Plug'n'Play (an undeclared require throws) a package we load but do not declare breaks at load or at first use,
// where npm's flat node_modules hides it. Run over a package directory (the unpacked tarball, or this checkout after
// `npm run build`); reads package.json and every file under dist/lib.
//
// 1. Every bare specifier in dist/lib (static import and export-from, `import type`, `import('x').T` in .d.ts, and
//    every string reaching our own import(), require(), require.resolve() or createRequire()() — followed through
//    constants, array elements and function parameters to the literals at their call sites) names a Node built-in or
//    a package of package.json's dependencies or peerDependencies. A specifier it cannot follow to a literal is a
//    finding too: the check would be blind to it.
// 2. An optional peer (peerDependenciesMeta) is loaded lazily behind MissingPeerError: no entry point of `exports`
//    loads one when imported unless its gate (a top-level checkPeers(subpath, peers) call, lib/common/optional-peers.ts)
//    names it; a later load (a dynamic import of our module that loads one, or of the peer itself) is in a file that
//    reports a missing peer with MissingPeerError (it imports MissingPeerError, checkPeers or isNotFound).
// 3. The gates recognise a missing peer as each installer reports it (optional-peers.js's isNotFound): Node's
//    resolution under npm and pnpm (ESM and CommonJS), Yarn PnP's (MODULE_NOT_FOUND with pnpCode and no quotes) and
//    Bun 1.3's (a ResolveMessage, no Error), and not a missing package of the peer's own.
//
// `node test/package/declared-dependencies.mjs [packageDir]` (default: this checkout) prints the findings, exit 1 on
// any; test/package/run.mjs calls declaredDependencyProblems(unpacked) on the tarball.
import { execFileSync } from 'node:child_process';
import { builtinModules, createRequire } from 'node:module';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, posix, relative, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const repo = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const { parseSync } = createRequire(join(repo, 'package.json'))('@swc/core');

const NODE_CONDITIONS = new Set(['node', 'import', 'require', 'default']);
const ITERATORS = new Set(['map', 'filter', 'forEach', 'find', 'some', 'every', 'flatMap', 'findIndex']);
/** Names a file imports to report a missing peer in the toolkit's words. */
const REPORTERS = new Set(['MissingPeerError', 'checkPeers', 'isNotFound']);

/** `@scope/name/sub` → `@scope/name`; `name/sub` → `name`. */
const packageOf = (specifier) =>
  specifier
    .split('/')
    .slice(0, specifier.startsWith('@') ? 2 : 1)
    .join('/');
const isBuiltin = (specifier) =>
  specifier.startsWith('node:') || builtinModules.includes(specifier) || builtinModules.includes(packageOf(specifier));
const isRelative = (specifier) => specifier.startsWith('.') || specifier.startsWith('/');

function walkFiles(dir) {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? walkFiles(path) : [path];
  });
}

/** A lexical scope: bindings by name, each { init } (a const), { param } or { element } (an iterator's item). */
const scopeOf = (parent) => ({ bindings: new Map(), parent });
function lookup(scope, name) {
  for (let s = scope; s; s = s.parent) if (s.bindings.has(name)) return { binding: s.bindings.get(name), scope: s };
  return undefined;
}

/** One parsed file: its static edges, loader calls, every call (for parameters), imports and exported consts. */
function parseFile(path, root, factories) {
  const rel = relative(root, path).split('\\').join('/');
  const source = readFileSync(path, 'utf8');
  const types = /\.d\.c?ts$/.test(path);
  const commonjs = path.endsWith('.cjs');
  const ast = parseSync(source, { syntax: types ? 'typescript' : 'ecmascript', target: 'es2022' });
  const file = { rel, types, imports: [], loads: [], calls: [], imported: new Map(), exported: new Map() };
  const top = scopeOf(undefined);
  file.scope = top;

  const bindPattern = (pat, scope, binding) => {
    const id = pat?.type === 'AssignmentPattern' ? pat.left : pat;
    if (id?.type === 'Identifier') scope.bindings.set(id.value, binding);
  };
  const bindFunction = (fn, scope, name, iteratedBy) => {
    const inner = scopeOf(scope);
    fn.params.forEach((p, index) => {
      const pat = p.type === 'Parameter' ? p.pat : p;
      const fallback = pat.type === 'AssignmentPattern' ? pat.right : undefined;
      const binding = iteratedBy && index === 0 ? { element: iteratedBy, scope } : { param: { name, index, fallback } };
      bindPattern(pat, inner, binding);
    });
    return inner;
  };

  const visit = (node, scope, depth) => {
    if (Array.isArray(node)) {
      for (const n of node) visit(n, scope, depth);
      return;
    }
    if (!node || typeof node !== 'object') return;
    switch (node.type) {
      case 'ImportDeclaration':
        file.imports.push({ specifier: node.source.value, typeOnly: node.typeOnly || types, lazy: false });
        for (const s of node.specifiers) {
          const name = s.imported?.value ?? s.local.value;
          file.imported.set(s.local.value, { from: node.source.value, name });
          top.bindings.set(s.local.value, { imported: { from: node.source.value, name } });
        }
        return;
      case 'ExportAllDeclaration':
      case 'ExportNamedDeclaration':
        if (node.source) file.imports.push({ specifier: node.source.value, typeOnly: node.typeOnly || types });
        return;
      case 'TsImportType':
        file.imports.push({ specifier: node.argument.value, typeOnly: true });
        break;
      case 'TsExternalModuleReference':
        file.imports.push({ specifier: node.expression.value, typeOnly: types });
        return;
      case 'VariableDeclarator':
        if (node.id.type === 'Identifier' && node.init) {
          scope.bindings.set(node.id.value, { init: node.init, scope });
          if (depth === 0) file.exported.set(node.id.value, node.init);
        }
        break;
      case 'FunctionDeclaration': {
        scope.bindings.set(node.identifier.value, { fn: node });
        return visit(node.body, bindFunction(node, scope, node.identifier.value), depth + 1);
      }
      case 'FunctionExpression':
      case 'ArrowFunctionExpression':
      case 'ClassMethod':
      case 'Constructor': {
        const fn = node.function ?? node;
        return visit(fn.body, bindFunction({ params: fn.params ?? [] }, scope, undefined), depth + 1);
      }
      case 'CallExpression': {
        const { callee } = node;
        const args = node.arguments.map((a) => a.expression);
        const name = callee.type === 'Identifier' ? callee.value : callee.property?.value;
        const loader =
          callee.type === 'Import' ||
          (callee.type === 'Identifier' && isRequireLike(callee.value, scope, factories)) ||
          (callee.type === 'MemberExpression' &&
            callee.property?.value === 'resolve' &&
            callee.object.type === 'Identifier' &&
            isRequireLike(callee.object.value, scope, factories)) ||
          (callee.type === 'CallExpression' &&
            callee.callee.type === 'Identifier' &&
            factories.has(callee.callee.value));
        if (loader && args[0]) {
          const how = callee.type === 'Import' ? 'import()' : 'require';
          // a require() in a .cjs at its top level is as static as an import
          const eager = depth === 0 && (commonjs || callee.type === 'Import');
          file.loads.push({ expr: args[0], scope, how, eager, dynamic: callee.type === 'Import' });
        }
        if (name) file.calls.push({ name, args, scope, depth });
        if (callee.type === 'MemberExpression' && ITERATORS.has(callee.property?.value)) {
          const fn = args[0];
          if (fn?.type === 'ArrowFunctionExpression' || fn?.type === 'FunctionExpression') {
            visit(callee, scope, depth);
            visit(args.slice(1), scope, depth);
            return visit(fn.body, bindFunction(fn, scope, undefined, callee.object), depth + 1);
          }
        }
        break;
      }
    }
    for (const [key, value] of Object.entries(node))
      if (key !== 'span' && typeof value === 'object') visit(value, scope, depth);
  };
  visit(ast.body, top, 0);
  return file;
}

function isRequireLike(name, scope, factories) {
  if (name === 'require') return true;
  const found = lookup(scope, name)?.binding;
  return found?.init?.type === 'CallExpression' && factories.has(found.init.callee?.value);
}

/** createRequire and our functions that return one (`function peerRequire() { ... return createRequire(...) }`). */
function requireFactories(sources) {
  const names = new Set(['createRequire']);
  for (const source of sources)
    for (const m of source.matchAll(/function\s+(\w+)\s*\([^)]*\)\s*\{[^}]*?\breturn\s+createRequire\(/g))
      names.add(m[1]);
  return names;
}

/**
 * The strings `expr` can be: literals, constants, array elements, an iterator's items, a function's parameter at
 * every call site, and constants imported from our own modules. `undefined` where it cannot tell.
 */
function valuesOf(expr, scope, file, files, seen = new Set()) {
  if (!expr || seen.has(expr)) return undefined;
  seen.add(expr);
  const again = (e, s = scope, f = file) => valuesOf(e, s, f, files, seen);
  switch (expr.type) {
    case 'StringLiteral':
      return [expr.value];
    case 'TemplateLiteral':
      return expr.expressions.length === 0 ? [expr.quasis.map((q) => q.cooked).join('')] : undefined;
    case 'ArrayExpression': {
      const parts = expr.elements.map((e) => (e && !e.spread ? again(e.expression) : undefined));
      return parts.every(Boolean) ? parts.flat() : undefined;
    }
    case 'TsAsExpression':
    case 'TsConstAssertion':
    case 'ParenthesisExpression':
      return again(expr.expression);
    case 'MemberExpression': {
      const index = expr.property.type === 'Computed' ? expr.property.expression : undefined;
      const all = again(expr.object);
      return all && index?.type === 'NumericLiteral' ? [all[index.value]].filter((v) => v !== undefined) : all;
    }
    case 'CallExpression': {
      // LIST.filter(...) / .slice(...) / .concat(...) are items of LIST
      const method = expr.callee.type === 'MemberExpression' ? expr.callee.property?.value : undefined;
      return ['filter', 'slice', 'concat'].includes(method) ? again(expr.callee.object) : undefined;
    }
    case 'Identifier': {
      const found = lookup(scope, expr.value);
      const binding = found?.binding;
      if (!binding) return undefined;
      if (binding.init) return again(binding.init, binding.scope);
      if (binding.element) return again(binding.element, binding.scope);
      if (binding.imported) {
        const { from, name } = binding.imported;
        if (!isRelative(from)) return undefined;
        const target = files.get(posix.normalize(posix.join(posix.dirname(file.rel), from)));
        const init = target?.exported.get(name);
        return init ? again(init, target.scope, target) : undefined;
      }
      if (binding.param) {
        const { name, index, fallback } = binding.param;
        if (!name) return undefined;
        const values = [];
        for (const f of files.values()) {
          for (const call of f.calls.filter((c) => c.name === name)) {
            const arg = call.args[index];
            // a call that leaves the parameter out passes its default (`fallback`), or nothing to load
            const v = arg ? valuesOf(arg, call.scope, f, files, seen) : fallback ? again(fallback) : [];
            if (!v) return undefined;
            values.push(...v);
          }
        }
        return values;
      }
      return undefined;
    }
    default:
      return undefined;
  }
}

/** The findings for the package in `packageDir` (package.json + dist/lib), as lines; empty when there are none. */
export function declaredDependencyProblems(packageDir) {
  const pkg = JSON.parse(readFileSync(join(packageDir, 'package.json'), 'utf8'));
  const declared = new Set([
    pkg.name,
    ...Object.keys(pkg.dependencies ?? {}),
    ...Object.keys(pkg.peerDependencies ?? {}),
  ]);
  const optional = new Set(
    Object.entries(pkg.peerDependenciesMeta ?? {})
      .filter(([, meta]) => meta?.optional)
      .map(([name]) => name),
  );
  const problems = [];
  for (const name of optional)
    if (!pkg.peerDependencies?.[name]) problems.push(`${name} is an optional peer in peerDependenciesMeta only`);

  const dist = join(packageDir, 'dist/lib');
  const files = new Map();
  const paths = walkFiles(dist).filter((p) => /\.(c?js|d\.c?ts)$/.test(p));
  const factories = requireFactories(paths.filter((p) => /\.c?js$/.test(p)).map((p) => readFileSync(p, 'utf8')));
  for (const path of paths) {
    const file = parseFile(path, packageDir, factories);
    files.set(file.rel, file);
  }

  // --- 1. every bare specifier is declared -------------------------------------------------------------------------
  const target = (file, specifier) => posix.normalize(posix.join(posix.dirname(file.rel), specifier));
  for (const file of files.values()) {
    for (const load of file.loads) load.values = valuesOf(load.expr, load.scope, file, files);
    const specifiers = [
      ...file.imports.map((i) => [i.specifier, i.typeOnly ? 'import type' : 'import']),
      ...file.loads.flatMap((l) => (l.values ?? []).map((v) => [v, l.how])),
    ];
    for (const [specifier, how] of specifiers) {
      if (isRelative(specifier) || isBuiltin(specifier) || declared.has(packageOf(specifier))) continue;
      problems.push(
        `${file.rel}: ${how} '${specifier}': ${packageOf(specifier)} is not in dependencies or peerDependencies`,
      );
    }
    for (const load of file.loads.filter((l) => !l.values))
      problems.push(`${file.rel}: ${load.how} of a specifier this check cannot follow to a string literal`);
  }

  // --- 2. optional peers only behind MissingPeerError ---------------------------------------------------------------
  const runtime = (file) => [
    ...file.imports.filter((i) => !i.typeOnly).map((i) => i.specifier),
    ...file.loads.filter((l) => l.eager && !l.dynamic).flatMap((l) => l.values ?? []),
  ];
  /** The optional peers loading `rel` loads at once (static imports; a .cjs's top-level require), and where. */
  const eagerPeers = (rel, seen = new Set()) => {
    if (seen.has(rel) || !files.has(rel)) return [];
    seen.add(rel);
    const file = files.get(rel);
    return runtime(file).flatMap((s) =>
      isRelative(s) ? eagerPeers(target(file, s), seen) : optional.has(packageOf(s)) ? [[packageOf(s), rel]] : [],
    );
  };
  const entries = Object.entries(pkg.exports ?? {}).flatMap(([sub, entry]) =>
    (typeof entry === 'string' ? [['default', entry]] : Object.entries(entry))
      // the conditions Node resolves (a bundler's "module" target fails the build naming a missing peer instead)
      .filter(([condition, t]) => NODE_CONDITIONS.has(condition) && /\.c?js$/.test(t))
      .map(([condition, t]) => [sub, condition, posix.normalize(t)]),
  );
  for (const [sub, condition, rel] of entries) {
    const entry = files.get(rel);
    if (!entry) continue;
    const gate = entry.calls
      .filter((c) => c.name === 'checkPeers' && c.depth === 0)
      .flatMap((c) => valuesOf(c.args[1], c.scope, entry, files) ?? []);
    // what the entry loads when imported: its static graph, and what its top-level await import() loads at once
    const eager = [
      ...eagerPeers(rel),
      ...entry.loads
        .filter((l) => l.eager && l.dynamic)
        .flatMap((l) => (l.values ?? []).flatMap((s) => (isRelative(s) ? eagerPeers(target(entry, s)) : [[s, rel]]))),
    ];
    for (const [peer, at] of eager.filter(([peer]) => !gate.includes(peer))) {
      const how = gate.length ? `its gate checks only ${gate.join(', ')}` : 'it has no checkPeers gate';
      problems.push(
        `exports '${sub}' (${condition}: ${rel}) loads the optional peer ${peer} when imported (${at}), and ${how}`,
      );
    }
  }
  for (const file of files.values()) {
    const reports = [...file.imported.keys()].some((name) => REPORTERS.has(name));
    for (const load of file.loads) {
      if (load.eager && entries.some(([, , rel]) => rel === file.rel)) continue; // a gate's own load, checked above
      const peers = (load.values ?? []).flatMap((s) =>
        isRelative(s) ? eagerPeers(target(file, s)).map(([p]) => p) : optional.has(packageOf(s)) ? [packageOf(s)] : [],
      );
      if (peers.length > 0 && !reports)
        problems.push(
          `${file.rel}: ${load.how} loads the optional peer ${[...new Set(peers)].join(', ')}, but this file does ` +
            'not report a missing one with MissingPeerError (it imports none of MissingPeerError, checkPeers, isNotFound)',
        );
    }
  }

  // --- 3. the gates recognise a missing peer as npm, pnpm, Yarn PnP and Bun 1.3 report it --------------------------
  problems.push(...notFoundProblems(join(dist, 'common/optional-peers.js')));
  return problems;
}

/**
 * optional-peers.js's isNotFound against the errors of a missing peer: Node's own (what npm and pnpm installs give,
 * from ESM and CommonJS), Yarn 4 PnP's (as it threw here for a missing optional peer: MODULE_NOT_FOUND, pnpCode,
 * data.dependencyName, the name unquoted), Bun 1.3's (a ResolveMessage: Node's codes, its own wording, no Error), and
 * for each the error of a missing package of the peer's own, which is not "the peer is missing".
 */
function notFoundProblems(modulePath) {
  if (!existsSync(modulePath)) return [`${modulePath} is missing: the gates' isNotFound cannot be checked`];
  const dir = mkdtempSync(join(tmpdir(), 'rtk-declared-'));
  try {
    writeFileSync(join(dir, 'package.json'), '{"name":"probe","type":"module"}');
    const script = `import { createRequire } from 'node:module';
      const { isNotFound } = await import(${JSON.stringify(pathToFileURL(modulePath).href)});
      const require = createRequire(import.meta.url);
      const errors = [];
      const peer = '@rtk-absent/peer';
      try { await import(peer); } catch (e) { errors.push(['Node, ESM import', e, true]); }
      try { require.resolve(peer); } catch (e) { errors.push(['Node, CommonJS require', e, true]); }
      try { await import('@rtk-absent/dep'); } catch (e) { errors.push(["Node, ESM import of the peer's own dependency", e, false]); }
      const pnp = (pnpCode, message, name) =>
        Object.assign(new Error(message), { code: 'MODULE_NOT_FOUND', pnpCode, data: { request: name, dependencyName: name } });
      errors.push(['Yarn PnP, a missing peer', pnp('MISSING_PEER_DEPENDENCY', 'nestjs-redis-toolkit tried to access ' + peer +
        " (a peer dependency) but it isn't provided by your application; this makes the require call ambiguous and " +
        'unsound.\\n\\nRequired package: ' + peer + ' (via "' + peer + '/package.json")\\nRequired by: nestjs-redis-toolkit', peer), true]);
      errors.push(['Yarn PnP, an undeclared import', pnp('UNDECLARED_DEPENDENCY', 'Your application tried to access ' + peer +
        ", but it isn't declared in your dependencies; this makes the require call ambiguous and unsound.\\n\\n" +
        'Required package: ' + peer + ' (via "' + peer + '/package.json")', peer), true]);
      errors.push(["Yarn PnP, the peer's own dependency", pnp('MISSING_PEER_DEPENDENCY', '@rtk-absent/peer tried to access ' +
        "rxjs (a peer dependency) but it isn't provided by your application.\\n\\nRequired package: rxjs", 'rxjs'), false]);
      // Bun 1.3's (1.3.14 threw these here): a ResolveMessage, which is no Error, with Node's codes and its own wording
      const bun = (code, name) => ({ name: 'ResolveMessage', code, message: "Cannot find module '" + name +
        "' from '/app/node_modules/nestjs-redis-toolkit/dist/lib/common/optional-peers.js'" });
      errors.push(['Bun 1.3, CommonJS require', bun('MODULE_NOT_FOUND', peer), true]);
      errors.push(['Bun 1.3, ESM import', bun('ERR_MODULE_NOT_FOUND', peer), true]);
      errors.push(["Bun 1.3, the peer's own dependency", bun('ERR_MODULE_NOT_FOUND', '@rtk-absent/dep'), false]);
      console.log(JSON.stringify(errors.map(([what, e, expected]) => [what, expected, isNotFound(e, peer)])));`;
    writeFileSync(join(dir, 'probe.mjs'), script);
    let output;
    try {
      output = execFileSync(process.execPath, [join(dir, 'probe.mjs')], { cwd: dir, encoding: 'utf8', stdio: 'pipe' });
    } catch (err) {
      return [`common/optional-peers.js: isNotFound could not be checked: ${err.stderr || err.message}`];
    }
    return JSON.parse(output.trim().split('\n').pop())
      .filter(([, expected, got]) => expected !== got)
      .map(([what, expected]) =>
        expected
          ? `common/optional-peers.js: isNotFound does not recognise a missing peer as ${what} reports it ` +
            '(the gate lets the error through instead of MissingPeerError)'
          : `common/optional-peers.js: isNotFound takes ${what} missing for the peer missing`,
      );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const dir = resolve(process.argv[2] ?? repo);
  if (!existsSync(join(dir, 'dist/lib'))) {
    console.error(`${join(dir, 'dist/lib')} is missing: build first (npm run build)`);
    process.exit(2);
  }
  const problems = declaredDependencyProblems(dir);
  for (const p of problems) console.log(`not ok - ${p}`);
  console.log(`\nDeclared dependencies: ${problems.length === 0 ? 1 : 0} passed, ${problems.length} failed`);
  process.exit(problems.length === 0 ? 0 : 1);
}
