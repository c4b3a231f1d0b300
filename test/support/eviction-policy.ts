import { Redis } from 'ioredis';
import { trackForCleanup } from './private-servers.js';

/**
 * Sets a server's `maxmemory` and `maxmemory-policy` (CONFIG SET), for the specs of the eviction checks (cache tags,
 * rate-limit counters, sessions): `('100mb', 'allkeys-lru')` makes it evict, `('0', 'noeviction')` puts it back.
 */
export async function setEvictionPolicy(port: number, maxmemory: string, policy: string): Promise<void> {
  const admin = trackForCleanup(new Redis(port, '127.0.0.1'));
  await admin.config('SET', 'maxmemory', maxmemory);
  await admin.config('SET', 'maxmemory-policy', policy);
}
