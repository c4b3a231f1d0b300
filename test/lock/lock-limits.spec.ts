import 'reflect-metadata';
import { KeyBuilder } from '../../lib/common/keys.js';
import { SEMAPHORE_ACQUIRE } from '../../lib/lock/lock.scripts.js';
import { lockClients, lockKey, lockService, unique } from '../support/lock-modes.js';
import { closeToolkitApps } from '../support/toolkit-app.js';

afterEach(closeToolkitApps);

const semaphoreKey = (name: string): string => new KeyBuilder('rtk:').tagged('lock', name, ':sem');

describe.each(['single', 'cluster'] as const)('a fractional lock.ttl on %s', (mode) => {
  // 1500.5 passed the start-up check but reached Redis as is: every acquire failed with "ERR value is not an integer",
  // and a semaphore's permit was added before its PEXPIRE failed, so it stayed until its ttl.
  it('is rounded up to whole ms: locks, permits and acquireAll work with the module ttl', async () => {
    const { locks, connection } = await lockService(mode, { ttl: 1500.5 });
    const [client] = lockClients(mode, connection, locks);
    const resource = unique('fractional');
    const lock = await locks.acquire(resource);
    expect(lock.ttl).toBe(1501);
    const pttl = await client.pttl(lockKey(resource));
    expect(pttl).toBeGreaterThan(1_000);
    expect(pttl).toBeLessThanOrEqual(1501);
    await lock.release();

    const name = unique('fractional-sem');
    const semaphore = locks.semaphore(name, { limit: 1 });
    expect(semaphore.ttl).toBe(1501);
    const permit = await semaphore.tryAcquire();
    expect(permit).not.toBeNull();
    expect(permit!.ttl).toBe(1501);
    expect(await semaphore.holders()).toBe(1);
    await permit!.release();
    expect(await semaphore.holders()).toBe(0);
    expect(await client.zcard(semaphoreKey(name))).toBe(0);

    const multi = await locks.acquireAll([unique('a'), unique('b')]);
    expect(multi.ttl).toBe(1501);
    await multi.release();
  });

  it('semaphore-acquire.lua leaves no permit behind when the expiry of the holders set fails', async () => {
    const { locks, connection } = await lockService(mode);
    const [client] = lockClients(mode, connection, locks);
    const key = semaphoreKey(unique('sem-pexpire'));
    // A fractional ttl (never sent by the library since it rounds up): ZADD takes it, PEXPIRE refuses it.
    await expect(SEMAPHORE_ACQUIRE.run(client, [key], ['holder', '1500.5', 2])).rejects.toThrow(/not an integer/);
    expect(await client.zcard(key)).toBe(0);
    expect(await SEMAPHORE_ACQUIRE.run(client, [key], ['holder', 1_500, 2])).toEqual([1]);
    expect(await client.zcard(key)).toBe(1);
  });
});
