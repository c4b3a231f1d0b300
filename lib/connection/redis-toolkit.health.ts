import { Injectable } from '@nestjs/common';
import { RedisConnection } from './redis-connection.js';

export interface RedisToolkitHealthResult {
  status: 'up' | 'down';
  /** Round trip of one PING, ms. */
  latencyMs: number;
  /** `master`, `slave` (replica) or `cluster`. */
  role?: string;
  redisVersion?: string;
  /** Bytes, from INFO memory (summed over masters on a cluster). */
  usedMemory?: number;
  /** Why it is down. */
  error?: string;
}

/** For readiness probes (`GET /health`): never throws, answers within commandTimeout even when Redis is away. */
@Injectable()
export class RedisToolkitHealth {
  constructor(private readonly connection: RedisConnection) {}

  async check(): Promise<RedisToolkitHealthResult> {
    const started = performance.now();
    try {
      await this.connection.client.ping();
      const latencyMs = Math.round((performance.now() - started) * 100) / 100;
      // INFO without a section returns server, memory and replication (among others) in one round trip.
      const fields = (await Promise.all(this.connection.masters().map((node) => node.info()))).map(parseInfo);
      return {
        status: 'up',
        latencyMs,
        role: this.connection.isCluster ? 'cluster' : fields[0]?.role,
        redisVersion: fields[0]?.redis_version,
        usedMemory: fields.reduce((sum, f) => sum + Number(f.used_memory ?? 0), 0),
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

function parseInfo(info: string): Record<string, string> {
  const fields: Record<string, string> = {};
  for (const line of info.split('\r\n')) {
    const colon = line.indexOf(':');
    if (colon > 0 && !line.startsWith('#')) fields[line.slice(0, colon)] = line.slice(colon + 1);
  }
  return fields;
}
