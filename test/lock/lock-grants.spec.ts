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

  it('keeps one token per wait: its first attempt joins (+), later ones carry the same token and ttl', () => {
    const grants = grantsWith(new Set());
    const first = grants.register(lock(0), 10_000);
    expect(first).toMatch(/^\+[\w-]{22} 10000$/);
    // a later attempt, also one of another caller with another ttl: the wait's token and ttl
    expect(grants.register(lock(0), 3_000)).toBe(first.slice(1));
    expect(grants.register(lock(1), 3_000)).toMatch(/^\+[\w-]{22} 3000$/);
    grants.forget(lock(0).lock);
    const next = grants.register(lock(0), 10_000);
    expect(next.startsWith('+')).toBe(true);
    expect(next).not.toBe(first); // a new wait, a new token
  });

  it('remembers at most 10,000 lock keys, early grants included: past it they are forgotten', () => {
    const inFlight = new Set<string>();
    const grants = grantsWith(inFlight);
    const first = lock(0);
    const token = grants.register(first, 10_000).slice(1).split(' ')[0];
    inFlight.add(first.lock);
    grants.received(first.lock, token, 7); // kept for the attempt in flight
    for (let i = 1; i < 10_000; i++) grants.register(lock(i), 10_000);
    expect((grants as unknown as { waiting: Map<string, unknown> }).waiting.size).toBe(10_000);
    expect((grants as unknown as { early: Map<string, unknown> }).early.size).toBe(1);
    grants.register(lock(10_000), 10_000);
    expect((grants as unknown as { waiting: Map<string, unknown> }).waiting.size).toBe(1);
    expect((grants as unknown as { early: Map<string, unknown> }).early.size).toBe(0);
    expect(grants.takeEarly(first.lock, 10_000)).toBeUndefined();
    expect(grants.register(first, 10_000).startsWith('+')).toBe(true);
  });
});
