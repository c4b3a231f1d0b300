import { Logger } from '@nestjs/common';
import { MAX_TIMER_MS } from './timeout.js';

/** Kinds followed one by one (FailurePolicy: reply codes); past that every new kind shares one more throttle. */
const MAX_KINDS = 16;
/** The shared throttle of the kinds past MAX_KINDS. */
const OTHER_KINDS = '\0other';

interface KindState {
  lastLoggedAt: number;
  suppressed: number;
  /** Armed by the first suppressed warning: logs the count at the end of the interval. */
  timer: ReturnType<typeof setTimeout> | undefined;
}

/**
 * A warning that is logged at most once per interval and kind, with the number of occurrences since the last one:
 * when Redis is down every request fails the same way, and one line per interval says it all. The first warning of a
 * kind is logged at once, whatever another kind logged (a NOPERM is not hidden behind a WRONGTYPE). The ones
 * suppressed within an interval are counted: the first of them arms one timer (unref'd: it never keeps the process
 * alive) for the end of the interval, which logs `<what>: <N> more since the last warning, not logged one by one`, so
 * the count of a short burst is not left for the next incident. A warning after the interval is logged whole again.
 */
export class ThrottledWarning {
  private readonly kinds = new Map<string, KindState>();

  /**
   * @param what names the suppressed warnings of a kind in the count's line (default `warnings`), e.g.
   * `failed rate limiting calls (Redis unavailable)`
   */
  constructor(
    private readonly logger: Logger,
    private readonly intervalMs = 10_000,
    private readonly what: (kind: string) => string = () => 'warnings',
  ) {}

  private closed = false;

  /** Logs `message` unless a warning of the same `kind` was logged within the interval (then it is counted). */
  warn(message: string, kind = ''): void {
    const now = performance.now();
    const state = this.stateOf(kind, now);
    if (now - state.lastLoggedAt < this.intervalMs) {
      state.suppressed++;
      if (!this.closed) state.timer ??= this.armReport(kind, state, state.lastLoggedAt + this.intervalMs - now);
      return;
    }
    // a warning that came before the report's timer ran (a busy event loop) carries the count itself
    const extra = state.suppressed > 0 ? ` (${state.suppressed} more since the last warning)` : '';
    this.clear(state);
    state.lastLoggedAt = now;
    this.logger.warn(message + extra);
  }

  /**
   * At shutdown (the owner's module is destroyed): each count not reported yet is logged now, and no timer is armed
   * any more. A timer left to run after its app closed would log through whichever logger Nest has by then (another
   * app's, in a test run), long after the warnings it counts.
   */
  close(): void {
    this.closed = true;
    for (const [kind, state] of this.kinds) {
      if (state.suppressed > 0) this.report(kind, state);
      else this.clear(state);
    }
  }

  private stateOf(kind: string, now: number): KindState {
    const known = this.kinds.get(kind);
    if (known !== undefined) return known;
    if (this.kinds.size >= MAX_KINDS) {
      // idle kinds (their interval over, nothing counted) go first; hostile distinct kinds end up sharing one
      for (const [k, s] of this.kinds) {
        if (s.suppressed === 0 && now - s.lastLoggedAt >= this.intervalMs) this.kinds.delete(k);
      }
    }
    const key = this.kinds.size >= MAX_KINDS ? OTHER_KINDS : kind;
    let state = this.kinds.get(key);
    if (state === undefined) {
      state = { lastLoggedAt: Number.NEGATIVE_INFINITY, suppressed: 0, timer: undefined };
      this.kinds.set(key, state);
    }
    return state;
  }

  private armReport(kind: string, state: KindState, delayMs: number): ReturnType<typeof setTimeout> {
    // at most MAX_TIMER_MS: a longer delay fires after 1 ms (an interval of months, e.g. rateLimit.warnIntervalMs,
    // reports its count after ~24.8 days instead, never at once)
    const ms = Math.min(Math.max(0, Math.ceil(delayMs)), MAX_TIMER_MS);
    const timer = setTimeout(() => this.report(kind, state), ms);
    timer.unref?.();
    return timer;
  }

  private report(kind: string, state: KindState): void {
    const n = state.suppressed;
    this.clear(state);
    if (n === 0) return;
    const what = this.kinds.get(kind) === state ? this.what(kind) : 'warnings of other kinds';
    try {
      this.logger.warn(`${what}: ${n} more since the last warning, not logged one by one`);
    } catch {
      // a logger that throws must not become an uncaught exception of a timer
    }
  }

  private clear(state: KindState): void {
    if (state.timer !== undefined) clearTimeout(state.timer);
    state.timer = undefined;
    state.suppressed = 0;
  }
}
