/**
 * The two clocks of a lease. Redis times a lock's ttl with its own clock; this process can only tell how long ago it
 * sent the request that set it. That is a duration within one process, so it is measured on the monotonic clock
 * (performance.now()): the wall clock (Date.now()) steps back and forth (NTP, a resumed VM, an operator), and a lease
 * measured with it stayed `isHeld` for an hour after Redis let it go when the clock stepped back an hour, or counted
 * a Redlock acquisition that took longer than its validity as valid. The wall clock is kept only for what is shown
 * (`Lock.expiresAt`, events, log lines) and for what crosses processes (the quorum's fencing-token floor).
 */

/** This process's monotonic clock, in ms (performance.now()): every local duration and deadline of a lease. */
export const monotonicNow = (): number => performance.now();

/** When a lease ends, on both clocks. */
export interface LeaseEnd {
  /** Epoch ms (wall clock when the request was sent, plus the lease): what the API, events and logs show. */
  readonly expiresAt: number;
  /** The same moment on the monotonic clock (monotonicNow): what this process decides by. */
  readonly validUntil: number;
}

/** When a request was sent, on both clocks. */
export interface SentAt {
  readonly at: number;
  readonly tick: number;
}

export const sentNow = (): SentAt => ({ at: Date.now(), tick: performance.now() });

/** The lease a request sent at `sent` got: `ms` from then (conservative: Redis set it later). */
export const leaseFrom = (sent: SentAt, ms: number): LeaseEnd => ({
  expiresAt: sent.at + ms,
  validUntil: sent.tick + ms,
});

/** The ms left of a lease (negative once it ended), on the monotonic clock. */
export const msLeft = (end: { readonly validUntil: number }): number => end.validUntil - performance.now();
