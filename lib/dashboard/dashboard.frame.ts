/**
 * One instance's stats for one interval, as published on the dashboard channel (a few hundred bytes of JSON). Counts
 * are for the interval (`ms` long), so a rate is `count * 1000 / ms`; `now` values (locks, sessions, redis) are
 * readings at its end.
 */
export interface DashboardFrame {
  /** Format version. */
  readonly v: 1;
  /** The instance's id (`instanceName` + a random suffix), or `sum` for the total across instances. */
  readonly instance: string;
  /** Epoch ms at the end of the interval. */
  readonly at: number;
  /** Length of the interval, ms. */
  readonly ms: number;
  /** For a sum: how many instances it adds up. */
  readonly instances: number;
  readonly cache: {
    hits: number;
    staleHits: number;
    misses: number;
    /** Loaders that finished (loaded or failed). */
    loads: number;
    /** Total load time of those loads, ms (the mean is `loadMs / loads`). */
    loadMs: number;
    /** The slowest load, ms. */
    loadMaxMs: number;
  };
  /** The most invalidated tags of the interval: `[tag, invalidations]`, most first (at most 5). */
  readonly tags: [string, number][];
  /** Per policy name: `[allowed, refused]` decisions that involved it (a refusal counts for each of its policies). */
  readonly rateLimit: Record<string, [number, number]>;
  readonly locks: {
    /** Single-resource locks a caller of this process holds now. */
    held: number;
    /** Callers of this process waiting in `acquire` now. */
    waiting: number;
    acquired: number;
    busy: number;
    lost: number;
  };
  readonly sessions: {
    /** Sessions stored in Redis (all instances), from the last finished count; null until one finished. */
    active: number | null;
    created: number;
    destroyed: number;
  };
  readonly pubsub: { published: number; failed: number };
  /** Redis as one instance sees it (only the sampling instance carries it, see docs/observability.md). */
  readonly redis: RedisSample | null;
}

export interface RedisSample {
  /** PING round trip, ms (the slowest master on a cluster). */
  latencyMs: number;
  /** INFO used_memory, bytes (summed over masters). */
  usedMemory: number;
  /** INFO instantaneous_ops_per_sec (summed over masters). */
  opsPerSec: number;
  /** INFO connected_clients (summed over masters). */
  clients: number;
}

const MAX_TAGS = 5;
/** Policies kept per frame: a frame stays small even if names are made per request by mistake. */
export const MAX_POLICIES = 50;

/** The most frequent entries of a count map, most first, at most `n`. */
export function topCounts(counts: ReadonlyMap<string, number>, n = MAX_TAGS): [string, number][] {
  return [...counts].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1)).slice(0, n);
}

/**
 * Adds up frames of different instances: counts are summed (each frame once: exact totals), `loadMaxMs` is the
 * largest, the `now` readings (locks held and waiting) are each instance's latest, and the Redis sample and the active
 * session count (both about the one Redis they share) are the newest reading of any of them.
 */
/** `at` and `ms`: the end and the length of the interval the sum stands for. */
export function sumFrames(frames: readonly DashboardFrame[], at: number, ms: number): DashboardFrame {
  const cache = { hits: 0, staleHits: 0, misses: 0, loads: 0, loadMs: 0, loadMaxMs: 0 };
  const locks = { held: 0, waiting: 0, acquired: 0, busy: 0, lost: 0 };
  const sessions = { active: null as number | null, created: 0, destroyed: 0 };
  const pubsub = { published: 0, failed: 0 };
  const tags = new Map<string, number>();
  const rateLimit: Record<string, [number, number]> = {};
  let redis: RedisSample | null = null;
  let redisAt = -1;
  let activeAt = -1;
  const latest = new Map<string, DashboardFrame>();
  for (const f of frames) {
    const seen = latest.get(f.instance);
    if (!seen || f.at > seen.at) latest.set(f.instance, f);
    for (const k of ['hits', 'staleHits', 'misses', 'loads', 'loadMs'] as const) cache[k] += f.cache[k];
    cache.loadMaxMs = Math.max(cache.loadMaxMs, f.cache.loadMaxMs);
    for (const k of ['acquired', 'busy', 'lost'] as const) locks[k] += f.locks[k];
    sessions.created += f.sessions.created;
    sessions.destroyed += f.sessions.destroyed;
    if (f.sessions.active !== null && f.at > activeAt) {
      sessions.active = f.sessions.active;
      activeAt = f.at;
    }
    pubsub.published += f.pubsub.published;
    pubsub.failed += f.pubsub.failed;
    for (const [tag, n] of f.tags) tags.set(tag, (tags.get(tag) ?? 0) + n);
    for (const [policy, [allowed, refused]] of Object.entries(f.rateLimit)) {
      const sum = Object.hasOwn(rateLimit, policy) ? rateLimit[policy] : undefined;
      if (sum) {
        sum[0] += allowed;
        sum[1] += refused;
      } else if (Object.keys(rateLimit).length < MAX_POLICIES) {
        rateLimit[policy] = [allowed, refused];
      }
    }
    if (f.redis && f.at > redisAt) {
      redis = f.redis;
      redisAt = f.at;
    }
  }
  for (const f of latest.values()) {
    locks.held += f.locks.held;
    locks.waiting += f.locks.waiting;
  }
  return {
    v: 1,
    instance: 'sum',
    at,
    ms,
    instances: latest.size,
    cache,
    tags: topCounts(tags),
    rateLimit,
    locks,
    sessions,
    pubsub,
    redis,
  };
}

/** Whether `value` has the shape of a frame (what arrives on the channel is checked before it is kept). */
export function isDashboardFrame(value: unknown): value is DashboardFrame {
  const f = value as Partial<DashboardFrame> | null;
  return (
    typeof f === 'object' &&
    f !== null &&
    f.v === 1 &&
    typeof f.instance === 'string' &&
    f.instance.length <= 120 &&
    typeof f.at === 'number' &&
    typeof f.ms === 'number' &&
    typeof f.cache === 'object' &&
    Array.isArray(f.tags) &&
    typeof f.rateLimit === 'object' &&
    typeof f.locks === 'object' &&
    typeof f.sessions === 'object' &&
    typeof f.pubsub === 'object'
  );
}

/** A fixed-size buffer of the last `size` items, oldest first. */
export class Ring<T> {
  private readonly items: T[] = [];
  private start = 0;

  constructor(readonly size: number) {}

  push(item: T): void {
    if (this.items.length < this.size) {
      this.items.push(item);
      return;
    }
    this.items[this.start] = item;
    this.start = (this.start + 1) % this.size;
  }

  get length(): number {
    return this.items.length;
  }

  last(): T | undefined {
    return this.items.length === 0 ? undefined : this.items[(this.start + this.items.length - 1) % this.items.length];
  }

  toArray(): T[] {
    return [...this.items.slice(this.start), ...this.items.slice(0, this.start)];
  }
}
