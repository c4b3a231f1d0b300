import { FEATURES, type KeyBuilder } from '../common/keys.js';
import { type LockKeys, lockKeysOf } from './lock.backend.js';

/** The attempt a service waits with for one lock: a release grants the lock to its token (release-many.lua). */
export interface WaitingAttempt {
  readonly keys: LockKeys;
  readonly token: string;
  readonly ttl: number;
  /** Epoch ms before the attempt was sent: a grant comes later, so the lock is ours until at least this + ttl. */
  readonly sentAt: number;
}

/** A grant for the attempt in flight, received before its (busy) reply. */
export interface EarlyGrant {
  readonly attempt: WaitingAttempt;
  readonly fence: number;
}

/** At most this many lock keys are remembered; past it they are forgotten and their grants released when they come. */
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

  constructor(keys: KeyBuilder) {
    this.lockKeyHead = keys.taggedTrusted(FEATURES.lock, '').slice(0, -1);
  }

  /**
   * The grant field of an attempt about to be sent (acquire-many.lua): '+', or the token of this service's previous
   * attempt for the lock. The attempt's token becomes the one a release grants to.
   */
  register(keys: LockKeys, token: string, ttl: number): string {
    const previous = this.waiting.get(keys.lock);
    if (!previous && this.waiting.size >= MAX_WAITING_KEYS) this.waiting.clear();
    this.waiting.set(keys.lock, { keys, token, ttl, sentAt: Date.now() });
    return previous ? previous.token : '+';
  }

  /** The lock was acquired, or nobody here waits for it any more: a grant that still comes is released. */
  forget(lockKey: string): void {
    this.waiting.delete(lockKey);
    this.early.delete(lockKey);
  }

  /** The attempt waiting with `token` for `lockKey`, if it is the latest one. */
  match(lockKey: string, token: string): WaitingAttempt | undefined {
    const attempt = this.waiting.get(lockKey);
    return attempt?.token === token ? attempt : undefined;
  }

  /** Keeps a grant for the attempt in flight; its caller takes it when the busy reply comes (takeEarly). */
  keepEarly(attempt: WaitingAttempt, fence: number): void {
    this.early.set(attempt.keys.lock, { attempt, fence });
  }

  /** The grant that arrived for `token` while its attempt was in flight (once). */
  takeEarly(lockKey: string, token: string): EarlyGrant | undefined {
    const grant = this.early.get(lockKey);
    if (grant?.attempt.token !== token) return undefined;
    this.forget(lockKey);
    return grant;
  }

  /** The keys of a lock of this service's prefix, for releasing a grant nobody here waits for; undefined if foreign. */
  keysOf(lockKey: string): LockKeys | undefined {
    if (!lockKey.startsWith(this.lockKeyHead)) return undefined;
    return lockKeysOf(lockKey, lockKey);
  }
}
