// tsc does not copy non-TS files: put every lib/**/*.lua beside the compiled JS that reads it.
import { cpSync, readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';

const outDir = process.argv[2] ?? 'dist';

function copyLua(dir) {
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) copyLua(path);
    else if (name.endsWith('.lua')) cpSync(path, join(outDir, relative('.', path)));
  }
}
copyLua('lib');
