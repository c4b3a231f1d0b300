import type { RedisClient } from './lua-script.js';
import { withTimeout } from './timeout.js';

/** How often the estimate is checked again (ms): a failover or a reconnect may bring a server with another clock. */
export const REDIS_CLOCK_REFRESH_MS = 30_000;
/**
 * A sample whose round trip took longer than this (a stalled event loop, a slow link) is not taken as the estimate
 * when one is held: its error is up to half the round trip. It still bounds Redis's clock (see measure()).
 */
const MAX_SAMPLE_RTT_MS = 250;

/**
 * Redis's wall clock, estimated in this process without a round trip per read: `now()` is Redis's `TIME` at the last
 * sample taken plus the time elapsed since on this process's monotonic clock (`performance.now()`), so a step of this
 * process's wall clock (NTP, a resumed VM) moves nothing. Until 2026-12-05 it was `Date.now()` plus the offset
 * measured at the sample: a step of the wall clock moved the estimate by the step until the next sample (up to 30 s),
 * and every cache entry written meanwhile kept the wrong times in its header for life.
 *
 * Samples are taken when the connection becomes ready (each time: a reconnect may reach another server), then every
 * REDIS_CLOCK_REFRESH_MS on an unref'd timer, once per client whatever the number of RedisClocks on it (SharedClock:
 * they share one estimate). Each takes the middle of its round trip as the moment Redis read its
 * clock, so the estimate is off by at most half a round trip (plus, on a cluster, the masters' skew between
 * themselves: whichever node answers TIME stands for all, so their clocks are assumed kept within a few ms of each
 * other by NTP). A sample whose round trip is over MAX_SAMPLE_RTT_MS does not replace an estimate held, but Redis read
 * its clock between the send and the reply, so an estimate outside that interval is wrong: it is moved to the
 * interval's nearest edge (a slow link's samples keep correcting it: a server with another clock after a failover,
 * drift). Every instance judging times written by the others with this clock agrees with them whatever its own clock
 * says, as key expiry (`PX`) does.
 *
 * TIME failing (refused by the ACL, a timeout) fails nothing: `now()` keeps the last estimate, or this process's own
 * wall clock while there is none, and the first failure of a run of them is one warning (`warn` gets what happened
 * and which clock is used meanwhile; its caller says what that costs).
 */
export class RedisClock {
  private readonly shared: SharedClock;
  private started = false;
  private closed = false;
  /** Said the failure of a run of them already: the next answer ends the run. */
  private warned = false;

  constructor(
    private readonly client: RedisClient,
    readonly timeoutMs: number,
    private readonly warn: (problem: string) => void,
    readonly refreshMs = REDIS_CLOCK_REFRESH_MS,
  ) {
    this.shared = sharedClockOf(client);
  }

  /** Epoch ms by Redis's clock, whole (estimated; this process's own wall clock until TIME has answered once). */
  now(): number {
    // Whole ms: the times built on it are written as integers (an entry header, a sorted-set score).
    const estimate = this.shared.redisMinusMonotonic;
    return estimate === undefined ? Date.now() : Math.floor(estimate + performance.now());
  }

  /** How far Redis's clock runs ahead of this process's wall clock (ms, negative when behind), at the last sample. */
  get offsetMs(): number {
    return this.shared.offset;
  }

  /** Starts measuring; resolves once the first sample is in when the connection is ready already (never rejects). */
  start(): Promise<void> {
    if (this.closed) return Promise.resolve();
    if (!this.started) this.shared.join(this);
    this.started = true;
    return this.client.status === 'ready' ? this.sample() : Promise.resolve();
  }

  close(): void {
    this.closed = true;
    if (this.started) this.shared.leave(this);
    this.started = false;
  }

  /**
   * Resolves once an estimate is in: at once when one is, else after a sample taken now (joining one in flight).
   * For the rare calls whose time must not be this process's own clock (a tag invalidation marks and removes by
   * it): the start's sample may have failed (a timeout on a busy box, TIME refused then) and the next comes only
   * with the refresh. Never rejects; when TIME still fails, now() stays this process's clock.
   */
  ready(): Promise<void> {
    return this.shared.redisMinusMonotonic === undefined ? this.sample() : Promise.resolve();
  }

  /** One TIME (one at a time per client, whoever asks; none while the connection is not ready). */
  sample(): Promise<void> {
    if (this.closed) return Promise.resolve();
    return this.shared.sample(this);
  }

  /** @internal TIME answered (SharedClock): a later failure is warned of again. */
  answered(): void {
    this.warned = false;
  }

  /** @internal TIME failed (SharedClock): the first failure of a run of them is one warning of this user's. */
  failed(err: unknown): void {
    if (this.closed || this.warned) return;
    this.warned = true;
    const kept =
      this.shared.redisMinusMonotonic !== undefined
        ? `its last estimate (${this.shared.offset} ms from this process's)`
        : "this process's clock";
    const why = err instanceof Error ? err.message : String(err);
    this.warn(`could not read Redis's clock (TIME: ${why}), judging by ${kept} until it answers`);
  }
}

/**
 * The estimate of one client's server clock and its sampling, shared by every RedisClock on that client (the cache's,
 * the sessions', the RedisSessionStores'): one `ready` listener, one refresh timer, one TIME in flight. Until
 * 2026-12-06 each RedisClock had its own: a client with the cache and sessions on it sent two TIME at each reconnect
 * and every 30 s, one more per user (test/foundation/flapping.hostile.spec.ts).
 */
class SharedClock {
  /** Redis's clock minus performance.now() (ms, fractional), once a sample is in. */
  redisMinusMonotonic: number | undefined;
  offset = 0;
  /** The started users: each is told of each answer and failure; their `refreshMs` and `timeoutMs` are honoured. */
  private readonly users = new Set<RedisClock>();
  /** Clocks not started waiting on the sample in flight (their own sample()). */
  private readonly askers = new Set<RedisClock>();
  private timer: NodeJS.Timeout | undefined;
  private timerMs = Number.POSITIVE_INFINITY;
  private sampling: Promise<void> | undefined;
  private readonly onReady = (): void => void this.sample();

  constructor(private readonly client: RedisClient) {}

  join(user: RedisClock): void {
    if (this.users.size === 0) this.client.on('ready', this.onReady);
    this.users.add(user);
    // the shortest refresh asked for (30 s unless a test asks less)
    if (user.refreshMs < this.timerMs) {
      clearInterval(this.timer);
      this.timerMs = user.refreshMs;
      this.timer = setInterval(() => void this.sample(), user.refreshMs);
      this.timer.unref();
    }
  }

  leave(user: RedisClock): void {
    if (!this.users.delete(user) || this.users.size > 0) return;
    this.client.off('ready', this.onReady);
    clearInterval(this.timer);
    this.timer = undefined;
    this.timerMs = Number.POSITIVE_INFINITY;
  }

  /** One TIME, or the one in flight; `asker`: a clock not started (a bare sample()) is told of its outcome too. */
  sample(asker?: RedisClock): Promise<void> {
    if (this.client.status !== 'ready') return Promise.resolve();
    if (asker !== undefined && !this.users.has(asker)) this.askers.add(asker);
    const ms = Math.min(asker?.timeoutMs ?? Number.POSITIVE_INFINITY, ...[...this.users].map((u) => u.timeoutMs));
    this.sampling ??= this.measure(Number.isFinite(ms) ? ms : REDIS_CLOCK_REFRESH_MS).finally(() => {
      this.sampling = undefined;
    });
    return this.sampling;
  }

  private async measure(timeoutMs: number): Promise<void> {
    const sentAt = performance.now();
    let reply: unknown[];
    try {
      reply = await withTimeout(this.client.time(), timeoutMs, `no reply within ${timeoutMs} ms`);
    } catch (err) {
      for (const user of this.told()) user.failed(err);
      return;
    }
    const receivedAt = performance.now();
    const redisMs = Number(reply[0]) * 1_000 + Number(reply[1]) / 1_000;
    if (!Number.isFinite(redisMs)) {
      for (const user of this.told()) user.failed(new Error(`unexpected TIME reply ${JSON.stringify(reply)}`));
      return;
    }
    // Redis read its clock between the send and the reply: Redis minus monotonic lies within [earliest, latest].
    const earliest = redisMs - receivedAt;
    const latest = redisMs - sentAt;
    const held = this.redisMinusMonotonic;
    if (held === undefined || receivedAt - sentAt <= MAX_SAMPLE_RTT_MS) {
      this.redisMinusMonotonic = (earliest + latest) / 2;
    } else {
      // A slow sample: the held estimate stays unless the sample proves it wrong, then the least move that fits it.
      this.redisMinusMonotonic = Math.min(Math.max(held, earliest), latest);
    }
    this.offset = Math.round(this.redisMinusMonotonic + performance.now() - Date.now());
    for (const user of this.told()) user.answered();
  }

  /** Who hears of a sample's outcome: the started users, and the clocks not started that asked for it. */
  private told(): RedisClock[] {
    const told = [...this.users, ...this.askers];
    this.askers.clear();
    return told;
  }
}

/** The shared estimate of each client's server clock (kept with the client: a later app on it starts from it). */
const clocks = new WeakMap<RedisClient, SharedClock>();

function sharedClockOf(client: RedisClient): SharedClock {
  let shared = clocks.get(client);
  if (shared === undefined) {
    shared = new SharedClock(client);
    clocks.set(client, shared);
  }
  return shared;
}
