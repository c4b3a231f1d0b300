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
 * REDIS_CLOCK_REFRESH_MS on an unref'd timer. Each takes the middle of its round trip as the moment Redis read its
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
  /** Redis's clock minus performance.now() (ms, fractional), once a sample is in. */
  private redisMinusMonotonic: number | undefined;
  private offset = 0;
  private warned = false;
  private closed = false;
  private timer: NodeJS.Timeout | undefined;
  private sampling: Promise<void> | undefined;
  private readonly onReady = (): void => void this.sample();

  constructor(
    private readonly client: RedisClient,
    private readonly timeoutMs: number,
    private readonly warn: (problem: string) => void,
    private readonly refreshMs = REDIS_CLOCK_REFRESH_MS,
  ) {}

  /** Epoch ms by Redis's clock, whole (estimated; this process's own wall clock until TIME has answered once). */
  now(): number {
    // Whole ms: the times built on it are written as integers (an entry header, a sorted-set score).
    return this.redisMinusMonotonic === undefined
      ? Date.now()
      : Math.floor(this.redisMinusMonotonic + performance.now());
  }

  /** How far Redis's clock runs ahead of this process's wall clock (ms, negative when behind), at the last sample. */
  get offsetMs(): number {
    return this.offset;
  }

  /** Starts measuring; resolves once the first sample is in when the connection is ready already (never rejects). */
  start(): Promise<void> {
    this.client.on('ready', this.onReady);
    this.timer = setInterval(() => void this.sample(), this.refreshMs);
    this.timer.unref();
    return this.client.status === 'ready' ? this.sample() : Promise.resolve();
  }

  close(): void {
    this.closed = true;
    clearInterval(this.timer);
    this.client.off('ready', this.onReady);
  }

  /**
   * Resolves once an estimate is in: at once when one is, else after a sample taken now (joining one in flight).
   * For the rare calls whose time must not be this process's own clock (a tag invalidation marks and removes by
   * it): the start's sample may have failed (a timeout on a busy box, TIME refused then) and the next comes only
   * with the refresh. Never rejects; when TIME still fails, now() stays this process's clock.
   */
  ready(): Promise<void> {
    return this.redisMinusMonotonic === undefined ? this.sample() : Promise.resolve();
  }

  /** One TIME (one at a time; none while the connection is not ready). */
  sample(): Promise<void> {
    if (this.closed || this.client.status !== 'ready') return Promise.resolve();
    this.sampling ??= this.measure().finally(() => {
      this.sampling = undefined;
    });
    return this.sampling;
  }

  private async measure(): Promise<void> {
    const sentAt = performance.now();
    let reply: unknown[];
    try {
      reply = await withTimeout(this.client.time(), this.timeoutMs, `no reply within ${this.timeoutMs} ms`);
    } catch (err) {
      if (!this.closed) this.failed(err);
      return;
    }
    const receivedAt = performance.now();
    const redisMs = Number(reply[0]) * 1_000 + Number(reply[1]) / 1_000;
    if (!Number.isFinite(redisMs)) return this.failed(new Error(`unexpected TIME reply ${JSON.stringify(reply)}`));
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
    this.offset = Math.round(this.now() - Date.now());
    this.warned = false;
  }

  private failed(err: unknown): void {
    if (this.warned) return;
    this.warned = true;
    const kept =
      this.redisMinusMonotonic !== undefined
        ? `its last estimate (${this.offset} ms from this process's)`
        : "this process's clock";
    const why = err instanceof Error ? err.message : String(err);
    this.warn(`could not read Redis's clock (TIME: ${why}), judging by ${kept} until it answers`);
  }
}
