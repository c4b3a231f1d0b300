import { randomUUID } from 'node:crypto';
import { RateLimitService, type RateLimitOptions, type RedisToolkitOptions } from '../../lib/index.js';
import { startRedisCluster } from '../support/redis-cluster.js';
import { startRedisServer } from '../support/redis-server.js';
import type { Platform, ToolkitApp } from '../support/toolkit-app.js';
import { bootToolkitApp } from '../support/toolkit-boot.js';
import { waitFor } from '../support/wait.js';

// What the insurance specs share: a private Redis they make unreachable, apps booted on it that notice that fast, and
// a wait until the insurance limiter decides.

export type Target = 'single' | 'cluster';

/** A private Redis (one server or a 3-master cluster) the test makes unreachable: every node killed. */
export interface PrivateRedis {
  connection: RedisToolkitOptions['connection'];
  cut(): Promise<void>;
  stop(): Promise<void>;
}

export async function privateRedis(target: Target): Promise<PrivateRedis> {
  if (target === 'single') {
    const server = await startRedisServer();
    return { connection: { url: server.url }, cut: () => server.kill(), stop: () => server.stop() };
  }
  const cluster = await startRedisCluster();
  return {
    connection: { cluster: cluster.startupNodes },
    cut: async () => {
      await Promise.all(cluster.nodes.map((n) => n.kill()));
    },
    stop: () => cluster.stop(),
  };
}

/** An app on `redis` with its own key prefix and a short commandTimeout (an outage is seen within 300 ms). */
export function bootInsured(
  redis: PrivateRedis,
  rateLimit: RateLimitOptions,
  http?: { platform: Platform; controllers: NonNullable<Parameters<typeof bootToolkitApp>[0]['controllers']> },
): Promise<ToolkitApp> {
  return bootToolkitApp({
    target: redis.connection,
    commandTimeout: 300,
    maxReconnectDelay: 100,
    keyPrefix: `rtk-${randomUUID().slice(0, 8)}:`,
    rateLimit: { warnIntervalMs: 60_000, ...rateLimit },
    ...(http && { http: true, platform: http.platform, controllers: http.controllers }),
  });
}

/** Waits until the app's decisions are the insurance limiter's (Redis seen unreachable). */
export async function insured(app: ToolkitApp): Promise<void> {
  const rl = app.get(RateLimitService);
  const probe = async () => (await rl.consume(randomUUID(), { limit: 1, ttl: 1_000 })).degraded === 'insurance';
  if (!(await waitFor(probe, 15_000))) throw new Error('the insurance limiter never decided');
}
