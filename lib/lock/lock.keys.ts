// The keys of a lock and the grant fields of a wait (acquire-many.lua); lock.backend.ts re-exports them.

/** The keys of one resource; they share a hash tag so one script may touch them together on a cluster. */
export interface LockKeys {
  readonly resource: string;
  readonly lock: string;
  readonly fence: string;
  /** The services waiting for the lock, oldest first, with the token a release grants it to (see LockWakeups). */
  readonly waiters: string;
  /**
   * The keys of a lock a release granted to this service (LockGrants): others wait for it, so its release passes it
   * on, and goes early (LockCalls.release).
   */
  readonly contended?: boolean;
}

/** The keys of the lock `lock` (a key built for `resource`). */
export const lockKeysOf = (resource: string, lock: string): LockKeys => ({
  resource,
  lock,
  fence: `${lock}:fence`,
  waiters: `${lock}:waiters`,
});

/**
 * The grant field (acquire-many.lua) of the attempt that begins a wait a release grants the lock to: the wait's token
 * and ttl are that attempt's, and it joins the waiting services.
 */
export const FIRST_ATTEMPT_GRANT = '+';

/** The grant field of a later attempt of a wait: its token and ttl (it also takes over a grant already made to it). */
export const grantField = (token: string, ttl: number): string => `${token} ${ttl}`;

/** The wait's token of a later attempt's grant field (see grantField). */
export const grantTokenOf = (field: string): string => field.slice(0, field.indexOf(' '));
