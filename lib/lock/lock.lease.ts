import { LockLostError, LockNotAcquiredError } from '../common/errors.js';
import type { FailurePolicy } from '../common/failure-policy.js';
import type { KeyBuilder } from '../common/keys.js';
import type { RedisClient } from '../common/lua-script.js';
import { type AutoExtendOptions, autoExtendOptions } from './lock.auto-extend.js';
import { describeAttempts, nextPause, planRetries } from './lock.attempts.js';
import type { LockBackend, LockKeys } from './lock.backend.js';
import type { LockEvents } from './lock.events.js';
import type { Lock, LockOwner } from './lock.js';
import type { LocalWaiters } from './lock.waiters.js';
import type { LockRetryOptions, ResolvedLockOptions } from './lock.options.js';
import type { QuorumCalls } from './lock.quorum.js';
import type { LockShutdown } from './lock.shutdown.js';

/** What semaphores and multi-resource locks share with the LockService that made them. */
export interface LeaseContext {
  /** The main connection (one server, Sentinel or a cluster); unused with a quorum. */
  readonly client: RedisClient;
  readonly quorum: QuorumCalls | undefined;
  readonly keys: KeyBuilder;
  readonly options: ResolvedLockOptions;
  readonly commandTimeout: number;
  /** The lock service's failure policy (fail closed): single-server calls go through `failures.guard`. */
  readonly failures: FailurePolicy;
  readonly events: LockEvents;
  /** The service's app.close(): ends waits and auto-extensions, refuses later acquisitions. */
  readonly shutdown: LockShutdown;
  warn(message: string): void;
  runHolding<T, L extends Lock>(
    lock: L,
    fn: (signal: AbortSignal, lock: L) => Promise<T> | T,
    options?: { extensionThreshold?: number },
  ): Promise<T>;
}

/** Options of one acquisition of a semaphore permit or a multi-resource lock (like LockService.acquire's). */
export interface LeaseAcquireOptions {
  /** ms; default the semaphore's / `lock.ttl`. */
  ttl?: number;
  retry?: LockRetryOptions;
  /** Keep retrying for at most this many ms (replaces retry.count). 0: one attempt. */
  waitMs?: number;
  /** Keep it alive until released (like `lock.startAutoExtend(options)`). */
  autoExtend?: boolean | AutoExtendOptions;
  /** For `using`, and `acquire` with `autoExtend` (unless it gives its own): extend when this many ms are left. */
  extensionThreshold?: number;
}

/** A semaphore's `using` and `usingAll`: no `autoExtend`, they keep the lease alive themselves. */
export type LeaseUsingOptions = Omit<LeaseAcquireOptions, 'autoExtend'>;

/**
 * The LockOwner of a semaphore's permits or of multi-resource locks: a release hands over to a local waiter when
 * `handOver` can (semaphores on one server), else wakes the oldest local waiter, who then asks Redis at once.
 */
export function leaseOwner(
  ctx: LeaseContext,
  backend: LockBackend,
  waiters: LocalWaiters,
  handOver: LockOwner['handOver'] = async () => false,
  /** The waiter queue a release wakes (default: the lock key's). */
  wakeKey?: string,
): LockOwner {
  return {
    backend,
    released: (keys) => waiters.wakeOne(wakeKey ?? keys.lock),
    handOver,
    event: (name, lock, reason) =>
      name === 'lost'
        ? ctx.events.report(name, () => ({ ...lock.info, reason: reason ?? new LockLostError('lost') }))
        : ctx.events.report(name, () => lock.info),
    extensionThreshold: ctx.options.extensionThreshold,
    warn: (message) => ctx.warn(message),
    shutdown: ctx.shutdown,
  };
}

/**
 * Tries `attempt` until it returns a lease, pausing `retry.delay` + jitter between attempts (or less when a local
 * holder releases, or not at all when it hands its lease over), for `retry.count` more attempts or until `waitMs`.
 * Throws LockNotAcquiredError then.
 */
export async function acquireWithRetries<L extends Lock>(
  ctx: LeaseContext,
  kind: 'multi' | 'semaphore',
  resource: string,
  options: LeaseAcquireOptions,
  wait: { waiters: LocalWaiters; key: string; ttl: number },
  attempt: () => Promise<L | null>,
): Promise<L> {
  const plan = planRetries(options, ctx.options.retry);
  const ticket = wait.waiters.ticket(); // its place among this process's waiters, kept across its pauses (FIFO)
  for (let n = 0; ; n++) {
    const lease = await attempt();
    if (lease) return started(lease, options);
    const pause = nextPause(plan, n);
    if (pause === undefined) {
      ctx.events.report('busy', () => ({ kind, resource, attempts: n + 1 }));
      throw new LockNotAcquiredError(
        `${kind === 'semaphore' ? `every permit of the semaphore "${resource}"` : `a lock of "${resource}"`} is held ` +
          `by another owner (${describeAttempts(plan, n)})`,
      );
    }
    const handed = (await wait.waiters.pause(wait.key, pause, wait.ttl, ticket)) as L | null;
    if (handed) return started(handed, options);
  }
}

function started<L extends Lock>(lease: L, options: LeaseAcquireOptions): L {
  if (options.autoExtend) lease.startAutoExtend(autoExtendOptions(options));
  return lease;
}

export type { LockKeys };
