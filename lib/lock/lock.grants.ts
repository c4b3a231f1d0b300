import { FEATURES, type KeyBuilder } from '../common/keys.js';
import { type LockBackend, type LockKeys, lockKeysOf } from './lock.backend.js';
import type { Lock } from './lock.js';
import type { LocalWaiters } from './lock.waiters.js';

/** The attempt a service waits with for one lock: a release grants the lock to its token (release-many.lua). */
export interface WaitingAttempt {
  readonly keys: LockKeys;
  readonly token: string;
  readonly ttl: number;
  /** Epoch ms before the attempt was sent: a grant comes later, so the lock is ours until at least this + ttl. */
  readonly sentAt: number;
}

/** A grant for the attempt in flight, received before its (busy) reply. */
interface EarlyGrant {
  readonly attempt: WaitingAttempt;
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
 * A busy attempt joins the lock's waiting services with its token; the release that frees the lock sets it to the
 * oldest waiting service's token and tells that service 'fence token lock key' on its grant channel
 * (release-many.lua), so the waiter neither polls nor races the releasing caller, and the lock is never free in
 * between. This keeps, per lock key, the token of this service's latest attempt. A grant that comes while an attempt
 * is in flight goes to that attempt: when it is for its token, with its busy reply; when it is for the previous
 * attempt's token, that attempt takes it over in Redis (acquire-many.lua). Otherwise a grant for the latest token
 * goes to the oldest local waiter, and any other (a caller that gave up, an earlier attempt's token) is released at
 * once, which passes the lock on. The same take-over makes a grant whose message was lost (the subscriber connection
 * down) cost one poll, as a lost wake does.
 */
export class LockGrants {
  private readonly waiting = new Map<string, WaitingAttempt>();
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
   * The grant field of an attempt about to be sent (acquire-many.lua): '+', or the token of this service's previous
   * attempt for the lock. The attempt's token becomes the one a release grants to.
   */
  register(keys: LockKeys, token: string, ttl: number): string {
    const previous = this.waiting.get(keys.lock);
    if (!previous && this.waiting.size >= MAX_WAITING_KEYS) {
      this.waiting.clear();
      this.early.clear();
    }
    this.waiting.set(keys.lock, { keys, token, ttl, sentAt: Date.now() });
    return previous ? previous.token : '+';
  }

  /** The lock was acquired, or nobody here waits for it any more: a grant that still comes is released. */
  forget(lockKey: string): void {
    this.waiting.delete(lockKey);
    this.early.delete(lockKey);
  }

  /** A caller gave up: when nobody else here waits for the lock, a grant that still comes is released. */
  stopWaiting(lockKey: string): void {
    if (!this.service.waiters.first(lockKey) && !this.service.inFlight.has(lockKey)) this.forget(lockKey);
  }

  /**
   * A release granted this service `lockKey` for `token`: the attempt in flight takes it, or else the oldest local
   * waiter. Nobody here wants it (the caller gave up, an earlier attempt's token): it is released at once, which
   * passes it to the next waiting service.
   */
  received(lockKey: string, token: string, fence: number): void {
    const latest = this.waiting.get(lockKey);
    const attempt = latest?.token === token ? latest : undefined;
    if (this.service.inFlight.has(lockKey)) {
      // The attempt in flight takes it: with its busy reply when the grant is for its token, else by taking over the
      // grant to its previous attempt (acquire-many.lua). Released here, it could run first and pass the lock on.
      if (attempt) this.early.set(lockKey, { attempt, fence });
      return;
    }
    const waiter = attempt && this.service.waiters.first(lockKey);
    if (!attempt || !waiter) {
      const keys = attempt?.keys ?? (lockKey.startsWith(this.lockKeyHead) ? lockKeysOf(lockKey, lockKey) : undefined);
      this.forget(lockKey);
      // not held by `token` any more (taken over by a later attempt, expired): nothing to release
      if (keys) this.service.backend.release(keys, token).catch(() => undefined);
      else
        this.service.warn(`lock grants: a grant for "${lockKey.slice(0, 200)}", not a lock of this service; ignored`);
      return;
    }
    this.forget(lockKey);
    const deliver = waiter.claim();
    this.lockFor(attempt, fence, waiter.ttl).then(deliver, () => deliver(null)); // null: it tries again itself
  }

  /**
   * The grant that arrived for `token` while its attempt was in flight (once), as a lock for a caller that asked for
   * `ttl`; null when it cannot be extended to a full ttl (the caller tries again, as after a busy attempt).
   */
  takeEarly(lockKey: string, token: string, ttl: number): Promise<Lock | null> | undefined {
    const grant = this.early.get(lockKey);
    if (grant?.attempt.token !== token) return undefined;
    this.forget(lockKey);
    return this.lockFor(grant.attempt, grant.fence, ttl).catch(() => null);
  }

  /**
   * The lock a release granted to `attempt`, for a caller that asked for `ttl`. The grant set the attempt's ttl when
   * it happened, some time after the attempt was sent: the lock is safely ours until `sentAt + ttl`. When that is
   * short of what the caller asked for (another ttl, or a long wait since the attempt), it is extended first.
   */
  private async lockFor(attempt: WaitingAttempt, fence: number, ttl: number): Promise<Lock> {
    const { keys, token } = attempt;
    const { backend } = this.service;
    let expiresAt = attempt.sentAt + attempt.ttl;
    if (ttl !== attempt.ttl || Date.now() - attempt.sentAt > ttl / 10) {
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
