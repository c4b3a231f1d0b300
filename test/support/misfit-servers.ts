import { trackForCleanup } from './private-servers.js';
import { type RedisServerHandle, startRedisServer } from './redis-server.js';

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
