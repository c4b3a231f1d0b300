import type { CacheTags } from './cache.types.js';

/**
 * Most tags noted per load whose tags are a function of its value; past it the load counts as overtaken (an extra
 * load at worst), so one long load under a stream of invalidations holds a bounded set.
 */
const TAGS_PER_LOAD = 1_000;

/**
 * One load of this process (a miss's load shared by single-flight, or a background refresh), from when it is started
 * (before its load lock) until it settles, as the invalidations of this process see it.
 */
export class InflightLoad {
  /**
   * An invalidation covering it (a del, pattern or clear of its key; an invalidateTags of one of its tags) came after
   * it started: no caller joins it any more (a caller after the invalidation must not get a value read before it),
   * and its value is not stored. The callers that joined before still get the value.
   */
  overtaken = false;
  /**
   * For a load whose tags are a function of its value (known once loaded): the tags invalidated since it started.
   * No caller joins it once one is noted, and its value is not stored when its tags hold one of them.
   */
  private tagsInvalidated: Set<string> | undefined;

  constructor(
    readonly redisKey: string,
    /** Its tags when given as a list; undefined when a function of the value (see byValue) or none. */
    readonly tags: readonly string[] | undefined,
    readonly byValue: boolean,
  ) {}

  /** Whether a caller arriving now may share it. */
  get joinable(): boolean {
    return !this.overtaken && this.tagsInvalidated === undefined;
  }

  /** Whether its value, with these (resolved) tags, may be stored now. */
  storable(tags: readonly string[]): boolean {
    if (this.overtaken) return false;
    const invalidated = this.tagsInvalidated;
    return invalidated === undefined || !tags.some((t) => invalidated.has(t));
  }

  /** `tags` were invalidated now. */
  tagsOvertaken(tags: readonly string[]): void {
    if (this.byValue) {
      this.tagsInvalidated ??= new Set();
      for (const t of tags) this.tagsInvalidated.add(t);
      if (this.tagsInvalidated.size > TAGS_PER_LOAD) this.overtaken = true;
    } else if (this.tags?.some((t) => tags.includes(t))) {
      this.overtaken = true;
    }
  }
}

/**
 * The loads running in this process, by entry key: what an invalidation marks overtaken (InflightLoad). Holds only
 * loads that have not settled yet, so its size is bounded by the loads running at once.
 */
export class InflightLoads {
  private readonly byKey = new Map<string, InflightLoad[]>();

  /** A load of `redisKey` starts now (see end). */
  start<T>(redisKey: string, tags: CacheTags<T> | undefined): InflightLoad {
    const byValue = typeof tags === 'function';
    const load = new InflightLoad(redisKey, byValue ? undefined : tags, byValue);
    const running = this.byKey.get(redisKey);
    if (running === undefined) this.byKey.set(redisKey, [load]);
    else running.push(load);
    return load;
  }

  /** The load has settled: no invalidation needs to see it any more. */
  end(load: InflightLoad): void {
    const running = this.byKey.get(load.redisKey);
    if (running === undefined) return;
    const i = running.indexOf(load);
    if (i !== -1) running.splice(i, 1);
    if (running.length === 0) this.byKey.delete(load.redisKey);
  }

  /** A del of these entry keys. */
  overtakeKeys(redisKeys: readonly string[]): void {
    for (const k of redisKeys) {
      for (const load of this.byKey.get(k) ?? []) load.overtaken = true;
    }
  }

  /** A pattern invalidation: `matches` says which entry keys it covers. */
  overtakeMatching(matches: (redisKey: string) => boolean): void {
    for (const [k, running] of this.byKey) {
      if (matches(k)) for (const load of running) load.overtaken = true;
    }
  }

  /** A tag invalidation (hard or soft). */
  overtakeTags(tags: readonly string[]): void {
    for (const running of this.byKey.values()) {
      for (const load of running) load.tagsOvertaken(tags);
    }
  }

  /** clear(): every load running. */
  overtakeAll(): void {
    for (const running of this.byKey.values()) {
      for (const load of running) load.overtaken = true;
    }
  }
}
