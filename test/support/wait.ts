/** Polls `check` every 25 ms until it is true or `timeoutMs` passes; returns whether it became true. */
export async function waitFor(check: () => boolean | Promise<boolean>, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return true;
    if (Date.now() >= deadline) return false;
    await new Promise((r) => setTimeout(r, 25));
  }
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * `promise`, or `fallback` when it has not settled within `ms`; the timer is cleared as soon as one side wins, so a
 * bound that was not needed does not keep the process alive for its whole length after the test.
 */
export async function settleWithin<T, F>(promise: Promise<T>, ms: number, fallback: F): Promise<T | F> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([promise, new Promise<F>((r) => (timer = setTimeout(r, ms, fallback)))]);
  } finally {
    clearTimeout(timer);
  }
}

/** A promise that never settles in a test's lifetime (a hanging loader): its timer does not hold the process. */
export const hang = <T>(ms: number, value: T): Promise<T> => new Promise((r) => setTimeout(r, ms, value).unref());
