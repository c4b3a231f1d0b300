import { trackForCleanup } from './private-servers.js';
import { type RedisServerHandle, startRedisServer } from './redis-server.js';
import { sharedServers } from './shared-servers.js';

/** Servers a connection or a quorum node must not be pointed at: a replica (of `master`) and a 4-database server. */
export interface MisfitServers {
  master: RedisServerHandle;
  replica: RedisServerHandle;
  /** `--databases 4`: a url naming db 4 or more asks for a db it does not have. */
  fewDbs: RedisServerHandle;
}

/** Starts them (cleaned up with the other private servers). */
export async function startMisfitServers(): Promise<MisfitServers> {
  const master = trackForCleanup(await startRedisServer());
  const replica = trackForCleanup(await startRedisServer({ args: ['--replicaof', '127.0.0.1', String(master.port)] }));
  const fewDbs = trackForCleanup(await startRedisServer({ args: ['--databases', '4'] }));
  return { master, replica, fewDbs };
}

/** Lock quorum nodes: two shared quorum servers (a majority that answers) and `third`, the node under test. */
export const nodesWith = (third: { url: string }): { url: string }[] => [
  ...sharedServers()
    .quorum.slice(0, 2)
    .map((q) => ({ url: q.url })),
  third,
];
