/**
 * A 3-node quorum with the event loop blocked (a synchronous busy loop, as a big JSON.parse or a sync crypto call
 * would) right after an acquisition's (extension's, release's, count's) commands went out, for longer than the wait for
 * the nodes' answers (`gather` in lib/lock/lock.quorum.ts: min(validity, commandTimeout)). After a stall Node runs the
 * timers that came due during it before it reads the sockets: the gather's timer gave its verdict with every node's
 * reply waiting unread, so an acquisition all three nodes granted counted as an outage (RedisUnavailableError, the
 * nodes' grants undone), as did an extension, a release, a multi-resource lock, a semaphore permit and holders(). The
 * gather's verdict now comes after the poll phase (setVerdictTimeout), and once more after a late timer when the
 * requests themselves were written only after the stall (a quorum node's lock calls leave corked at the end of the turn).
 * The lock ttl (30 s) outlasts the stall, so the lease is valid; its validity is still counted from the send.
 * Each test failed on the old gather in both variants. In the `in-send` one, the extension, the multi-resource lock and
 * holders() send to each node at once (not at the turn's end), so their stall comes before the gather's timer is armed:
 * those parts passed on the old code too; the `written` variant is the one that fails for them.
 * (test/foundation/busy-machine.hostile.spec.ts and stall-verdicts.spec.ts: the same on one server's command timer.)
 */
import 'reflect-metadata';
import type { Redis } from 'ioredis';
import { LockService, RedisUnavailableError } from '../../lib/index.js';
import type { RedisClient } from '../../lib/common/lua-script.js';
import { lockAppOptions, lockKey, quorumNodeClients, unique } from '../support/lock-modes.js';
import { stallOnSend } from '../support/stall.js';
import { closeToolkitApps, createToolkitApp } from '../support/toolkit-app.js';

afterEach(closeToolkitApps);

const COMMAND_TIMEOUT = 500;
const STALL = 1_500;
const TTL = 30_000;
const SCRIPT = ['evalsha', 'eval'];

async function quorumLocks(): Promise<{ locks: LockService; nodes: RedisClient[] }> {
  const app = await createToolkitApp({ ...lockAppOptions('quorum'), commandTimeout: COMMAND_TIMEOUT });
  const locks = app.get(LockService);
  return { locks, nodes: quorumNodeClients(locks) };
}

const values = (nodes: RedisClient[], resource: string): Promise<(string | null)[]> =>
  Promise.all(nodes.map((c) => c.get(lockKey(resource))));

const outcome = <T>(p: Promise<T>): Promise<T | Error> => p.catch((err: unknown) => err as Error);

describe.each(['written', 'in-send'] as const)('a 3-node quorum, the loop stalled when the requests are %s', (when) => {
  it('an acquisition the nodes granted during the stall is returned, its validity counted from the send', async () => {
    const { locks, nodes } = await quorumLocks();
    const resource = unique('stalled-acquire');
    const stall = stallOnSend(nodes as Redis[], SCRIPT, STALL, when);
    const before = Date.now();
    const lock = await outcome(locks.tryAcquire(resource, { ttl: TTL }));
    const after = Date.now();
    expect(stall.fired()).toBe(true);
    // showed: RedisUnavailableError 'fewer than 2 of 3 lock servers answered (no answer in time)'
    expect(lock).not.toBeInstanceOf(RedisUnavailableError);
    if (lock === null || lock instanceof Error) throw new Error(`no lock: ${String(lock)}`);
    expect(lock.isHeld).toBe(true);
    expect(await values(nodes, resource)).toEqual([lock.token, lock.token, lock.token]);
    // the lease runs from the send, before the stall: at most ttl - stall left once the call returned
    expect(lock.expiresAt).toBeGreaterThanOrEqual(before + TTL - 400); // the drift allowance: 1 % + 2 ms
    expect(lock.expiresAt).toBeLessThanOrEqual(after + TTL - STALL);
    await lock.release();
    expect(await values(nodes, resource)).toEqual([null, null, null]);
  });

  it('an extension and a release the nodes answered during the stall succeed', async () => {
    const { locks, nodes } = await quorumLocks();
    const resource = unique('stalled-extend');
    const lock = await locks.acquire(resource, { ttl: TTL });
    const extending = stallOnSend(nodes as Redis[], SCRIPT, STALL, when);
    const extended = await outcome(lock.extend(TTL));
    expect(extending.fired()).toBe(true);
    // showed: RedisUnavailableError 'fewer than 2 of 3 lock servers confirmed (no answer in time)'
    expect(extended).toBeUndefined();
    expect(lock.isHeld).toBe(true);
    const releasing = stallOnSend(nodes as Redis[], SCRIPT, STALL, when);
    const released = await outcome(lock.release());
    expect(releasing.fired()).toBe(true);
    // showed: RedisUnavailableError '... lock servers confirmed (no answer in time); it expires by itself'
    expect(released).toBeUndefined();
    expect(await values(nodes, resource)).toEqual([null, null, null]);
  });

  it('a multi-resource lock and a semaphore permit granted during the stall are returned; holders() counts', async () => {
    const { locks, nodes } = await quorumLocks();
    const resources = [unique('stalled-a'), unique('stalled-b')];
    const multiStall = stallOnSend(nodes as Redis[], SCRIPT, STALL, when);
    const multi = await outcome(locks.tryAcquireAll(resources, { ttl: TTL }));
    expect(multiStall.fired()).toBe(true);
    expect(multi).not.toBeInstanceOf(RedisUnavailableError);
    expect(multi === null || multi instanceof Error ? multi : multi.isHeld).toBe(true);
    const semaphore = locks.semaphore(unique('stalled-sem'), { limit: 2, ttl: TTL });
    const permitStall = stallOnSend(nodes as Redis[], SCRIPT, STALL, when);
    const permit = await outcome(semaphore.tryAcquire());
    expect(permitStall.fired()).toBe(true);
    expect(permit).not.toBeInstanceOf(RedisUnavailableError);
    expect(permit === null || permit instanceof Error ? permit : permit.isHeld).toBe(true);
    const countStall = stallOnSend(nodes as Redis[], SCRIPT, STALL, when);
    const holders = await outcome(semaphore.holders());
    expect(countStall.fired()).toBe(true);
    // showed: RedisUnavailableError 'fewer than 2 of 3 lock servers answered (no answer in time)'
    expect(holders).toBe(1);
  });
});
