import { Injectable, Logger } from '@nestjs/common';
import { InvalidOptionsError, RedisUnavailableError } from '../common/errors.js';
import { KeyBuilder } from '../common/keys.js';
import type { InterceptedMethod, MethodInterceptor, NextCall } from '../common/method-interception.js';
import { CACHE_METADATA } from './cache.constants.js';
import type { CacheableOptions, CacheEvictOptions, CacheOperation } from './cache.decorators.js';
import { stableStringify } from './cache.entry.js';
import { CacheService } from './cache.service.js';

export { CACHE_METADATA };

type Step = (args: unknown[], next: NextCall) => Promise<unknown>;
type Loose<T> = (...args: unknown[]) => T;

/** Runs methods marked @Cacheable / @CachePut / @CacheEvict (applied by the MethodInterceptionExplorer). */
@Injectable()
export class CacheMethodInterceptor implements MethodInterceptor<CacheOperation[]> {
  readonly metadataKey = CACHE_METADATA;
  readonly decoratorName = '@Cacheable';
  readonly order = 10;
  private readonly logger = new Logger('RedisToolkit:Cache');
  /** `Class.method` of every default key prefix handed out in this app, and the class it belongs to. */
  private readonly defaultKeyOwners = new Map<string, object>();

  constructor(private readonly cache: CacheService) {}

  prepare(target: InterceptedMethod, operations: CacheOperation[]): Step {
    const steps = operations.map((op) => this.step(target, op));
    return (args, next) => {
      const call = (index: number): Promise<unknown> =>
        index === steps.length ? next() : steps[index](args, () => call(index + 1));
      return call(0);
    };
  }

  private step(target: InterceptedMethod, op: CacheOperation): Step {
    const where = `${target.className}.${target.methodName}`;
    if (op.kind === 'evict') return this.evictStep(where, op.options);
    // durations and shouldCache were checked by the decorator, at declaration
    const { ttl, staleTtl, grace, graceBackoff } = op.options;
    const ofResult = <R>(fn: ((result: never, ...args: never[]) => R) | undefined, args: unknown[]) =>
      fn === undefined ? undefined : (value: unknown) => (fn as Loose<R>)(value, ...args);
    if (op.options.key === undefined) this.claimDefaultKey(target, where);
    const keyOf = (args: unknown[]) => this.keyOf(where, op.options.key, args);
    const decorated = `${op.kind === 'put' ? '@CachePut' : '@Cacheable'} on ${where}`;
    const tagsOf = (args: unknown[]) => {
      const fromArgs =
        tagList(decorated, 'tags', resolve<readonly string[]>(decorated, 'tags function', op.options.tags, args)) ?? [];
      const fromResult = op.options.resultTags as
        | ((result: unknown, ...args: unknown[]) => readonly string[])
        | undefined;
      return (value: unknown) => [
        ...fromArgs,
        ...(fromResult ? (tagList(decorated, 'resultTags', fromResult(value, ...args)) ?? []) : []),
      ];
    };
    const ttlOf = (args: unknown[]) => (typeof ttl === 'function' ? ofResult(ttl, args) : ttl);
    if (op.kind === 'cacheable') {
      return async (args, next) =>
        this.cache.getOrSet(keyOf(args), next, {
          ttl: ttlOf(args),
          staleTtl,
          tags: tagsOf(args),
          shouldCache: ofResult(op.options.shouldCache, args),
          grace,
          graceBackoff,
        });
    }
    return async (args, next) => {
      const key = keyOf(args);
      const value = await next();
      const shouldCache = ofResult(op.options.shouldCache, args);
      if (value === undefined || (shouldCache !== undefined && !shouldCache(value))) return value;
      const ttlMs = ttlOf(args);
      await this.cache.set(key, value, {
        ttl: typeof ttlMs === 'function' ? ttlMs(value) : ttlMs,
        staleTtl,
        grace,
        tags: tagsOf(args)(value),
      });
      return value;
    };
  }

  private evictStep(where: string, options: CacheEvictOptions): Step {
    return async (args, next) => {
      const result = await next();
      const evict = `@CacheEvict on ${where}`;
      const keys = resolve<string | readonly string[]>(evict, 'keys function', options.keys, args);
      const tags = tagList(evict, 'tags', resolve<readonly string[]>(evict, 'tags function', options.tags, args));
      const pattern = resolve<string>(evict, 'pattern function', options.pattern, args);
      if (keys !== undefined && typeof keys !== 'string' && !Array.isArray(keys))
        throw new InvalidOptionsError(`@CacheEvict on ${where}: keys must give a string or an array of strings`);
      if (pattern !== undefined && typeof pattern !== 'string')
        throw new InvalidOptionsError(`@CacheEvict on ${where}: pattern must give a string`);
      try {
        await Promise.all([
          keys === undefined ? 0 : this.cache.del(...(typeof keys === 'string' ? [keys] : keys)),
          tags === undefined || tags.length === 0
            ? 0
            : this.cache.invalidateTags(...tags, { soft: options.soft ?? false }),
          pattern === undefined ? 0 : this.cache.invalidatePattern(pattern),
        ]);
      } catch (err) {
        // The method has done its work; its caller gets the result. The failure is counted in stats().errors.
        if (!(err instanceof RedisUnavailableError)) throw err;
        this.logger.warn(`@CacheEvict on ${where} could not evict: ${err.message}`);
      }
      return result;
    };
  }

  /**
   * Default keys start with `ClassName.method:`: two different classes of one name (a `UsersService` in two modules)
   * would read each other's entries. Refused at bootstrap; the same class provided twice shares its entries rightly.
   */
  private claimDefaultKey(target: InterceptedMethod, where: string): void {
    const owner = (Object.getPrototypeOf(target.instance) as { constructor: object }).constructor;
    const previous = this.defaultKeyOwners.get(where);
    if (previous === undefined) {
      this.defaultKeyOwners.set(where, owner);
      return;
    }
    if (previous === owner) return;
    throw new InvalidOptionsError(
      `@Cacheable on ${where}: two different classes named ${target.className} both use the default key ` +
        `"${where}:<hash of the arguments>", so they would share cache entries. Give each one an explicit key ` +
        `(e.g. @Cacheable({ key: (id) => \`tenant-a:users:\${id}\` })) or rename one of the classes.`,
    );
  }

  /** `key` option (string or function of the arguments), else `ClassName.method:` + a stable hash of the arguments. */
  private keyOf(where: string, key: CacheableOptions['key'], args: unknown[]): string {
    if (typeof key === 'string') return key;
    if (typeof key === 'function') return (key as Loose<string>)(...args);
    return `${where}:${KeyBuilder.hash(stableStringify(args))}`;
  }
}

/**
 * A tags option's list as it was resolved, checked to be an array: a string (`tags: (id) => \`product:${id}\``)
 * would be spread into one tag per character, tagging or evicting nothing useful without a word.
 */
function tagList(where: string, option: string, tags: readonly string[] | undefined): readonly string[] | undefined {
  if (tags === undefined || Array.isArray(tags)) return tags;
  throw new InvalidOptionsError(`${where}: ${option} must be an array of strings, got a ${typeof tags}`);
}

/**
 * An option's value, or what its function of the arguments gives. A function that gives undefined is refused: its
 * type has no undefined (an empty list evicts or tags nothing), and a key function that read the wrong argument
 * (`(dto) => dto.id` for a call given the id) evicted nothing, leaving the stale entry served without a word.
 */
function resolve<T>(
  where: string,
  /** `keys function`, `tags function`, `pattern function`: what the error names */
  name: string,
  option: T | ((...args: never[]) => T) | undefined,
  args: unknown[],
): T | undefined {
  if (typeof option !== 'function') return option;
  const value = (option as Loose<T>)(...args);
  if (value === undefined) {
    const none = name.startsWith('pattern') ? '' : ' (give [] for none)';
    throw new InvalidOptionsError(`${where}: the ${name} gave undefined${none}`);
  }
  return value;
}
