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
