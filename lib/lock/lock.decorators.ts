import { InvalidOptionsError } from '../common/errors.js';
import { durationProblem, isDuration, refuseUnknown } from '../common/option-checks.js';
import { createInterceptedMethodDecorator } from '../common/method-interception.js';
import { checkExtensionThreshold } from './lock.auto-extend.js';
import { LOCK_METADATA } from './lock.constants.js';
import { WITH_LOCK } from './lock.option-names.js';

export interface WithLockOptions {
  /** The lock's name, or a function of the method's arguments that returns it (`(orderId) => \`order:${orderId}\``). */
  resource: string | ((...args: never[]) => string);
  /** ms; default `lock.ttl`. Extended automatically while the method runs. */
  ttl?: number;
  /** How long to wait for a busy lock (ms). Default: `lock.retry` with 'throw', 0 (one attempt) with 'skip'. */
  waitMs?: number;
  /**
   * When the lock stays busy: 'throw' LockNotAcquiredError (default), or 'skip' the call and return undefined
   * (cron deduplication: only one app instance runs the job).
   */
  onBusy?: 'throw' | 'skip';
  /** Extend when this many ms or fewer are left (default `lock.extensionThreshold`, else 2/3 of the ttl). */
  extensionThreshold?: number;
}

/**
 * Runs the method while holding a distributed lock (auto-extended, released afterwards). Inside it (and in what it
 * calls), `LockService.current()` returns `{ lock, signal }`: the fencing token and the signal that aborts when the
 * lock is lost. Works on any static provider
 * or controller method of an app that imports RedisToolkitModule; the method becomes async. Outside every other
 * toolkit decorator: the lock is taken before the cache is consulted.
 */
export function WithLock(options: WithLockOptions): MethodDecorator {
  checkWithLockOptions(options);
  return createInterceptedMethodDecorator(LOCK_METADATA, '@WithLock', options);
}

export function checkWithLockOptions(options: WithLockOptions): void {
  if (options === null || typeof options !== 'object')
    throw new InvalidOptionsError('@WithLock({ resource, ... }) needs an options object');
  // checked when the class is defined (the decorator runs then), so a misspelled key stops the start
  refuseUnknown(options, WITH_LOCK, '@WithLock');
  const { resource, ttl, waitMs, onBusy, extensionThreshold } = options;
  if (typeof resource !== 'function' && (typeof resource !== 'string' || resource.length === 0)) {
    throw new InvalidOptionsError('@WithLock: resource must be a non-empty string or a function of the arguments');
  }
  if (ttl !== undefined && !isDuration(ttl)) throw new InvalidOptionsError(`@WithLock: ttl ${durationProblem(ttl)}`);
  if (waitMs !== undefined && (typeof waitMs !== 'number' || !Number.isFinite(waitMs) || waitMs < 0)) {
    throw new InvalidOptionsError(
      `@WithLock: waitMs must be a non-negative number of milliseconds, got ${String(waitMs)}`,
    );
  }
  if (ttl !== undefined) {
    // against the ttl the lock is taken with (whole ms, see ttlOf), as each call's startAutoExtend would: refused here
    // rather than by every call
    checkExtensionThreshold(extensionThreshold, Math.ceil(ttl), '@WithLock');
  } else if (
    extensionThreshold !== undefined &&
    (typeof extensionThreshold !== 'number' || !(extensionThreshold > 0) || !Number.isFinite(extensionThreshold))
  ) {
    throw new InvalidOptionsError(
      `@WithLock: extensionThreshold must be a positive number of milliseconds, got ${String(extensionThreshold)}`,
    );
  }
  if (onBusy !== undefined && onBusy !== 'throw' && onBusy !== 'skip') {
    throw new InvalidOptionsError(`@WithLock: onBusy must be 'throw' or 'skip', got ${JSON.stringify(onBusy)}`);
  }
}
