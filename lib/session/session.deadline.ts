import type { RedisClient } from '../common/lua-script.js';

/** Told how far this process's clock runs ahead of Redis's, at least (ms): a warning, throttled by the caller. */
export type ClockAheadReport = (aheadByMs: number) => void;

/** The warning for a clock ahead of Redis's (never names a session). */
export function clockAheadMessage(aheadByMs: number): string {
  return (
    `this process's clock runs ahead of Redis's by at least ${Math.max(0, Math.round(aheadByMs))} ms: sessions past ` +
    `their absolute deadline by this clock are live by Redis's, which decides (is NTP running on this host?)`
  );
}

/**
 * The absolute deadline of sessions (`m`, epoch ms, set from the creating instance's clock) judged by Redis's clock,
 * as the rate limiter's windows (TIME) and key expiry are: every write sets the key's expiry at most at the deadline
 * (min(now + ttl, m)), and Redis expires it by its own clock. A reader whose own clock says the deadline has passed
 * asks Redis instead of deleting the key (which, from a clock running ahead, ended the session for every instance):
 * `PEXPIREAT key m` then EXISTS, in one MULTI (one key: one slot on a cluster). A deadline Redis's clock has passed
 * deletes the key at once (gone); otherwise the key lives until m by Redis's clock (this also takes back the extension
 * the touching GETEX just gave it, and gives a session without an idle ttl, which has no expiry, its end), and this
 * process's clock runs ahead: reported, the session is live. Only reads past the deadline by this process's clock pay
 * this round trip.
 */
export class SessionDeadline {
  constructor(
    private readonly client: RedisClient,
    private readonly clockAhead: ClockAheadReport | undefined,
  ) {}

  /** Whether the session under `key`, past its deadline `m` by this process's clock (`now`), is live by Redis's. */
  async live(key: string, m: number, now: number): Promise<boolean> {
    const replies = (await this.client.multi().pexpireat(key, m).exists(key).exec()) as
      | [[Error | null, number], [Error | null, number]]
      | null;
    if (!replies) return false;
    const [[expireErr], [existsErr, exists]] = replies;
    if (expireErr) throw expireErr;
    if (existsErr) throw existsErr;
    if (exists !== 1) return false;
    // Redis ran the PEXPIREAT after `now` was read, and its clock had not reached m
    this.clockAhead?.(now - m);
    return true;
  }

  /**
   * The same judgement from a read that got the key's expiry (PEXPIRETIME) with the value: an expiry Redis still holds
   * has not come by its clock, and every write sets it at most at the deadline, so the session is live; a key without
   * an expiry (no idle ttl), or one past the deadline (not ours), is judged by live().
   */
  async heldLive(key: string, m: number, now: number, expireTime: number): Promise<boolean> {
    if (expireTime <= 0 || expireTime > m) return this.live(key, m, now);
    this.clockAhead?.(now - expireTime);
    return true;
  }
}
