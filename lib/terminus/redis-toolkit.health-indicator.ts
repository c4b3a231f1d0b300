import { Injectable } from '@nestjs/common';
import { type HealthIndicatorResult, HealthIndicatorService } from '@nestjs/terminus';
import { RedisConnections } from '../connection/redis-connections.js';
import { RedisToolkitHealth } from '../connection/redis-toolkit.health.js';

/** A connection that is not in use yet (lazy) or is being set up is not a fault; anything else but ready is. */
const FINE = new Set(['ready', 'wait', 'connecting', 'connect']);

/**
 * A @nestjs/terminus health indicator for the toolkit's Redis:
 *
 * ```ts
 * @Get('health') @HealthCheck()
 * check() { return this.health.check([() => this.redis.isHealthy('redis')]); }
 * ```
 *
 * Reports the default connection's `latencyMs`, `role`, `redisVersion` and `usedMemory`, and under `connections`
 * each configured connection by name (`default`, and those of `connections` in forRoot) with the same fields plus
 * `clients`: every client the toolkit uses on it (`main`, `subscriber`, quorum nodes by address) with its ioredis
 * status. `down` when a connection does not answer; `degraded` when Redis refuses writes (maxmemory under
 * noeviction) or a secondary client (subscriber, quorum node) is down while the connection answers. Answers within
 * `commandTimeout`: PING and INFO of every connection run at the same time, each bounded by it.
 */
@Injectable()
export class RedisToolkitHealthIndicator {
  constructor(
    private readonly health: RedisToolkitHealth,
    private readonly connections: RedisConnections,
    private readonly indicators: HealthIndicatorService,
  ) {}

  async isHealthy<const Key extends string = 'redis'>(key: Key = 'redis' as Key): Promise<HealthIndicatorResult<Key>> {
    const { status, connections: named, ...details } = await this.health.check();
    const broken: string[] = [];
    const connections = Object.fromEntries(
      this.connections.entries().map(([name, connection]) => {
        const health = named?.[name] ?? { status, ...details };
        const states = connection.connectionStates();
        for (const c of states) if (!FINE.has(c.status)) broken.push(`${name}: ${c.name} connection ${c.status}`);
        return [name, { ...health, clients: Object.fromEntries(states.map((c) => [c.name, c.status])) }];
      }),
    );
    const data = { ...details, connections };
    const session = this.indicators.check(key);
    if (status === 'down') return session.down(data);
    if (status === 'degraded' || broken.length > 0) {
      return session.degraded({ ...data, reason: [details.reason, ...broken].filter(Boolean).join('; ') });
    }
    return session.up(data);
  }
}
