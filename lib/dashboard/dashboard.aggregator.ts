import { type DashboardFrame, Ring, sumFrames } from './dashboard.frame.js';

/** Instances followed at once; frames of more are dropped (each costs `history` frames of memory). */
export const MAX_INSTANCES = 64;

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
  /** Frames received since the last sum, each summed once (bounded: a few intervals of MAX_INSTANCES). */
  private pending: DashboardFrame[] = [];
  /** Frames dropped because MAX_INSTANCES were already followed. */
  dropped = 0;

  constructor(
    private readonly options: { history: number; intervalMs: number; instanceTtlMs: number },
    private readonly self: string,
  ) {
    this.sums = new Ring(options.history);
  }

  /** Keeps a frame; false when it was dropped (too many instances, or not newer than that instance's last). */
  add(frame: DashboardFrame, now = Date.now()): boolean {
    let followed = this.instances.get(frame.instance);
    if (!followed) {
      if (this.instances.size >= MAX_INSTANCES) {
        this.dropped++;
        return false;
      }
      followed = { frames: new Ring(this.options.history), receivedAt: now };
      this.instances.set(frame.instance, followed);
    }
    const last = followed.frames.last();
    if (last && frame.at <= last.at) return false;
    followed.frames.push(frame);
    followed.receivedAt = now;
    if (this.pending.length < MAX_INSTANCES * 4) this.pending.push(frame);
    else this.dropped++;
    return true;
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
   * The sum of the interval that just ended: every frame received since the previous sum and made more than half an
   * interval ago, each once. Instances publish at the same wall-clock boundaries (DashboardService), so that is one
   * frame of each: the frame another instance made at this same boundary (and that may already be here) waits for the
   * next sum, and a late frame is added to the next sum, never lost or counted twice.
   */
  tick(now = Date.now()): DashboardFrame {
    const before = now - this.options.intervalMs / 2;
    const due = this.pending.filter((f) => f.at <= before);
    this.pending = this.pending.filter((f) => f.at > before);
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
