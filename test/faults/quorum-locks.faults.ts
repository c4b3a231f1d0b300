/**
 * Quorum (Redlock) locks with one of three nodes cut off: acquisitions keep succeeding on the majority and mutual
 * exclusion holds. Written against the agreed API (DESIGN.md: `lock: { quorum: { nodes } }`, `LockService.acquire`)
 * and switched on once the lock feature is merged (the placeholder LockService has no `acquire` yet).
 */
import 'reflect-metadata';
import { LockService } from '../../lib/index.js';
import { FaultProxy } from '../support/fault-proxy.js';
import { startQuorumServers } from '../support/quorum.js';
import type { RedisServerHandle } from '../support/redis-server.js';
import { closeToolkitApps, createToolkitApp } from '../support/toolkit-app.js';
import { sleep } from '../support/wait.js';
import { countUnhandledRejections, settleRejections } from './harness/unhandled.js';

interface LockApi {
  acquire(
    resource: string,
    options?: { ttl?: number; waitMs?: number },
  ): Promise<{ fencingToken: number; release(): Promise<unknown> }>;
}

const lockReady = typeof (LockService.prototype as unknown as Record<string, unknown>).acquire === 'function';

(lockReady ? describe : describe.skip)(
  `quorum locks with one node cut off${lockReady ? '' : ' (skipped: the lock feature is not merged yet)'}`,
  () => {
    let servers: RedisServerHandle[] = [];
    let proxy: FaultProxy;

    beforeAll(async () => {
      servers = await startQuorumServers(3);
      proxy = await FaultProxy.start({ port: servers[2].port });
    });

    afterAll(async () => {
      await closeToolkitApps();
      await proxy?.close();
      await Promise.all(servers.map((s) => s.stop()));
    });

    it.each(['blackhole', 'refuse', 'kill'] as const)(
      '%s: two apps contend for 3 s; one holder at a time, acquisitions keep succeeding',
      async (fault) => {
        const rejections = countUnhandledRejections();
        const quorum = { nodes: [{ url: servers[0].url }, { url: servers[1].url }, { url: proxy.url }] };
        const apps = await Promise.all(
          [0, 1].map(() => createToolkitApp({ target: 'single', commandTimeout: 300, lock: { quorum } })),
        );
        const locks = apps.map((a) => a.get(LockService) as unknown as LockApi);
        if (fault === 'blackhole') proxy.blackhole();
        if (fault === 'refuse') await proxy.refuse();
        if (fault === 'kill') await servers[2].kill();
        const resource = `quorum-fault-${fault}-${Date.now()}`;
        let inside = 0;
        let maxInside = 0;
        let acquired = 0;
        let failed = 0;
        const deadline = Date.now() + 3_000;
        await Promise.all(
          locks.flatMap((lock) =>
            [0, 1, 2].map(async () => {
              while (Date.now() < deadline) {
                try {
                  const held = await lock.acquire(resource, { ttl: 2_000, waitMs: 1_500 });
                  inside++;
                  maxInside = Math.max(maxInside, inside);
                  acquired++;
                  await sleep(5);
                  inside--;
                  await held.release();
                } catch {
                  failed++;
                }
              }
            }),
          ),
        );
        await closeToolkitApps();
        await proxy.restore();
        if (!servers[2].isRunning()) await servers[2].restart();
        await settleRejections();
        rejections.stop();
        process.stdout.write(`\nquorum lock with node 3 ${fault}: ${acquired} acquisitions, ${failed} failures\n`);
        expect(maxInside).toBe(1);
        expect(acquired).toBeGreaterThan(5);
        expect(rejections.reasons).toEqual([]);
      },
      30_000,
    );
  },
);

if (!lockReady)
  it.todo('quorum locks with one node cut off keep mutual exclusion (switches on when LockService.acquire exists)');
