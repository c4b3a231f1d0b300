/**
 * Quorum (Redlock) locks with one of three nodes cut off: acquisitions keep succeeding on the majority, mutual
 * exclusion holds, fencing tokens grow in the order the holders got in, and every failure is one of the two typed
 * outcomes (busy past waitMs, or Redis could not decide) — anything else fails the test.
 */
import 'reflect-metadata';
import { LockNotAcquiredError, LockService, RedisUnavailableError } from '../../lib/index.js';
import { FaultProxy } from '../support/fault-proxy.js';
import { startQuorumServers } from '../support/quorum.js';
import type { RedisServerHandle } from '../support/redis-server.js';
import { closeToolkitApps } from '../support/toolkit-app.js';
import { bootToolkitApp } from '../support/toolkit-boot.js';
import { sleep } from '../support/wait.js';
import { countUnhandledRejections, settleRejections } from '../support/unhandled.js';

/**
 * 1 s: at 300 ms, a healthy node missed it on this 2-core box at load average 18, and a timed-out connection is
 * reset and reconnects, so the quorum was short for a while (73 of 173 attempts "unavailable" with node 3 refusing).
 */
const COMMAND_TIMEOUT = 1_000;

describe('quorum locks with one node cut off', () => {
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
        [0, 1].map(() => bootToolkitApp({ target: 'single', commandTimeout: COMMAND_TIMEOUT, lock: { quorum } })),
      );
      const locks = apps.map((a) => a.get(LockService));
      if (fault === 'blackhole') proxy.blackhole();
      if (fault === 'refuse') await proxy.refuse();
      if (fault === 'kill') await servers[2].kill();
      const resource = `quorum-fault-${fault}-${Date.now()}`;
      let inside = 0;
      let maxInside = 0;
      let attempts = 0;
      /** Fencing tokens in the order their holders entered the critical section. */
      const tokens: number[] = [];
      const acquireErrors = { busy: 0, unavailable: 0, other: [] as string[] };
      const releaseErrors: string[] = [];
      const deadline = Date.now() + 3_000;
      await Promise.all(
        locks.flatMap((lock) =>
          [0, 1, 2].map(async () => {
            while (Date.now() < deadline) {
              attempts++;
              let held: Awaited<ReturnType<LockService['acquire']>>;
              try {
                held = await lock.acquire(resource, { ttl: 2_000, waitMs: 1_500 });
              } catch (err) {
                if (err instanceof LockNotAcquiredError) acquireErrors.busy++;
                else if (err instanceof RedisUnavailableError) acquireErrors.unavailable++;
                else acquireErrors.other.push(String(err));
                continue;
              }
              inside++;
              maxInside = Math.max(maxInside, inside);
              tokens.push(held.fencingToken);
              await sleep(5);
              inside--;
              // Two of three nodes confirm a release: it must succeed while one node is cut off.
              await held.release().catch((err: unknown) => releaseErrors.push(String(err)));
            }
          }),
        ),
      );
      await closeToolkitApps();
      await proxy.restore();
      if (!servers[2].isRunning()) await servers[2].restart();
      await settleRejections();
      rejections.stop();
      const acquired = tokens.length;
      process.stdout.write(
        `\nquorum lock with node 3 ${fault}: ${attempts} attempts, ${acquired} acquired, ` +
          `${acquireErrors.busy} busy, ${acquireErrors.unavailable} unavailable, ${releaseErrors.length} release errors\n`,
      );
      expect(maxInside).toBe(1);
      // Fencing order: each holder's token is larger than every earlier holder's.
      expect(tokens.filter((t, i) => i > 0 && t <= tokens[i - 1])).toEqual([]);
      // Only the typed outcomes, and every attempt is accounted for.
      expect(acquireErrors.other).toEqual([]);
      expect(acquired + acquireErrors.busy + acquireErrors.unavailable).toBe(attempts);
      // The majority is up: Redis can decide, so "unavailable" is the exception and most attempts get the lock
      // (six callers contend for one resource held ~5 ms each, waiting up to 1.5 s).
      expect(acquireErrors.unavailable).toBeLessThanOrEqual(Math.floor(attempts * 0.25));
      expect(acquired).toBeGreaterThanOrEqual(Math.ceil(attempts * 0.5));
      expect(acquired).toBeGreaterThan(5);
      expect(releaseErrors).toEqual([]);
      expect(rejections.reasons).toEqual([]);
    },
    30_000,
  );
});
