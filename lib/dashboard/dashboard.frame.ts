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
    /**
     * Reads (`get`, `getOrSet`) served without the cache because Redis could not be reached and `failOpen` let them
     * go on (`CacheService.stats().failedOpen`; also in `misses`). Absent in a frame of a release before it (such a
     * frame is still kept and summed, without it); every frame and sum of this release has it.
     */
    failedOpen?: number;
  };
  /** The most invalidated tags of the interval: `[tag, invalidations]`, most first (at most 5). */
  readonly tags: [string, number][];
  /** Per policy name: `[allowed, refused]` decisions that involved it (a refusal counts for each of its policies). */
  readonly rateLimit: Record<string, [number, number]>;
  /**
   * Per policy name, of those decisions: `[failedOpen, insurance]`, the ones Redis could not make (`degraded`):
   * allowed without counting (fail-open), or decided by the in-process insurance limiter. Absent in a frame of a
   * release before it (so a mixed-version deploy keeps both); every frame and sum of this release has it.
   */
  readonly rateLimitDegraded?: Record<string, [number, number]>;
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
  const cache = { hits: 0, staleHits: 0, misses: 0, loads: 0, loadMs: 0, loadMaxMs: 0, failedOpen: 0 };
  const locks = { held: 0, waiting: 0, acquired: 0, busy: 0, lost: 0 };
  const sessions = { active: null as number | null, created: 0, destroyed: 0 };
  const pubsub = { published: 0, failed: 0 };
  const tags = new Map<string, number>();
  // A Map, not an object: a policy named `__proto__` would set the object's prototype instead of adding a key.
  const rateLimit = new Map<string, [number, number]>();
  const rateLimitDegraded = new Map<string, [number, number]>();
  let redis: RedisSample | null = null;
  let redisAt = -1;
  let activeAt = -1;
  const latest = new Map<string, DashboardFrame>();
  for (const f of frames) {
    const seen = latest.get(f.instance);
    if (!seen || f.at > seen.at) latest.set(f.instance, f);
    for (const k of ['hits', 'staleHits', 'misses', 'loads', 'loadMs'] as const) cache[k] += f.cache[k];
    cache.loadMaxMs = Math.max(cache.loadMaxMs, f.cache.loadMaxMs);
    cache.failedOpen += f.cache.failedOpen ?? 0; // none from an instance of an older release
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
    addPairs(rateLimit, f.rateLimit);
    if (f.rateLimitDegraded) addPairs(rateLimitDegraded, f.rateLimitDegraded);
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
    rateLimit: Object.fromEntries(rateLimit),
    rateLimitDegraded: Object.fromEntries(rateLimitDegraded),
    locks,
    sessions,
    pubsub,
    redis,
  };
}

/** Adds per-policy pairs into `sums` (at most MAX_POLICIES names). */
function addPairs(sums: Map<string, [number, number]>, pairs: Record<string, [number, number]>): void {
  for (const [policy, [a, b]] of Object.entries(pairs)) {
    const sum = sums.get(policy);
    if (sum) {
      sum[0] += a;
      sum[1] += b;
    } else if (sums.size < MAX_POLICIES) {
      sums.set(policy, [a, b]);
    }
  }
}

/** Longest tag or policy name a frame carries (the collector cuts longer ones): a frame stays a few KB at most. */
export const MAX_NAME_LENGTH = 200;
/** What DashboardOptions makes: `instanceName` (at most 100 characters), `#`, 6 hex digits; never the page's `sum`. */
const INSTANCE_ID = /^.{1,100}#[0-9a-f]{6}$/s;
const CACHE_FIELDS = ['hits', 'staleHits', 'misses', 'loads', 'loadMs', 'loadMaxMs'] as const;
const LOCK_FIELDS = ['held', 'waiting', 'acquired', 'busy', 'lost'] as const;
const REDIS_FIELDS = ['latencyMs', 'usedMemory', 'opsPerSec', 'clients'] as const;

type Fields = Record<string, unknown>;
const isFields = (v: unknown): v is Fields => typeof v === 'object' && v !== null && !Array.isArray(v);
const isCount = (v: unknown): boolean => typeof v === 'number' && Number.isFinite(v) && v >= 0;
const hasCounts = (v: unknown, keys: readonly string[]): boolean => isFields(v) && keys.every((k) => isCount(v[k]));
const isName = (v: unknown): boolean => typeof v === 'string' && v.length <= MAX_NAME_LENGTH;
const isPair = (v: unknown, first: (x: unknown) => boolean): boolean =>
  Array.isArray(v) && v.length === 2 && first(v[0]) && isCount(v[1]);

const isPolicyPairs = (v: unknown): v is Record<string, [number, number]> =>
  isFields(v) &&
  Object.keys(v).length <= MAX_POLICIES &&
  Object.entries(v).every(([name, counts]) => isName(name) && isPair(counts, isCount));

/**
 * A frame's degraded counts name only policies of its decisions (the collector counts both under one name): so a frame
 * carries at most MAX_POLICIES distinct policy names, not twice as many (the worst case of the aggregator's memory).
 */
const degradedAmong = (degraded: unknown, decisions: Record<string, unknown>): boolean =>
  isPolicyPairs(degraded) && Object.keys(degraded).every((name) => Object.hasOwn(decisions, name));

/**
 * Whether `value` is a frame, to its last field: what arrives on the channel comes from anyone who may PUBLISH on the
 * Redis (another release, another app, a hand-typed command), and a frame is summed with the others and drawn by every
 * page. A null section or a count that is not a number would make every sum of its interval throw (or add strings),
 * and thousands of tags would be kept `history` times: such a message is dropped, with a warning. Fields it does not
 * know are not looked at: readDashboardFrame leaves them out.
 */
export function isDashboardFrame(value: unknown): value is DashboardFrame {
  if (!isFields(value)) return false;
  const { sessions, redis, tags } = value;
  return (
    value.v === 1 &&
    typeof value.instance === 'string' &&
    INSTANCE_ID.test(value.instance) &&
    isCount(value.at) &&
    isCount(value.ms) &&
    (value.ms as number) > 0 &&
    isCount(value.instances) &&
    hasCounts(value.cache, CACHE_FIELDS) &&
    ((value.cache as Fields).failedOpen === undefined || isCount((value.cache as Fields).failedOpen)) &&
    hasCounts(value.locks, LOCK_FIELDS) &&
    hasCounts(value.pubsub, ['published', 'failed']) &&
    hasCounts(sessions, ['created', 'destroyed']) &&
    ((sessions as Fields).active === null || isCount((sessions as Fields).active)) &&
    (redis === null || hasCounts(redis, REDIS_FIELDS)) &&
    Array.isArray(tags) &&
    tags.length <= MAX_TAGS &&
    tags.every((t) => isPair(t, isName)) &&
    isPolicyPairs(value.rateLimit) &&
    (value.rateLimitDegraded === undefined || degradedAmong(value.rateLimitDegraded, value.rateLimit))
  );
}

const pick = <K extends string>(from: Record<K, number>, keys: readonly K[]) =>
  Object.fromEntries(keys.map((k) => [k, from[k]])) as Record<K, number>;
/** The cache section's known fields; `failedOpen` only when the frame has it (an older release's does not). */
const cacheOf = (from: DashboardFrame['cache']): DashboardFrame['cache'] => {
  const cache: DashboardFrame['cache'] = pick(from, CACHE_FIELDS);
  if (from.failedOpen !== undefined) cache.failedOpen = from.failedOpen;
  return cache;
};
const pairs = (from: Record<string, [number, number]>) =>
  Object.fromEntries(Object.entries(from).map(([name, [a, b]]) => [name, [a, b]])) as Record<string, [number, number]>;

/**
 * A message of the channel as a frame of its known fields only, or undefined when it is not a frame
 * (isDashboardFrame). What passes the check may still carry fields of its own, at any size (a 1 MB one was kept whole,
 * `history` times per instance, and sent to every page, overflowing their stream buffers): rebuilt, a frame is the
 * few hundred bytes it should be, whatever came with it. Rebuilt rather than refused, so that a newer release adding
 * a field is still shown and summed by an older one (without that field).
 */
export function readDashboardFrame(value: unknown): DashboardFrame | undefined {
  if (!isDashboardFrame(value)) return undefined;
  const { sessions: s, redis, rateLimitDegraded } = value;
  return {
    v: 1,
    instance: value.instance,
    at: value.at,
    ms: value.ms,
    instances: value.instances,
    cache: cacheOf(value.cache),
    tags: value.tags.map(([tag, n]) => [tag, n]),
    rateLimit: pairs(value.rateLimit),
    ...(rateLimitDegraded && { rateLimitDegraded: pairs(rateLimitDegraded) }),
    locks: pick(value.locks, LOCK_FIELDS),
    sessions: { active: s.active, created: s.created, destroyed: s.destroyed },
    pubsub: { published: value.pubsub.published, failed: value.pubsub.failed },
    redis: redis && pick(redis, REDIS_FIELDS),
  };
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
