import { InvalidOptionsError } from '../common/errors.js';
import { createInterceptedMethodDecorator } from '../common/method-interception.js';
import { durationProblem, isDuration } from '../common/option-checks.js';
import { refuseUnknown } from '../common/option-checks.js';
import { CACHE_METADATA } from './cache.constants.js';

/** A function of the decorated method's arguments (typed loosely so any parameter list fits). */
export type FromArgs<T> = (...args: never[]) => T;

export interface CacheableOptions {
  /**
   * The cache key: a string, or a function of the arguments. Default: `ClassName.method:` + a hash of the arguments.
   */
  key?: string | FromArgs<string>;
  /**
   * ms the result stays fresh, or a function of the result (first parameter) and the arguments returning it.
   * Default: `cache.defaultTtl`.
   */
  ttl?: number | ((result: never, ...args: never[]) => number);
  /** ms the result is served stale after `ttl` while one refresh runs. Default: `cache.staleTtl`. */
  staleTtl?: number;
  /**
   * Whether a result is stored: a function of the result and the arguments; false returns the result uncached.
   * Default: every result except undefined is stored.
   */
  shouldCache?: (result: never, ...args: never[]) => boolean;
  /** ms past `ttl + staleTtl` the last result is served when the method throws (@Cacheable). Default `cache.grace`. */
  grace?: number;
  /** ms between two tries of the method while its result is served from grace. Default `cache.graceBackoff`. */
  graceBackoff?: number;
  /** Tags: a list, or a function of the arguments. */
  tags?: readonly string[] | FromArgs<readonly string[]>;
  /** More tags computed from the result (first parameter) and the arguments. */
  resultTags?: (result: never, ...args: never[]) => readonly string[];
}

export type CachePutOptions = CacheableOptions;

export interface CacheEvictOptions {
  /** Keys to delete: a key, a list, or a function of the arguments returning either. */
  keys?: string | readonly string[] | FromArgs<string | readonly string[]>;
  /** Tags to invalidate: a list or a function of the arguments. */
  tags?: readonly string[] | FromArgs<readonly string[]>;
  /** A glob of keys to delete (under the cache prefix only), or a function of the arguments. */
  pattern?: string | FromArgs<string>;
  /** Tags are marked stale instead of deleted (see invalidateTags). */
  soft?: boolean;
}

export type CacheOperation =
  | { kind: 'cacheable'; options: CacheableOptions }
  | { kind: 'put'; options: CachePutOptions }
  | { kind: 'evict'; options: CacheEvictOptions };

const merge = (previous: CacheOperation[], next: CacheOperation[]): CacheOperation[] => [...next, ...previous];

/** The durations of @Cacheable / @CachePut, and whether 0 is one: as getOrSet and set check them (resolveCall). */
const DURATIONS = [
  ['ttl', false],
  ['staleTtl', true],
  ['grace', true],
  ['graceBackoff', false],
] as const;

const CACHEABLE_OPTIONS: ReadonlySet<string> = new Set([
  'key',
  'ttl',
  'staleTtl',
  'shouldCache',
  'grace',
  'graceBackoff',
  'tags',
  'resultTags',
]);
/** From the type itself (a string 'keys' here reads to the lint as the KEYS command). */
const EVICT_OPTIONS: ReadonlySet<string> = new Set(
  Object.keys({ keys: 0, tags: 0, pattern: 0, soft: 0 } satisfies Record<keyof CacheEvictOptions, 0>),
);

const isStrings = (v: unknown): boolean => Array.isArray(v) && v.every((s) => typeof s === 'string');

/**
 * What a decorator checks at declaration, for its error messages: `@Cacheable on Catalog.find`. A misspelled option
 * (`tag`, `tll`, `@CacheEvict({ key })`) is refused, and so is a `tags` string, which was spread into one tag per
 * character: nothing was evicted.
 */
function declaration<O>(
  decorator: string,
  options: O,
  known: ReadonlySet<string>,
  check: (options: O, fail: (problem: string) => never) => void,
  decorate: MethodDecorator,
): MethodDecorator {
  return (target, propertyKey, descriptor) => {
    const owner = typeof target === 'function' ? target.name : target.constructor.name;
    const where = `${decorator} on ${owner}.${String(propertyKey)}`;
    if (options === null || typeof options !== 'object')
      throw new InvalidOptionsError(`${where}: options must be an object`);
    refuseUnknown(options, known, where);
    check(options, (problem) => {
      throw new InvalidOptionsError(`${where}: ${problem}`);
    });
    return decorate(target, propertyKey, descriptor);
  };
}

/**
 * The decorator that records `operation`, refusing at declaration (when the class is defined) options that getOrSet
 * or set would refuse on every call: a duration past 100 years, 0 or less (or below 0 where 0 is allowed), not a
 * finite number; a shouldCache that is not a function.
 */
function checked(decorator: string, operation: CacheOperation & { kind: 'cacheable' | 'put' }): MethodDecorator {
  const decorate = createInterceptedMethodDecorator<CacheOperation[]>(CACHE_METADATA, decorator, [operation], merge);
  return declaration(
    decorator,
    operation.options,
    CACHEABLE_OPTIONS,
    (options: CacheableOptions, fail) => {
      for (const [name, allowZero] of DURATIONS) {
        const value: unknown = options[name];
        if (value === undefined || (name === 'ttl' && typeof value === 'function')) continue;
        if (!isDuration(value, allowZero)) fail(`${name} ${durationProblem(value, allowZero)}`);
      }
      if (options.shouldCache !== undefined && typeof options.shouldCache !== 'function')
        fail('shouldCache must be a function of the result');
      const { key, tags, resultTags } = options;
      if (key !== undefined && typeof key !== 'string' && typeof key !== 'function')
        fail('key must be a string or a function of the arguments');
      if (tags !== undefined && typeof tags !== 'function' && !isStrings(tags))
        fail('tags must be an array of strings or a function of the arguments');
      if (resultTags !== undefined && typeof resultTags !== 'function')
        fail('resultTags must be a function of the result');
    },
    decorate,
  );
}

/**
 * Caches the method's result (through CacheService.getOrSet: single-flight, stampede lock, SWR, tags). Works on any
 * provider or controller method; the decorated method becomes async. Its durations are checked at declaration.
 */
export function Cacheable(options: CacheableOptions = {}): MethodDecorator {
  return checked('@Cacheable', { kind: 'cacheable', options });
}

/** Always runs the method and stores its result under the key (refreshing the cache on writes). */
export function CachePut(options: CachePutOptions = {}): MethodDecorator {
  return checked('@CachePut', { kind: 'put', options });
}

/** After the method succeeds, deletes keys, invalidates tags and/or a pattern. Nothing is evicted when it throws. */
export function CacheEvict(options: CacheEvictOptions): MethodDecorator {
  const decorate = createInterceptedMethodDecorator<CacheOperation[]>(
    CACHE_METADATA,
    '@CacheEvict',
    [{ kind: 'evict', options }],
    merge,
  );
  return declaration(
    '@CacheEvict',
    options,
    EVICT_OPTIONS,
    (o: CacheEvictOptions, fail) => {
      const { keys, tags, pattern, soft } = o;
      if (keys === undefined && tags === undefined && pattern === undefined) fail('give keys, tags or pattern');
      if (keys !== undefined && typeof keys !== 'string' && typeof keys !== 'function' && !isStrings(keys))
        fail('keys must be a string, an array of strings or a function of the arguments');
      if (tags !== undefined && typeof tags !== 'function' && !isStrings(tags))
        fail('tags must be an array of strings or a function of the arguments');
      if (pattern !== undefined && typeof pattern !== 'string' && typeof pattern !== 'function')
        fail('pattern must be a string or a function of the arguments');
      if (soft !== undefined && typeof soft !== 'boolean') fail('soft must be true or false');
    },
    decorate,
  );
}
