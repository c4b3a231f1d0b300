import { InvalidKeyError, InvalidOptionsError } from '../common/errors.js';
import { durationProblem, isDuration, MAX_DURATION_MS, refuseUnknown, shownValue } from '../common/option-checks.js';
import { KeyBuilder } from '../common/keys.js';
import type { CacheEntry } from './cache.entry.js';
import type { ResolvedCacheOptions } from './cache.options.js';
import type { CacheGetOrSetOptions, CacheSetOptions, CacheTags, CacheTtl } from './cache.types.js';

/** The options of one set/getOrSet call, validated and with the module defaults filled in. */
export interface ResolvedCall<T> {
  ttl: CacheTtl<T>;
  staleTtl: number;
  tags: CacheTags<T> | undefined;
  shouldCache: ((value: T) => boolean) | undefined;
  softTimeout: number;
  hardTimeout: number;
  grace: number;
  graceBackoff: number;
}

/** What a call without options resolves to (built once: the getOrSet hot path skips validation). */
export function defaultCall(options: ResolvedCacheOptions): ResolvedCall<unknown> {
  return {
    ttl: Math.ceil(options.defaultTtl),
    staleTtl: Math.ceil(options.staleTtl),
    tags: undefined,
    shouldCache: undefined,
    softTimeout: options.softTimeout,
    hardTimeout: options.loadTimeout,
    grace: Math.ceil(options.grace),
    graceBackoff: options.graceBackoff,
  };
}

/** The options each call takes: any other key (a typo such as `tag` or `tll`) is refused, never ignored. */
const SET_OPTIONS: readonly string[] = ['ttl', 'staleTtl', 'grace', 'tags'];
const GET_OR_SET_OPTIONS: readonly string[] = [
  ...SET_OPTIONS,
  'shouldCache',
  'softTimeout',
  'hardTimeout',
  'graceBackoff',
];
const KNOWN: Record<'set' | 'getOrSet', ReadonlySet<string>> = {
  set: new Set(SET_OPTIONS),
  getOrSet: new Set(GET_OR_SET_OPTIONS),
};

export function resolveCall<T>(
  options: CacheGetOrSetOptions<T> | CacheSetOptions,
  what: 'set' | 'getOrSet',
  defaults: ResolvedCacheOptions,
): ResolvedCall<T> {
  if (options === null || typeof options !== 'object') {
    // cache-manager's set(key, value, ttl) and wrap(key, fn, ttl) take the ttl itself
    const hint = typeof options === 'number' ? ` (a ttl is given as { ttl: ${options} })` : '';
    throw new InvalidOptionsError(`cache.${what}: options must be an object${hint}`);
  }
  refuseUnknown(options, KNOWN[what], `cache.${what}`);
  const { ttl, staleTtl, tags, softTimeout, hardTimeout, shouldCache, grace, graceBackoff } =
    options as CacheGetOrSetOptions<T>;
  if (ttl !== undefined && typeof ttl !== 'function' && !isDuration(ttl))
    throw new InvalidOptionsError(`cache.${what}: ttl ${durationProblem(ttl)}`);
  if (staleTtl !== undefined && !isDuration(staleTtl, true))
    throw new InvalidOptionsError(`cache.${what}: staleTtl ${durationProblem(staleTtl, true)}`);
  if (tags !== undefined && typeof tags !== 'function') checkTags(tags, what);
  if (shouldCache !== undefined && typeof shouldCache !== 'function')
    throw new InvalidOptionsError(`cache.${what}: shouldCache must be a function of the value`);
  if (softTimeout !== undefined && !isDuration(softTimeout, true))
    throw new InvalidOptionsError(`cache.${what}: softTimeout ${durationProblem(softTimeout, true)}`);
  if (hardTimeout !== undefined && !isDuration(hardTimeout))
    throw new InvalidOptionsError(`cache.${what}: hardTimeout ${durationProblem(hardTimeout)}`);
  if (grace !== undefined && !isDuration(grace, true))
    throw new InvalidOptionsError(`cache.${what}: grace ${durationProblem(grace, true)}`);
  if (graceBackoff !== undefined && !isDuration(graceBackoff))
    throw new InvalidOptionsError(`cache.${what}: graceBackoff ${durationProblem(graceBackoff)}`);
  return {
    ttl: typeof ttl === 'function' ? ttl : Math.ceil(ttl ?? defaults.defaultTtl),
    staleTtl: Math.ceil(staleTtl ?? defaults.staleTtl),
    tags: tags as CacheTags<T> | undefined,
    shouldCache,
    softTimeout: softTimeout ?? defaults.softTimeout,
    hardTimeout: hardTimeout ?? defaults.loadTimeout,
    grace: Math.ceil(grace ?? defaults.grace),
    graceBackoff: graceBackoff ?? defaults.graceBackoff,
  };
}

/** getOrSetForever's options as getOrSet's: only tags (its ttl is 100 years: a ttl given is refused, never dropped). */
export function foreverOptions<T>(options: unknown): CacheGetOrSetOptions<T> {
  const where = 'cache.getOrSetForever';
  if (options === null || typeof options !== 'object') {
    const hint = typeof options === 'number' ? ' (it takes no ttl: getOrSet does, as { ttl })' : '';
    throw new InvalidOptionsError(`${where}: options must be an object ({ tags? })${hint}, got ${shownValue(options)}`);
  }
  const ttlLike = Object.keys(options).find((k) => k !== 'tags' && KNOWN.getOrSet.has(k));
  if (ttlLike !== undefined) {
    throw new InvalidOptionsError(
      `${where}: ${ttlLike} is not a known option (the entry is fresh for 100 years: getOrSet takes ${ttlLike}); ` +
        'known: tags',
    );
  }
  refuseUnknown(options, FOREVER, where);
  return { ...(options as { tags?: CacheTags<T> }), ttl: MAX_DURATION_MS, staleTtl: 0 };
}
const FOREVER: ReadonlySet<string> = new Set(['tags']);

/** mget's keys: an array (each key is checked by its get). */
export function keyList(keys: unknown): readonly string[] {
  if (!Array.isArray(keys)) throw new InvalidKeyError(`cache.mget: keys must be an array, got ${shownValue(keys)}`);
  return keys;
}

type MsetEntry<T> = { key: string; value: T; options?: CacheSetOptions };
const MSET_ENTRY: ReadonlySet<string> = new Set(['key', 'value', 'options']);

/**
 * mset's entries: an array of `{ key, value, options? }`. A set option beside key and value (cache-manager's
 * `{ key, value, ttl }`) is refused, not dropped.
 */
export function entryList<T>(entries: unknown): readonly MsetEntry<T>[] {
  const shape = '{ key, value, options? }';
  if (!Array.isArray(entries))
    throw new InvalidOptionsError(`cache.mset: entries must be an array of ${shape}, got ${shownValue(entries)}`);
  for (const [i, entry] of entries.entries()) {
    if (entry === null || typeof entry !== 'object' || Array.isArray(entry))
      throw new InvalidOptionsError(`cache.mset: entries[${i}] must be an object ${shape}, got ${shownValue(entry)}`);
    const misplaced = Object.keys(entry).find((k) => KNOWN.set.has(k));
    if (misplaced !== undefined) {
      throw new InvalidOptionsError(
        `cache.mset: entries[${i}].${misplaced} is not a key of an entry ${shape}: ` +
          `give it as options: { ${misplaced} }`,
      );
    }
    refuseUnknown(entry, MSET_ENTRY, `cache.mset: entries[${i}]`);
  }
  return entries;
}

/** Whether two calls ask for the same thing (functions and tag lists compared by identity). */
export function sameCall<T>(a: ResolvedCall<T>, b: ResolvedCall<T>): boolean {
  return (
    a === b ||
    (a.ttl === b.ttl &&
      a.staleTtl === b.staleTtl &&
      a.tags === b.tags &&
      a.shouldCache === b.shouldCache &&
      a.softTimeout === b.softTimeout &&
      a.hardTimeout === b.hardTimeout &&
      a.grace === b.grace &&
      a.graceBackoff === b.graceBackoff)
  );
}

/** The fresh ms of `value`: the call's ttl, or what its ttl function returns for the value (checked). */
export function ttlOf<T>(ttl: CacheTtl<T>, value: T): number {
  if (typeof ttl !== 'function') return ttl;
  const ms = ttl(value);
  if (!isDuration(ms)) throw new InvalidOptionsError(`cache: the result of the ttl function ${durationProblem(ms)}`);
  return Math.ceil(ms);
}

/**
 * The entry storing `value` at `now` (epoch ms by Redis's clock: RedisClock) under this call's ttl, staleTtl and tags;
 * `delta` is how long its load took.
 */
export function entryOf<T>(call: ResolvedCall<T>, value: T, delta: number, now: number): CacheEntry<T> {
  const ttl = ttlOf(call.ttl, value);
  return {
    value,
    freshUntil: now + ttl,
    staleUntil: now + ttl + call.staleTtl,
    delta,
    tags: resolveTags(call.tags, value),
  };
}

/** The entry's tags (computed from the value when given as a function), validated and without duplicates. */
export function resolveTags<T>(tags: CacheTags<T> | undefined, value: T): string[] {
  if (tags === undefined) return [];
  const list = typeof tags === 'function' ? tags(value) : tags;
  checkTags(list, 'tags');
  return [...new Set(list)];
}

function checkTags(tags: unknown, what: string): asserts tags is readonly string[] {
  if (!Array.isArray(tags)) throw new InvalidOptionsError(`cache.${what}: tags must be an array of strings`);
  for (const t of tags) KeyBuilder.validate(t, 'tag');
}
