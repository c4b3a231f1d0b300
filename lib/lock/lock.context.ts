import { AsyncLocalStorage } from 'node:async_hooks';
import type { Lock } from './lock.js';

/** The lock a `using` callback or a `@WithLock` method runs under, and the signal that aborts when it is lost. */
export interface CurrentLock {
  readonly lock: Lock;
  readonly signal: AbortSignal;
}

/**
 * Carries the current lock through the async calls of a locked section: `@WithLock` methods keep their own signature
 * (their callers pass the arguments, so a parameter cannot carry the lock), and functions they call can read it too.
 */
export const lockContext = new AsyncLocalStorage<CurrentLock>();
