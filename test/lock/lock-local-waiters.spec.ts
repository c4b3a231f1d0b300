import { LocalWaiters } from '../../lib/lock/lock.waiters.js';

// LocalWaiters alone (this process's queue of callers per lock key): the order in which they are woken or handed a
// lock. The waits on Redis are in lock-waits.spec and lock-wake.spec.

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Waiters joined to `waiters` (each a pause of `ms`), and the order in which they were resolved, by name. */
function queue(waiters: LocalWaiters) {
  const resolved: string[] = [];
  const join = (name: string, ticket: number, ms = 60_000, key = 'k') =>
    void waiters.pause(key, ms, 1_000, ticket).then(() => resolved.push(name));
  return { resolved, join };
}

/** Wakes every waiter of `key`, oldest first, and lets their callbacks run. */
async function wakeAll(waiters: LocalWaiters, key = 'k'): Promise<void> {
  while (waiters.wakeOne(key));
  await sleep(0);
}

describe('LocalWaiters: the oldest waiter of a key', () => {
  it('is the lowest ticket, not the first to join: a caller back from its retry pause goes ahead again', async () => {
    const waiters = new LocalWaiters();
    const { resolved, join } = queue(waiters);
    const [a, b, c] = [waiters.ticket(), waiters.ticket(), waiters.ticket()];
    join('b', b);
    join('c', c);
    join('a', a); // a's pause had ended (its retry timer): it joins again with its ticket
    expect(waiters.first('k')?.ticket).toBe(a);
    expect(waiters.size).toBe(3);
    await wakeAll(waiters);
    expect(resolved).toEqual(['a', 'b', 'c']);
    expect(waiters.size).toBe(0);
    expect(waiters.first('k')).toBeUndefined();
  });

  it('among equal tickets is the first to join; other keys are apart', async () => {
    const waiters = new LocalWaiters();
    const { resolved, join } = queue(waiters);
    join('x1', 5);
    join('y', 1, 60_000, 'other');
    join('x2', 5);
    join('x0', 4);
    join('x3', 5);
    expect(waiters.first('k')?.ticket).toBe(4);
    expect(waiters.first('other')?.ticket).toBe(1);
    await wakeAll(waiters);
    expect(resolved).toEqual(['x0', 'x1', 'x2', 'x3']);
    expect(waiters.size).toBe(1);
    await wakeAll(waiters, 'other');
    expect(resolved.at(-1)).toBe('y');
  });

  it('skips waiters that gave up (their pause ended): 300 random tickets, a third leave, then more join', async () => {
    const waiters = new LocalWaiters();
    const { resolved, join } = queue(waiters);
    // a small deterministic generator: the same order on every run
    let seed = 7;
    const random = (n: number) => {
      seed = (seed * 48_271) % 2_147_483_647;
      return seed % n;
    };
    const stay: { name: string; ticket: number; joined: number }[] = [];
    let joined = 0;
    const add = (i: number, leaves: boolean) => {
      const ticket = random(100);
      join(`w${i}`, ticket, leaves ? 1 : 60_000);
      if (!leaves) stay.push({ name: `w${i}`, ticket, joined });
      joined++;
    };
    for (let i = 0; i < 300; i++) add(i, random(3) === 0);
    const leaving = 300 - stay.length;
    expect(leaving).toBeGreaterThan(50);
    await sleep(30); // the 1 ms pauses end: those callers left the queue (and were resolved, by their timer)
    expect(resolved).toHaveLength(leaving);
    expect(waiters.size).toBe(stay.length);
    for (let i = 300; i < 400; i++) add(i, false);
    const expected = [...stay].sort((x, y) => x.ticket - y.ticket || x.joined - y.joined).map((w) => w.name);
    resolved.length = 0;
    // handed over one by one (claim): the same order as woken
    const handed: string[] = [];
    for (let i = 0; i < 10; i++) {
      const oldest = waiters.first('k');
      expect(await waiters.handOver('k', async () => null as never)).toBe(true);
      handed.push(String(oldest?.ticket));
    }
    await wakeAll(waiters);
    expect(resolved).toEqual(expected);
    expect(handed).toEqual(
      [...stay]
        .sort((x, y) => x.ticket - y.ticket || x.joined - y.joined)
        .slice(0, 10)
        .map((w) => String(w.ticket)),
    );
    expect(waiters.size).toBe(0);
  });
});
