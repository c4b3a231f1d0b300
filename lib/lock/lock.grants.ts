import { FEATURES, type KeyBuilder } from '../common/keys.js';
import { FIRST_ATTEMPT_GRANT, grantField, type LockBackend, type LockKeys, lockKeysOf } from './lock.backend.js';
import type { Lock } from './lock.js';
import type { LocalWaiters } from './lock.waiters.js';

/** A service's wait for one lock: a release grants the lock to its token, with its ttl (release-many.lua). */
export interface Wait {
  readonly keys: LockKeys;
  readonly token: string;
  readonly ttl: number;
  /** Epoch ms before its first attempt was sent: a grant comes later, so the lock is ours until at least this + ttl. */
  readonly since: number;
}

/** A grant for the wait whose attempt is in flight, received before that attempt's (busy) reply. */
interface EarlyGrant {
  readonly wait: Wait;
  readonly fence: number;
}

/** What LockGrants needs from its LockService. */
export interface GrantContext {
  readonly backend: LockBackend;
  /** The service's callers waiting for a lock, oldest first. */
  readonly waiters: LocalWaiters;
  /** Lock keys an attempt of the service is asking Redis for right now. */
  readonly inFlight: ReadonlySet<string>;
  /** A lock the service now holds: reported, and known as held there. */
  hold(keys: LockKeys, token: string, fence: number, expiresAt: number, ttl: number): Lock;
  warn(message: string): void;
}

/**
 * At most this many lock keys are remembered (with their early grants, at most one each); past it they are forgotten
 * and their grants released when they come.
 */
const MAX_WAITING_KEYS = 10_000;

/**
 * On one server with `lock.wakeOnRelease` (the default there): the lock a release passes to this service (a grant).
 * A wait of the service joins the lock's waiting services with the token of the attempt that began it (its first busy
 * attempt registers it, later ones keep its place); the release that frees the lock sets it to the oldest waiting
 * service's token and tells that service 'fence token lock key' on its grant channel (release-many.lua), so the waiter
 * neither polls nor races the releasing caller, and the lock is never free in between. This keeps the wait per lock
 * key, shared by the service's callers of that lock. A grant for it goes to the attempt in flight (with its busy
 * reply), else to the oldest local waiter; an attempt that finds the lock already granted to the wait (its message
 * lost, or still on its way) takes it over in Redis (acquire-many.lua), so a lost grant costs one poll, as a lost wake
 * does. A grant nobody here wants (the callers gave up, a wait abandoned after a failed attempt) is released at once,
 * which passes the lock on.
 */
export class LockGrants {
  private readonly waiting = new Map<string, Wait>();
  private readonly early = new Map<string, EarlyGrant>();
  /** Every lock key starts with this (`<prefix>lock:{`): a grant for any other key is not ours. */
  private readonly lockKeyHead: string;

  constructor(
    keys: KeyBuilder,
    private readonly service: GrantContext,
  ) {
    this.lockKeyHead = keys.taggedTrusted(FEATURES.lock, '').slice(0, -1);
  }

  /**
   * The grant field of an attempt about to be sent with `token` and `ttl`: the service's wait for the lock
   * (grantField), or FIRST_ATTEMPT_GRANT when there is none and this attempt begins it (its token and ttl then the ones
   * a grant carries).
   */
  register(keys: LockKeys, token: string, ttl: number): string {
    const wait = this.waiting.get(keys.lock);
    if (wait) return grantField(wait.token, wait.ttl);
    if (this.waiting.size >= MAX_WAITING_KEYS) {
      this.waiting.clear();
      this.early.clear();
    }
    this.waiting.set(keys.lock, { keys, token, ttl, since: Date.now() });
    return FIRST_ATTEMPT_GRANT;
  }

  /**
   * The lock was acquired, nobody here waits for it any more, or an attempt failed (it may have taken over a grant):
   * the wait is over, and a grant that still comes for it is released.
   */
  forget(lockKey: string): void {
    this.waiting.delete(lockKey);
    this.early.delete(lockKey);
  }

  /** A caller gave up: when nobody else here waits for the lock, a grant that still comes is released. */
  stopWaiting(lockKey: string): void {
    if (!this.service.waiters.first(lockKey) && !this.service.inFlight.has(lockKey)) this.forget(lockKey);
  }

  /**
   * A release granted this service `lockKey` for `token`: when it is the wait's, the attempt in flight takes it, or
   * else the oldest local waiter. Nobody here wants it (the callers gave up, a wait given up): it is released at once,
   * which passes it to the next waiting service.
   */
  received(lockKey: string, token: string, fence: number): void {
    const latest = this.waiting.get(lockKey);
    const wait = latest?.token === token ? latest : undefined;
    // The attempt in flight takes it with its busy reply (or took it over in Redis, and then a release is a no-op).
    if (wait && this.service.inFlight.has(lockKey)) {
      this.early.set(lockKey, { wait, fence });
      return;
    }
    const waiter = wait && this.service.waiters.first(lockKey);
    if (!wait || !waiter) {
      const keys = wait?.keys ?? (lockKey.startsWith(this.lockKeyHead) ? lockKeysOf(lockKey, lockKey) : undefined);
      if (wait) this.forget(lockKey);
      // not held by `token` any more (taken over by an attempt, expired): nothing to release
      if (keys) this.service.backend.release(keys, token).catch(() => undefined);
      else
        this.service.warn(`lock grants: a grant for "${lockKey.slice(0, 200)}", not a lock of this service; ignored`);
      return;
    }
    this.forget(lockKey);
    const deliver = waiter.claim();
    this.lockFor(wait, fence, waiter.ttl).then(deliver, () => deliver(null)); // null: it tries again itself
  }

  /**
   * The grant that arrived for the wait while its attempt was in flight (once), as a lock for a caller that asked for
   * `ttl`; null when it cannot be extended to a full ttl (the caller tries again, as after a busy attempt).
   */
  takeEarly(lockKey: string, ttl: number): Promise<Lock | null> | undefined {
    const grant = this.early.get(lockKey);
    if (!grant) return undefined;
    this.forget(lockKey);
    return this.lockFor(grant.wait, grant.fence, ttl).catch(() => null);
  }

  /**
   * The lock a release granted to `wait`, for a caller that asked for `ttl`. The grant set the wait's ttl when it
   * happened, some time after the wait's first attempt was sent: the lock is safely ours until `since + ttl`. When
   * that is short of what the caller asked for (another ttl, or a wait longer than a tenth of the ttl), it is extended
   * first (owner-checked: a grant whose message came too late to be still held is never used).
   */
  private async lockFor(wait: Wait, fence: number, ttl: number): Promise<Lock> {
    const { keys, token } = wait;
    const { backend } = this.service;
    let expiresAt = wait.since + wait.ttl;
    if (ttl !== wait.ttl || Date.now() - wait.since > ttl / 10) {
      try {
        expiresAt = await backend.extend(keys, token, ttl);
      } catch (err) {
        backend.release(keys, token).catch(() => undefined);
        throw err;
      }
    }
    return this.service.hold(keys, token, fence, expiresAt, ttl);
  }
}
