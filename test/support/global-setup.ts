/**
 * jest globalSetup: starts the Redis servers shared by every suite (see shared-servers.ts) and publishes their
 * addresses in process.env.RTK_TEST_SERVERS.
 *
 * Jest loads this file outside the test sandbox: it is transpiled to CommonJS and `require`d by Node, so the
 * config's moduleNameMapper (`./x.js` -> `./x`) does not apply and a static `import './redis-server.js'` would
 * fail (only redis-server.ts exists). The support modules are therefore loaded with dynamic imports (which become
 * `require` calls) while Node's resolver is taught the same `.js` -> `.ts` fallback. Keep value imports of local
 * files out of the top of this file; `import type` is fine (erased).
 */
import Module from 'node:module';
import type { GlobalTestServers } from './global-state.js';
import type { SharedServersEnv } from './shared-servers.js';

type ResolveFilename = (this: unknown, request: string, ...rest: unknown[]) => string;

/** Runs `load` with relative `.js` requests falling back to the sibling `.ts` file, as the jest mapper does. */
async function withTsFallback<T>(load: () => Promise<T>): Promise<T> {
  const internals = Module as unknown as { _resolveFilename: ResolveFilename };
  const original = internals._resolveFilename;
  internals._resolveFilename = function (this: unknown, request: string, ...rest: unknown[]): string {
    try {
      return original.call(this, request, ...rest);
    } catch (err) {
      if (!/^\.{1,2}\/.*\.js$/.test(request)) throw err;
      return original.call(this, `${request.slice(0, -'.js'.length)}.ts`, ...rest);
    }
  };
  try {
    return await load();
  } finally {
    internals._resolveFilename = original;
  }
}

export default async function globalSetup(): Promise<void> {
  const [
    { startRedisServer, sweepStaleServers },
    { startRedisCluster },
    { startQuorumServers },
    { SHARED_SERVERS_ENV },
  ] = await withTsFallback(() =>
    Promise.all([
      import('./redis-server.js'),
      import('./redis-cluster.js'),
      import('./quorum.js'),
      import('./shared-servers.js'),
    ]),
  );

  const swept = sweepStaleServers();
  if (swept > 0)
    console.warn(`[redis test harness] killed ${swept} redis-server(s) left over by a crashed earlier run`);

  const [single, cluster, quorum] = await Promise.allSettled([
    startRedisServer(),
    startRedisCluster({ masters: 3, replicasPerMaster: 0 }),
    startQuorumServers(3),
  ]);
  if (single.status === 'rejected' || cluster.status === 'rejected' || quorum.status === 'rejected') {
    // Don't leave the ones that did start running while jest reports the failure.
    await Promise.allSettled([
      single.status === 'fulfilled' ? single.value.stop() : undefined,
      cluster.status === 'fulfilled' ? cluster.value.stop() : undefined,
      ...(quorum.status === 'fulfilled' ? quorum.value.map((s) => s.stop()) : []),
    ]);
    const failure = [single, cluster, quorum].find((r): r is PromiseRejectedResult => r.status === 'rejected');
    const reason: unknown = failure?.reason;
    throw reason instanceof Error ? reason : new Error(String(reason));
  }

  const servers: GlobalTestServers = { single: single.value, cluster: cluster.value, quorum: quorum.value };
  globalThis.__RTK_TEST_SERVERS__ = servers;

  const address = (s: { host: string; port: number }): { host: string; port: number } => ({
    host: s.host,
    port: s.port,
  });
  const published: SharedServersEnv = {
    single: address(servers.single),
    cluster: servers.cluster.startupNodes.map(address),
    quorum: servers.quorum.map(address),
  };
  // Set before jest creates test environments/workers, which copy/inherit the parent's env.
  process.env[SHARED_SERVERS_ENV] = JSON.stringify(published);
}
