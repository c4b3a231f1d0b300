import { InvalidOptionsError, LockHoldTimeoutError, LockLostError } from '../common/errors.js';
import { kindOf } from '../common/option-checks.js';
import { MAX_TIMER_MS } from '../common/timeout.js';
import { maxHoldOf } from './lock.attempts.js';
import { monotonicNow } from './lock.clock.js';
import { lockContext } from './lock.context.js';
import { Lock } from './lock.js';
import { checkNames, HOLDING } from './lock.option-names.js';

/** `runHolding(lock, fn, options)`: as `using`'s (defaults `lock.maxHoldMs`, `lock.extensionThreshold`). */
export interface RunHoldingOptions {
  maxHoldMs?: number;
  extensionThreshold?: number;
}

/** The function of `using`, a semaphore's `using` and `runHolding`: InvalidOptionsError naming `where` when not one. */
export function checkLockedFunction(fn: unknown, where: string): void {
  if (typeof fn !== 'function') throw new InvalidOptionsError(`${where}: fn must be a function, got ${kindOf(fn)}`);
}

/**
 * Runs `fn` under an already acquired lock with auto-extension and releases it afterwards (LockService.runHolding,
 * `using`, semaphores and multi-resource locks). After `maxHoldMs` the signal aborts, the lock is released and the
 * call rejects with LockHoldTimeoutError without waiting for `fn` (which may never settle).
 */
export async function runHolding<T, L extends Lock = Lock>(
  lock: L,
  fn: (signal: AbortSignal, lock: L) => Promise<T> | T,
  options: RunHoldingOptions,
  defaultMaxHoldMs: number,
  warn: (message: string) => void,
): Promise<T> {
  // Every lease of the toolkit is a Lock (a MultiLock, a semaphore's permit): anything else has nothing to release
  // (until 2026-12-05 a TypeError reading its expiresAt, or a RangeError from a Date of it)
  if (!(lock instanceof Lock)) {
    throw new InvalidOptionsError(
      'runHolding(lock, fn, options): lock must be a Lock (from acquire, tryAcquire, acquireAll or a semaphore), ' +
        `got ${kindOf(lock)}`,
    );
  }
  let lost: AbortSignal;
  let maxHoldMs: number;
  try {
    // a refused fn or option releases the lock, as a refused extensionThreshold does
    checkLockedFunction(fn, 'runHolding(lock, fn, options)');
    checkNames(options, HOLDING, 'runHolding');
    maxHoldMs = maxHoldOf(defaultMaxHoldMs, options?.maxHoldMs); // as using checks it: '1s' would fire at once
    lost = lock.startAutoExtend({ extensionThreshold: options?.extensionThreshold });
  } catch (err) {
    await releaseQuietly(lock, warn);
    throw err;
  }
  const hold = new AbortController();
  const signal = AbortSignal.any([lost, hold.signal]);
  let holdTimer: NodeJS.Timeout | undefined;
  const heldTooLong =
    maxHoldMs > MAX_TIMER_MS // Infinity, or past what setTimeout can wait: no limit
      ? undefined
      : new Promise<never>((_, reject) => {
          holdTimer = setTimeout(() => {
            const err = new LockHoldTimeoutError(
              `the function holding the lock on "${lock.resource}" did not settle within maxHoldMs (${maxHoldMs} ` +
                `ms); the lock was released`,
            );
            lock.stopAutoExtend();
            hold.abort(err);
            reject(err);
          }, maxHoldMs);
        });
  let result: T;
  try {
    const running = lockContext.run({ lock, signal }, () => new Promise<T>((resolve) => resolve(fn(signal, lock))));
    // fn may still settle (or fail) after the hold timed out: nobody awaits it then, so its rejection is dropped here
    running.catch(() => undefined);
    result = await (heldTooLong ? Promise.race([running, heldTooLong]) : running);
  } catch (err) {
    clearTimeout(holdTimer);
    lock.stopAutoExtend();
    await releaseQuietly(lock, warn);
    throw err;
  }
  clearTimeout(holdTimer);
  const lostReason: unknown = signal.aborted ? signal.reason : undefined;
  // fn returned after its lease ran out without the watchdog aborting the signal (fn blocked the event loop past it)
  const ranOut = monotonicNow() >= lock.validUntil;
  lock.stopAutoExtend();
  if (lostReason !== undefined) {
    await releaseQuietly(lock, warn);
    const why = lostReason instanceof Error ? lostReason.message : String(lostReason);
    throw new LockLostError(`the lock on "${lock.resource}" was lost while the locked function ran (${why})`, {
      cause: lostReason,
    });
  }
  try {
    await lock.release();
  } catch (err) {
    // Lost: it expired while fn ran (e.g. the event loop was blocked past the ttl), so exclusivity was not kept.
    if (err instanceof LockLostError) throw err;
    // A release that Redis confirmed proves the lock was ours all along (nobody else can set our token). Unconfirmed,
    // a lease that ran out while fn ran is what the watchdog would have aborted the signal for: lost, as it would
    // have said. Until 2026-12-06 `using` resolved with fn's result and a warning (test/lock/lock.doc-claims.spec.ts).
    if (ranOut) {
      const why = err instanceof Error ? err.message : String(err);
      throw new LockLostError(
        `the lock on "${lock.resource}" ran out while the locked function ran, and Redis could not confirm it was ` +
          `still held (${why})`,
        { cause: err },
      );
    }
    warn(notReleased(lock, err));
  }
  return result;
}

async function releaseQuietly(lock: Lock, warn: (message: string) => void): Promise<void> {
  try {
    await lock.release();
  } catch (err) {
    if (!(err instanceof LockLostError)) warn(notReleased(lock, err));
  }
}

/**
 * The one line logged for a release that failed (not lost): its error says why (after app.close(), the shutdown; the
 * lock's failure policy does not log that one too: LockFailures).
 */
const notReleased = (lock: Lock, err: unknown): string => {
  const expiry = new Date(lock.expiresAt).toISOString();
  const why = err instanceof Error ? err.message : String(err);
  return `the lock on "${lock.resource}" was not released, it expires by itself at ${expiry}: ${why}`;
};
