import 'reflect-metadata';
import { useDisposableCluster } from '../support/disposable-cluster.js';
import { createTerminusApp } from '../support/terminus-app.js';
import { within } from '../support/timing.js';
import { closeToolkitApps } from '../support/toolkit-app.js';

afterEach(closeToolkitApps);

describe('RedisToolkitHealthIndicator on a cluster with one master away', () => {
  const cluster = useDisposableCluster();

  it.each(['paused', 'killed'] as const)(
    'one master %s: down within commandTimeout, naming that master',
    async (how) => {
      const commandTimeout = 1_000;
      const { check } = await createTerminusApp({
        target: { cluster: cluster().startupNodes },
        commandTimeout,
        connectTimeout: 500,
        maxReconnectDelay: 200,
      });
      expect((await check()).status).toBe('ok');
      const master = cluster().masters[1];
      if (how === 'paused') master.pause();
      else await master.kill();
      try {
        const started = performance.now();
        const result = await check();
        const elapsed = performance.now() - started;
        const redis = result.details.redis as Record<string, unknown>;
        expect({ status: redis.status, fast: elapsed < within(commandTimeout) }).toEqual({
          status: 'down',
          fast: true,
        });
        expect(String(redis.error)).toContain(String(master.port));
      } finally {
        if (how === 'paused') master.resume();
        else await master.restart();
      }
    },
    30_000,
  );
});
