/**
 * This process's clocks shifted, for tests of an instance whose clock is off or steps (NTP, a resumed VM, an operator).
 * The toolkit reads `Date.now()` at call time (and at connect, where RedisClock measures Redis's clock against it) and
 * `performance.now()` for durations, so a spec shifts them here: for one call (`shifted`), or from a point on
 * (`shiftDateNow`, `shiftPerfNow`) until `restoreClocks()`, which `useClockShift()` runs after each test.
 * `realNow()` reads the real wall clock meanwhile (the shared Redis servers run on this box's clock).
 */

/** The real `Date.now`, taken when this module loads (a spec file's own sandbox: before any of its tests shifts it). */
export const realNow: () => number = Date.now;
export const realPerformanceNow: () => number = performance.now.bind(performance);

// Set by shiftPerfNow: a spec that never shifts performance.now keeps the original, not a bound copy.
let performanceShifted = false;

/** `Date.now()` reads `ms` off the real clock (negative: behind) until the next shift or restoreClocks(). */
export function shiftDateNow(ms: number): void {
  Date.now = () => realNow() + ms;
}

/** `performance.now()` reads `ms` past the real one: a duration measured across it comes out `ms` longer. */
export function shiftPerfNow(ms: number): void {
  performance.now = () => realPerformanceNow() + ms;
  performanceShifted = true;
}

/** Both clocks back to the real ones. */
export function restoreClocks(): void {
  Date.now = realNow;
  if (performanceShifted) {
    performance.now = realPerformanceNow;
    performanceShifted = false;
  }
}

/** `fn` run with `Date.now` shifted by `ms`; the real `Date.now` after it, whether it resolved or threw. */
export async function shifted<T>(ms: number, fn: () => Promise<T>): Promise<T> {
  shiftDateNow(ms);
  try {
    return await fn();
  } finally {
    Date.now = realNow;
  }
}

/** Each test of the spec file (or of the describe block it is called in) ends with the real clocks. */
export function useClockShift(): void {
  afterEach(restoreClocks);
}
