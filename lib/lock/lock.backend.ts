import { Cluster, type Redis } from 'ioredis';
import { LockLostError, RedisUnavailableError } from '../common/errors.js';
import { itemReplyError, type FailurePolicy } from '../common/failure-policy.js';
import type { RedisClient } from '../common/lua-script.js';
import { TickBatcher } from '../common/tick-batcher.js';
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

export type Outcome<T> = { ok: true; value: T } | { ok: false; error: unknown } | undefined;

/**
 * Waits for per-node calls until `enough` says the outcome is decided, every call settled, or `timeoutMs` passed.
 * Returns a snapshot: `undefined` marks a node that had not answered (a paused or slow server). Calls still running
 * finish in the background; their results are ignored (a late lock on a node is cleaned up by release-on-all).
 */
export function gather<T>(
  calls: Promise<T>[],
  enough: (outcomes: Outcome<T>[]) => boolean,
  timeoutMs: number,
): Promise<Outcome<T>[]> {
  return new Promise((resolve) => {
    const outcomes: Outcome<T>[] = calls.map(() => undefined);
    let pending = calls.length;
    let finished = false;
    const finish = (): void => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      resolve(outcomes.slice());
    };
    const timer = setTimeout(finish, Math.max(0, timeoutMs));
    calls.forEach((call, i) => {
      call
        .then(
          (value) => {
            outcomes[i] = { ok: true, value };
          },
          (error: unknown) => {
            outcomes[i] = { ok: false, error };
          },
        )
        .then(() => {
          pending--;
          if (!finished && (pending === 0 || enough(outcomes))) finish();
        });
    });
  });
}

export const count = <T>(outcomes: Outcome<T>[], test: (o: Outcome<T>) => boolean): number =>
  outcomes.filter(test).length;
export const answered = <T>(o: Outcome<T>, value: T): boolean => o?.ok === true && o.value === value;
export const firstError = <T>(outcomes: Outcome<T>[]): string => {
  const failed = outcomes.find((o) => o !== undefined && !o.ok);
  if (failed && !failed.ok) return failed.error instanceof Error ? failed.error.message : String(failed.error);
  return 'no answer in time';
};

/**
 * Redlock over N independent servers (https://redis.io/docs/latest/develop/use/patterns/distributed-locks/):
 * the lock is ours when a majority granted it and time is left of its validity (ttl minus the time taken minus the
 * clock drift allowance). On failure the partial lock is released everywhere. Extend and release go to every node.
 *
 * Fencing tokens: each node keeps its own counter. The token is the largest counter of the granting majority, and
 * before the acquisition counts, the granting nodes below it are raised to it (still owner-checked), so a majority
 * ends up holding a counter >= the token. Any later majority overlaps that one, so it draws a larger token.
 */
export class QuorumLockBackend implements LockBackend {
  readonly nodes: number;
  readonly quorum: number;
  private readonly nodeCalls: LockCalls[];

  constructor(
    private readonly clients: Redis[],
    private readonly driftFactor: number,
    private readonly commandTimeout: number,
  ) {
    this.nodes = clients.length;
    this.quorum = Math.floor(clients.length / 2) + 1;
    this.nodeCalls = clients.map((c) => new LockCalls(c));
  }

  private drift(ttl: number): number {
    // As in the Redlock reference: a share of the ttl for clock rate differences, plus 2 ms for timer resolution.
    return Math.round(ttl * this.driftFactor) + 2;
  }

  private releaseEverywhere(keys: LockKeys, token: string): void {
    for (const node of this.nodeCalls) node.release(keys, token).catch(() => undefined);
  }

  /**
   * After a failed attempt: releases the nodes that granted it and waits for them (so our own partial lock does not
   * block the next attempt), and the nodes that did not answer in the background.
   */
  private async undo(keys: LockKeys, token: string, outcomes: Outcome<number>[]): Promise<void> {
    const granted: Promise<number>[] = [];
    outcomes.forEach((o, i) => {
      const release = this.nodeCalls[i].release(keys, token);
      if (o?.ok && o.value > 0) granted.push(release);
      else release.catch(() => undefined);
    });
    if (granted.length > 0) await gather(granted, () => false, this.commandTimeout);
  }

  async tryAcquire(keys: LockKeys, token: string, ttl: number): Promise<Acquired | null> {
    const startedAt = Date.now();
    const budget = ttl - this.drift(ttl);
    const { quorum, nodes } = this;
    const outcomes = await gather(
      this.nodeCalls.map((node) => node.acquire(keys, token, ttl)),
      (o) =>
        count(o, (x) => x?.ok === true && x.value > 0) >= quorum ||
        count(o, (x) => x !== undefined && !(x.ok && x.value > 0)) > nodes - quorum,
      Math.min(budget, this.commandTimeout),
    );
    const fences = outcomes.map((o) => (o?.ok && o.value > 0 ? o.value : 0));
    const granted = fences.filter((f) => f > 0).length;
    if (granted >= quorum) {
      const token_ = Math.max(...fences);
      if (await this.syncFences(keys, token, fences, token_, startedAt + budget)) {
        const expiresAt = startedAt + budget;
        if (expiresAt > Date.now()) return { fencingToken: token_, expiresAt };
      }
    }
    await this.undo(keys, token, outcomes);
    const refused = count(outcomes, (o) => answered(o, 0));
    // Without the nodes that failed or did not answer, no majority is possible and no node said the lock is taken:
    // Redis is the problem, not contention. (One refusal means another owner holds it: busy, whatever the rest.)
    if (nodes - count(outcomes, (o) => o === undefined || !o.ok) < quorum && refused === 0) {
      throw new RedisUnavailableError(
        `acquiring the lock on "${keys.resource}" failed: fewer than ${quorum} of ${nodes} lock servers answered ` +
          `(${firstError(outcomes)})`,
      );
    }
    return null;
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
    if (atToken >= this.quorum) return true;
    const lagging = fences.flatMap((f, i) => (f > 0 && f < fencingToken ? [i] : []));
    const needed = this.quorum - atToken;
    const raised = await gather(
      lagging.map((i) => RAISE_FENCE.run(this.clients[i], [keys.lock, keys.fence], [token, fencingToken])),
      (o) => count(o, (x) => answered(x, 1)) >= needed,
      Math.min(deadline - Date.now(), this.commandTimeout),
    );
    return count(raised, (x) => answered(x, 1)) >= needed;
  }

  async extend(keys: LockKeys, token: string, ttl: number): Promise<number> {
    const startedAt = Date.now();
    const budget = ttl - this.drift(ttl);
    const { quorum, nodes } = this;
    const outcomes = await gather(
      this.clients.map((c) => EXTEND.run(c, [keys.lock], [token, ttl])),
      (o) => count(o, (x) => answered(x, 1)) >= quorum || count(o, (x) => answered(x, 0)) > nodes - quorum,
      Math.min(budget, this.commandTimeout),
    );
    const expiresAt = startedAt + budget;
    if (count(outcomes, (o) => answered(o, 1)) >= quorum && expiresAt > Date.now()) return expiresAt;
    if (count(outcomes, (o) => answered(o, 0)) > nodes - quorum) {
      this.releaseEverywhere(keys, token);
      throw lost(keys, 'extend');
    }
    throw new RedisUnavailableError(
      `extending the lock on "${keys.resource}" failed: fewer than ${quorum} of ${nodes} lock servers confirmed ` +
        `(${firstError(outcomes)})`,
    );
  }

  async release(keys: LockKeys, token: string): Promise<void> {
    const { quorum, nodes } = this;
    const outcomes = await gather(
      this.nodeCalls.map((node) => node.release(keys, token)),
      (o) => {
        const released = count(o, (x) => answered(x, 1));
        return released >= quorum || (released > 0 && released + count(o, (x) => answered(x, 0)) >= quorum);
      },
      this.commandTimeout,
    );
    const released = count(outcomes, (o) => answered(o, 1));
    const notHeld = count(outcomes, (o) => answered(o, 0));
    if (released >= quorum) return;
    if (notHeld > nodes - quorum) throw lost(keys, 'release');
    // A majority confirmed that our token is gone (a node that never granted us answers 0): nobody can still see
    // us as the owner, so the release is done even though a node is unreachable.
    if (released > 0 && released + notHeld >= quorum) return;
    throw new RedisUnavailableError(
      `releasing the lock on "${keys.resource}" failed: fewer than ${quorum} of ${nodes} lock servers confirmed ` +
        `(${firstError(outcomes)}); it expires by itself`,
    );
  }
}
