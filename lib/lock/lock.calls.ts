import { Cluster, type Redis } from 'ioredis';
import { itemReplyError } from '../common/failure-policy.js';
import { CLUSTER_SLICE, masterStreams, perNodeSender } from '../common/cluster-batch.js';
import type { RedisClient, ScriptArg } from '../common/lua-script.js';
import { SharedTurn, sendingAfter, TickBatcher, type TickBatchSender } from '../common/tick-batcher.js';
import { ACQUIRE_MANY, RELEASE_MANY } from './lock.scripts.js';
import type { LockKeys } from './lock.keys.js';

// The lock script calls on one client, batched per event-loop turn and shared by every lock backend on the client.

/**
 * Lock calls per script call when a turn holds more (see TickBatcher). Small, because a lock caller makes two
 * dependent calls (acquire, then release): 20 callers on their own resources, one server, 2 cores: 46k cycles/s
 * unbatched, 65k with 4 per call, 69k with 8, 49k with 16 (which sends most of a turn in one call).
 */
const LOCK_CALLS_PER_SCRIPT = 8;

/** How many waiting services a release may try in turn until one is listening (see release-many.lua). */
export const WAKE_TRIES = 3;

/** The channel prefixes of every service (LockWakeups): where a release wakes a service, and where it grants one. */
export interface WaitingChannels {
  readonly wake: string;
  readonly grant: string;
}

/**
 * ACQUIRE and RELEASE on one client, with wake-on-release (see LockWakeups): a busy acquisition with a service id
 * joins the lock's waiting services, a release grants the lock to the oldest (LockGrants) or wakes it. On a single
 * server (a quorum node is one) the acquisitions, and the releases, this process makes in one event-loop turn go as
 * one script call each (many callers locking their own resources at once); on a cluster every lock is its own script
 * call (its own slot) and the calls of a turn go as one pipeline per master (cluster-batch.ts). Either way a turn's
 * releases are sent first.
 */
export class LockCalls {
  /** A release went early in this turn (see `release`); always on a cluster, where none does. */
  private sentEarly: boolean;
  /** A batched call answers per lock: its result, or the error text of that lock alone (redis.pcall). */
  private readonly acquires: TickBatcher<AcquireCall, number | string>;
  private readonly releases: TickBatcher<ReleaseCall, number | string>;

  constructor(
    readonly client: RedisClient,
    channels: WaitingChannels,
  ) {
    // On a cluster PUBLISH counts only this node's receivers: 0 does not mean nobody listens, so wake one and stop.
    const tries = client instanceof Cluster ? 1 : WAKE_TRIES;
    // One call's keys and arguments (acquire-many.lua, release-many.lua); a batch is theirs one after the other,
    // after the release's shared channel prefixes. A quorum node's acquisition carries the client's floor.
    const lockKeys = ([keys]: AcquireCall | ReleaseCall): string[] => [keys.lock, keys.fence, keys.waiters];
    const acquireArgs = ([, token, ttl, waiter, grant, floor]: AcquireCall): ScriptArg[] => [
      token,
      ttl,
      waiter,
      grant,
      floor === undefined ? '' : String(floor),
    ];
    const releaseArgs = ([, token, wake]: ReleaseCall): ScriptArg[] => [token, wake ? tries : 0];
    const prefixes = [channels.wake, channels.grant];
    // a call of one release: the prefixes, then its arguments
    const loneReleaseArgs = (call: ReleaseCall): ScriptArg[] => [...prefixes, ...releaseArgs(call)];
    // A lone call (the usual one on a quorum node) goes without building a batch.
    const acquireOne = (call: AcquireCall) =>
      ACQUIRE_MANY.runWithAnyKeys(client, lockKeys(call), acquireArgs(call)).then(first);
    const releaseOne = (call: ReleaseCall) =>
      RELEASE_MANY.runWithAnyKeys(client, lockKeys(call), loneReleaseArgs(call)).then(first);
    let acquireSender: TickBatchSender<AcquireCall, number | string>;
    let releaseSender: TickBatchSender<ReleaseCall, number | string>;
    let perCall = LOCK_CALLS_PER_SCRIPT;
    if (client instanceof Cluster) {
      // the locks of one turn live in different slots: each is its own script call, one pipeline per master
      acquireSender = perNodeSender(client, {
        keyOf: ([keys]) => keys.lock,
        command: (call) => ACQUIRE_MANY.command(lockKeys(call), acquireArgs(call)),
        reply: first,
        one: acquireOne,
      });
      releaseSender = perNodeSender(client, {
        keyOf: ([keys]) => keys.lock,
        command: (call) => RELEASE_MANY.command(lockKeys(call), loneReleaseArgs(call)),
        reply: first,
        one: releaseOne,
      });
      perCall *= CLUSTER_SLICE;
    } else {
      acquireSender = {
        one: acquireOne,
        many: (calls) => ACQUIRE_MANY.runWithAnyKeys(client, calls.flatMap(lockKeys), calls.flatMap(acquireArgs)),
      };
      releaseSender = {
        one: releaseOne,
        many: (calls) =>
          RELEASE_MANY.runWithAnyKeys(client, calls.flatMap(lockKeys), [...prefixes, ...calls.flatMap(releaseArgs)]),
      };
    }
    // A turn's releases and acquisitions go out in one socket write (one per master on a cluster), as one read for
    // Redis. One server, 20 separate services on one resource: 2.1 -> 1.2 socket writes per lock (docs/lock.md, round
    // 11). The harness's 3-master cluster, 50 callers of acquire+release: 0.40-0.48 -> 0.26-0.38 writes per lock.
    const turn = new SharedTurn(
      client instanceof Cluster ? () => masterStreams(client) : () => (client as Redis).stream,
    );
    this.releases = new TickBatcher(releaseSender, perCall, turn);
    this.sentEarly = client instanceof Cluster;
    if (!this.sentEarly) turn.join({ flush: () => (this.sentEarly = false) }); // the turn's end
    // A turn's releases are sent before its acquisitions (one connection runs commands in the order they are sent),
    // so an acquisition never finds busy a lock released in the same turn. Where contending callers of other
    // services take turns, one's release and the next one's acquisition then meet in one round trip instead of the
    // acquisition failing and waiting a retry pause. 20 separate services on one resource, each caller its own
    // service: one server 5.0–6.2k → 8.3–9.1k acquire+release/s, 3-node quorum 5.1–5.8k → 6.7–7.2k (docs/lock.md).
    this.acquires = new TickBatcher(sendingAfter(this.releases, acquireSender), perCall, turn);
  }

  /**
   * The new fencing token, or 0 when another owner holds the lock. `waiter`: the service id to wake, or ''; `grant`:
   * see LockBackend.tryAcquire. `floor` (a quorum node): the least token in µs of the acquiring client's clock,
   * instead of the server's (acquire-many.lua).
   */
  async acquire(keys: LockKeys, token: string, ttl: number, waiter = '', grant = '', floor?: number): Promise<number> {
    const call: AcquireCall = [keys, token, ttl, waiter, grant, floor];
    const result = await this.acquires.add(call);
    return itemResult(result, `acquiring the lock on "${keys.resource}"`);
  }

  /**
   * 1 when released (with `wake` also 2 or 3: release-many.lua), 0 when not held by `token`. `wake`: pass the lock to a
   * waiting service, or wake one (not for undoing a partial grant). `early` (one server; a contended lock, passed on):
   * the first such release of a turn goes now, with the releases queued so far, not at the turn's end behind the
   * turn's acquisitions, which Redis would run before it answers and publishes the grant.
   */
  async release(keys: LockKeys, token: string, wake = true, early = false): Promise<number> {
    const sent = this.releases.add([keys, token, wake]);
    if (early && !this.sentEarly) {
      this.sentEarly = true;
      this.releases.flush();
    }
    const result = await sent;
    return itemResult(result, `releasing the lock on "${keys.resource}"`);
  }
}

/**
 * The lock backends on one client share its LockCalls (several lock services in one process, each with its own
 * backend): the calls they make in one turn then share script calls and socket writes, as one service's do. On a
 * quorum node too, every call waits for the end of its turn (it used to go at once when none was outstanding, which
 * helped while each service had its own connections; with them shared, 20 separate services on one resource, 3-node
 * quorum, 2 cores: at once 2,089 / 1,719 acquire+release/s and 424 / 552 µs of Node CPU per op, batched 2,316 /
 * 2,528 and 393 / 345 µs: fewer socket writes, which are most of this process's CPU here).
 */
const sharedLockCalls = new WeakMap<RedisClient, Map<string, LockCalls>>();

export function lockCallsOf(client: RedisClient, channels: WaitingChannels): LockCalls {
  let byPrefix = sharedLockCalls.get(client);
  if (!byPrefix) sharedLockCalls.set(client, (byPrefix = new Map()));
  // the grant prefix is the wake prefix's sibling (same key prefix): the wake prefix alone tells them apart
  let calls = byPrefix.get(channels.wake);
  if (!calls) byPrefix.set(channels.wake, (calls = new LockCalls(client, channels)));
  return calls;
}

type AcquireCall = [keys: LockKeys, token: string, ttl: number, waiter: string, grant: string, floor?: number];

type ReleaseCall = [keys: LockKeys, token: string, wake: boolean];

/** The reply of a script call for one lock: its one item. */
const first = (raw: unknown): number | string => (raw as (number | string)[])[0];

/** One lock's part of a batched reply: a number, or the error reply of that lock alone (a RedisReplyError). */
function itemResult(result: number | string, what: string): number {
  if (typeof result === 'string') throw itemReplyError(what, result);
  return result;
}
