import { KeyBuilder } from '../../lib/common/keys.js';
import { lockKeysOf, type LockBackend } from '../../lib/lock/lock.backend.js';
import { LockGrants } from '../../lib/lock/lock.grants.js';
import { LocalWaiters } from '../../lib/lock/lock.waiters.js';

// LockGrants' bookkeeping alone (what it remembers per lock key); the grants themselves run on Redis in lock-wake.spec.
describe('LockGrants bookkeeping', () => {
  const keys = new KeyBuilder('rtk:');
  const lock = (i: number) => lockKeysOf(`r${i}`, keys.tagged('lock', `r${i}`));
  const grants = () =>
    new LockGrants(keys, {
      backend: {} as LockBackend, // never called: no grant here is released or extended
      id: 'service-id',
      waiters: new LocalWaiters(),
      hold: () => {
        throw new Error('not called');
      },
      warn: () => undefined,
    });
  const internals = (g: LockGrants) => g as unknown as { waiting: Map<string, unknown>; early: Map<string, unknown> };

  it("keeps one token per wait, its first attempt's: that attempt joins (+), later ones carry its token and ttl", () => {
    const g = grants();
    const begun = g.begin(lock(0), 'token-0', 10_000);
    expect(begun.field).toBe('+');
    // a later attempt, also one of another caller with another ttl: the wait's token and ttl
    expect(g.begin(lock(0), 'token-1', 3_000).field).toBe('token-0 10000');
    expect(g.begin(lock(1), 'token-2', 3_000).field).toBe('+');
    expect(g.begin(lock(1), 'token-3', 10_000).field).toBe('token-2 3000');
    expect(begun.wait.attempts).toBe(2);
    g.acquired(begun);
    // a new wait, with the token of the attempt that begins it
    expect(g.begin(lock(0), 'token-4', 10_000).field).toBe('+');
    expect(g.begin(lock(0), 'token-5', 10_000).field).toBe('token-4 10000');
  });

  it("keeps a grant for the wait's attempt in flight until its busy reply; the wait's other attempts wait for it", async () => {
    const g = grants();
    const first = g.begin(lock(0), 'token-0', 10_000);
    const second = g.begin(lock(0), 'token-1', 10_000);
    g.received(lock(0).lock, 'token-0', 7);
    expect(internals(g).early.size).toBe(1);
    // the other attempt may still take it over in Redis: the grant waits for the last reply
    expect(g.busy(first, 10_000)).toBeUndefined();
    expect(internals(g).early.size).toBe(1);
    g.acquired(second);
    expect(internals(g).early.size).toBe(0);
    expect(internals(g).waiting.size).toBe(0);
  });

  it('remembers at most 10,000 lock keys, early grants included: past it they are forgotten', () => {
    const g = grants();
    const first = lock(0);
    const attempt = g.begin(first, 'token-0', 10_000);
    expect(attempt.field).toBe('+');
    g.received(first.lock, 'token-0', 7); // kept for the attempt in flight
    for (let i = 1; i < 10_000; i++) g.begin(lock(i), `t${i}`, 10_000);
    expect(internals(g).waiting.size).toBe(10_000);
    expect(internals(g).early.size).toBe(1);
    g.begin(lock(10_000), 't', 10_000);
    expect(internals(g).waiting.size).toBe(1);
    expect(internals(g).early.size).toBe(0);
    expect(g.busy(attempt, 10_000)).toBeUndefined();
    expect(g.begin(first, 'token-1', 10_000).field).toBe('+');
  });
});
