import { KeyBuilder } from '../../lib/common/keys.js';
import { lockKeysOf, type LockBackend } from '../../lib/lock/lock.backend.js';
import { LockGrants } from '../../lib/lock/lock.grants.js';
import { LocalWaiters } from '../../lib/lock/lock.waiters.js';

// LockGrants' bookkeeping alone (what it remembers per lock key); the grants themselves run on Redis in lock-wake.spec.
describe('LockGrants bookkeeping', () => {
  const keys = new KeyBuilder('rtk:');
  const lock = (i: number) => lockKeysOf(`r${i}`, keys.tagged('lock', `r${i}`));
  const grantsWith = (inFlight: Set<string>) =>
    new LockGrants(keys, {
      backend: {} as LockBackend, // never called: no grant here is released or extended
      waiters: new LocalWaiters(),
      inFlight,
      hold: () => {
        throw new Error('not called');
      },
      warn: () => undefined,
    });

  it("keeps one token per wait, its first attempt's: that attempt joins (+), later ones carry its token and ttl", () => {
    const grants = grantsWith(new Set());
    expect(grants.register(lock(0), 'token-0', 10_000)).toBe('+');
    // a later attempt, also one of another caller with another ttl: the wait's token and ttl
    expect(grants.register(lock(0), 'token-1', 3_000)).toBe('token-0 10000');
    expect(grants.register(lock(1), 'token-2', 3_000)).toBe('+');
    expect(grants.register(lock(1), 'token-3', 10_000)).toBe('token-2 3000');
    grants.forget(lock(0).lock);
    // a new wait, with the token of the attempt that begins it
    expect(grants.register(lock(0), 'token-4', 10_000)).toBe('+');
    expect(grants.register(lock(0), 'token-5', 10_000)).toBe('token-4 10000');
  });

  it('remembers at most 10,000 lock keys, early grants included: past it they are forgotten', () => {
    const inFlight = new Set<string>();
    const grants = grantsWith(inFlight);
    const first = lock(0);
    expect(grants.register(first, 'token-0', 10_000)).toBe('+');
    inFlight.add(first.lock);
    grants.received(first.lock, 'token-0', 7); // kept for the attempt in flight
    for (let i = 1; i < 10_000; i++) grants.register(lock(i), `t${i}`, 10_000);
    expect((grants as unknown as { waiting: Map<string, unknown> }).waiting.size).toBe(10_000);
    expect((grants as unknown as { early: Map<string, unknown> }).early.size).toBe(1);
    grants.register(lock(10_000), 't', 10_000);
    expect((grants as unknown as { waiting: Map<string, unknown> }).waiting.size).toBe(1);
    expect((grants as unknown as { early: Map<string, unknown> }).early.size).toBe(0);
    expect(grants.takeEarly(first.lock, 10_000)).toBeUndefined();
    expect(grants.register(first, 'token-1', 10_000)).toBe('+');
  });
});
