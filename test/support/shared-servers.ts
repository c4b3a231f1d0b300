/**
 * Servers shared by every suite of a jest run. global-setup.ts starts them once in the jest parent process and
 * publishes their addresses in `process.env.RTK_TEST_SERVERS`, which test workers inherit.
 *
 * Use them only for plain data access. A test that kills, pauses, restarts or reconfigures a server must start
 * its own private one with `startRedisServer()` / `usePrivateRedis()` (private-servers.ts): the shared servers
 * are used by other suites of the same run, possibly at the same time when jest runs with workers. For the same
 * reason prefer unique key prefixes over relying on `flushShared()` for isolation.
 */
import { rawCommand } from './resp.js';

export const SHARED_SERVERS_ENV = 'RTK_TEST_SERVERS';

export interface ServerAddress {
  host: string;
  port: number;
}

/** The JSON stored in `process.env.RTK_TEST_SERVERS`. */
export interface SharedServersEnv {
  single: ServerAddress;
  /** Every cluster node (3 masters, no replicas). */
  cluster: ServerAddress[];
  quorum: ServerAddress[];
}

export interface SharedServers {
  single: ServerAddress & { url: string };
  cluster: ServerAddress[];
  quorum: (ServerAddress & { url: string })[];
}

function isAddress(value: unknown): value is ServerAddress {
  if (typeof value !== 'object' || value === null) return false;
  const { host, port } = value as Record<string, unknown>;
  return typeof host === 'string' && typeof port === 'number' && Number.isInteger(port);
}

function isSharedServersEnv(value: unknown): value is SharedServersEnv {
  if (typeof value !== 'object' || value === null) return false;
  const { single, cluster, quorum } = value as Record<string, unknown>;
  return (
    isAddress(single) &&
    Array.isArray(cluster) &&
    cluster.every(isAddress) &&
    Array.isArray(quorum) &&
    quorum.every(isAddress)
  );
}

const withUrl = (a: ServerAddress): ServerAddress & { url: string } => ({
  host: a.host,
  port: a.port,
  url: `redis://${a.host}:${a.port}`,
});

/** Addresses of the shared servers; throws when the jest globalSetup did not run. */
export function sharedServers(): SharedServers {
  const raw = process.env[SHARED_SERVERS_ENV];
  if (!raw) {
    throw new Error(
      `${SHARED_SERVERS_ENV} is not set: the shared Redis servers are started by test/support/global-setup.ts ` +
        '(jest globalSetup). Run the tests through `npm test`, or start a private server with startRedisServer().',
    );
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw);
  } catch (err) {
    throw new Error(`${SHARED_SERVERS_ENV} is not valid JSON: ${String(err)}`);
  }
  if (!isSharedServersEnv(parsed)) throw new Error(`${SHARED_SERVERS_ENV} has an unexpected shape: ${raw}`);
  return {
    single: withUrl(parsed.single),
    cluster: parsed.cluster.map((a) => ({ host: a.host, port: a.port })),
    quorum: parsed.quorum.map(withUrl),
  };
}

async function flushOne({ host, port }: ServerAddress): Promise<void> {
  await rawCommand(port, ['FLUSHALL'], { host, timeoutMs: 5000 });
}

/** FLUSHALL on the single server, every cluster master and every quorum server. */
export async function flushShared(): Promise<void> {
  const { single, cluster, quorum } = sharedServers();
  const clusterMasters = async (): Promise<void> => {
    await Promise.all(
      cluster.map(async (node) => {
        // Replicas reject FLUSHALL (READONLY); they get it through replication.
        // the same bound as FLUSHALL's: rawCommand's default 2 s can run out on a busy box
        const role = await rawCommand(node.port, ['ROLE'], { host: node.host, timeoutMs: 5000 });
        if (Array.isArray(role) && role[0] === 'master') await flushOne(node);
      }),
    );
  };
  await Promise.all([flushOne(single), clusterMasters(), ...quorum.map(flushOne)]);
}
