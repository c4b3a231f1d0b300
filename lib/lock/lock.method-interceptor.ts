import { Inject, Injectable } from '@nestjs/common';
import { InvalidKeyError, LockNotAcquiredError } from '../common/errors.js';
import type { InterceptedMethod, MethodInterceptor, NextCall } from '../common/method-interception.js';
import { checkExtensionThreshold } from './lock.auto-extend.js';
import { LOCK_METADATA } from './lock.constants.js';
import { checkWithLockOptions, type WithLockOptions } from './lock.decorators.js';
import type { Lock } from './lock.js';
import { LOCK_OPTIONS, type ResolvedLockOptions } from './lock.options.js';
import { LockService } from './lock.service.js';

export { LOCK_METADATA };

/** Runs methods marked @WithLock inside `LockService.using` (order 0: outside the cache). */
@Injectable()
export class LockMethodInterceptor implements MethodInterceptor<WithLockOptions> {
  readonly metadataKey = LOCK_METADATA;
  readonly decoratorName = '@WithLock';
  readonly order = 0;

  constructor(
    private readonly locks: LockService,
    @Inject(LOCK_OPTIONS) private readonly options: ResolvedLockOptions,
  ) {}

  prepare(target: InterceptedMethod, meta: WithLockOptions): (args: unknown[], next: NextCall) => Promise<unknown> {
    checkWithLockOptions(meta);
    const { resource, ttl, waitMs, onBusy = 'throw', extensionThreshold } = meta;
    const where = `${target.className}.${target.methodName}`;
    if (ttl === undefined) this.checkModuleTtl(extensionThreshold, where);
    const resourceOf = (args: unknown[]): string => {
      if (typeof resource === 'string') return resource;
      const name: unknown = (resource as (...a: unknown[]) => unknown).apply(target.instance, args);
      if (typeof name !== 'string')
        throw new InvalidKeyError(`@WithLock on ${where}: resource() must return a string, got ${typeof name}`);
      return name;
    };
    return async (args, next) => {
      const name = resourceOf(args);
      if (onBusy === 'skip') {
        let lock: Lock | null;
        try {
          lock = waitMs ? await this.locks.acquire(name, { ttl, waitMs }) : await this.locks.tryAcquire(name, { ttl });
        } catch (err) {
          if (err instanceof LockNotAcquiredError) return undefined;
          throw err;
        }
        return lock ? this.locks.runHolding(lock, () => next(), { extensionThreshold }) : undefined;
      }
      return this.locks.using(name, { ttl, waitMs, extensionThreshold }, () => next());
    };
  }

  /**
   * Without a ttl of its own the method's lock takes `lock.ttl`, which the decorator cannot know when the class is
   * defined (it checks a ttl of its own then): a threshold not below it would fail every call, so the start fails
   * here, at bootstrap.
   */
  private checkModuleTtl(extensionThreshold: number | undefined, where: string): void {
    checkExtensionThreshold(
      extensionThreshold,
      this.options.ttl,
      `@WithLock on ${where} (no ttl of its own: lock.ttl)`,
    );
  }
}
