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

/** Settles like `promise`, or rejects with `Error(message)` after `ms`; the timer never outlives the race. */
export async function withTimeout<T>(promise: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(message)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}
