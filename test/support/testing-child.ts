/**
 * The start of a child-process script (`node --input-type=module -e`) that loads lib/testing in a Node process of its
 * own: it transpiles testing.resp, testing.processes and testing.redis-server with @swc/core (as the jest transform
 * does) into `outDir` and imports `startRedisServer`. The child gets `testingDir outDir mode` as arguments; the
 * script's own lines follow (harness.spec, testing.spec: what happens to its servers when it exits, crashes or is
 * signalled).
 */
export const TESTING_CHILD_PRELUDE = `
    import { transformFileSync } from '@swc/core';
    import { writeFileSync } from 'node:fs';
    import { join } from 'node:path';
    import { pathToFileURL } from 'node:url';
    const [testingDir, outDir, mode] = process.argv.slice(1);
    writeFileSync(join(outDir, 'package.json'), '{"type":"module"}');
    for (const name of ['testing.resp', 'testing.processes', 'testing.redis-server']) {
      const { code } = transformFileSync(join(testingDir, name + '.ts'), {
        jsc: { parser: { syntax: 'typescript' }, target: 'es2022' }, module: { type: 'es6' },
      });
      writeFileSync(join(outDir, name + '.js'), code);
    }
    const { startRedisServer } = await import(pathToFileURL(join(outDir, 'testing.redis-server.js')).href);
`;
