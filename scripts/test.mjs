// `npm test`: jest on native ESM (Nest 12 is ESM only), then one plain closing line for CI:
// "Tests: N passed, N failed, N skipped". Arguments pass through to jest (`npm test -- test/cache`).
//
// Without arguments (the whole suite) it runs three jest processes side by side (`--shard=1/3` to `--shard=3/3`),
// split by recorded time (test/support/test-sequencer.mjs). The suite mostly waits (timeouts, TTLs, reconnects,
// servers starting): one process kept this 2-core box's load near 0.6 and took 25 min (1,509 s, CI at 77cfc87); two
// still left the CPU idle half the time and took 15 min 15 s (915 s, at 60fb6df); three took 11 min 30 s on the same
// box (shards 653 / 668 / 687 s). Each process has its own global setup, so its own shared Redis servers
// (test/support/shared-servers.ts), and runs its files one at a time. RTK_TEST_SHARDS=N runs it in N processes.
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

// The Lua scripts and the dashboard's page reach the library through generated modules (scripts/embed-assets.mjs):
// written again first, so that an edited .lua is never run stale.
execFileSync(process.execPath, [fileURLToPath(new URL('./embed-assets.mjs', import.meta.url))], { stdio: 'inherit' });

const args = process.argv.slice(2);
const shards = args.length === 0 ? Number(process.env.RTK_TEST_SHARDS ?? 3) : 1;
if (!Number.isInteger(shards) || shards < 1) throw new Error(`RTK_TEST_SHARDS must be a positive integer`);
const dir = mkdtempSync(join(tmpdir(), 'rtk-jest-'));

/** Runs one jest process; resolves with its exit code and its JSON results (undefined when it wrote none). */
function runJest(shardArgs, outputFile) {
  const jest = spawn(
    process.execPath,
    [
      '--experimental-vm-modules',
      '--no-warnings',
      'node_modules/jest/bin/jest.js',
      // One file at a time, in a worker process that is replaced once it holds over 1 GB after a file: in one process
      // (--runInBand) it grew ~25 MB a file to 4 GB RSS by the end of the suite (not traced; jest keeps a module
      // registry per file), and late files met pauses past their command timeouts.
      '--maxWorkers=1',
      '--workerIdleMemoryLimit=1GB',
      // Two timers left by some test kept the process alive after a green run (jest's openHandles report names
      // none); CI would then hit its time limit. RTK_OPEN_HANDLES=1 (test/support/open-handles.ts) names engine.io
      // server sockets' 25 s ping timers outliving the Socket.IO gateway test files. Jest still prints its warning.
      '--forceExit',
      '--json',
      `--outputFile=${outputFile}`,
      ...shardArgs,
      ...args,
    ],
    { stdio: 'inherit' },
  );
  return new Promise((resolve) => {
    jest.on('exit', (status) => {
      let results;
      try {
        results = JSON.parse(readFileSync(outputFile, 'utf8'));
      } catch {}
      resolve({ code: status ?? 1, results });
    });
  });
}

/**
 * RTK_TEST_DURATIONS=<file>: writes each file's seconds in this run (startTime to endTime in jest's JSON), merged
 * over what the file held, sorted by path: `RTK_TEST_DURATIONS=test/support/test-durations.json npm test` on the CI
 * box refreshes the split (a file missing from it counts as the median of the others).
 */
function recordDurations(file, runs) {
  const seconds = existsSync(file) ? JSON.parse(readFileSync(file, 'utf8')) : {};
  for (const { results } of runs)
    for (const t of results?.testResults ?? []) {
      const path = relative(process.cwd(), t.name).split('\\').join('/');
      seconds[path] = Math.round((t.endTime - t.startTime) / 100) / 10;
    }
  const sorted = Object.fromEntries(Object.entries(seconds).sort(([a], [b]) => (a < b ? -1 : 1)));
  writeFileSync(file, `${JSON.stringify(sorted, null, 2)}\n`);
}

let code = 0;
const counts = { passed: 0, failed: 0, skipped: 0 };
try {
  const runs = await Promise.all(
    Array.from({ length: shards }, (_, i) =>
      runJest(shards > 1 ? [`--shard=${i + 1}/${shards}`] : [], join(dir, `results-${i + 1}.json`)),
    ),
  );
  for (const { code: exit, results: r } of runs) {
    code = code || exit;
    if (r === undefined) {
      counts.failed++;
      code = code || 1;
      continue;
    }
    counts.passed += r.numPassedTests;
    counts.failed += r.numFailedTests + r.numRuntimeErrorTestSuites;
    counts.skipped += r.numPendingTests + r.numTodoTests;
  }
  if (counts.failed > 0) code = code || 1;
  if (process.env.RTK_TEST_DURATIONS) recordDurations(process.env.RTK_TEST_DURATIONS, runs);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
process.stdout.write(`\nTests: ${counts.passed} passed, ${counts.failed} failed, ${counts.skipped} skipped\n`);
process.exit(code);
