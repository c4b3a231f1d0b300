import 'reflect-metadata';
import { jest } from '@jest/globals';
import { Controller, Get, Logger, UseGuards } from '@nestjs/common';
import { randomUUID } from 'node:crypto';
import type { Server } from 'node:http';
import {
  RateLimitGuard,
  RateLimitService,
  RedisUnavailableError,
  Throttle,
  type RateLimitOptions,
  type RateLimitPolicy,
} from '../../lib/index.js';
import { RedisConnection } from '../../lib/advanced.js';
import { hashSlot } from '../../lib/common/bulk-keys.js';
import { startRedisCluster, type RedisClusterHandle } from '../support/redis-cluster.js';
import { startRedisServer, type RedisServerHandle } from '../support/redis-server.js';
import { rawCommand } from '../support/resp.js';
import { PLATFORMS, closeToolkitApps, createToolkitApp, type Platform } from '../support/toolkit-app.js';
import { bootToolkitApp } from '../support/toolkit-boot.js';
import { waitFor } from '../support/wait.js';
import { within } from '../support/timing.js';

const COMMAND_TIMEOUT = 300;

@Controller('f')
@UseGuards(RateLimitGuard)
class FailureController {
  @Get()
  @Throttle({ limit: 2, ttl: 60_000 })
  get(): string {
    return 'ok';
  }

  @Get('strict')
  @Throttle({ limit: 2, ttl: 60_000, failOpen: false })
  strict(): string {
    return 'strict';
  }
}

const parse = (text: string): unknown => {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
};

let server: RedisServerHandle;
beforeAll(async () => {
  server = await startRedisServer();
});
afterAll(async () => {
  await server.stop();
});
afterEach(async () => {
  await closeToolkitApps();
  jest.restoreAllMocks();
  if (!server.isRunning()) await server.restart();
});

async function start(rateLimit: RateLimitOptions = {}, commandTimeout = COMMAND_TIMEOUT, platform?: Platform) {
  const app = await bootToolkitApp({
    target: { url: server.url },
    http: true,
    platform,
    commandTimeout,
    maxReconnectDelay: 100,
    keyPrefix: `rtk-${randomUUID().slice(0, 8)}:`,
    rateLimit: { warnIntervalMs: 60_000, ...rateLimit },
    controllers: [FailureController],
  });
  const { port } = (app.app.getHttpServer() as Server).address() as { port: number };
  const get = async (path: string) => {
    const started = Date.now();
    const res = await fetch(`http://127.0.0.1:${port}${path}`);
    return { status: res.status, body: parse(await res.text()), ms: Date.now() - started, headers: res.headers };
  };
  return { app, get, rl: app.get(RateLimitService), connection: app.get(RedisConnection) };
}

describe.each(PLATFORMS)('rate limiting over HTTP on %s when Redis fails', (platform) => {
  it('Redis killed: requests are allowed (fail open), counted, warned about once, and none waits past commandTimeout', async () => {
    const warn = jest.spyOn(Logger.prototype, 'warn').mockImplementation(() => undefined);
    const { get, rl } = await start({}, COMMAND_TIMEOUT, platform);
    expect((await get('/f')).status).toBe(200);
    await server.kill();
    const results = await Promise.all(Array.from({ length: 10 }, () => get('/f')));
    expect(results.map((r) => r.status)).toEqual(Array(10).fill(200));
    for (const r of results) expect(r.ms).toBeLessThan(within(COMMAND_TIMEOUT));
    expect(results[0].headers.get('ratelimit')).toBeNull(); // no made-up numbers
    expect(rl.stats()).toMatchObject({ allowed: 1, failedOpen: 10, failedClosed: 0 });
    const rateLimitWarnings = warn.mock.calls.filter(([m]) => String(m).includes('rate limiting'));
    expect(rateLimitWarnings).toHaveLength(1);
  });

  it('Redis killed with failOpen: false: 503, quickly', async () => {
    const { get, rl } = await start({ failOpen: false }, COMMAND_TIMEOUT, platform);
    await server.kill();
    const res = await get('/f');
    expect(res.status).toBe(503);
    expect(res.body).toEqual({ statusCode: 503, message: 'Rate limiting is unavailable, try again later' });
    expect(res.ms).toBeLessThan(within(COMMAND_TIMEOUT));
    expect(rl.stats().failedClosed).toBe(1);
    await expect(rl.consume('k', { limit: 1, ttl: 1_000 })).rejects.toBeInstanceOf(RedisUnavailableError);
  });

  it('failOpen: false on one policy makes only that route fail closed', async () => {
    const { get } = await start({}, COMMAND_TIMEOUT, platform);
    await server.kill();
    expect((await get('/f')).status).toBe(200);
    expect((await get('/f/strict')).status).toBe(503);
  });

  it('Redis restarted: limiting resumes on reconnect', async () => {
    const { get, connection } = await start({}, COMMAND_TIMEOUT, platform);
    await get('/f');
    await server.kill();
    expect((await get('/f')).status).toBe(200);
    await server.restart();
    expect(await waitFor(() => connection.status === 'ready', 5_000)).toBe(true);
    // the restarted server is empty: the limit counts again from zero
    expect((await get('/f')).status).toBe(200);
    expect((await get('/f')).status).toBe(200);
    const denied = await get('/f');
    expect(denied.status).toBe(429);
    expect(denied.body).toMatchObject({ statusCode: 429 });
  });
});

describe('rate limiting when Redis fails', () => {
  it('while the connection is not ready, decides at once instead of queueing', async () => {
    // A large commandTimeout, so "at once" (not queued until it) has a generous margin on a busy machine.
    const { rl, connection } = await start({}, 10_000);
    await server.kill();
    expect(await waitFor(() => connection.status !== 'ready', 3_000)).toBe(true);
    const started = Date.now();
    const results = await Promise.all(Array.from({ length: 20 }, () => rl.consume('k', { limit: 1, ttl: 1_000 })));
    expect(Date.now() - started).toBeLessThan(10_000 / 2);
    expect(results.every((r) => r.allowed && r.degraded === 'fail-open')).toBe(true);
  });

  it("a fail-open result says the counter's capacity: a token bucket's burst, as Redis's answers do", async () => {
    const { rl, connection } = await start({}, 10_000);
    const bucket: RateLimitPolicy = { limit: 2, burst: 8, ttl: 60_000, algorithm: 'token-bucket' };
    const window: RateLimitPolicy = { limit: 5, ttl: 60_000, algorithm: 'fixed-window' };
    const key = randomUUID();
    const up = await rl.consume(key, bucket);
    expect([up.limit, up.remaining]).toEqual([8, 7]);
    await server.kill();
    expect(await waitFor(() => connection.status !== 'ready', 3_000)).toBe(true);
    const down = [await rl.consume(key, bucket), await rl.consume(key, window)];
    // before: the bucket said limit 2, remaining 2 (its limit, not its burst)
    expect(down.map((r) => [r.degraded, r.limit, r.remaining])).toEqual([
      ['fail-open', 8, 8],
      ['fail-open', 5, 5],
    ]);
  });

  it('Redis paused: answers within commandTimeout, and a timed-out call is never replayed', async () => {
    const { rl } = await start();
    const key = randomUUID();
    const policy: RateLimitPolicy = { limit: 10, ttl: 60_000, algorithm: 'fixed-window' };
    await rl.consume(key, policy);
    server.pause();
    try {
      const started = Date.now();
      const r = await rl.consume(key, policy);
      const elapsed = Date.now() - started;
      expect(r).toMatchObject({ allowed: true, degraded: 'fail-open' });
      expect(elapsed).toBeGreaterThanOrEqual(COMMAND_TIMEOUT * 0.9);
      expect(elapsed).toBeLessThan(within(COMMAND_TIMEOUT));
    } finally {
      server.resume();
    }
    // The script sent before the pause may run once Redis wakes up (its outcome was unknown), but never twice.
    expect(await waitFor(async () => (await rl.peek(key, policy)).degraded === undefined, 3_000)).toBe(true);
    await new Promise((r) => setTimeout(r, 300));
    const remaining = (await rl.peek(key, policy)).remaining;
    expect(remaining).toBeGreaterThanOrEqual(8);
    expect(remaining).toBeLessThanOrEqual(9);
  });

  it('Redis paused: every decision of a batched call fails open at commandTimeout, each counted once', async () => {
    const { rl } = await start();
    const policy: RateLimitPolicy = { limit: 10, ttl: 60_000, algorithm: 'sliding-window' };
    await rl.consume(randomUUID(), policy);
    const before = rl.stats().failedOpen;
    server.pause();
    try {
      const started = Date.now();
      const results = await Promise.all(Array.from({ length: 30 }, (_, i) => rl.consume(`k${i % 3}`, policy)));
      const elapsed = Date.now() - started;
      expect(results.map((r) => r.degraded)).toEqual(Array.from({ length: 30 }, () => 'fail-open'));
      expect(results.every((r) => r.allowed)).toBe(true);
      expect(elapsed).toBeLessThan(within(COMMAND_TIMEOUT));
    } finally {
      server.resume();
    }
    expect(rl.stats().failedOpen - before).toBe(30);
  });

  it('with insurance, an in-process limiter enforces limit / divideLimitBy while Redis is down', async () => {
    const { rl } = await start({ insurance: { divideLimitBy: 2 } });
    await server.kill();
    const policy: RateLimitPolicy = { limit: 10, ttl: 60_000 };
    const results = [];
    for (let i = 0; i < 8; i++) results.push(await rl.consume('user-1', policy));
    expect(results.filter((r) => r.allowed)).toHaveLength(5);
    expect(results.every((r) => r.degraded === 'insurance')).toBe(true);
    expect(results[7].retryAfterMs).toBeGreaterThan(50_000);
    expect(rl.stats().insurance).toBe(8);
  });
});

describe('rate limiting when a cluster master fails', () => {
  let cluster: RedisClusterHandle;
  beforeAll(async () => {
    cluster = await startRedisCluster();
  }, 30_000);
  afterAll(async () => {
    await closeToolkitApps();
    await cluster.stop();
  });

  it('keys on the dead master fail open within commandTimeout (or 503 when fail closed); the others keep their limits', async () => {
    const app = await createToolkitApp({
      target: { cluster: cluster.startupNodes },
      commandTimeout: COMMAND_TIMEOUT,
      maxReconnectDelay: 100,
      keyPrefix: `rtk-${randomUUID().slice(0, 8)}:`,
    });
    const rl = app.get(RateLimitService);
    const policy: RateLimitPolicy = { limit: 2, ttl: 60_000 };
    const victim = cluster.masters[0];
    const slots = (await rawCommand(victim.port, ['CLUSTER', 'SLOTS'])) as [number, number, [string, number]][];
    const ownedByVictim = (key: string) => {
      const slot = hashSlot(rl.redisKey(key, '2/60000', 'sliding-window'));
      return slots.some(([from, to, [, port]]) => port === victim.port && slot >= from && slot <= to);
    };
    const keys = Array.from({ length: 60 }, (_, i) => `client-${i}`);
    const deadKey = keys.find(ownedByVictim);
    const liveKey = keys.find((k) => !ownedByVictim(k));
    if (deadKey === undefined || liveKey === undefined) throw new Error('no key on each side');
    await victim.kill();
    const started = Date.now();
    const dead = await rl.consume(deadKey, policy);
    expect(Date.now() - started).toBeLessThan(within(COMMAND_TIMEOUT * 3));
    expect(dead).toMatchObject({ allowed: true, degraded: 'fail-open' });
    await expect(rl.consume(deadKey, policy, { failOpen: false })).rejects.toBeInstanceOf(RedisUnavailableError);
    const live = [];
    for (let i = 0; i < 3; i++) live.push(await rl.consume(liveKey, policy));
    expect(live.map((r) => r.allowed)).toEqual([true, true, false]);
    expect(live.every((r) => r.degraded === undefined)).toBe(true);
  });
});
