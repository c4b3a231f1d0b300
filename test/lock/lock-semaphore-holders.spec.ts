/**
 * Semaphore.holders() on a quorum (lock.quorum.nodes): it read node 0 alone, so with node 0 down it failed though two
 * nodes could answer, and with node 0 left out (a replica found under lazyConnect) it gave that node's count, which
 * is not the semaphore's. It answers from the nodes that take part: the fullest of those that answer, when a majority
 * of all the nodes answers.
 */
import 'reflect-metadata';
import { Redis } from 'ioredis';
import { LockService, RedisUnavailableError } from '../../lib/index.js';
import { KeyBuilder } from '../../lib/common/keys.js';
import { unique } from '../support/lock-modes.js';
import { startMisfitServers } from '../support/misfit-servers.js';
import { trackForCleanup } from '../support/private-servers.js';
import { startQuorumServers } from '../support/quorum.js';
import { recordingLogger } from '../support/recording-logger.js';
import type { RedisServerHandle } from '../support/redis-server.js';
import { sharedServers } from '../support/shared-servers.js';
import { closeToolkitApps, createToolkitApp } from '../support/toolkit-app.js';
import { bootToolkitApp } from '../support/toolkit-boot.js';
import { within } from '../support/timing.js';
import { waitFor } from '../support/wait.js';

afterEach(closeToolkitApps);

const COMMAND_TIMEOUT = 300;
const semKey = (name: string): string => new KeyBuilder('rtk:').tagged('lock', name, ':sem');

async function quorumLocks(servers: { url: string }[], extra: { lazyConnect?: boolean } = {}): Promise<LockService> {
  const app = await bootToolkitApp({
    target: 'single', // the main connection; semaphores on a quorum use only the nodes
    commandTimeout: COMMAND_TIMEOUT,
    maxReconnectDelay: 100,
    lock: { quorum: { nodes: servers.map((s) => ({ url: s.url })) } },
    ...extra,
  });
  return app.get(LockService);
}

/** `tokens` as unexpired holders of the semaphore `name` on the server at `port` (as the acquire script writes them). */
async function holdOn(port: number, name: string, tokens: string[]): Promise<void> {
  const admin = trackForCleanup(new Redis(port, '127.0.0.1'));
  for (const token of tokens) await admin.zadd(semKey(name), Date.now() + 30_000, token);
}

describe('Semaphore.holders() on a quorum of 3', () => {
  let servers: RedisServerHandle[];
  beforeEach(async () => {
    servers = (await startQuorumServers(3)).map((s) => trackForCleanup(s));
  });

  it('node 0 stopped: counts the permits from the two others', async () => {
    const locks = await quorumLocks(servers);
    const semaphore = locks.semaphore(unique('holders-node0'), { limit: 3, ttl: 20_000 });
    // limit > 1: each permit granted by all 3 nodes (and released only by all 3: these stay held)
    await semaphore.acquire();
    await semaphore.acquire();
    expect(await semaphore.holders()).toBe(2);
    await servers[0].kill();
    // before: RedisUnavailableError (node 0 refused the connection), though two nodes could answer
    const started = Date.now();
    expect(await semaphore.holders()).toBe(2);
    expect(Date.now() - started).toBeLessThan(within(COMMAND_TIMEOUT));
  });

  // limit 1: a permit needs 2 of the 3 nodes. One granted by nodes 0 and 1 (node 2 was down then) is on node 1 alone
  // once node 0 stops: the count two answering nodes agree on is 0, the fullest of them shows it.
  it('a permit granted by nodes 0 and 1, node 0 stopped: still counted', async () => {
    const locks = await quorumLocks(servers);
    const name = unique('holders-spread');
    const semaphore = locks.semaphore(name, { limit: 1, ttl: 20_000 });
    await holdOn(servers[0].port, name, ['A']);
    await holdOn(servers[1].port, name, ['A']);
    expect(await semaphore.tryAcquire()).toBeNull(); // A holds the permit on a majority
    await servers[0].kill();
    expect(await semaphore.holders()).toBe(1);
  });

  it('nodes 1 and 2 stopped: RedisUnavailableError naming the quorum, not node 0 alone', async () => {
    const locks = await quorumLocks(servers);
    const semaphore = locks.semaphore(unique('holders-minority'), { limit: 2, ttl: 20_000 });
    await (await semaphore.acquire()).release();
    await Promise.all([servers[1].kill(), servers[2].kill()]);
    // before: 0, node 0's count, as if the semaphore were known to be free
    const err = await semaphore.holders().then(
      (n) => n,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(RedisUnavailableError);
    expect((err as Error).message).toMatch(/holders of ".*" failed: fewer than 2 of 3 lock servers answered/);
  });
});

describe('Semaphore.holders() under lazyConnect with node 0 left out (a replica)', () => {
  let master: RedisServerHandle;
  let replica: RedisServerHandle;
  beforeAll(async () => {
    ({ master, replica } = await startMisfitServers());
  });

  it("counts the permits on the nodes that take part; the replica's copy of its master is not counted", async () => {
    const { errors, logger } = recordingLogger();
    const [a, b] = sharedServers().quorum;
    const { get } = await createToolkitApp({
      lazyConnect: true,
      commandTimeout: 1_000,
      lock: { quorum: { nodes: [{ url: replica.url }, { url: a.url }, { url: b.url }] } },
      logger,
    });
    const locks = get(LockService);
    const name = unique('holders-replica');
    // the replica shows what its master holds under the semaphore's key: three holders that are not ours
    await holdOn(master.port, name, ['x', 'y', 'z']);
    const replicaAdmin = trackForCleanup(new Redis(replica.port, '127.0.0.1'));
    // set-up, not the behaviour under test: a replica still in its first sync on a busy box took over 5 s (CI, 2026-12-03)
    expect(await waitFor(async () => (await replicaAdmin.zcard(semKey(name))) === 3, 20_000)).toBe(true);
    const semaphore = locks.semaphore(name, { limit: 1, ttl: 20_000 });
    const permit = await semaphore.acquire({ waitMs: 5_000 });
    expect(await waitFor(() => errors.some((e) => e.includes(`127.0.0.1:${replica.port}`)), 5_000)).toBe(true);
    // before: 3, the replica's count
    expect(await semaphore.holders()).toBe(1);
    await permit.release();
    expect(await semaphore.holders()).toBe(0);
  }, 45_000);
});
