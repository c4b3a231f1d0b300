import 'reflect-metadata';
import { LockLostError, LockService, RedisUnavailableError } from '../../lib/index.js';
import { LOCK_MODES, lockAppOptions, unique } from '../support/lock-modes.js';
import { recordingLogger } from '../support/recording-logger.js';
import { closeToolkitApps, createToolkitApp } from '../support/toolkit-app.js';
import { settleWithin, sleep } from '../support/wait.js';

afterEach(closeToolkitApps);

/** What `p` settles with: its error, or 'resolved' (taken at once, so a rejection is never left unhandled). */
const settled = (p: Promise<unknown>): Promise<unknown> =>
  p.then(
    () => 'resolved',
    (err: unknown) => err,
  );
/** What a promise from `settled` gave, or 'pending' when it had not within `ms`. */
const outcome = (p: Promise<unknown>, ms: number): Promise<unknown> => settleWithin(p, ms, 'pending');

// Locks far longer than the test: what happens to them must come from app.close(), not from their expiry.
const TTL = 20_000;

describe.each(LOCK_MODES)('app.close() with locks in use on %s', (mode) => {
  it('ends every auto-extension at once: each signal aborts with LockLostError naming the shutdown, onLost is called once, nothing retries after', async () => {
    const { warnings, logger } = recordingLogger();
    const { get, close } = await createToolkitApp({ ...lockAppOptions(mode), logger });
    const locks = get(LockService);
    const lost: LockLostError[] = [];
    const onLost = (err: LockLostError) => void lost.push(err);
    const lock = await locks.acquire(unique('down-lock'), { ttl: TTL, autoExtend: { onLost } });
    const permit = await locks
      .semaphore(unique('down-sem'), { limit: 2, ttl: TTL })
      .acquire({ autoExtend: { onLost } });
    const multi = await locks.acquireAll([unique('down-a'), unique('down-b')], { ttl: TTL, autoExtend: { onLost } });
    const signals = [lock, permit, multi].map((l) => l.startAutoExtend());
    const using = settled(
      locks.using(unique('down-using'), { ttl: TTL }, (signal) => {
        signals.push(signal);
        return new Promise((resolve) => signal.addEventListener('abort', () => resolve('stopped')));
      }),
    );
    await sleep(50);
    await close();
    const ended = await outcome(using, 3_000);
    expect(ended).toBeInstanceOf(LockLostError);
    expect((ended as Error).message).toMatch(/shut down/);
    expect(lost).toHaveLength(3);
    for (const err of lost) {
      expect(err).toBeInstanceOf(LockLostError);
      expect(err.message).toMatch(/shut down/);
    }
    expect(signals.map((s) => s.aborted)).toEqual([true, true, true, true]);
    const warned = warnings.length;
    await sleep(1_000);
    expect(lost).toHaveLength(3);
    expect(warnings.slice(warned).filter((w) => /retrying/.test(w))).toEqual([]);
  });

  it('rejects each caller waiting for a lock, a permit or a multi-lock held here with RedisUnavailableError naming the shutdown, and every later acquisition', async () => {
    const { get, close } = await createToolkitApp(lockAppOptions(mode));
    const locks = get(LockService);
    const resource = unique('down-wait');
    const sem = locks.semaphore(unique('down-wait-sem'), { limit: 1, ttl: TTL });
    const pair = [unique('down-wait-a'), unique('down-wait-b')];
    await locks.acquire(resource, { ttl: TTL });
    await sem.acquire();
    await locks.acquireAll(pair, { ttl: TTL });
    const waits = [
      locks.acquire(resource, { waitMs: 15_000 }),
      locks.acquire(resource, { retry: { count: 1_000, delay: 100, jitter: 0 } }),
      locks.using(resource, { waitMs: 15_000 }, () => 'ran'),
      sem.acquire({ waitMs: 15_000 }),
      locks.acquireAll(pair, { waitMs: 15_000 }),
    ].map(settled);
    await sleep(100);
    await close();
    const after = [locks.acquire(unique('after')), locks.tryAcquire(unique('after')), sem.tryAcquire()].map(settled);
    for (const settled of await Promise.all([...waits, ...after].map((w) => outcome(w, 3_000)))) {
      expect(settled).toBeInstanceOf(RedisUnavailableError);
      expect((settled as Error).message).toMatch(/shut down/);
    }
  });
});
