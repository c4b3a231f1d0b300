/**
 * The option names each lock API takes. A key not among them (`waitMS`, `retry: { cout }`) would be ignored and
 * change what the call does without a word, so it is an InvalidOptionsError naming the nearest known one: per call
 * for the service's methods, when the class is defined for @WithLock.
 */
import { InvalidOptionsError } from '../common/errors.js';
import { kindOf, refuseUnknown } from '../common/option-checks.js';
import type { AutoExtendOptions } from './lock.auto-extend.js';
import type { WithLockOptions } from './lock.decorators.js';
import type { LeaseAcquireOptions, LeaseUsingOptions } from './lock.lease.js';
import type { LockRetryOptions } from './lock.options.js';
import type { SemaphoreOptions } from './lock.semaphore.js';
import type { RunHoldingOptions } from './lock.holding.js';
import type { AcquireOptions, TryAcquireOptions, UsingOptions } from './lock.types.js';

/** Every key of `T`, no more: tsc fails here when an option is added to (or removed from) the interface alone. */
const names = <T>(keys: Record<keyof Required<T>, true>): ReadonlySet<string> => new Set(Object.keys(keys));

export const ACQUIRE = names<AcquireOptions>({
  ttl: true,
  retry: true,
  waitMs: true,
  extensionThreshold: true,
  autoExtend: true,
});
export const USING = names<UsingOptions>({
  ttl: true,
  retry: true,
  waitMs: true,
  maxHoldMs: true,
  extensionThreshold: true,
});
export const TRY_ACQUIRE = names<TryAcquireOptions>({ ttl: true, autoExtend: true });
/** A semaphore's acquire, acquireAll. */
export const LEASE_ACQUIRE = names<LeaseAcquireOptions>({
  ttl: true,
  retry: true,
  waitMs: true,
  extensionThreshold: true,
  autoExtend: true,
});
/** A semaphore's using, usingAll. */
export const LEASE_USING = names<LeaseUsingOptions>({ ttl: true, retry: true, waitMs: true, extensionThreshold: true });
/** A semaphore's tryAcquire, tryAcquireAll. */
export const LEASE_TRY = names<Pick<LeaseAcquireOptions, 'ttl' | 'autoExtend'>>({ ttl: true, autoExtend: true });
export const SEMAPHORE = names<SemaphoreOptions>({ limit: true, ttl: true });
export const HOLDING = names<RunHoldingOptions>({ maxHoldMs: true, extensionThreshold: true });
export const AUTO_EXTEND = names<AutoExtendOptions>({ extensionThreshold: true, onLost: true });
export const WITH_LOCK = names<WithLockOptions>({
  resource: true,
  ttl: true,
  waitMs: true,
  onBusy: true,
  extensionThreshold: true,
});
const RETRY = names<LockRetryOptions>({ count: true, delay: true, jitter: true });

/**
 * Refuses `options` that are not an object, or hold a key not in `known`, and likewise the `retry` and `autoExtend`
 * objects in them. Absent options pass (the defaults apply). A loop over the 1-5 keys given: tens of ns a call.
 */
export function checkNames(options: unknown, known: ReadonlySet<string>, where: string): void {
  if (options === undefined) return;
  if (options === null || typeof options !== 'object')
    throw new InvalidOptionsError(`${where}: options must be an object, got ${kindOf(options)}`);
  refuseUnknown(options, known, where);
  const { retry, autoExtend } = options as { retry?: unknown; autoExtend?: unknown };
  if (typeof retry === 'object' && retry !== null) refuseUnknown(retry, RETRY, `${where}: retry`);
  if (typeof autoExtend === 'object' && autoExtend !== null)
    refuseUnknown(autoExtend, AUTO_EXTEND, `${where}: autoExtend`);
}
