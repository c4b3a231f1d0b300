export {
  LockService,
  type AcquireOptions,
  type UsingOptions,
  type TryAcquireOptions,
  type LockedFunction,
} from './lock.service.js';
export { Lock } from './lock.js';
export { WithLock, type WithLockOptions } from './lock.decorators.js';
export type { LockOptions, LockRetryOptions } from './lock.options.js';
export type { AutoExtendOptions } from './lock.auto-extend.js';
export type { CurrentLock } from './lock.context.js';
export type {
  LockEvents,
  LockEventMap,
  LockEventName,
  LockEventInfo,
  LockLostEventInfo,
  LockBusyEventInfo,
} from './lock.events.js';
export { Semaphore, type SemaphoreOptions } from './lock.semaphore.js';
export { MultiLock } from './lock.multi.js';
export type { LeaseAcquireOptions } from './lock.lease.js';
