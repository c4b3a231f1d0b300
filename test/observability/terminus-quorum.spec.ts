import 'reflect-metadata';
import { LockService, RedisUnavailableError } from '../../lib/index.js';
import { trackForCleanup } from '../support/private-servers.js';
import { startQuorumServers } from '../support/quorum.js';
import { type RedisServerHandle, startRedisServer } from '../support/redis-server.js';
import { createTerminusApp } from '../support/terminus-app.js';
import { closeToolkitApps } from '../support/toolkit-app.js';
import { waitFor } from '../support/wait.js';

let server: RedisServerHandle;
let nodes: RedisServerHandle[] = [];

beforeEach(async () => {
  server = trackForCleanup(await startRedisServer());
  nodes = (await startQuorumServers(3)).map((n) => trackForCleanup(n));
});
afterEach(async () => {
  await closeToolkitApps();
  for (const n of nodes) if (n.isRunning()) n.resume();
  await Promise.all([server.stop(), ...nodes.map((n) => n.stop())]);
});

// A paused server (SIGSTOP) keeps its clients `ready`: until 2026-12-03 the indicator read only their status, so with two of
// three quorum nodes paused every lock call failed while health said up.
describe('RedisToolkitHealthIndicator and the lock quorum', () => {
  it('two of three quorum nodes paused (SIGSTOP): locks fail, the indicator does not say up', async () => {
    const { app, check } = await createTerminusApp({
      target: { url: server.url },
      commandTimeout: 500,
      lock: { quorum: { nodes: nodes.map((n) => ({ url: n.url })) }, retry: { count: 0 } },
    });
    const locks = app.get(LockService);
    await (await locks.acquire('health-quorum', { ttl: 1_000 })).release();
    expect((await check()).status).toBe('ok');

    nodes[0].pause();
    nodes[1].pause();
    await expect(locks.acquire('health-quorum', { ttl: 1_000 })).rejects.toBeInstanceOf(RedisUnavailableError);
    const result = await check();
    const redis = result.details.redis as Record<string, unknown>;
    expect({ overall: result.status, indicator: redis.status }).toEqual({ overall: 'degraded', indicator: 'degraded' });
    // each paused node named, the one still answering not
    const reason = String(redis.reason);
    for (const paused of [nodes[0], nodes[1]])
      expect(reason).toMatch(new RegExp(`127\\.0\\.0\\.1:${paused.port} connection does not answer`));
    expect(reason).not.toContain(`:${nodes[2].port}`);

    // back
    nodes[0].resume();
    nodes[1].resume();
    // the nodes' connections were dropped by the timed-out lock calls: up again once they reconnect
    expect(await waitFor(async () => (await check()).status === 'ok', 10_000)).toBe(true);
    // (another resource: the failed attempt may still hold the first on the node that answered it, for its ttl)
    await (await locks.acquire('health-quorum-after', { ttl: 1_000 })).release();
  });
});
