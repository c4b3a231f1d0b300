import { makeRoom } from '../common/bounded-map.js';

/** Sessions whose touch this process remembers for `touchAfter`; past it the oldest are forgotten (then touched). */
const RECENT_TOUCHES = 10_000;

/** How long a touch of this process is reused by its later reads of the session. */
export interface TouchReuse {
  /** At most this many ms after the touch. */
  ms: number;
  /** And for less than this share of the session's ttl. */
  shareOfTtl: number;
}

/**
 * Where a get extends the ttl and `touchAfter` is not given: a touch is reused for 1 s, and for less than a tenth of
 * the session's ttl. One second is the precision connect-redis gives the idle expiry (EXPIRE in whole seconds), so
 * the requests of one page load cost Redis one extension instead of one each; the tenth keeps a short-lived session's
 * expiry close to its ttl (a 1 s session: 100 ms).
 */
export const DEFAULT_TOUCH_REUSE: TouchReuse = { ms: 1_000, shareOfTtl: 0.1 };

/**
 * The reuse of a store's or module's `touchAfter` option: a value given (0: every get extends) reuses a touch for that
 * long and for less than half the ttl, as connect-mongo's lazy touch; none gives the default where gets extend.
 */
export function touchReuseOf(touchAfter: number | undefined, getsExtend: boolean): TouchReuse | undefined {
  if (!getsExtend || touchAfter === 0) return undefined;
  return touchAfter === undefined ? DEFAULT_TOUCH_REUSE : { ms: touchAfter, shareOfTtl: 0.5 };
}

interface Touch {
  /** When this process extended the session (epoch ms). */
  at: number;
  /**
   * The same moment on this process's monotonic clock (performance.now()): the touch's age is measured on it, as the
   * wall clock steps back and forth (NTP, a VM resumed, an operator).
   */
  tick: number;
  /** The idle ttl the touching read asked for (a read asking for another one touches again). */
  ttl: number;
  /** The expiry it set (epoch ms, by Redis's clock: what the write's script or PEXPIRETIME answered). */
  expiresAt: number;
  /**
   * The life it gave the session (ms): `expiresAt` less the touch's moment on the same clock (Redis's, as estimated),
   * never less `at`: on an instance an hour behind Redis's that was ttl + 1 h, and half of it let a touch be reused
   * past the whole ttl (test/session/session.store-clock.spec.ts).
   */
  life: number;
}

/**
 * `touchAfter`: the touching reads this process made lately, so a read of the same session soon after (the other
 * requests of one page load) is a plain read, without the extension. An MGET costs Redis a third of the batched
 * GETEX script per key (measured 0.9 vs 2.7 µs of Redis CPU per read in batches of 25). Only this process's own
 * touches count: another instance's touch makes the real expiry later, never earlier. A touch is reused only while
 * less than `reuse.ms` and less than `reuse.shareOfTtl` of the life it gave the session old, so a session read at
 * time t stays at least until t + ttl - min(reuse.ms, reuse.shareOfTtl × ttl). The age is measured on the monotonic
 * clock: with the wall clock's `now - at`, a clock stepped back made every age negative, under both bounds, so the
 * touch was reused (no read extended the session) until the clock caught up, and the session expired under reads.
 */
export class RecentTouches {
  private readonly touches = new Map<string, Touch>();

  constructor(private readonly reuse: TouchReuse) {}

  /**
   * The expiry a recent touch of `id` with `ttl` set, when it is recent enough to skip another; else undefined. `_now`
   * (the reader's epoch ms) is not what the age is measured with: `tick`, the monotonic clock's now, is.
   */
  expiryOf(id: string, ttl: number, _now: number, tick = performance.now()): number | undefined {
    const touch = this.touches.get(id);
    if (touch === undefined || touch.ttl !== ttl) return undefined;
    const age = tick - touch.tick;
    // the share is of the life that touch gave the session (its own ttl, or less near its absolute deadline), not of
    // the ttl asked for: a session created with a short ttl of its own is extended by that one
    return age < this.reuse.ms && age < touch.life * this.reuse.shareOfTtl ? touch.expiresAt : undefined;
  }

  /**
   * A touching read of `id` that began at `at` (epoch ms, this process's clock) set its expiry `expiresAt` (Redis's
   * clock): kept (a Map entry per touch, not per read: reads between cost nothing). `redisAt` is the touch's moment on
   * Redis's clock as estimated (SessionDeadline.now()), which the life it gave is measured from: both ends on one
   * clock. The read's start on the monotonic clock is `tick` less the read's time so far, which only the wall clock
   * tells (the callers give `at`): counted as none when the clock stepped back meanwhile (the age then starts up to a
   * round trip late), and a step forward makes the touch old (the next read touches again).
   */
  set(id: string, ttl: number, at: number, expiresAt: number, redisAt = at, tick = performance.now()): void {
    this.touches.delete(id);
    makeRoom(this.touches, RECENT_TOUCHES);
    const life = expiresAt - redisAt;
    this.touches.set(id, { at, tick: tick - Math.max(0, Date.now() - at), ttl, expiresAt, life });
  }

  /** The session's expiry changed otherwise (destroyed, touched by the store): the next read touches. */
  delete(id: string): void {
    this.touches.delete(id);
  }
}
