import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repo's root. */
export const ROOT = fileURLToPath(new URL('../../', import.meta.url));

function newestMtime(dir: string): number {
  return Math.max(
    ...readdirSync(dir).map((name) => {
      const path = join(dir, name);
      return statSync(path).isDirectory() ? newestMtime(path) : statSync(path).mtimeMs;
    }),
  );
}

/**
 * For specs that run the compiled package in a child process: `npm run build` when `built` (a path under the root) is
 * missing or older than a file of `sources` (dirs under the root). CI builds before the tests, so none rebuilds there.
 */
export function ensureBuilt(built: string, sources: readonly string[]): void {
  const file = join(ROOT, built);
  const newest = Math.max(...sources.map((dir) => newestMtime(join(ROOT, dir))));
  if (!existsSync(file) || statSync(file).mtimeMs < newest) {
    execFileSync('npm', ['run', 'build'], { cwd: ROOT, stdio: 'ignore' });
  }
}
