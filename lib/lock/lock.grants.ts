import { RedisUnavailableError } from '../common/errors.js';
import { FEATURES, type KeyBuilder } from '../common/keys.js';
import { PendingLeaves } from './lock.pending-leaves.js';
import { FIRST_ATTEMPT_GRANT, grantField, type LockBackend, type LockKeys, lockKeysOf } from './lock.backend.js';
import type { Lock } from './lock.js';
import { type LeaseEnd, leaseFrom, monotonicNow, type SentAt, sentNow } from './lock.clock.js';
import type { LocalWaiters } from './lock.waiters.js';

/** A service's wait for one lock: a release grants the lock to its token, with its ttl (release-many.lua). */
export interface Wait {
  readonly keys: LockKeys;
  readonly token: string;
  readonly ttl: number;
  /** Before its first attempt was sent: a grant comes later, so the lock is ours until at least this + ttl. */
  readonly since: SentAt;
  /** Its attempts asking Redis now: a grant that arrives meanwhile is kept for their busy replies. */
  attempts: number;
}

/** An attempt of a wait, sent with `field` (acquire-many.lua's grant field). */
export interface WaitAttempt {
  readonly wait: Wait;
  readonly field: string;
}

/** A grant for the wait whose attempt is in flight, received before that attempt's (busy) reply. */
interface EarlyGrant {
  readonly wait: Wait;
  readonly fence: number;
}

/** What LockGrants needs from its LockService. */
export interface GrantContext {
  readonly backend: LockBackend;
  /** The service's id among the waiting services (LockWakeups). */
  readonly id: string;
  /** The service's callers waiting for a lock, oldest first. */
  readonly waiters: LocalWaiters;
  /** A lock the service now holds: reported, and known as held there. */
  hold(keys: LockKeys, token: string, fence: number, end: LeaseEnd, ttl: number): Lock;
  warn(message: string): void;
}

/**
 * At most this many lock keys are remembered (with their early grants, at most one each); past it they are forgotten
 * and their grants released when they come.
 */
const MAX_WAITING_KEYS = 10_000;

/**
 * On one server with `lock.wakeOnRelease` (the default there): the lock a release passes to this service (a grant). A
 * wait of the service joins the lock's waiting services with the token of the attempt that began it (its first busy
 * attempt registers it, later ones keep its place; a caller's last attempt begins none); the release that frees the
 * lock sets it to the oldest waiting service's token and tells that service 'fence token lock key' on its grant channel
 * (release-many.lua), so the waiter neither polls nor races the releasing caller, and the lock is never free in
 * between. This keeps the wait per lock key, shared by the service's `acquire` callers of that lock (a `tryAcquire`
 * waits for nothing: it has no part in it). A grant for it goes to the wait's attempt in flight (with its busy reply),
 * else to the oldest local waiter; an attempt that finds the lock already granted to the wait (its message lost, or
 * still on its way) takes it over in Redis (acquire-many.lua), so a lost grant costs one poll, as a lost wake does.
 * When the wait's last caller here stops waiting, its entry leaves the waiting services (`abandon`), and so does the
 * entry of a wait ended by a failed attempt (`failed`): else the next release would grant the lock to a wait that is
 * over, a hop before the real waiter got it. While Redis does not answer, that entry leaves at the service's next
 * attempt it answers (`leave`). A grant nobody here wants (one on its way while the callers gave up, or for a wait
 * that is over) is released at once, which passes the lock on.
 */
export class LockGrants {
  private readonly waiting = new Map<string, Wait>();
  private readonly early = new Map<string, EarlyGrant>();
  /** Taking the entries of waits that are over out of the waiting services, again when Redis did not answer. */
  private readonly leaving = new PendingLeaves<Wait>((err) => err instanceof RedisUnavailableError);
  /** Every lock key starts with this (`<prefix>lock:{`): a grant for any other key is not ours. */
  private readonly lockKeyHead: string;

  constructor(
    keys: KeyBuilder,
    private readonly service: GrantContext,
  ) {
    this.lockKeyHead = keys.taggedTrusted(FEATURES.lock, '').slice(0, -1);
  }

  /**
   * An attempt of the service's wait for the lock, about to be sent with `token` and `ttl`: its grant field is the
   * wait's (grantField), or FIRST_ATTEMPT_GRANT when there is none and this attempt begins it (its token and ttl then
   * the ones a grant carries). Tell `acquired`, `busy` or `failed` how it ended.
   */
  begin(keys: LockKeys, token: string, ttl: number): WaitAttempt {
    let wait = this.waiting.get(keys.lock);
    const field = wait ? grantField(wait.token, wait.ttl) : FIRST_ATTEMPT_GRANT;
    if (!wait) {
      if (this.waiting.size >= MAX_WAITING_KEYS) {
        this.waiting.clear();
        this.early.clear();
      }
      wait = { keys, token, ttl, since: sentNow(), attempts: 0 };
      this.waiting.set(keys.lock, wait);
    }
    wait.attempts++;
    return { wait, field };
  }

  /** The attempt got the lock: the wait is over, and a grant that still comes for it is released. */
  acquired({ wait }: WaitAttempt): void {
    wait.attempts--;
    this.end(wait);
    this.leaving.retry();
  }

  /**
   * The attempt failed (the backend releases the wait's token when Redis did not answer; it may have taken over a
   * grant): the wait is over, and its entry leaves the waiting services (it may have joined them though the reply was
   * lost). A grant that arrived for it meanwhile is released, and so is one that still comes.
   */
  failed({ wait }: WaitAttempt): void {
    wait.attempts--;
    if (this.early.get(wait.keys.lock)?.wait === wait) this.service.backend.release(wait.keys, wait.token).catch(noop);
    this.end(wait);
    this.leave(wait);
  }

  /**
   * The attempt found the lock busy: the grant that arrived for its wait while it was in flight (once; when no other
   * attempt of the wait is still in flight, which may yet take it over), as a lock for a caller that asked for `ttl`;
   * null when it cannot be extended to a full ttl (the caller tries again, as after a busy attempt). Undefined when
   * there is none.
   */
  busy({ wait }: WaitAttempt, ttl: number): Promise<Lock | null> | undefined {
    wait.attempts--;
    this.leaving.retry();
    const grant = this.early.get(wait.keys.lock);
    if (grant?.wait !== wait || wait.attempts > 0) return undefined;
    this.forget(wait.keys.lock);
    return this.lockFor(wait, grant.fence, ttl).catch(() => null);
  }

  /**
   * An attempt of no wait (a `tryAcquire`, an `acquire`'s last) got an answer: the leaves kept while Redis was away go
   * now. Until 2026-12-06 only an attempt of a wait sent them, so after an outage a service making only such attempts
   * kept them (and Redis the waiting entries they take out) for good (test/lock/lock.churn.spec.ts).
   */
  answered(): void {
    this.leaving.retry();
  }

  /** Whether the service waits for the lock (a wait begun and not over). */
  waits(lockKey: string): boolean {
    return this.waiting.has(lockKey);
  }

  /**
   * A caller stopped waiting (it gave up, or a caller of this process handed it the lock): when nobody else here waits
   * for the lock (no local waiter, no attempt of the wait in flight), the wait is given up (see `abandon`).
   */
  stopWaiting(lockKey: string): void {
    const wait = this.waiting.get(lockKey);
    if (wait && wait.attempts === 0 && !this.service.waiters.first(lockKey)) this.abandon(wait);
  }

  /**
   * A release granted this service `lockKey` for `token`: when it is the wait's, the wait's attempt in flight takes it,
   * or else the oldest local waiter. Nobody here wants it (the callers gave up, a wait given up): it is released at
   * once, which passes it to the next waiting service.
   */
  received(lockKey: string, token: string, fence: number): void {
    const latest = this.waiting.get(lockKey);
    const wait = latest?.token === token ? latest : undefined;
    // The wait's attempt in flight takes it with its busy reply (or took it over in Redis: then a release is a no-op).
    if (wait && wait.attempts > 0) {
      this.early.set(lockKey, { wait, fence });
      return;
    }
    const waiter = wait && this.service.waiters.first(lockKey);
    if (!wait || !waiter) {
      const keys = wait?.keys ?? (lockKey.startsWith(this.lockKeyHead) ? lockKeysOf(lockKey, lockKey) : undefined);
      if (wait) this.forget(lockKey);
      // not held by `token` any more (taken over by an attempt, expired): nothing to release
      if (keys) this.service.backend.release(keys, token).catch(noop);
      else
        this.service.warn(`lock grants: a grant for "${lockKey.slice(0, 200)}", not a lock of this service; ignored`);
      return;
    }
    this.forget(lockKey);
    const deliver = waiter.claim();
    this.lockFor(wait, fence, waiter.ttl).then(deliver, () => deliver(null)); // null: it tries again itself
  }

  /**
   * The wait is given up: its entry leaves the lock's waiting services, in a script call of the turn's acquisitions
   * (acquire-many.lua), so no release grants it the lock any more. When one did already (its message on the way, or
   * lost), that call says so and the lock is released, which passes it on; a grant message that still comes is
   * released too (owner-checked: the second release finds nothing).
   */
  private abandon(wait: Wait): void {
    this.forget(wait.keys.lock);
    this.leave(wait);
  }

  /**
   * Takes the entry of a wait that is over out of the waiting services (see `abandon`), in a script call that also
   * says whether a release granted it the lock already (then released, which passes it on). When Redis does not
   * answer, it is tried again at the service's next attempt Redis answers (PendingLeaves): a wait ends by a failed
   * attempt just when Redis is away. Best effort: an entry left is granted the lock by the next release and released
   * by this service, or expires with the set.
   */
  private leave(wait: Wait): void {
    const { backend, id } = this.service;
    const { keys, token, ttl } = wait;
    this.leaving.send(wait, () =>
      backend
        .tryAcquire(keys, token, ttl, id, leaveField(token, ttl))
        .then((granted) => granted && backend.release(keys, token)),
    );
  }

  /** The wait is over, unless a new one replaced it already. */
  private end(wait: Wait): void {
    if (this.waiting.get(wait.keys.lock) === wait) this.forget(wait.keys.lock);
  }

  private forget(lockKey: string): void {
    this.waiting.delete(lockKey);
    this.early.delete(lockKey);
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
    let end = leaseFrom(wait.since, wait.ttl);
    if (ttl !== wait.ttl || monotonicNow() - wait.since.tick > ttl / 10) {
      try {
        end = await backend.extend(keys, token, ttl);
      } catch (err) {
        backend.release(keys, token).catch(noop);
        throw err;
      }
    }
    // others wait for it: its release passes it on, and goes early (LockCalls.release)
    return this.service.hold({ ...keys, contended: true }, token, fence, end, ttl);
  }
}

const noop = (): void => undefined;

/** The grant field that gives a wait up (acquire-many.lua): its entry leaves, and no lock is taken. */
const leaveField = (token: string, ttl: number): string => `${grantField(token, ttl)} -`;
