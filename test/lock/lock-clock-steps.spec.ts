/**
 * Locks with the app's wall clock stepping back or forward (NTP, a resumed VM, an operator). Redis times a lease with
 * its own clock; this process only knows how long ago it sent the request, a duration it measures on its monotonic
 * clock (lib/lock/lock.clock.ts). Before, every such duration was Date.now()'s: `isHeld` stayed true for an hour
 * after Redis let the lock go (a step back) or said false while it was held (a step forward), a Redlock acquisition
 * that took longer than its validity counted as valid when the clock stepped back meanwhile, the auto-extension put
 * its next extension an hour away (the lock expired unseen, its signal never aborted) or lost the lock at once,
 * `waitMs` waited an hour or gave up at once, and a semaphore permit's release said it had expired. A "step" is
 * `Date.now` shifted by an hour (the toolkit reads it at call time), undone after each test.
 * (test/foundation/busy-machine.hostile.spec.ts has the single-server isHeld case.)
 */
import 'reflect-metadata';
import { type Command, Redis } from 'ioredis';
import { LockLostError, LockNotAcquiredError } from '../../lib/index.js';
import { realNow, restoreClocks, shiftDateNow, useClockShift } from '../support/clock-shift.js';
import { LOCK_MODES, lockClients, lockKey, lockService, unique } from '../support/lock-modes.js';
import { closeToolkitApps } from '../support/toolkit-app.js';
import { sleep, waitFor } from '../support/wait.js';
import type { RedisClient } from '../../lib/common/lua-script.js';

afterEach(closeToolkitApps);
const HOUR = 3_600_000;
useClockShift();

/** The value of the lock key of `resource` on each server that holds lock keys (the main one, or each node). */
const values = (clients: RedisClient[], resource: string): Promise<(string | null)[]> =>
  Promise.all(clients.map((c) => c.get(lockKey(resource))));

/** The event loop blocked for `ms` (a synchronous busy loop). */
function busy(ms: number): void {
  const until = performance.now() + ms;
  while (performance.now() < until) {
    // spin
  }
}

/**
 * Once, when the reply of the `nth` script call (counted over `clients`, each server or node) arrives: the event loop
 * blocked for `stallMs`, during which the wall clock steps by `step`. Stalling on the reply that completes the majority keeps
 * every grant counted: what follows (the validity check) runs right after, in the same turn.
 */
function onReply(clients: RedisClient[], nth: number, stallMs: number, step: number): () => boolean {
  let replies = 0;
  let fired = false;
  for (const client of clients as Redis[]) {
    const send = client.sendCommand as (...args: unknown[]) => unknown;
    // a Cluster's takes a node too: every argument passed on
    client.sendCommand = ((command: Command, ...rest: unknown[]) => {
      const result = send.call(client, command, ...rest);
      if (command.name === 'evalsha' || command.name === 'eval') {
        command.promise.then(
          () => {
            if (++replies !== nth || fired) return;
            fired = true;
            if (stallMs > 0) busy(stallMs);
            shiftDateNow(step);
          },
          () => undefined,
        );
      }
      return result;
    }) as Redis['sendCommand'];
  }
  return () => fired;
}

describe.each(LOCK_MODES)('locks on %s with the wall clock stepping', (mode) => {
  it('a step back: a lock Redis has let go is not isHeld; a step forward: a lock Redis holds still is', async () => {
    const { locks, connection } = await lockService(mode);
    const clients = lockClients(mode, connection, locks);
    const short = await locks.acquire(unique('step-back'), { ttl: 400 });
    shiftDateNow(-HOUR);
    await sleep(900);
    expect(await values(clients, short.resource)).toEqual(clients.map(() => null));
    // before: true, for an hour after Redis let it go
    expect(short.isHeld).toBe(false);
    restoreClocks();

    const long = await locks.acquire(unique('step-forward'), { ttl: 30_000 });
    shiftDateNow(HOUR);
    // before: false while Redis holds it for another 30 s
    expect(long.isHeld).toBe(true);
    expect(await values(clients, long.resource)).toEqual(clients.map(() => long.token));
    await long.release();
    expect(long.isHeld).toBe(false);
  });

  it('auto-extension keeps a lock across a step back and across a step forward', async () => {
    const { locks, connection } = await lockService(mode);
    const clients = lockClients(mode, connection, locks);
    for (const step of [-HOUR, HOUR]) {
      restoreClocks();
      const lock = await locks.acquire(unique('auto-extend'), { ttl: 600 });
      const lost: unknown[] = [];
      const signal = lock.startAutoExtend({ onLost: (e) => lost.push(e) });
      // the clock steps while the first extension is on its way: its lease was counted from before the step, the
      // next extension and the watchdog are timed after it
      const fired = onReply(clients, 1, 0, step);
      await sleep(2_000); // over three ttls
      expect(fired()).toBe(true);
      // before: a step back put the next extension an hour away (the key expired, the signal never aborted); a step
      // forward lost the lock at once (its watchdog was due)
      expect({ aborted: signal.aborted, lost: lost.length }).toEqual({ aborted: false, lost: 0 });
      expect(await values(clients, lock.resource)).toEqual(clients.map(() => lock.token));
      await lock.release();
    }
  });

  it('waitMs counts real time: a step back does not make a wait last an hour, a step forward does not end it', async () => {
    const { locks } = await lockService(mode);
    const resource = unique('wait');
    const holder = await locks.acquire(resource, { ttl: 30_000 });
    const waiting = locks.acquire(resource, { waitMs: 800, retry: { delay: 100, jitter: 0 } });
    await sleep(50);
    shiftDateNow(-HOUR);
    const outcome = await Promise.race([
      waiting.then(
        () => 'acquired',
        (e: unknown) => (e instanceof LockNotAcquiredError ? 'gave up' : String(e)),
      ),
      sleep(5_000).then(() => 'still waiting after 5 s'),
    ]);
    // before: still waiting (its deadline an hour away)
    expect(outcome).toBe('gave up');

    restoreClocks();
    const waitingLonger = locks.acquire(resource, { waitMs: 3_000, retry: { delay: 100, jitter: 0 } });
    await sleep(50);
    shiftDateNow(HOUR);
    await sleep(200);
    await holder.release();
    // before: LockNotAcquiredError at the first pause after the step (its deadline an hour past)
    const lock = await waitingLonger;
    expect(lock.isHeld).toBe(true);
    await lock.release();
  });

  it('a semaphore permit released after a step forward is released, not lost', async () => {
    const { locks } = await lockService(mode);
    const semaphore = locks.semaphore(unique('sem'), { limit: 1, ttl: 30_000 });
    const permit = await semaphore.acquire();
    shiftDateNow(HOUR);
    expect(permit.isHeld).toBe(true);
    // before: LockLostError 'cannot release the permit ...: it expired' (its expiry an hour behind the clock)
    await expect(permit.release()).resolves.toBeUndefined();
    restoreClocks();
    expect(await semaphore.holders()).toBe(0);
  });

  it("Semaphore.holders() counts by the server's clock, as the scripts decide, whatever the app's says", async () => {
    const { locks } = await lockService(mode);
    const semaphore = locks.semaphore(unique('sem-holders'), { limit: 3, ttl: 30_000 });
    const held = [await semaphore.acquire(), await semaphore.acquire()];
    const expiring = await semaphore.acquire({ ttl: 300 });
    await sleep(500); // its permit expired, not pruned (no acquisition since)
    const counts: Record<string, number> = {};
    for (const [name, step] of [
      ['ahead', HOUR],
      ['behind', -HOUR],
      ['right', 0],
    ] as const) {
      shiftDateNow(step);
      counts[name] = await semaphore.holders();
    }
    // before: { ahead: 0, behind: 3, right: 2 } (a ZCOUNT from the app's clock)
    expect(counts).toEqual({ ahead: 2, behind: 2, right: 2 });
    restoreClocks();
    expect(expiring.isHeld).toBe(false);
    for (const permit of held) await permit.release();
  });
});

describe('a Redlock acquisition with the wall clock stepping meanwhile', () => {
  it('one that took longer than its validity is not granted when the clock stepped back during it', async () => {
    const { locks, connection } = await lockService('quorum');
    const clients = lockClients('quorum', connection, locks);
    const resource = unique('redlock-step-back');
    const fired = onReply(clients, 2, 700, -HOUR);
    // validity 500 - 7 ms: the second grant is read 700 ms after the calls were sent, when Redis has let them go
    const lock = await locks.tryAcquire(resource, { ttl: 500 });
    restoreClocks();
    expect(fired()).toBe(true);
    // before: a Lock (isHeld while the clock stayed back) whose keys had expired on every node
    expect(lock).toBeNull();
    expect(await waitFor(async () => (await values(clients, resource)).every((v) => v === null), 2_000)).toBe(true);
    // and the next attempt gets it
    const next = await locks.tryAcquire(resource, { ttl: 5_000 });
    expect(next?.isHeld).toBe(true);
    await next?.release();
  });

  it('a quick one is granted when the clock stepped forward during it', async () => {
    const { locks, connection } = await lockService('quorum');
    const clients = lockClients('quorum', connection, locks);
    const resource = unique('redlock-step-forward');
    const fired = onReply(clients, 1, 0, HOUR);
    // before: null (its validity an hour behind the clock): undone on every node though it took a few ms
    const lock = await locks.tryAcquire(resource, { ttl: 5_000 });
    expect(fired()).toBe(true);
    expect(lock?.isHeld).toBe(true);
    expect(lock!.expiresAt).toBeLessThan(realNow() + 5_000 + 1);
    expect((await values(clients, resource)).filter((v) => v === lock!.token).length).toBeGreaterThan(1);
    await lock!.release();
  });

  it('an extension that took longer than its validity is not confirmed when the clock stepped back during it', async () => {
    const { locks, connection } = await lockService('quorum');
    const clients = lockClients('quorum', connection, locks);
    const lock = await locks.acquire(unique('redlock-extend'), { ttl: 500 });
    onReply(clients, 2, 700, -HOUR);
    // the extension's validity: 500 - 7 ms; the majority's answer read after 700 ms, past the acquisition's too
    const extended = await lock.extend(500).then(
      () => 'extended',
      (e: unknown) => (e instanceof LockLostError ? 'lost' : (e as Error).constructor.name),
    );
    const held = lock.isHeld;
    restoreClocks();
    // before: 'extended', and isHeld (for an hour) though Redis let it go
    expect({ extended, held }).toEqual({ extended: 'RedisUnavailableError', held: false });
    expect(await values(clients, lock.resource)).toEqual(clients.map(() => null));
  });
});
