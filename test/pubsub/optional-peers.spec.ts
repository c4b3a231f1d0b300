import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * @nestjs/websockets, @nestjs/platform-socket.io and socket.io are optional peers: nothing reachable from the root
 * entry point may import them at load time (type-only imports are erased). Walks the static import graph of lib/.
 */
const libDir = resolve(dirname(fileURLToPath(import.meta.url)), '../../lib');
const OPTIONAL = ['@nestjs/websockets', '@nestjs/platform-socket.io', 'socket.io'];
/** The HTTP platforms: the library works on either without importing one (duck-typed where it must tell them apart). */
const PLATFORM_PACKAGES = ['@nestjs/platform-express', 'express', '@nestjs/platform-fastify', 'fastify'];

function runtimeImports(file: string): string[] {
  const source = readFileSync(file, 'utf8')
    .replace(/\/\*[\s\S]*?\*\//g, '')
    .replace(/^\s*\/\/.*$/gm, '');
  const out: string[] = [];
  const re = /^\s*(import|export)\s+(?!type\b)[^'";]*?from\s+'([^']+)'|^\s*import\s+'([^']+)'/gm;
  for (let m = re.exec(source); m; m = re.exec(source)) out.push(m[2] ?? m[3]);
  return out;
}

function reachable(entry: string): Map<string, string[]> {
  const seen = new Map<string, string[]>();
  const queue = [entry];
  while (queue.length > 0) {
    const file = queue.pop() as string;
    if (seen.has(file)) continue;
    const imports = runtimeImports(file);
    seen.set(file, imports);
    for (const spec of imports)
      if (spec.startsWith('.')) queue.push(resolve(dirname(file), spec.replace(/\.js$/, '.ts')));
  }
  return seen;
}

describe('optional peers', () => {
  it('the root entry point never loads @nestjs/websockets or socket.io', () => {
    const graph = reachable(resolve(libDir, 'index.ts'));
    expect(graph.size).toBeGreaterThan(10);
    const offenders = [...graph].flatMap(([file, imports]) =>
      imports.filter((i) => OPTIONAL.includes(i)).map((i) => `${file} → ${i}`),
    );
    expect(offenders).toEqual([]);
    // The notifications folder's options and lazy loader are reachable; the gateway and its module are not.
    const loaded = [...graph.keys()].map((f) => f.slice(libDir.length + 1));
    expect(loaded).toEqual(expect.arrayContaining(['notifications/notifications.providers.ts']));
    expect(loaded.filter((f) => /notifications\.(gateway|module)\.ts$/.test(f))).toEqual([]);
  });

  it('the root entry point never loads @opentelemetry/api or @nestjs/terminus; their subpaths do', () => {
    const root = [...reachable(resolve(libDir, 'index.ts')).values()].flat();
    const advanced = [...reachable(resolve(libDir, 'advanced.ts')).values()].flat();
    for (const peer of ['@opentelemetry/api', '@nestjs/terminus']) {
      expect(root).not.toContain(peer);
      expect(advanced).not.toContain(peer);
    }
    // ...while nestjs-redis-toolkit/otel and /terminus do (so the check above can fail)
    expect([...reachable(resolve(libDir, 'otel/index.ts')).values()].flat()).toContain('@opentelemetry/api');
    expect([...reachable(resolve(libDir, 'terminus/index.ts')).values()].flat()).toContain('@nestjs/terminus');
  });

  it('the root entry point never loads nestjs-redis-toolkit/testing or @nestjs/testing', () => {
    const graph = reachable(resolve(libDir, 'index.ts'));
    expect([...graph.keys()].filter((f) => f.includes('/testing/'))).toEqual([]);
    expect([...graph.values()].flat()).not.toContain('@nestjs/testing');
    // ...while the testing entry point does (so the check above can fail)
    const testing = reachable(resolve(libDir, 'testing/index.ts'));
    expect([...testing.values()].flat()).toContain('@nestjs/testing');
  });

  it('no entry point loads Express or Fastify', () => {
    for (const entry of ['index.ts', 'notifications/index.ts']) {
      const graph = reachable(resolve(libDir, entry));
      const offenders = [...graph].flatMap(([file, imports]) =>
        imports.filter((i) => PLATFORM_PACKAGES.includes(i)).map((i) => `${file} → ${i}`),
      );
      expect(offenders).toEqual([]);
    }
  });

  it('the gateway entry point does load them (so the check above can fail)', () => {
    const graph = reachable(resolve(libDir, 'notifications/index.ts'));
    expect([...graph.values()].flat()).toEqual(expect.arrayContaining(['@nestjs/websockets']));
  });
});
