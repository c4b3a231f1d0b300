/**
 * Time bounds for tests on a shared 2-core machine that is often busy: a call bounded by a timeout may take that
 * timeout plus the time the event loop and the scheduler need, which under a CPU-bound neighbour is easily a second.
 * Tests assert "bounded" (settles within its timeout plus this margin) or order and counts, never a tight latency.
 */
export const SCHEDULING_MARGIN_MS = 2_000;

/** The most a call bounded by `timeoutMs` may take here: the timeout plus a generous scheduling margin. */
export function within(timeoutMs: number): number {
  return timeoutMs + SCHEDULING_MARGIN_MS;
}
