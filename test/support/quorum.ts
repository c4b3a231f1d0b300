/**
 * Independent (non-replicated, non-clustered) servers, e.g. for Redlock-style quorum locks.
 */
import { startRedisServer, type RedisServerHandle } from './redis-server.js';

export async function startQuorumServers(n = 3): Promise<RedisServerHandle[]> {
  if (!Number.isInteger(n) || n < 1) throw new Error(`startQuorumServers: n must be a positive integer (got ${n})`);
  const started = await Promise.allSettled(Array.from({ length: n }, () => startRedisServer()));
  const servers = started.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
  const failed = started.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) {
    // Don't leak the ones that did start.
    await Promise.all(servers.map((s) => s.stop()));
    throw failed.reason;
  }
  return servers;
}
