import type { RedisClient } from './lua-script.js';
import { withTimeout } from './timeout.js';

/** How often the offset is measured again (ms): a failover or a reconnect may bring a server with another clock. */
export const REDIS_CLOCK_REFRESH_MS = 30_000;
/**
 * A sample whose round trip took longer than this (a stalled event loop, a slow link) does not replace an estimate
 * already held: the estimate's error is up to half the round trip.
 */
const MAX_SAMPLE_RTT_MS = 250;

/**
 * Redis's wall clock, estimated in this process without a round trip per read: `now()` is this process's clock plus
 * the offset of Redis's `TIME` from it, measured when the connection becomes ready (each time: a reconnect may reach
 * another server), then every REDIS_CLOCK_REFRESH_MS on an unref'd timer. Each sample takes the middle of its round
 * trip as the moment Redis read its clock, so the estimate is off by at most half a round trip (plus, on a cluster,
 * the masters' skew between themselves: whichever node answers TIME stands for all, so their clocks are assumed kept
 * within a few ms of each other by NTP). Every instance judging times written by the others with this clock agrees
 * with them whatever its own clock says, as key expiry (`PX`) does.
 *
 * TIME failing (refused by the ACL, a timeout) fails nothing: `now()` keeps the last estimate, or this process's own
 * clock while there is none, and the first failure of a run of them is one warning (`warn` gets what happened and
 * which clock is used meanwhile; its caller says what that costs).
 */
export class RedisClock {
  private offset = 0;
  private estimated = false;
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

  /** Epoch ms by Redis's clock (estimated; this process's own clock until TIME has answered once). */
  now(): number {
    return Date.now() + this.offset;
  }

  /** How far Redis's clock runs ahead of this process's (ms, negative when behind), as last measured. */
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

  /** One TIME (one at a time; none while the connection is not ready). */
  sample(): Promise<void> {
    if (this.closed || this.client.status !== 'ready') return Promise.resolve();
    this.sampling ??= this.measure().finally(() => {
      this.sampling = undefined;
    });
    return this.sampling;
  }

  private async measure(): Promise<void> {
    const sentAt = Date.now();
    const started = performance.now();
    let reply: unknown[];
    try {
      reply = await withTimeout(this.client.time(), this.timeoutMs, `no reply within ${this.timeoutMs} ms`);
    } catch (err) {
      if (!this.closed) this.failed(err);
      return;
    }
    const roundTrip = performance.now() - started;
    const redisMs = Number(reply[0]) * 1_000 + Math.floor(Number(reply[1]) / 1_000);
    if (!Number.isFinite(redisMs)) return this.failed(new Error(`unexpected TIME reply ${JSON.stringify(reply)}`));
    if (this.estimated && roundTrip > MAX_SAMPLE_RTT_MS) return;
    // Whole ms: the times built on it are written as integers (an entry header, a sorted-set score).
    this.offset = Math.round(redisMs - (sentAt + roundTrip / 2));
    this.estimated = true;
    this.warned = false;
  }

  private failed(err: unknown): void {
    if (this.warned) return;
    this.warned = true;
    const kept = this.estimated ? `its last estimate (${this.offset} ms from this process's)` : "this process's clock";
    const why = err instanceof Error ? err.message : String(err);
    this.warn(`could not read Redis's clock (TIME: ${why}), judging by ${kept} until it answers`);
  }
}
