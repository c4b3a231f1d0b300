// tsc does not copy non-TS files: put every lib/**/*.lua beside the compiled JS that reads it, and the dashboard's
// page (lib/dashboard/page/*.html and *.js, served by the package itself) beside its controller.
import { cpSync, readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';

const outDir = process.argv[2] ?? 'dist';
const ASSETS = /\.lua$|\/page\/[^/]+\.(html|js)$/;

function copyAssets(dir) {
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) copyAssets(path);
    else if (ASSETS.test(path.split('\\').join('/'))) cpSync(path, join(outDir, relative('.', path)));
  }
}
copyAssets('lib');
