import { Injectable } from '@nestjs/common';
import { RedisConnection } from './redis-connection.js';

export interface RedisToolkitHealthResult {
  /**
   * `degraded`: Redis answers but refuses writes (see `reason`); features that write fail with RedisReplyError (OOM).
   */
  status: 'up' | 'degraded' | 'down';
  /** Round trip of one PING, ms. */
  latencyMs: number;
  /** `master`, `slave` (replica) or `cluster`. */
  role?: string;
  redisVersion?: string;
  /** Bytes, from INFO memory (summed over masters on a cluster). */
  usedMemory?: number;
  /** Why it is degraded (e.g. `maxmemory reached under noeviction: writes are refused (OOM)`). */
  reason?: string;
  /** Why it is down. */
  error?: string;
}

/**
 * For readiness probes (`GET /health`): never throws, answers within commandTimeout even when Redis is away (PING and
 * INFO run at the same time, each bounded by commandTimeout).
 */
@Injectable()
export class RedisToolkitHealth {
  constructor(private readonly connection: RedisConnection) {}

  async check(): Promise<RedisToolkitHealthResult> {
    const started = performance.now();
    let latencyMs = 0;
    try {
      const ping = this.connection.client.ping().then(() => {
        latencyMs = Math.round((performance.now() - started) * 100) / 100;
      });
      // INFO without a section returns server, memory and replication (among others) in one round trip.
      const infos = Promise.all(this.connection.masters().map((node) => node.info()));
      const [, raw] = await Promise.all([ping, infos]);
      const fields = raw.map(parseInfo);
      const full = fields.find(refusesWrites);
      return {
        status: full ? 'degraded' : 'up',
        latencyMs,
        role: this.connection.isCluster ? 'cluster' : fields[0]?.role,
        redisVersion: fields[0]?.redis_version,
        usedMemory: fields.reduce((sum, f) => sum + Number(f.used_memory ?? 0), 0),
        ...(full && {
          reason:
            `maxmemory reached under ${full.maxmemory_policy}: writes are refused (OOM) ` +
            `(used_memory ${full.used_memory} of maxmemory ${full.maxmemory}); raise maxmemory or use an eviction ` +
            `policy`,
        }),
      };
    } catch (err) {
      return {
        status: 'down',
        latencyMs: Math.round((performance.now() - started) * 100) / 100,
        error: err instanceof Error ? err.message : String(err),
      };
    }
  }
}

/**
 * A server over its maxmemory under `noeviction` refuses every write with OOM (under an eviction policy it evicts
 * instead). Redis compares used memory less replication and AOF buffers (`mem_not_counted_for_evict`) with it.
 */
function refusesWrites(f: Record<string, string>): boolean {
  const max = Number(f.maxmemory ?? 0);
  const counted = Number(f.used_memory ?? 0) - Number(f.mem_not_counted_for_evict ?? 0);
  return max > 0 && f.maxmemory_policy === 'noeviction' && counted > max;
}

function parseInfo(info: string): Record<string, string> {
  const fields: Record<string, string> = {};
  for (const line of info.split('\r\n')) {
    const colon = line.indexOf(':');
    if (colon > 0 && !line.startsWith('#')) fields[line.slice(0, colon)] = line.slice(colon + 1);
  }
  return fields;
}
