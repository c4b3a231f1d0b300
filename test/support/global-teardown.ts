/**
 * jest globalTeardown: stops the shared servers started by global-setup.ts. Runs in the jest parent process, so
 * it reads the handles global-setup left on globalThis. No local value imports here (see global-setup.ts).
 */
import type {} from './global-state.js'; // declares globalThis.__RTK_TEST_SERVERS__

export default async function globalTeardown(): Promise<void> {
  const servers = globalThis.__RTK_TEST_SERVERS__;
  if (!servers) return;
  globalThis.__RTK_TEST_SERVERS__ = undefined;
  delete process.env.RTK_TEST_SERVERS;
  const results = await Promise.allSettled([
    servers.single.stop(),
    servers.cluster.stop(),
    ...servers.quorum.map((s) => s.stop()),
  ]);
  if (process.env.RTK_OPEN_HANDLES === '1') reportOpenHandles();
  const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  // Even if a stop failed, the process 'exit' hook in redis-server.ts SIGKILLs whatever is still running.
  if (failed) {
    const reason: unknown = failed.reason;
    throw reason instanceof Error ? reason : new Error(String(reason));
  }
}

/** RTK_OPEN_HANDLES=1 (see open-handles.ts): a second after the teardown, each handle still open and its file. */
function reportOpenHandles(): void {
  setTimeout(() => {
    const seen = (globalThis as { [k: symbol]: { seen: WeakMap<object, string> } | undefined })[
      Symbol.for('rtk-test.open-handles')
    ]?.seen;
    const lines = (process as unknown as { _getActiveHandles(): object[] })._getActiveHandles().map((h) => {
      const s = h as { remoteAddress?: string; remotePort?: number; localPort?: number; spawnargs?: string[] };
      const what =
        s.spawnargs !== undefined
          ? `child ${s.spawnargs.join(' ')}`
          : s.remotePort !== undefined
            ? `${h.constructor.name} :${s.localPort} -> ${s.remoteAddress}:${s.remotePort}`
            : h.constructor.name;
      return `  ${what}: ${seen?.get(h) ?? 'not seen in a test file'}`;
    });
    process.stderr.write(
      `open handles after the run: ${process.getActiveResourcesInfo().join(', ')}\n${lines.join('\n')}\n`,
    );
  }, 1_000).unref();
}
