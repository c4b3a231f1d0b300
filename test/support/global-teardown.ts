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
  const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  // Even if a stop failed, the process 'exit' hook in redis-server.ts SIGKILLs whatever is still running.
  if (failed) {
    const reason: unknown = failed.reason;
    throw reason instanceof Error ? reason : new Error(String(reason));
  }
}
