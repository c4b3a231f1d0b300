import type { RedisClient } from '../common/lua-script.js';
import { RedisClock } from '../common/redis-clock.js';

/** The timeout of RedisSessionStore's TIME samples: the store has no command timeout of its own. */
export const STORE_CLOCK_TIMEOUT_MS = 1_000;

/**
 * The clock a touching read judges a session's absolute deadline by (SessionRecords.read: past it, or due before the
 * read's idle ttl ends, so the read caps the key's expiry at it): Redis's, estimated from TIME on the sessions'
 * connection (RedisClock: at start, on reconnect, every 30 s), with no command per read. Judged by this process's
 * own clock until 2026-12-05: one running s behind Redis's sent the cap up to s late, so its touching reads kept a
 * session up to s past its deadline, plus a ttl (test/session/session.clock-behind.spec.ts).
 */
export function sessionClock(client: RedisClient, timeoutMs: number, warn: (message: string) => void): RedisClock {
  return new RedisClock(client, timeoutMs, (problem) =>
    warn(
      `sessions: ${problem}; a touching read from an instance whose clock runs X ms behind Redis's can keep a ` +
        'session up to X ms (plus its ttl) past its absolute deadline. Grant the ACL user +time',
    ),
  );
}

/** The clock of the RedisSessionStores on each client: one per client, whatever the number of stores. */
const storeClocks = new WeakMap<RedisClient, RedisClock>();

/**
 * The clock every RedisSessionStore on `client` shares, made and started by the first (`warn` is that one's): an
 * express-session store has no close, so its clock's 'ready' listener and 30 s timer stay while the client does. One
 * per store (until 2026-12-05) piled them up on a client several stores shared (an app per test, a middleware per
 * prefix): eleven stores, eleven listeners, past ioredis's getMaxListeners() (MaxListenersExceededWarning).
 */
export function storeClockOf(client: RedisClient, warn: (message: string) => void): RedisClock {
  let clock = storeClocks.get(client);
  if (clock === undefined) {
    clock = sessionClock(client, STORE_CLOCK_TIMEOUT_MS, warn);
    storeClocks.set(client, clock);
    void clock.start();
  }
  return clock;
}

/**
 * What the scripts that give a session key its idle expiry put in front (session-expiry.lua): they are sent the idle
 * ttl (ms) and the absolute deadline `m`, and set `min(TIME + ttl, m)`: the ttl timed by Redis's clock. Never
 * `min(now + ttl, m)` from this process's clock: from a clock an hour behind Redis's, that epoch was an hour in Redis's
 * past and the write that extended the session deleted it (test/session/session.clock-behind.spec.ts).
 */
export const IDLE_EXPIRY = 'session/session-expiry.lua';

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
 * (the idle ttl from Redis's now, at most m, in the write's script: IDLE_EXPIRY), and Redis expires it by its own
 * clock. A reader whose own clock says the deadline has passed asks Redis instead of deleting the key (which, from a
 * clock running ahead, ended the session for every instance): `PEXPIREAT key m LT` then PEXPIRETIME, in one MULTI
 * (one key: one slot on a cluster). A deadline Redis's clock has passed deletes the key at once (gone); otherwise the
 * key keeps its expiry, at most m (LT; a key without an expiry, a session without an idle ttl, gets m), and this
 * process's clock runs ahead: reported, the session is live. Until 2026-12-05 it was `PEXPIREAT key m`, which from
 * a clock an hour ahead gave a session idle for a minute the rest of its maxAge (session.deadline-clock.spec.ts).
 * Only reads past the deadline by this process's clock pay this round trip.
 */
export class SessionDeadline {
  constructor(
    private readonly client: RedisClient,
    private readonly clockAhead: ClockAheadReport | undefined,
    /** Redis's clock, estimated (sessionClock); without it, this process's. */
    private readonly redisClock?: RedisClock,
  ) {}

  /** Epoch ms by Redis's clock (estimated: no command), which a touching read judges the deadline by. */
  now(): number {
    return this.redisClock ? this.redisClock.now() : Date.now();
  }

  /**
   * `redisMs` (epoch ms by Redis's clock) as this process's clock will read that moment: what leaves for code that
   * judges it with Date.now() (express-session's cookie.expires). Redis's now as estimated less this process's.
   */
  toLocal(redisMs: number): number {
    return this.redisClock ? redisMs - (this.redisClock.now() - Date.now()) : redisMs;
  }

  /** One TIME sample now, or the one in flight (RedisClock.sample; never rejects): now() is Redis's clock after it. */
  sample(): Promise<void> {
    return this.redisClock ? this.redisClock.sample() : Promise.resolve();
  }

  /** Starts estimating Redis's clock (RedisClock.start: resolves once the first TIME is in; never rejects). */
  start(): Promise<void> {
    return this.redisClock ? this.redisClock.start() : Promise.resolve();
  }

  close(): void {
    this.redisClock?.close();
  }

  /**
   * Whether the session under `key`, past its deadline `m` by this process's clock (`now`) or by Redis's as estimated,
   * is live by Redis's: its key's expiry then (epoch ms by Redis's clock), else 0.
   */
  async live(key: string, m: number, now: number): Promise<number> {
    const replies = (await this.client.multi().pexpireat(key, m, 'LT').pexpiretime(key).exec()) as
      | [[Error | null, number], [Error | null, number]]
      | null;
    if (!replies) return 0;
    const [[expireErr], [timeErr, expireTime]] = replies;
    if (expireErr) throw expireErr;
    if (timeErr) throw timeErr;
    // -2: gone (deleted by the PEXPIREAT, or before); after it a live key always has an expiry
    if (expireTime <= 0) return 0;
    // Redis ran the PEXPIREAT after `now` was read, and its clock had not reached m (a caller that asked because
    // Redis's clock as estimated had passed m, not this one, has nothing to say of this clock)
    if (now >= m) this.clockAhead?.(now - m);
    return Number(expireTime);
  }

  /**
   * The same judgement from a read that got the key's expiry (PEXPIRETIME) with the value: an expiry Redis still holds
   * has not come by its clock, and every write sets it at most at the deadline, so the session is live; a key without
   * an expiry (no idle ttl), or one past the deadline (not ours), is judged by live(). The key's expiry, or 0.
   */
  async heldLive(key: string, m: number, now: number, expireTime: number): Promise<number> {
    if (expireTime <= 0 || expireTime > m) return this.live(key, m, now);
    if (now >= m) this.clockAhead?.(now - expireTime);
    return expireTime;
  }
}
