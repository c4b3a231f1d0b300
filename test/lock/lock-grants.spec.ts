import { KeyBuilder } from '../../lib/common/keys.js';
import { lockKeysOf, type LockBackend } from '../../lib/lock/lock.backend.js';
import { LockGrants } from '../../lib/lock/lock.grants.js';
import { LocalWaiters } from '../../lib/lock/lock.waiters.js';

// LockGrants' bookkeeping alone (what it remembers per lock key); the grants themselves run on Redis in lock-wake.spec.
describe('LockGrants bookkeeping', () => {
  const keys = new KeyBuilder('rtk:');
  const lock = (i: number) => lockKeysOf(`r${i}`, keys.tagged('lock', `r${i}`));

  it('remembers at most 10,000 lock keys, early grants included: past it they are forgotten', () => {
    const inFlight = new Set<string>();
    const grants = new LockGrants(keys, {
      backend: {} as LockBackend, // never called: no grant here is released or extended
      waiters: new LocalWaiters(),
      inFlight,
      hold: () => {
        throw new Error('not called');
      },
      warn: () => undefined,
    });
    const first = lock(0);
    expect(grants.register(first, 'token-0', 10_000)).toBe('+');
    expect(grants.register(first, 'token-1', 10_000)).toBe('token-0');
    inFlight.add(first.lock);
    grants.received(first.lock, 'token-1', 7); // kept for the attempt in flight
    for (let i = 1; i < 10_000; i++) grants.register(lock(i), `t${i}`, 10_000);
    expect((grants as unknown as { waiting: Map<string, unknown> }).waiting.size).toBe(10_000);
    expect((grants as unknown as { early: Map<string, unknown> }).early.size).toBe(1);
    grants.register(lock(10_000), 't', 10_000);
    expect((grants as unknown as { waiting: Map<string, unknown> }).waiting.size).toBe(1);
    expect((grants as unknown as { early: Map<string, unknown> }).early.size).toBe(0);
    expect(grants.takeEarly(first.lock, 'token-1', 10_000)).toBeUndefined();
    expect(grants.register(first, 'token-2', 10_000)).toBe('+');
  });
});
