/**
 * lock.quorum.nodes under lazyConnect: nothing is connected at start, so the start-up check of each node's server
 * (lock-quorum-nodes.spec.ts) cannot run there. Each node is checked on its first `ready` instead: a replica, or a
 * db the server does not have, is logged once as an error naming the node and left out of every lock call (it
 * counts as a node that is down: the majority of the others decides).
 */
import 'reflect-metadata';
import { Redis } from 'ioredis';
import { LockService } from '../../lib/index.js';
import { commandCalls, sumCalls } from '../support/commandstats.js';
import { lockKey, unique } from '../support/lock-modes.js';
import { trackForCleanup } from '../support/private-servers.js';
import { recordingLogger } from '../support/recording-logger.js';
import { type RedisServerHandle, startRedisServer } from '../support/redis-server.js';
import { rawCommand } from '../support/resp.js';
import { nodesWith, startMisfitServers } from '../support/misfit-servers.js';
import { sharedServers } from '../support/shared-servers.js';
import { closeToolkitApps, createToolkitApp } from '../support/toolkit-app.js';
import { waitFor } from '../support/wait.js';

afterEach(closeToolkitApps);

/** Script calls the server ran (EVAL and EVALSHA, from INFO commandstats). */
const scriptCalls = async (port: number): Promise<number> => sumCalls(await commandCalls(port), ['eval', 'evalsha']);

const holds = async (admins: Redis[], resource: string, value: string | null): Promise<boolean> =>
  (await Promise.all(admins.map((a) => a.get(lockKey(resource))))).every((v) => v === value);

/** Acquires and releases `n` locks on a lazily connected quorum; each lock is checked on the two good nodes. */
async function lockSeveral(locks: LockService, n: number): Promise<void> {
  const [a, b] = sharedServers().quorum;
  const admins = [a, b].map((q) => trackForCleanup(new Redis(q.port, q.host)));
  for (let i = 0; i < n; i++) {
    const lock = await locks.acquire(unique('lazy-quorum'), { ttl: 5_000 });
    // a quorum answers once a majority decided: a third node may still be on its way
    expect(await waitFor(() => holds(admins, lock.resource, lock.token), 2_000)).toBe(true);
    await lock.release();
    expect(await waitFor(() => holds(admins, lock.resource, null), 2_000)).toBe(true);
  }
}

describe('lock.quorum.nodes under lazyConnect: checked on first ready', () => {
  let master: RedisServerHandle;
  let replica: RedisServerHandle;
  let fewDbs: RedisServerHandle;
  beforeAll(async () => {
    ({ master, replica, fewDbs } = await startMisfitServers());
  });

  it('a replica node: one error naming it and its master, left out of the calls, locks work on the majority', async () => {
    const { errors, warnings, logger } = recordingLogger();
    const { get } = await createToolkitApp({
      lazyConnect: true,
      lock: { quorum: { nodes: nodesWith({ url: replica.url }) } },
      logger,
    });
    const locks = get(LockService);
    const before = await scriptCalls(replica.port);
    await lockSeveral(locks, 1);
    const named = () => errors.filter((e) => e.includes(`lock quorum node redis://127.0.0.1:${replica.port}`));
    // before: no error at all (each acquisition's READONLY was a throttled warning about a failed call)
    expect(await waitFor(() => named().length > 0, 5_000)).toBe(true);
    expect(named()[0]).toContain(`replica of 127.0.0.1:${master.port}`);
    expect(named()[0]).toContain('left out');
    await lockSeveral(locks, 5);
    expect(named()).toHaveLength(1);
    expect(errors).toHaveLength(1);
    // left out: no lock script reached the replica, so no READONLY warning either
    expect(await scriptCalls(replica.port)).toBe(before);
    expect(warnings.filter((w) => w.includes(`127.0.0.1:${replica.port}`) && w.includes('READONLY'))).toEqual([]);
  });

  it('a node url whose db the server does not have: one error naming the node and the db, no lock in its db 0', async () => {
    const { errors, logger } = recordingLogger();
    const { get } = await createToolkitApp({
      lazyConnect: true,
      lock: { quorum: { nodes: nodesWith({ url: `${fewDbs.url}/9` }) } },
      logger,
    });
    const locks = get(LockService);
    await lockSeveral(locks, 1);
    const named = () => errors.filter((e) => e.includes(`lock quorum node redis://127.0.0.1:${fewDbs.port}`));
    expect(await waitFor(() => named().length > 0, 5_000)).toBe(true);
    expect(named()[0]).toContain('db 9');
    expect(named()[0]).toMatch(/has 4 databases \(0 to 3/);
    // before: every lock also went to the server's db 0 (ioredis's SELECT 9 failed with only an error event)
    const held = await locks.acquire(unique('lazy-db'), { ttl: 5_000 });
    expect(Number(await rawCommand(fewDbs.port, ['DBSIZE']))).toBe(0);
    await held.release();
    await lockSeveral(locks, 3);
    expect(named()).toHaveLength(1);
    expect(errors).toHaveLength(1);
  });

  it('good nodes: no error, every lock on all three', async () => {
    const { errors, logger } = recordingLogger();
    const third = trackForCleanup(await startRedisServer());
    const { get } = await createToolkitApp({
      lazyConnect: true,
      lock: { quorum: { nodes: nodesWith({ url: third.url }) } },
      logger,
    });
    const locks = get(LockService);
    await lockSeveral(locks, 1);
    const lock = await locks.acquire(unique('lazy-good'), { ttl: 5_000 });
    const admin = trackForCleanup(new Redis(third.port, '127.0.0.1'));
    expect(await waitFor(() => holds([admin], lock.resource, lock.token), 2_000)).toBe(true);
    await lock.release();
    expect(errors).toEqual([]);
  });
});
