import { Cluster } from 'ioredis';
import { LockLostError, RedisUnavailableError } from '../common/errors.js';
import { itemReplyError, type FailurePolicy } from '../common/failure-policy.js';
import type { RedisClient } from '../common/lua-script.js';
import { TickBatcher } from '../common/tick-batcher.js';
import { answered, count, gather, type QuorumCalls } from './lock.quorum.js';
import { ACQUIRE, ACQUIRE_MANY, EXTEND, HAND_OVER, RAISE_FENCE, RELEASE, RELEASE_MANY } from './lock.scripts.js';

/** The two keys of one resource; they share a hash tag so one script may touch both on a cluster. */
export interface LockKeys {
  readonly resource: string;
  readonly lock: string;
  readonly fence: string;
}

export interface Acquired {
  fencingToken: number;
  /** Epoch ms until which the lock is safely ours (conservative: measured from before the request was sent). */
  expiresAt: number;
}

/**
 * Where locks live: one Redis (or one cluster), or N independent servers under the Redlock algorithm. Every method is
 * bounded in time (commandTimeout, and for a quorum also the lock's validity) and fails with our own errors:
 * RedisUnavailableError when the answer is unknown, LockLostError when the lock is provably not ours.
 */
export interface LockBackend {
  readonly nodes: number;
  /** null: held by someone else. Throws RedisUnavailableError when Redis could not decide. */
  tryAcquire(keys: LockKeys, token: string, ttl: number): Promise<Acquired | null>;
  /** New expiresAt. */
  extend(keys: LockKeys, token: string, ttl: number): Promise<number>;
  release(keys: LockKeys, token: string): Promise<void>;
}

const lost = (keys: LockKeys, what: string): LockLostError =>
  new LockLostError(`cannot ${what} the lock on "${keys.resource}": it expired or is held by another owner`);

/** At most this many locks of failed calls wait for the connection to come back; the rest expire with their ttl. */
const MAX_UNKNOWN_LOCKS = 1_000;
/**
 * Lock calls per script call when a turn holds more (see TickBatcher). Small, because a lock caller makes two
 * dependent calls (acquire, then release): 20 callers on their own resources, one server, 2 cores: 46k cycles/s
 * unbatched, 65k with 4 per call, 69k with 8, 49k with 16 (which sends most of a turn in one call).
 */
const LOCK_CALLS_PER_SCRIPT = 8;

/**
 * ACQUIRE and RELEASE on one client. On a single server (a quorum node is one) the acquisitions, and the releases,
 * this process makes in one event-loop turn go as one script call each (many callers locking their own resources at
 * once); on a cluster every lock is its own call (its own slot).
 */
class LockCalls {
  /** A batched call answers per lock: its result, or the error text of that lock alone (redis.pcall). */
  private readonly acquires: TickBatcher<[keys: LockKeys, token: string, ttl: number], number | string> | undefined;
  private readonly releases: TickBatcher<[keys: LockKeys, token: string], number | string> | undefined;

  constructor(readonly client: RedisClient) {
    if (client instanceof Cluster) return;
    this.acquires = new TickBatcher(
      {
        one: ([keys, token, ttl]) => ACQUIRE.run(client, [keys.lock, keys.fence], [token, ttl]),
        many: (calls) =>
          ACQUIRE_MANY.runWithAnyKeys(
            client,
            calls.flatMap(([keys]) => [keys.lock, keys.fence]),
            calls.flatMap(([, token, ttl]) => [token, ttl]),
          ),
      },
      LOCK_CALLS_PER_SCRIPT,
    );
    this.releases = new TickBatcher(
      {
        one: ([keys, token]) => RELEASE.run(client, [keys.lock], [token]),
        many: (calls) =>
          RELEASE_MANY.runWithAnyKeys(
            client,
            calls.map(([keys]) => keys.lock),
            calls.map(([, token]) => token),
          ),
      },
      LOCK_CALLS_PER_SCRIPT,
    );
  }

  /** The new fencing token, or 0 when another owner holds the lock. */
  async acquire(keys: LockKeys, token: string, ttl: number): Promise<number> {
    if (!this.acquires) return ACQUIRE.run(this.client, [keys.lock, keys.fence], [token, ttl]);
    return itemResult(await this.acquires.add([keys, token, ttl]), `acquiring the lock on "${keys.resource}"`);
  }

  /** 1 when released, 0 when not held by `token`. */
  async release(keys: LockKeys, token: string): Promise<number> {
    if (!this.releases) return RELEASE.run(this.client, [keys.lock], [token]);
    return itemResult(await this.releases.add([keys, token]), `releasing the lock on "${keys.resource}"`);
  }
}

/** One lock's part of a batched reply: a number, or the error reply of that lock alone (a RedisReplyError). */
function itemResult(result: number | string, what: string): number {
  if (typeof result === 'string') throw itemReplyError(what, result);
  return result;
}

/** One Redis server, a sentinel-managed master, or a Redis Cluster (both keys live in one slot). */
export class SingleLockBackend implements LockBackend {
  readonly nodes = 1;
  private readonly calls: LockCalls;
  /** Locks a failed call may hold, released when the connection is back (see releaseUnknown). */
  private readonly unknown = new Map<string, { keys: LockKeys; expiresAt: number }>();

  /** `failures`: the lock service's failure policy (fail closed: every failure is thrown, counted and logged). */
  constructor(
    private readonly client: RedisClient,
    private readonly failures: FailurePolicy,
  ) {
    this.calls = new LockCalls(client);
  }

  async tryAcquire(keys: LockKeys, token: string, ttl: number): Promise<Acquired | null> {
    const startedAt = Date.now();
    let fence: number;
    try {
      fence = await this.failures.guard(`acquire on "${keys.resource}"`, () => this.calls.acquire(keys, token, ttl));
    } catch (err) {
      // The SET may have run before the reply was lost: do not leave a lock nobody owns for a whole ttl.
      if (err instanceof RedisUnavailableError) this.releaseUnknown(keys, token, startedAt + ttl);
      throw err;
    }
    return fence > 0 ? { fencingToken: fence, expiresAt: startedAt + ttl } : null;
  }

  /** Passes the lock from `token` to `nextToken` atomically (the lock never becomes free in between). */
  async handOver(keys: LockKeys, token: string, nextToken: string, ttl: number): Promise<Acquired> {
    const startedAt = Date.now();
    let fence: number;
    try {
      fence = await this.failures.guard(`release of "${keys.resource}"`, () =>
        HAND_OVER.run(this.client, [keys.lock, keys.fence], [token, nextToken, ttl]),
      );
    } catch (err) {
      if (err instanceof RedisUnavailableError) this.releaseUnknown(keys, nextToken, startedAt + ttl);
      throw err;
    }
    if (fence <= 0) throw lost(keys, 'release');
    return { fencingToken: fence, expiresAt: startedAt + ttl };
  }

  /**
   * A call that may have taken the lock for `token` failed (timeout, connection lost): the SET may have run before
   * the reply was lost. Release it now, or, when Redis cannot be reached (a timeout resets the connection), as soon
   * as the connection is ready again, unless the lock would have expired by then anyway. So a lock nobody owns is
   * not left for its whole ttl.
   */
  private releaseUnknown(keys: LockKeys, token: string, expiresAt: number): void {
    this.calls.release(keys, token).catch(() => {
      if (Date.now() >= expiresAt || this.unknown.size >= MAX_UNKNOWN_LOCKS) return; // the rest expire with their ttl
      this.unknown.set(token, { keys, expiresAt });
      if (this.unknown.size === 1) this.client.once('ready', () => this.releaseUnknownNow());
    });
  }

  private releaseUnknownNow(): void {
    const pending = [...this.unknown];
    this.unknown.clear();
    for (const [token, { keys, expiresAt }] of pending) {
      if (Date.now() < expiresAt) this.releaseUnknown(keys, token, expiresAt);
    }
  }

  async extend(keys: LockKeys, token: string, ttl: number): Promise<number> {
    const startedAt = Date.now();
    const extended = await this.failures.guard(`extend of "${keys.resource}"`, () =>
      EXTEND.run(this.client, [keys.lock], [token, ttl]),
    );
    if (extended !== 1) throw lost(keys, 'extend');
    return startedAt + ttl;
  }

  async release(keys: LockKeys, token: string): Promise<void> {
    const released = await this.failures.guard(`release of "${keys.resource}"`, () => this.calls.release(keys, token));
    if (released !== 1) throw lost(keys, 'release');
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
 * ends up holding a counter >= the token. Any later majority overlaps that one, so it draws a larger token.
 */
export class QuorumLockBackend implements LockBackend {
  readonly nodes: number;
  private readonly nodeCalls: LockCalls[];

  constructor(private readonly quorum: QuorumCalls) {
    this.nodes = quorum.nodes;
    this.nodeCalls = quorum.clients.map((c) => new LockCalls(c));
  }

  async tryAcquire(keys: LockKeys, token: string, ttl: number): Promise<Acquired | null> {
    let fencingToken = 0;
    const won = await this.quorum.acquire(
      `acquiring the lock on "${keys.resource}"`,
      ttl,
      (_, i) => this.nodeCalls[i].acquire(keys, token, ttl),
      (fence) => fence > 0,
      (_, i) => this.nodeCalls[i].release(keys, token),
      async (outcomes, deadline) => {
        const fences = outcomes.map((o) => (o?.ok && o.value > 0 ? o.value : 0));
        fencingToken = Math.max(...fences);
        return this.syncFences(keys, token, fences, fencingToken, deadline);
      },
    );
    return won ? { fencingToken, expiresAt: won.expiresAt } : null;
  }

  /** Raises the lagging granting nodes to `fencingToken`; true once a majority holds a counter >= it. */
  private async syncFences(
    keys: LockKeys,
    token: string,
    fences: number[],
    fencingToken: number,
    deadline: number,
  ): Promise<boolean> {
    const atToken = fences.filter((f) => f === fencingToken).length;
    if (atToken >= this.quorum.quorum) return true;
    const lagging = fences.flatMap((f, i) => (f > 0 && f < fencingToken ? [i] : []));
    const needed = this.quorum.quorum - atToken;
    const { clients } = this.quorum;
    const raised = await gather(
      lagging.map((i) => RAISE_FENCE.run(clients[i], [keys.lock, keys.fence], [token, fencingToken])),
      (o) => count(o, (x) => answered(x, 1)) >= needed,
      Math.min(deadline - Date.now(), this.quorum.commandTimeout),
    );
    return count(raised, (x) => answered(x, 1)) >= needed;
  }

  async extend(keys: LockKeys, token: string, ttl: number): Promise<number> {
    try {
      return await this.quorum.extend(`extend the lock on "${keys.resource}"`, ttl, (c) =>
        EXTEND.run(c, [keys.lock], [token, ttl]),
      );
    } catch (err) {
      if (err instanceof LockLostError) {
        for (const node of this.nodeCalls) node.release(keys, token).catch(() => undefined);
      }
      throw err;
    }
  }

  release(keys: LockKeys, token: string): Promise<void> {
    return this.quorum.release(`release the lock on "${keys.resource}"`, (_, i) =>
      this.nodeCalls[i].release(keys, token),
    );
  }
}
