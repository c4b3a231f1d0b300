import 'reflect-metadata';
import { LockService, PubSubService } from '../../lib/index.js';
import { trackForCleanup } from '../support/private-servers.js';
import { startQuorumServers } from '../support/quorum.js';
import { type RedisServerHandle, startRedisServer } from '../support/redis-server.js';
import { within } from '../support/timing.js';
import { createTerminusApp } from '../support/terminus-app.js';
import { closeToolkitApps, type ToolkitAppOptions } from '../support/toolkit-app.js';

let server: RedisServerHandle;

const boot = (options: ToolkitAppOptions = {}) => createTerminusApp({ target: { url: server.url }, ...options });

beforeEach(async () => {
  server = trackForCleanup(await startRedisServer());
});
afterEach(async () => {
  await closeToolkitApps();
  if (server.isRunning()) server.resume();
  await server.stop();
});

describe('RedisToolkitHealthIndicator through terminus HealthCheckService', () => {
  it('up: latency, role, memory and every connection the toolkit owns (main, subscriber, quorum nodes)', async () => {
    const nodes = await startQuorumServers(3);
    for (const n of nodes) trackForCleanup(n);
    try {
      const { app, check } = await boot({ lock: { quorum: { nodes: nodes.map((n) => ({ url: n.url })) } } });
      await app.get(PubSubService).subscribe('health-news', () => undefined);
      const lock = await app.get(LockService).acquire('health', { ttl: 1_000 });
      await lock.release();
      const result = await check();
      expect(result.status).toBe('ok');
      const redis = result.details.redis as Record<string, unknown>;
      expect(redis).toMatchObject({ status: 'up', role: 'master', redisVersion: expect.any(String) });
      expect(redis.latencyMs as number).toBeGreaterThanOrEqual(0);
      expect(redis.usedMemory as number).toBeGreaterThan(0);
      const connections = redis.connections as Record<string, { status: string; clients: Record<string, string> }>;
      expect(Object.keys(connections)).toEqual(['default']);
      expect(connections.default.status).toBe('up');
      const clients = connections.default.clients;
      expect(clients.main).toBe('ready');
      expect(clients.subscriber).toBe('ready');
      for (const n of nodes) expect(clients[`redis://127.0.0.1:${n.port}`]).toBe('ready');
      expect(Object.keys(clients)).toHaveLength(5);

      // one quorum node killed: still serving (a minority), reported degraded with the node's state
      await nodes[0].kill();
      const degraded = await check();
      expect(degraded.status).toBe('degraded'); // terminus: degraded does not fail the check (HTTP 200)
      const details = degraded.details.redis as Record<string, unknown>;
      expect(details.status).toBe('degraded');
      expect(details.reason).toMatch(
        // its state, or its PING's failure when the check came before ioredis noticed the close
        new RegExp(`default: redis://127\\.0\\.0\\.1:${nodes[0].port} connection (reconnecting|close|does not answer)`),
      );
    } finally {
      await closeToolkitApps();
      await Promise.all(nodes.map((n) => n.stop()));
    }
  });

  it('named connections: each reported with its own health and clients; one killed brings the check down', async () => {
    const other = trackForCleanup(await startRedisServer());
    try {
      const { app, check } = await boot({
        connections: { events: { url: other.url } },
        pubsub: { connection: 'events' },
      });
      await app.get(PubSubService).subscribe('named-news', () => undefined);
      const ok = await check();
      expect(ok.status).toBe('ok');
      const connections = (ok.details.redis as Record<string, unknown>).connections as Record<
        string,
        { status: string; clients: Record<string, string> }
      >;
      expect(Object.keys(connections)).toEqual(['default', 'events']);
      expect(connections.default).toMatchObject({ status: 'up', clients: { main: 'ready' } });
      expect(connections.events).toMatchObject({ status: 'up', clients: { main: 'ready', subscriber: 'ready' } });
      await other.kill();
      const down = await check();
      expect(down.status).toBe('error');
      const redis = down.details.redis as Record<string, unknown>;
      expect(redis.status).toBe('down');
      expect((redis.connections as Record<string, { status: string }>).events.status).toBe('down');
      expect((redis.connections as Record<string, { status: string }>).default.status).toBe('up');
    } finally {
      await closeToolkitApps();
      await other.stop();
    }
  });

  it('down with Redis killed: terminus answers 503 with the indicator down and the error', async () => {
    const { check } = await boot({ commandTimeout: 500 });
    expect((await check()).status).toBe('ok');
    await server.kill();
    const result = await check();
    expect(result.status).toBe('error');
    const redis = result.details.redis as Record<string, unknown>;
    expect(redis.status).toBe('down');
    expect(typeof redis.error).toBe('string');
    // (the main client's status right after a kill is racy: ioredis may not have seen the close yet)
    expect(redis.connections).toEqual({
      default: expect.objectContaining({ status: 'down', clients: { main: expect.any(String) } }),
    });
  });

  it('a paused Redis (SIGSTOP) is reported down within commandTimeout, not twice it', async () => {
    // 2 × commandTimeout exceeds commandTimeout + the scheduling margin: a PING then INFO in sequence would fail this
    const commandTimeout = 2_500;
    const { check } = await boot({ commandTimeout });
    expect((await check()).status).toBe('ok');
    server.pause();
    const started = performance.now();
    const result = await check();
    const elapsed = performance.now() - started;
    expect((result.details.redis as Record<string, unknown>).status).toBe('down');
    expect(elapsed).toBeGreaterThanOrEqual(commandTimeout * 0.9);
    expect(elapsed).toBeLessThan(within(commandTimeout));
    expect(2 * commandTimeout).toBeGreaterThan(within(commandTimeout));
  });
});
