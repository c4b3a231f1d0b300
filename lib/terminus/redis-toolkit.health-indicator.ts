import { Injectable } from '@nestjs/common';
import { type HealthIndicatorResult, HealthIndicatorService } from '@nestjs/terminus';
import type { RedisClient } from '../common/lua-script.js';
import { withTimeout } from '../common/timeout.js';
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
 * noeviction) or a secondary client (subscriber, quorum node) is down or does not answer a PING while the connection
 * answers. Answers within `commandTimeout`: PING and INFO of every connection and a PING of each secondary client in
 * use run at the same time, each bounded by it.
 */
@Injectable()
export class RedisToolkitHealthIndicator {
  constructor(
    private readonly health: RedisToolkitHealth,
    private readonly connections: RedisConnections,
    private readonly indicators: HealthIndicatorService,
  ) {}

  async isHealthy<const Key extends string = 'redis'>(key: Key = 'redis' as Key): Promise<HealthIndicatorResult<Key>> {
    const entries = this.connections.entries().map(([name, connection]) => {
      const states = connection.connectionStates();
      // a paused server (SIGSTOP) keeps its clients `ready`: a quorum node's, whose lock calls all time out, too
      const silent = states.slice(1).map((c) => silence(`${name}: ${c.name}`, c, connection.commandTimeout));
      return { name, states, silent };
    });
    const [{ status, connections: named, ...details }, silent] = await Promise.all([
      this.health.check(),
      Promise.all(entries.flatMap((e) => e.silent)),
    ]);
    const broken: string[] = [];
    const connections = Object.fromEntries(
      entries.map(({ name, states }) => {
        const health = named?.[name] ?? { status, ...details };
        for (const c of states) if (!FINE.has(c.status)) broken.push(`${name}: ${c.name} connection ${c.status}`);
        return [name, { ...health, clients: Object.fromEntries(states.map((c) => [c.name, c.status])) }];
      }),
    );
    for (const line of silent) if (line !== undefined) broken.push(line);
    const data = { ...details, connections };
    const session = this.indicators.check(key);
    if (status === 'down') return session.down(data);
    if (status === 'degraded' || broken.length > 0) {
      return session.degraded({ ...data, reason: [details.reason, ...broken].filter(Boolean).join('; ') });
    }
    return session.up(data);
  }
}

/**
 * Why a secondary client in use does not answer a PING within `ms`, or undefined when it does. Not asked: a lazy one
 * not needed yet (`wait`) and one ended (`end`, reported by its status).
 */
async function silence(
  name: string,
  c: { status: string; client: RedisClient },
  ms: number,
): Promise<string | undefined> {
  if (c.status === 'wait' || c.status === 'end') return undefined;
  try {
    await withTimeout(c.client.ping(), ms, `no answer to PING within ${ms} ms`);
    return undefined;
  } catch (err) {
    return `${name} connection does not answer (${err instanceof Error ? err.message : String(err)})`;
  }
}
