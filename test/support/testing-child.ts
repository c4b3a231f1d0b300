import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

/**
 * The start of a child-process script (`node --input-type=module -e`) that loads lib/testing in a Node process of its
 * own: it transpiles testing.resp, testing.errors, testing.processes, testing.ports, testing.paths,
 * testing.permissions, testing.redis-server, testing.server-options, common/errors, common/runtime-permissions and
 * (for startRedisServer's option check) common/option-checks and common/timeout with @swc/core (as the jest transform
 * does) into `outDir` and imports `startRedisServer`. The child gets `testingDir outDir mode` as arguments; the
 * script's own lines follow (harness.spec, testing.spec: what happens to its servers when it exits, crashes or is
 * signalled; testing-permissions.spec: the transpiled files, loaded again under Node's permission model;
 * testing-ports.spec). spawnTestingChild runs one.
 */
export const TESTING_CHILD_PRELUDE = `
    import { transformFileSync } from '@swc/core';
    import { mkdirSync, writeFileSync } from 'node:fs';
    import { join } from 'node:path';
    import { pathToFileURL } from 'node:url';
    const [testingDir, outDir, mode] = process.argv.slice(1);
    writeFileSync(join(outDir, 'package.json'), '{"type":"module"}');
    // lib/testing/x.ts → outDir/testing/x.js, lib/common/errors.ts → outDir/common/errors.js (the imports between them)
    for (const file of ['testing/testing.resp', 'testing/testing.errors', 'testing/testing.processes',
      'testing/testing.ports', 'testing/testing.paths', 'testing/testing.permissions', 'testing/testing.redis-server',
      'testing/testing.server-options', 'common/errors', 'common/option-checks', 'common/timeout', 'common/real-timers',
      'common/runtime-permissions']) {
      const { code } = transformFileSync(join(testingDir, '..', file + '.ts'), {
        jsc: { parser: { syntax: 'typescript' }, target: 'es2022' }, module: { type: 'es6' },
      });
      mkdirSync(join(outDir, file, '..'), { recursive: true });
      writeFileSync(join(outDir, file + '.js'), code);
    }
    const { startRedisServer } = await import(pathToFileURL(join(outDir, 'testing/testing.redis-server.js')).href);
`;

const TESTING_DIR = fileURLToPath(new URL('../../lib/testing/', import.meta.url));
const ROOT = fileURLToPath(new URL('../../', import.meta.url));

/**
 * A child Node process running `script` (TESTING_CHILD_PRELUDE and its own lines) with `testingDir outDir mode` as its
 * arguments, from the repo's root; its stdout and stderr collected in `output` as they come. `stdin: 'pipe'` for a
 * child told when to end by its stdin closing.
 */
export function spawnTestingChild(script: string, outDir: string, mode: string, stdin: 'ignore' | 'pipe' = 'ignore') {
  const child = spawn(process.execPath, ['--input-type=module', '-e', script, TESTING_DIR, outDir, mode], {
    cwd: ROOT,
    stdio: [stdin, 'pipe', 'pipe'],
  });
  const output = { stdout: '', stderr: '' };
  child.stdout?.on('data', (chunk: Buffer) => (output.stdout += chunk.toString()));
  child.stderr?.on('data', (chunk: Buffer) => (output.stderr += chunk.toString()));
  return { child, output };
}
