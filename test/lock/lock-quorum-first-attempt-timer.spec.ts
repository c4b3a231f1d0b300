/**
 * Under lazyConnect a lock call to a quorum node waits for the node's first connection attempt (then for its check on
 * `ready`), so nothing reaches a node before it is checked. That wait is bounded by connectTimeout + commandTimeout:
 * each is valid up to 2^31 - 1 ms, their sum may be past it, and Node fires a longer timer after 1 ms. The wait then
 * ended at once and every node's call went out while it was still connecting (no offline queue: each failed at once
 * with "Stream isn't writeable"), so the first acquisition failed with RedisUnavailableError 'fewer than 2 of 3 lock
 * servers answered' with two healthy nodes and a third still being checked.
 */
import 'reflect-metadata';
import { LockService } from '../../lib/index.js';
import { startFaultProxy } from '../support/fault-proxy.js';
import { nodesWith, startMisfitServers } from '../support/misfit-servers.js';
import { trackForCleanup } from '../support/private-servers.js';
import { recordingLogger } from '../support/recording-logger.js';
import { rawCommand } from '../support/resp.js';
import { closeToolkitApps, createToolkitApp } from '../support/toolkit-app.js';
import { sleep, waitFor } from '../support/wait.js';
import { unique } from '../support/lock-modes.js';

afterEach(closeToolkitApps);

describe('lock.quorum.nodes under lazyConnect: connectTimeout + commandTimeout past 2^31 - 1 ms', () => {
  it('a node whose db the server lacks still gets no lock before its check (the wait is not cut to 1 ms)', async () => {
    const { fewDbs } = await startMisfitServers();
    // the node's first connection takes ~200 ms per round trip: far longer than the 1 ms the unclamped timer gave
    const proxy = await startFaultProxy({ port: fewDbs.port });
    trackForCleanup({ stop: () => proxy.close() });
    proxy.delay(100);
    const { errors, logger } = recordingLogger();
    const { get } = await createToolkitApp({
      lazyConnect: true,
      // each valid (at most 2_147_483_647); the sum 2_147_484_000 is past what a Node timer keeps
      connectTimeout: 2_147_483_000,
      commandTimeout: 1_000,
      lock: { quorum: { nodes: nodesWith({ url: `${proxy.url}/9` }) } },
      logger,
    });
    const locks = get(LockService);
    // before: RedisUnavailableError (every node's call sent 1 ms after the start of its first connection attempt)
    const lock = await locks.acquire(unique('first-attempt'), { ttl: 10_000 });
    const named = () => errors.filter((e) => e.includes(`lock quorum node ${proxy.url}`));
    expect(await waitFor(() => named().length > 0, 5_000)).toBe(true);
    expect(named()[0]).toContain('db 9');
    // and the node without db 9 was left out before any lock call reached it (none in its db 0)
    await sleep(300);
    expect(Number(await rawCommand(fewDbs.port, ['DBSIZE']))).toBe(0);
    await lock.release();
    expect(errors).toHaveLength(1);
  });
});
