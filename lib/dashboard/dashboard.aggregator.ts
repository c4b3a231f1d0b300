import type { Logger } from '@nestjs/common';
import { ThrottledWarning } from '../common/throttled-logger.js';
import { type DashboardFrame, Ring, sumFrames } from './dashboard.frame.js';

/** Instances followed at once; frames of more are dropped (each costs `history` frames of memory). */
export const MAX_INSTANCES = 64;
/**
 * Frames of one instance waiting to be summed. Each waits one tick or two (DashboardAggregator.tick): an instance
 * with this interval sends 2-3 in that time, one with a quarter of it 6. More are dropped (neither kept nor summed),
 * so that one instance flooding the channel cannot push the others' frames out.
 */
export const MAX_UNSUMMED_PER_INSTANCE = 8;
/** All frames waiting to be summed (instances come and go within two intervals): a bound on memory. */
const MAX_UNSUMMED_TOTAL = MAX_INSTANCES * MAX_UNSUMMED_PER_INSTANCE;

interface Followed {
  readonly frames: Ring<DashboardFrame>;
  /** Local clock when its last frame arrived (instances' clocks may differ: expiry never reads theirs). */
  receivedAt: number;
}

/** Everything the page shows, as sent when it connects. */
export interface DashboardSnapshot {
  /** This instance's id. */
  readonly self: string;
  readonly intervalMs: number;
  /** Frames kept per instance and for the sum: the width of the page's charts (`history`). */
  readonly history: number;
  /** An instance silent this long leaves the page, as it leaves the sum (`instanceTtlMs`). */
  readonly instanceTtlMs: number;
  /** Per instance (by id), its frames, oldest first. */
  readonly instances: Record<string, DashboardFrame[]>;
  /** The sum across instances, one per interval, oldest first. */
  readonly sum: DashboardFrame[];
}

/**
 * The frames of every live instance (a ring of `history` per instance, at most MAX_INSTANCES instances) and the
 * series of their sums. An instance silent for `instanceTtlMs` is dropped.
 */
export class DashboardAggregator {
  private readonly instances = new Map<string, Followed>();
  private readonly sums: Ring<DashboardFrame>;
  /** Frames received since the last sum. */
  private pending: DashboardFrame[] = [];
  /** Frames the last sum left to this one (made within its last half interval, or ahead of its clock). */
  private held: DashboardFrame[] = [];
  /** Per instance id: its frames in `pending` and `held`. */
  private readonly unsummed = new Map<string, number>();
  /**
   * Frames dropped: not after their instance's last, of an instance past MAX_INSTANCES, or past
   * MAX_UNSUMMED_PER_INSTANCE of one.
   */
  dropped = 0;
  // One throttle each: a flood of one kind must not hide the first line of another.
  private readonly tooManyInstances: ThrottledWarning;
  private readonly tooManyFrames: ThrottledWarning;
  private readonly clockAhead: ThrottledWarning;
  private readonly clockBehind: ThrottledWarning;
  private readonly notAfterLast: ThrottledWarning;

  constructor(
    private readonly options: { history: number; intervalMs: number; instanceTtlMs: number },
    private readonly self: string,
    logger: Pick<Logger, 'warn'> = { warn: () => undefined },
  ) {
    this.sums = new Ring(options.history);
    const warning = () => new ThrottledWarning(logger as Logger);
    this.tooManyInstances = warning();
    this.tooManyFrames = warning();
    this.clockAhead = warning();
    this.clockBehind = warning();
    this.notAfterLast = warning();
  }

  /**
   * Keeps a frame, to be summed once; false when it was dropped (and logged): not newer than that instance's last, from
   * an instance past MAX_INSTANCES, or past MAX_UNSUMMED_PER_INSTANCE frames of one instance. Another instance's clock
   * far ahead or behind is logged (checkClock).
   */
  add(frame: DashboardFrame, now = Date.now()): boolean {
    const id = frame.instance;
    let followed = this.instances.get(id);
    if (!followed) {
      if (this.instances.size >= MAX_INSTANCES) {
        this.dropped++;
        this.tooManyInstances.warn(
          `dropped a dashboard frame of ${JSON.stringify(id)}: ${MAX_INSTANCES} instances are followed already ` +
            `(MAX_INSTANCES); it is neither shown nor summed until one of them is silent for instanceTtlMs`,
        );
        return false;
      }
      followed = { frames: new Ring(this.options.history), receivedAt: now };
      this.instances.set(id, followed);
    }
    const last = followed.frames.last();
    if (last && frame.at <= last.at) {
      // never from this release's collector, whose times only go up (a clock stepped back included)
      this.dropped++;
      this.notAfterLast.warn(
        `dropped a dashboard frame of ${JSON.stringify(id)}: its time is not after its last frame's ` +
          `(${last.at - frame.at} ms earlier or equal), so it may be one already summed (sent twice, or by an older ` +
          'release whose clock stepped back)',
      );
      return false;
    }
    const waiting = this.unsummed.get(id) ?? 0;
    if (waiting >= MAX_UNSUMMED_PER_INSTANCE || this.pending.length + this.held.length >= MAX_UNSUMMED_TOTAL) {
      this.dropped++;
      this.tooManyFrames.warn(
        `dropped a dashboard frame of ${JSON.stringify(id)}, left out of the sums: more than ` +
          `${MAX_UNSUMMED_PER_INSTANCE} of its frames within two intervals (is its intervalMs much shorter than ` +
          `this instance's, or is something else publishing on the dashboard channel?)`,
      );
      return false;
    }
    if (id !== this.self) this.checkClock(id, frame.at - now);
    followed.frames.push(frame);
    followed.receivedAt = now;
    this.pending.push(frame);
    this.unsummed.set(id, waiting + 1);
    return true;
  }

  /**
   * Logs a frame made (by its own clock) far from when it arrives: ahead by more than an interval (at least 1 s), or
   * behind by more than two (a frame may also arrive an interval late). Either way it is summed once, when it
   * arrives, and charted at its own time.
   */
  private checkClock(id: string, ahead: number): void {
    const tolerance = Math.max(1_000, this.options.intervalMs);
    if (ahead <= tolerance && -ahead <= 2 * tolerance) return;
    const [warning, off] = ahead > 0 ? [this.clockAhead, 'ahead of'] : [this.clockBehind, 'behind'];
    warning.warn(
      `the clock of dashboard instance ${JSON.stringify(id)} runs about ${Math.round(Math.abs(ahead) / 1_000)} s ` +
        `${off} this instance's${ahead > 0 ? '' : ' (or its frames arrive that late)'}: its frames are summed when ` +
        "they arrive, but charted at its own times; sync the instances' clocks (NTP)",
    );
  }

  /** At shutdown: the counts of warnings not logged yet are logged now, no timer left (ThrottledWarning.close). */
  close(): void {
    for (const w of [this.tooManyInstances, this.tooManyFrames, this.clockAhead, this.clockBehind, this.notAfterLast])
      w.close();
  }

  /** Drops the instances silent for instanceTtlMs; returns their ids. */
  expire(now = Date.now()): string[] {
    const gone: string[] = [];
    for (const [id, f] of this.instances) {
      if (now - f.receivedAt > this.options.instanceTtlMs) {
        this.instances.delete(id);
        gone.push(id);
      }
    }
    return gone;
  }

  /**
   * The sum of the interval that just ended: every frame kept since the previous sum and made more than half an
   * interval ago, and every frame that sum left; each frame once. Instances publish at the same wall-clock boundaries
   * (DashboardService), so that is one frame of each: the frame another instance made at this same boundary (and that
   * may already be here) waits for the next sum, and a late frame is added to the next sum, never lost or counted
   * twice. A frame waits one sum at most, whatever its `at` says: an instance whose clock runs ahead has its frames
   * summed one interval late, and cannot hold them, or push the others' out, until this clock reaches its own.
   */
  tick(now = Date.now()): DashboardFrame {
    const before = now - this.options.intervalMs / 2;
    const due = [...this.held, ...this.pending.filter((f) => f.at <= before)];
    this.held = this.pending.filter((f) => f.at > before);
    this.pending = [];
    this.unsummed.clear();
    for (const f of this.held) this.unsummed.set(f.instance, (this.unsummed.get(f.instance) ?? 0) + 1);
    const sum = sumFrames(due, now - this.options.intervalMs, this.options.intervalMs);
    this.sums.push(sum);
    return sum;
  }

  /**
   * Whether this instance reads INFO and counts sessions: the one with the smallest id among the live instances and
   * itself, so one instance at a time does it (two for at most one interval while a new instance hears the others).
   */
  isSampling(): boolean {
    for (const id of this.instances.keys()) if (id < this.self) return false;
    return true;
  }

  get instanceCount(): number {
    return this.instances.size;
  }

  snapshot(): DashboardSnapshot {
    const instances: Record<string, DashboardFrame[]> = {};
    for (const [id, f] of this.instances) instances[id] = f.frames.toArray();
    const { intervalMs, history, instanceTtlMs } = this.options;
    return { self: this.self, intervalMs, history, instanceTtlMs, instances, sum: this.sums.toArray() };
  }
}
