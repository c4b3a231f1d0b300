/**
 * Compiles lib/ (with @swc/core, like the jest transform) into a temp dir so child processes (plain `node`) can import
 * the real library: `await import(pathToFileURL(join(dir, 'lib/index.js')).href)`. node_modules is symlinked in. The
 * Lua scripts come with lib/common/lua-sources.generated.ts (scripts/test.mjs writes it first): no .lua is copied.
 */
import { transformFile } from '@swc/core';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { typeScriptSwcOptions } from './swc-options.mjs';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

function walk(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? walk(path) : [path];
  });
}

export interface LibBuild {
  dir: string;
  /** file URL of the compiled lib/index.js */
  index: string;
  remove(): void;
}

export async function buildLibForChildren(): Promise<LibBuild> {
  const dir = mkdtempSync(join(tmpdir(), 'rtk-lock-lib-'));
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ type: 'module' }));
  symlinkSync(join(ROOT, 'node_modules'), join(dir, 'node_modules'));
  for (const file of walk(join(ROOT, 'lib'))) {
    const target = join(dir, relative(ROOT, file));
    mkdirSync(dirname(target), { recursive: true });
    if (!file.endsWith('.ts')) continue;
    const { code } = await transformFile(file, { ...typeScriptSwcOptions, sourceMaps: false });
    writeFileSync(target.replace(/\.ts$/, '.js'), code);
  }
  return {
    dir,
    index: new URL(`file://${join(dir, 'lib', 'index.js')}`).href,
    remove: () => rmSync(dir, { recursive: true, force: true }),
  };
}
