import type { ExecutionContext } from '@nestjs/common';
import { Post } from '@nestjs/common';
import { randomUUID } from 'node:crypto';
import type { Server } from 'node:http';
import { RateLimitService, Throttle, type RateLimitOptions, type RedisToolkitOptions } from '../../lib/index.js';
import { userFromHeader } from '../support/rate-limit-http.js';
import { startRedisCluster } from '../support/redis-cluster.js';
import { startRedisServer } from '../support/redis-server.js';
import type { Platform, ToolkitApp } from '../support/toolkit-app.js';
import { bootToolkitApp } from '../support/toolkit-boot.js';
import { waitFor } from '../support/wait.js';

// What the insurance specs share: a private Redis they make unreachable, apps booted on it that notice that fast, a
// wait until the insurance limiter decides, and the routes their HTTP tests drive.

export type Target = 'single' | 'cluster';

/** A private Redis (one server or a 3-master cluster) the test makes unreachable: every node killed, or paused. */
export interface PrivateRedis {
  connection: RedisToolkitOptions['connection'];
  cut(): Promise<void>;
  /** SIGSTOP on every node: connections stay open, nothing is answered (commandTimeout), the scripts sent wait. */
  pause(): void;
  /** SIGCONT on every node: what was sent meanwhile runs now. */
  resume(): void;
  stop(): Promise<void>;
}

export async function privateRedis(target: Target): Promise<PrivateRedis> {
  if (target === 'single') {
    const server = await startRedisServer();
    return {
      connection: { url: server.url },
      cut: () => server.kill(),
      pause: () => server.pause(),
      resume: () => server.resume(),
      stop: () => server.stop(),
    };
  }
  const cluster = await startRedisCluster();
  return {
    connection: { cluster: cluster.startupNodes },
    cut: async () => {
      await Promise.all(cluster.nodes.map((n) => n.kill()));
    },
    pause: () => {
      for (const n of cluster.nodes) n.pause();
    },
    resume: () => {
      for (const n of cluster.nodes) n.resume();
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
    // the HTTP specs start five apps at once on a fresh private cluster: on a busy box (CI beside other jobs) their
    // start passed the default 5 s (RedisUnavailableError at boot, every test of the file failed)
    connectTimeout: 20_000,
    maxReconnectDelay: 100,
    keyPrefix: `rtk-${randomUUID().slice(0, 8)}:`,
    rateLimit: { warnIntervalMs: 60_000, ...rateLimit },
    ...(http && { http: true, platform: http.platform, controllers: http.controllers }),
  });
}

/** Every header style of the rate-limit guard: the HTTP insurance specs boot one app per style. */
export type HeaderMode = NonNullable<Exclude<RateLimitOptions['headers'], false>>;
export const HEADER_MODES: HeaderMode[] = ['draft', 'legacy', 'both', 'draft-7', 'draft-6'];

/**
 * One app per header style on `redis`, insured with `divideLimitBy`, serving `controller` on `platform`: the apps (to
 * wait for insurance on) and their HTTP servers by style.
 */
export async function bootPerHeaderMode(
  redis: PrivateRedis,
  divideLimitBy: number,
  platform: Platform,
  controller: NonNullable<Parameters<typeof bootToolkitApp>[0]['controllers']>[number],
): Promise<{ booted: ToolkitApp[]; servers: Map<HeaderMode, Server> }> {
  const booted = await Promise.all(
    HEADER_MODES.map((headers) =>
      bootInsured(redis, { headers, insurance: { divideLimitBy } }, { platform, controllers: [controller] }),
    ),
  );
  const servers = new Map(booted.map((app, i) => [HEADER_MODES[i], app.app.getHttpServer() as Server]));
  return { booted, servers };
}

/**
 * Waits until the app's decisions are the insurance limiter's (Redis seen unreachable). A peek of a fresh key: it
 * stores nothing in insurance (nor learns from Redis), so the probes push no counter out of its maxKeys.
 */
export async function insured(app: ToolkitApp): Promise<void> {
  const rl = app.get(RateLimitService);
  const probe = async () => (await rl.peek(randomUUID(), { limit: 1, ttl: 1_000 })).degraded === 'insurance';
  if (!(await waitFor(probe, 15_000))) throw new Error('the insurance limiter never decided');
}

/** The cost of a request: its `X-Cost` header (default 1). */
export const costFromHeader = (ctx: ExecutionContext): number =>
  Number(ctx.switchToHttp().getRequest<{ headers: Record<string, string> }>().headers['x-cost'] ?? 1);

/**
 * The routes of the HTTP insurance tests, one policy each, keyed by the user header and costing `X-Cost`: a spec's
 * controller extends it under its own path and guard (Nest routes inherited methods).
 */
export abstract class InsuredRoutes {
  /** 5 per minute (with divideLimitBy 2: 3 per process per minute). */
  @Post('fixed')
  @Throttle({ name: 'f', limit: 5, ttl: 60_000, algorithm: 'fixed-window', cost: costFromHeader, key: userFromHeader })
  fixed(): string {
    return 'ok';
  }

  @Post('sliding')
  @Throttle({
    name: 's',
    limit: 5,
    ttl: 60_000,
    algorithm: 'sliding-window',
    cost: costFromHeader,
    key: userFromHeader,
  })
  sliding(): string {
    return 'ok';
  }

  /** 2 per minute, bursts of 8 (with divideLimitBy 2: 4 per process in a window of 4 minutes). */
  @Post('bucket')
  @Throttle({
    name: 'b',
    limit: 2,
    ttl: 60_000,
    algorithm: 'token-bucket',
    burst: 8,
    cost: costFromHeader,
    key: userFromHeader,
  })
  bucket(): string {
    return 'ok';
  }
}
