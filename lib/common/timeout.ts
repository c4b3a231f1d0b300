import { setImmediate } from './real-timers.js';

/**
 * The longest delay a Node timer keeps (2^31 - 1 ms, ~24.8 days): setTimeout fires a longer one after 1 ms. Where a
 * longer wait is meant, it is either no limit (cache load timeouts, a lock's maxHoldMs), refused (a lock's retry pause)
 * or waited in steps (setLongTimeout).
 */
export const MAX_TIMER_MS = 2_147_483_647;

/** A timer for any delay (see setLongTimeout). */
export interface LongTimer {
  handle: NodeJS.Timeout | undefined;
}

/**
 * setTimeout for a delay of any length: a delay past MAX_TIMER_MS waits in steps of at most that (the watchdog of a
 * 30-day lock, the next extension of a 90-day one).
 */
export function setLongTimeout(fn: () => void, ms: number): LongTimer {
  const timer: LongTimer = { handle: undefined };
  const arm = (left: number): void => {
    timer.handle =
      left > MAX_TIMER_MS ? setTimeout(() => arm(left - MAX_TIMER_MS), MAX_TIMER_MS) : setTimeout(fn, left);
  };
  arm(ms);
  return timer;
}

export const clearLongTimeout = (timer: LongTimer | undefined): void => clearTimeout(timer?.handle);

/**
 * After a stall (the event loop blocked by a long synchronous task: a big JSON.parse, a sync crypto call), Node runs
 * the timers that came due during it (timers phase) before it reads the sockets (poll phase): a timer bounding a
 * reply fires though the reply has been waiting in the socket since the stall began. `afterPoll` runs a timeout's
 * verdict in the check phase of that turn (setImmediate), once the poll phase has read what came meanwhile: the
 * verdict then looks whether what it bounds is still pending. Nothing is deferred when no timer fires.
 */
export const afterPoll = (verdict: () => void): void => {
  setImmediate(verdict);
};

/**
 * setTimeout for a timeout's verdict: `verdict` runs at least `ms` later, after the poll phase of the turn the timer
 * fires in (afterPoll), so a reply that came while the event loop was blocked is read before it. clearTimeout cancels
 * it until the timer fires; after that `verdict` runs all the same, so it must settle nothing twice (a promise's
 * resolve or reject does nothing the second time). `ms` at most MAX_TIMER_MS.
 */
export function setVerdictTimeout(verdict: () => void, ms: number): NodeJS.Timeout {
  return setTimeout(afterPoll, ms, verdict);
}

/**
 * Whether a timer of delay `ms` that fired `lateMs` after its due time was held up by a blocked event loop (more than a
 * quarter of its delay, and 20 ms): then what it bounds may have been written only after the stall (a connection is
 * corked while a turn's batch is sent), and a verdict waits `ms` once more (the command timer, the lock quorum's wait).
 */
export const firedLate = (lateMs: number, ms: number): boolean => lateMs > Math.max(ms / 4, 20);

/**
 * Settles like `promise`, or rejects with `Error(message)` when it has not settled `ms` later (setVerdictTimeout: a
 * value read right after a stall counts as in time); the timer never outlives the race.
 */
export async function withTimeout<T>(promise: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setVerdictTimeout(() => reject(new Error(message)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}
