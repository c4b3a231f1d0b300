import type { RedisClient } from '../common/lua-script.js';
import { LockLostError, RedisUnavailableError } from '../common/errors.js';
import { nextFenceFloor } from './lock.attempts.js';
import type { QuorumCalls } from './lock.quorum.js';
import { firstNodeUp, type QuorumWake, RELEASED_UNPUBLISHED, wakingRelease } from './lock.quorum-wake.js';
import type { LockFailures } from './lock.shutdown.js';
import { EXTEND, HAND_OVER, RAISE_FENCE } from './lock.scripts.js';
import { type LockCalls, lockCallsOf, WAKE_TRIES, type WaitingChannels } from './lock.calls.js';
import { FIRST_ATTEMPT_GRANT, grantTokenOf, type LockKeys } from './lock.keys.js';
import { type LeaseEnd, leaseFrom, sentNow } from './lock.clock.js';
import { UnsureReleases } from './lock.unsure-releases.js';

export { FIRST_ATTEMPT_GRANT, grantField, type LockKeys, lockKeysOf } from './lock.keys.js';
export type { WaitingChannels } from './lock.calls.js';
/** When the lock is safely ours until (conservative: measured from before the request was sent), on both clocks. */
export interface Acquired extends LeaseEnd {
  fencingToken: number;
}

/**
 * Where locks live: one Redis (or one cluster), or N independent servers under the Redlock algorithm. Every method is
 * bounded in time (commandTimeout, and for a quorum also the lock's validity) and fails with our own errors:
 * RedisUnavailableError when the answer is unknown, LockLostError when the lock is provably not ours.
 */
export interface LockBackend {
  readonly nodes: number;
  /**
   * null: held by someone else. Throws RedisUnavailableError when Redis could not decide. `waiter`: the service id
   * that joins the lock's waiting services when it is busy; `grant`: with it, '' (a release wakes it) or the grant
   * field of its wait (FIRST_ATTEMPT_GRANT or grantField: a release grants it the lock), or, to give a wait up,
   * `grantField(token, ttl) + ' -'` with the wait's token (LockGrants.abandon): its entry leaves the waiting services,
   * no lock is taken, and the result is non-null when a release had already granted the lock to the wait.
   */
  tryAcquire(keys: LockKeys, token: string, ttl: number, waiter?: string, grant?: string): Promise<Acquired | null>;
  /** The lease's new end. */
  extend(keys: LockKeys, token: string, ttl: number): Promise<LeaseEnd>;
  /**
   * `validUntil`: the holder's own end of the lease on the monotonic clock (a backend that cannot tell an expired
   * entry from a held one uses it).
   */
  release(keys: LockKeys, token: string, validUntil?: number): Promise<void>;
  /**
   * Takes `waiter` (a service id alone: a release wakes it) out of the lock's waiting services on every server, once
   * its service gave the wait up (LockWakeups.stopWaiting). Best effort: an entry left costs the waiters one poll.
   * Rejects when a server did not answer (on a quorum an UnansweredLeave naming those nodes alone: PendingLeaves).
   * Single-resource backends only (nothing else waits by wake-up).
   */
  leave?(keys: LockKeys, waiter: string): Promise<void>;
}

const lost = (keys: LockKeys, what: string): LockLostError =>
  new LockLostError(`cannot ${what} the lock on "${keys.resource}": it expired or is held by another owner`);

/** One Redis server, a sentinel-managed master, or a Redis Cluster (both keys live in one slot). */
export class SingleLockBackend implements LockBackend {
  readonly nodes = 1;
  private readonly calls: LockCalls;
  /** Locks a failed call may hold, released now or when the connection is back (see releaseUnknown). */
  private readonly unsure: UnsureReleases;

  /** `failures`: the lock service's failure policy (fail closed: every failure is thrown, counted and logged). */
  constructor(
    private readonly client: RedisClient,
    private readonly failures: LockFailures,
    private readonly channels: WaitingChannels,
  ) {
    this.calls = lockCallsOf(client, channels);
    this.unsure = new UnsureReleases(client, failures.shutdown);
  }

  async tryAcquire(keys: LockKeys, token: string, ttl: number, waiter = '', grant = ''): Promise<Acquired | null> {
    const sent = sentNow();
    let fence: number;
    try {
      fence = await this.failures.guard(`acquire on "${keys.resource}"`, () =>
        this.calls.acquire(keys, token, ttl, waiter, grant),
      );
    } catch (err) {
      // The SET may have run before the reply was lost: do not leave a lock nobody owns for a whole ttl. Nor a grant
      // to the wait, which this attempt may have taken over or may still get (its service ends the wait: LockGrants).
      if (err instanceof RedisUnavailableError) {
        this.releaseUnknown(keys, token);
        if (grant && grant !== FIRST_ATTEMPT_GRANT) this.releaseUnknown(keys, grantTokenOf(grant));
      }
      throw err;
    }
    return fence > 0 ? { fencingToken: fence, ...leaseFrom(sent, ttl) } : null;
  }

  /** Passes the lock from `token` to `nextToken` atomically (the lock never becomes free in between). */
  async handOver(keys: LockKeys, token: string, nextToken: string, ttl: number): Promise<Acquired> {
    const sent = sentNow();
    let fence: number;
    try {
      fence = await this.failures.guard(`release of "${keys.resource}"`, () =>
        HAND_OVER.run(this.client, [keys.lock, keys.fence], [token, nextToken, ttl]),
      );
    } catch (err) {
      if (err instanceof RedisUnavailableError) this.releaseUnknown(keys, nextToken);
      throw err;
    }
    if (fence <= 0) throw lost(keys, 'release');
    return { fencingToken: fence, ...leaseFrom(sent, ttl) };
  }

  /**
   * A call that may have taken the lock for `token` failed (timeout, connection lost): the SET may have run before the
   * reply was lost, or runs later (a paused server). Released now, or when the connection is ready again
   * (UnsureReleases), so a lock nobody owns is not left for its whole ttl.
   */
  private releaseUnknown(keys: LockKeys, token: string): void {
    this.unsure.send(() => this.passOn(keys, token)).catch(() => undefined);
  }

  async extend(keys: LockKeys, token: string, ttl: number): Promise<LeaseEnd> {
    const sent = sentNow();
    const extended = await this.failures.guard(`extend of "${keys.resource}"`, () =>
      EXTEND.run(this.client, [keys.lock], [token, ttl]),
    );
    if (extended !== 1) throw lost(keys, 'extend');
    return leaseFrom(sent, ttl);
  }

  async release(keys: LockKeys, token: string): Promise<void> {
    const released = await this.failures.guard(`release of "${keys.resource}"`, () =>
      this.passOn(keys, token, keys.contended),
    );
    if (released === 0) throw lost(keys, 'release'); // 2 or 3: released (release-many.lua)
  }

  /** A release that passes the lock on; one whose grant or wake Redis refused to publish is reported (released). */
  private passOn(keys: LockKeys, token: string, early?: boolean): Promise<number> {
    return this.calls.release(keys, token, true, early).then((released) => {
      if (released === RELEASED_UNPUBLISHED) this.failures.publishRefused(keys.resource, this.channels);
      return released;
    });
  }

  async leave(keys: LockKeys, waiter: string): Promise<void> {
    await this.client.zrem(keys.waiters, waiter);
  }
}

/**
 * Redlock over N independent servers (https://redis.io/docs/latest/develop/use/patterns/distributed-locks/) through
 * QuorumCalls: the lock is ours when a majority granted it and time is left of its validity (ttl minus the time taken
 * minus the clock drift allowance). On failure the partial lock is released everywhere. Extend and release go to every
 * node.
 *
 * Fencing tokens: each node keeps its own counter. The token is the largest counter of the granting majority, and
 * before the acquisition counts, the granting nodes below it are raised to it (still owner-checked), so a majority
 * ends up holding a counter >= the token. Any later majority overlaps that one, so it draws a larger token. Every
 * node of one acquisition is sent the same floor (the client clock in µs), so while that is above their counters the
 * granting nodes draw the same token and nothing needs raising (no second round trip).
 */
export class QuorumLockBackend implements LockBackend {
  readonly nodes: number;
  private readonly nodeCalls: LockCalls[];
  private readonly wake: QuorumWake;

  constructor(
    private readonly quorum: QuorumCalls,
    channels: WaitingChannels,
    failures: LockFailures,
  ) {
    this.nodes = quorum.nodes;
    this.nodeCalls = quorum.clients.map((c) => lockCallsOf(c, channels));
    this.wake = { channels, tries: WAKE_TRIES, failures };
  }

  /** A quorum's nodes would each grant their own oldest waiter: it wakes waiters, never grants (`grant` ignored). */
  async tryAcquire(keys: LockKeys, token: string, ttl: number, waiter = ''): Promise<Acquired | null> {
    let fencingToken = 0;
    const floor = nextFenceFloor();
    const won = await this.quorum.acquire(
      `acquiring the lock on "${keys.resource}"`,
      ttl,
      (_, i) => this.nodeCalls[i].acquire(keys, token, ttl, waiter, '', floor),
      (fence) => fence > 0,
      // undoing a partial grant frees no lock anybody could take: wake nobody
      (_, i) => this.nodeCalls[i].release(keys, token, false),
      (outcomes, deadline) => {
        const fences = outcomes.map((o) => [o?.ok && o.value > 0 ? o.value : 0]);
        fencingToken = Math.max(...fences.map(([f]) => f));
        const { clients } = this.quorum;
        const raise = (i: number, _: number, to: number) =>
          RAISE_FENCE.run(clients[i], [keys.lock, keys.fence], [token, to]);
        return this.quorum.syncFences(fences, raise, deadline);
      },
    );
    return won ? { fencingToken, expiresAt: won.expiresAt, validUntil: won.validUntil } : null;
  }

  async extend(keys: LockKeys, token: string, ttl: number): Promise<LeaseEnd> {
    try {
      return await this.quorum.extend(`extend the lock on "${keys.resource}"`, ttl, (c) =>
        EXTEND.run(c, [keys.lock], [token, ttl]),
      );
    } catch (err) {
      if (err instanceof LockLostError) {
        const releases = this.quorum.toEveryNode((_, i) => this.nodeCalls[i].release(keys, token, false));
        for (const release of releases) release.catch(() => undefined);
      }
      throw err;
    }
  }

  release(keys: LockKeys, token: string): Promise<void> {
    // one node wakes, another when it cannot (wakingRelease)
    const waker = firstNodeUp(this.quorum);
    return this.quorum.release(`release the lock on "${keys.resource}"`, (_, i) => {
      const call = this.nodeCalls[i].release(keys, token, i === waker);
      return i === waker ? wakingRelease(this.quorum, i, call, keys, token, this.wake) : call;
    });
  }

  leave(keys: LockKeys, waiter: string): Promise<void> {
    // every node: a busy attempt joined on each node that refused it, and any node's release may wake; a node left out
    // is sent nothing (it took no attempt); a node that did not answer is sent it again alone (UnansweredLeave:
    // PendingLeaves keeps it for the service's next answered attempt)
    return this.quorum.cleanUp(`leaving the waiters of "${keys.resource}"`, (c) => c.zrem(keys.waiters, waiter));
  }
}
