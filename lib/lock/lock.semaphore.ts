import { InvalidOptionsError, LockLostError, RedisUnavailableError } from '../common/errors.js';
import { FEATURES, KeyBuilder } from '../common/keys.js';
import type { RedisClient } from '../common/lua-script.js';
import { TickBatcher } from '../common/tick-batcher.js';
import { newToken, ttlOf } from './lock.attempts.js';
import { autoExtendOptions, checkAutoExtend, checkExtensionThreshold } from './lock.auto-extend.js';
import type { Acquired, LockBackend, LockKeys } from './lock.backend.js';
import { Lock, type LockOwner } from './lock.js';
import { type LeaseEnd, leaseFrom, monotonicNow, sentNow } from './lock.clock.js';
import {
  acquireWithRetries,
  type LeaseAcquireOptions,
  type LeaseContext,
  type LeaseUsingOptions,
  leaseOwner,
} from './lock.lease.js';
import { SEMAPHORE_ACQUIRE, SEMAPHORE_EXTEND, SEMAPHORE_HOLDERS } from './lock.scripts.js';
import { firstError, gather } from './lock.gather.js';
import type { QuorumCalls } from './lock.quorum.js';
import { LocalWaiters } from './lock.waiters.js';
import { HeldPermits } from './lock.semaphore-permits.js';
import { UnsureReleases } from './lock.unsure-releases.js';
import { checkLockedFunction } from './lock.holding.js';
import { checkNames, LEASE_ACQUIRE, LEASE_TRY, LEASE_USING, SEMAPHORE } from './lock.option-names.js';

export interface SemaphoreOptions {
  /** How many holders at once (an integer from 1 to 2^53 - 1). */
  limit: number;
  /** Default ttl of a permit (ms; default `lock.ttl`). A holder that dies frees its permit after this. */
  ttl?: number;
}

const lostPermit = (name: string, what: string): LockLostError =>
  new LockLostError(`cannot ${what} the permit of the semaphore "${name}": it expired`);

/**
 * How many of `nodes` independent servers must grant a permit so that `limit + 1` holders can never coexist: each
 * node admits at most `limit`, so `limit + 1` holders with `q` grants each need `(limit + 1) * q` slots of the
 * `nodes * limit` there are; impossible when `q > nodes * limit / (limit + 1)`. For `limit` 1 that is a majority; for
 * more it is larger (3 nodes, limit >= 2: all 3). A plain majority (redis-semaphore's RedlockSemaphore) can let
 * `limit + 1` in: 3 nodes, limit 3, four holders on two nodes each fill 8 of the 9 slots.
 */
export const semaphoreQuorum = (nodes: number, limit: number): number => Math.floor((nodes * limit) / (limit + 1)) + 1;

/** Acquisitions per script call when a turn holds more (as for locks: see LOCK_CALLS_PER_SCRIPT). */
const PERMIT_CALLS_PER_SCRIPT = 8;

/**
 * One semaphore's calls on one server: the acquisitions of one event-loop turn go as one script call (one prune,
 * count and ZADD for all of them), the releases as plain ZREMs in one pipeline (no script: the caller's own expiry
 * decides whether a permit it removed had expired, see SemaphoreBackend.release).
 */
class PermitCalls {
  private readonly acquires: TickBatcher<[token: string, ttl: number], number>;
  private readonly releases: TickBatcher<string, number>;

  constructor(client: RedisClient, key: string, limit: number) {
    const acquireMany = (calls: [string, number][]) => SEMAPHORE_ACQUIRE.run(client, [key], [...calls.flat(), limit]);
    this.acquires = new TickBatcher(
      { one: async (call) => (await acquireMany([call]))[0], many: acquireMany },
      PERMIT_CALLS_PER_SCRIPT,
    );
    this.releases = new TickBatcher({
      one: (token) => client.zrem(key, token),
      many: async (tokens) => {
        const replies = (await client.pipeline(tokens.map((token) => ['zrem', key, token])).exec()) ?? [];
        return replies.map(([err, removed]) => {
          if (err) throw err;
          return removed as number;
        });
      },
    });
  }

  /** 1 when a permit was taken, 0 when all are held. */
  acquire(token: string, ttl: number): Promise<number> {
    return this.acquires.add([token, ttl]);
  }

  /** 1 when the permit was still in the set (maybe expired but not yet pruned), else 0. */
  release(token: string): Promise<number> {
    return this.releases.add(token);
  }
}

/**
 * Where permits live: one Redis (or a cluster: one key, one slot) or N independent servers (see semaphoreQuorum).
 */
class SemaphoreBackend implements LockBackend {
  readonly nodes: number;
  private readonly needed: number;
  /** One PermitCalls per server: the main connection, or every quorum node. */
  private readonly calls: PermitCalls[];
  /** Permits a failed call may hold on the main connection, given back now or when it is back (one server). */
  private readonly unsure: UnsureReleases;

  constructor(
    private readonly ctx: LeaseContext,
    private readonly name: string,
    private readonly key: string,
    limit: number,
  ) {
    this.nodes = ctx.quorum?.nodes ?? 1;
    this.needed = semaphoreQuorum(this.nodes, limit);
    this.calls = (ctx.quorum ? ctx.quorum.clients : [ctx.client]).map((c) => new PermitCalls(c, key, limit));
    this.unsure = new UnsureReleases(ctx.client, ctx.shutdown);
  }

  async tryAcquire(_keys: LockKeys, token: string, ttl: number): Promise<Acquired | null> {
    const { quorum } = this.ctx;
    if (quorum) {
      const won = await quorum.acquire(
        `acquiring a permit of the semaphore "${this.name}"`,
        ttl,
        (_, i) => this.calls[i].acquire(token, ttl),
        (granted) => granted === 1,
        (_, i) => this.calls[i].release(token),
        undefined,
        this.needed,
      );
      return won ? { fencingToken: 0, expiresAt: won.expiresAt, validUntil: won.validUntil } : null;
    }
    const sent = sentNow();
    try {
      const granted = await this.ctx.failures.guard(`acquire of a permit of "${this.name}"`, () =>
        this.calls[0].acquire(token, ttl),
      );
      return granted === 1 ? { fencingToken: 0, ...leaseFrom(sent, ttl) } : null;
    } catch (err) {
      // The ZADD may have run before the reply was lost (or runs later: a paused server): give the permit back, now
      // or when the connection is back, rather than keep it for a whole ttl.
      if (err instanceof RedisUnavailableError) this.unsure.send(() => this.calls[0].release(token)).catch(() => 0);
      throw err;
    }
  }

  async extend(keys: LockKeys, token: string, ttl: number): Promise<LeaseEnd> {
    const { quorum, client } = this.ctx;
    if (quorum) {
      try {
        return await quorum.extend(
          `extend the permit of the semaphore "${this.name}"`,
          ttl,
          (c) => SEMAPHORE_EXTEND.run(c, [keys.lock], [token, ttl]),
          this.needed,
        );
      } catch (err) {
        // Lost: the nodes that still held it have just extended it, a place nobody uses for a ttl: give it back (on
        // the nodes that take part: none to a node left out).
        if (err instanceof LockLostError) {
          for (const sent of quorum.toEveryNode((_, i) => this.calls[i].release(token))) sent.catch(() => 0);
        }
        throw err;
      }
    }
    const sent = sentNow();
    const extended = await this.ctx.failures.guard(`extend of a permit of "${this.name}"`, () =>
      SEMAPHORE_EXTEND.run(client, [keys.lock], [token, ttl]),
    );
    if (extended !== 1) throw lostPermit(this.name, 'extend');
    return leaseFrom(sent, ttl);
  }

  /**
   * Removes the permit (a plain ZREM per server). It was lost when it was gone, or when its lease (this process's
   * conservative `validUntil`, on the monotonic clock) had run out: an expired permit may already count as someone
   * else's free slot.
   */
  async release(_keys: LockKeys, token: string, validUntil = Number.POSITIVE_INFINITY): Promise<void> {
    const { quorum } = this.ctx;
    if (quorum) {
      await quorum.release(
        `release the permit of the semaphore "${this.name}"`,
        (_, i) => this.calls[i].release(token),
        this.needed,
      );
    } else {
      const released = await this.ctx.failures.guard(`release of a permit of "${this.name}"`, () =>
        this.calls[0].release(token),
      );
      if (released !== 1) throw lostPermit(this.name, 'release');
    }
    if (monotonicNow() >= validUntil) throw lostPermit(this.name, 'release');
  }

  /**
   * Passes a held permit to a new owner (a local waiter) in one script call per server: the permit is never free in
   * between. On a quorum the swap must be granted by as many nodes as an acquisition (else it is undone). Returns the
   * new permit's lease end; LockLostError when the permit was no longer held.
   */
  async handOver(token: string, next: string, ttl: number): Promise<LeaseEnd> {
    const { quorum, client } = this.ctx;
    const what = `release of a permit of "${this.name}"`;
    const swap = (c: RedisClient) => SEMAPHORE_EXTEND.run(c, [this.key], [token, ttl, next]);
    if (quorum) {
      const won = await quorum.acquire(
        what,
        ttl,
        swap,
        (handed) => handed === 1,
        (_, i) => this.calls[i].release(next),
        undefined,
        this.needed,
      );
      if (!won) throw lostPermit(this.name, 'release');
      return { expiresAt: won.expiresAt, validUntil: won.validUntil };
    }
    const sent = sentNow();
    let handed: number;
    try {
      handed = await this.ctx.failures.guard(what, () => swap(client));
    } catch (err) {
      // The new holder may have been written before the reply was lost: give that permit back.
      this.unsure.send(() => this.calls[0].release(next)).catch(() => 0);
      throw err;
    }
    if (handed !== 1) throw lostPermit(this.name, 'release');
    return leaseFrom(sent, ttl);
  }
}

/**
 * The permits held on a quorum (Semaphore.holders): the largest count of the nodes that take part and answer within
 * commandTimeout (a node left out, see NodeGate, is not asked), when a majority of all the nodes answers; else
 * RedisUnavailableError. The largest, not the count a majority agrees on: a holder has a permit on `needed` nodes
 * (semaphoreQuorum), not on every one, so with a node down the others may disagree (limit 1 on 3 nodes, a permit on
 * nodes 0 and 1, node 0 down: 1 and 0). A node holds one permit per holder (plus, for a moment, the partial grants
 * of an acquisition being decided or undone), so none shows more holders than there are; with every node answering
 * the fullest shows them all (they hold `needed` * holders > nodes * holders * limit / (limit + 1) permits, so one
 * node holds more than holders - 1), and on 3 nodes a majority's fullest does (limit 1: each holder on 2 of the 3;
 * more: on all 3).
 */
async function holdersOnQuorum(
  quorum: QuorumCalls,
  what: string,
  count: (client: RedisClient) => Promise<number>,
): Promise<number> {
  // every node taking part (a node left out fails unsent), each until commandTimeout
  const calls = quorum.toEveryNode((client) => count(client)).map((call) => call.then(Number));
  const counts = await gather(calls, () => false, quorum.commandTimeout);
  const answers = counts.flatMap((o) => (o?.ok ? [o.value] : []));
  if (answers.length < quorum.quorum) {
    throw new RedisUnavailableError(
      `${what} failed: fewer than ${quorum.quorum} of ${quorum.nodes} lock servers answered (${firstError(counts)})`,
    );
  }
  return Math.max(...answers);
}

/**
 * A counting semaphore: at most `limit` holders at once (redis-semaphore's `Semaphore`, or `RedlockSemaphore` with
 * `lock.quorum`). Made by `LockService.semaphore(name, { limit, ttl })`. Permits are `Lock`s (`kind: 'semaphore'`):
 * `extend`, `release`, `startAutoExtend` and `using` work as for a lock. A permit carries no fencing token
 * (`fencingToken` is 0): `limit` holders share the resource, so there is no single latest owner to fence with.
 *
 * Holders live in one sorted set per semaphore (`<prefix>lock:{<name>}:sem`), scored by expiry in the server's
 * time; the acquire script prunes expired holders, so a holder that died frees its permit after its ttl.
 */
export class Semaphore {
  /** How many holders at once. */
  readonly limit: number;
  /** Default ttl of a permit (ms). */
  readonly ttl: number;
  private readonly keys: LockKeys;
  private readonly owner: LockOwner;
  private readonly waiters: LocalWaiters;
  private readonly backend: SemaphoreBackend;
  /** Permits of this Semaphore held in this process (see HeldPermits). */
  private readonly heldHere = new HeldPermits();

  /** @internal Made by LockService.semaphore. */
  constructor(
    private readonly ctx: LeaseContext,
    readonly name: string,
    options: SemaphoreOptions,
  ) {
    // first: the checks below name it in template strings (a Symbol threw a TypeError there until 2026-12-05)
    KeyBuilder.validate(name, 'semaphore name');
    if (options === null || typeof options !== 'object') {
      throw new InvalidOptionsError('semaphore(name, { limit, ttl? }) needs an options object');
    }
    checkNames(options, SEMAPHORE, `semaphore "${name}"`);
    const { limit } = options;
    // Exact in a double: past 2^53 - 1, limit + 1 rounds to limit and semaphoreQuorum asks more nodes than there are.
    if (typeof limit !== 'number' || !Number.isSafeInteger(limit) || limit < 1) {
      throw new InvalidOptionsError(
        `semaphore "${name}": limit must be an integer from 1 to ${Number.MAX_SAFE_INTEGER}, got ${String(limit)}`,
      );
    }
    this.ttl = ttlOf(ctx.options.ttl, options.ttl, `semaphore "${name}"`);
    ctx.quorum?.checkTtl(this.ttl, `semaphore "${name}"`);
    const lock = ctx.keys.tagged(FEATURES.lock, name, ':sem');
    this.keys = { resource: name, lock, fence: '', waiters: `${lock}:waiters` };
    this.backend = new SemaphoreBackend(ctx, name, lock, limit);
    this.waiters = new LocalWaiters(ctx.shutdown);
    const owner = leaseOwner(ctx, this.backend, this.waiters, (keys, token) => this.handOver(keys, token));
    this.owner = {
      ...owner,
      // a permit released (not handed over: see handOver) or found lost is no longer held here
      released: (k, permit) => {
        this.heldHere.delete(permit.token);
        owner.released(k, permit);
      },
    };
    this.limit = limit;
  }

  /** A permit, retrying while all are held (like `LockService.acquire`); LockNotAcquiredError when they stay held. */
  async acquire(options: LeaseAcquireOptions = {}): Promise<Lock> {
    checkNames(options, LEASE_ACQUIRE, `semaphore "${this.name}".acquire`);
    const ttl = ttlOf(this.ttl, options.ttl, `semaphore "${this.name}"`);
    checkAutoExtend(options.autoExtend, ttl, `semaphore "${this.name}"`, options.extensionThreshold);
    return acquireWithRetries(
      this.ctx,
      'semaphore',
      this.name,
      options,
      { waiters: this.waiters, key: this.keys.lock, ttl },
      () => this.attempt(ttl),
    );
  }

  /** One attempt: a permit, or null when all `limit` are held. */
  async tryAcquire(options: Pick<LeaseAcquireOptions, 'ttl' | 'autoExtend'> = {}): Promise<Lock | null> {
    checkNames(options, LEASE_TRY, `semaphore "${this.name}".tryAcquire`);
    const ttl = ttlOf(this.ttl, options.ttl, `semaphore "${this.name}"`);
    checkAutoExtend(options.autoExtend, ttl, `semaphore "${this.name}"`);
    const permit = await this.attempt(ttl);
    if (!permit) {
      this.ctx.events.report('busy', () => ({ kind: 'semaphore', resource: this.name, attempts: 1 }));
      return null;
    }
    if (options.autoExtend) permit.startAutoExtend(autoExtendOptions(options));
    return permit;
  }

  /**
   * Runs `fn` holding a permit (auto-extended), then gives it back, also when `fn` throws (see `LockService.using`).
   */
  async using<T>(options: LeaseUsingOptions, fn: (signal: AbortSignal, permit: Lock) => Promise<T> | T): Promise<T> {
    checkLockedFunction(fn, 'semaphore.using(options, fn)');
    checkNames(options, LEASE_USING, `semaphore "${this.name}".using`);
    // checked before the permit is taken (as LockService.using does)
    const ttl = ttlOf(this.ttl, options?.ttl, `semaphore "${this.name}"`);
    checkExtensionThreshold(options?.extensionThreshold, ttl, `semaphore "${this.name}".using`);
    const permit = await this.acquire({ ...options, autoExtend: undefined });
    return this.ctx.runHolding(permit, fn, { extensionThreshold: options?.extensionThreshold });
  }

  /**
   * How many unexpired permits are held now (a gauge). On a quorum: the most that one node shows, of the nodes that
   * take part (see holdersOnQuorum); RedisUnavailableError when fewer than a majority of them answer.
   */
  async holders(): Promise<number> {
    const what = `count of the holders of "${this.name}"`;
    // by the server's clock, as the scripts decide (the app's is another machine's, or stepped)
    const count = (client: RedisClient) => SEMAPHORE_HOLDERS.run(client, [this.keys.lock], []);
    const { quorum, client } = this.ctx;
    if (quorum) return holdersOnQuorum(quorum, what, count);
    return this.ctx.failures.guard(what, () => count(client));
  }

  /**
   * A release passes the permit to the oldest waiter of this Semaphore in one script call per server (FIFO; the
   * permit is never free in between, so a caller of another process cannot slip in).
   */
  private async handOver(keys: LockKeys, token: string): Promise<boolean> {
    const waiter = this.waiters.first(keys.lock);
    if (!waiter) return false;
    const deliver = waiter.claim();
    const next = newToken();
    let end: LeaseEnd;
    try {
      end = await this.backend.handOver(token, next, waiter.ttl);
    } catch (err) {
      deliver(null); // it tries again on its own
      throw err;
    }
    const permit = new Lock(this.owner, keys, next, 0, end, waiter.ttl, 'semaphore');
    this.ctx.events.report('acquired', () => permit.info);
    this.heldHere.delete(token); // handed over: its release does not tell the owner
    this.heldHere.add(permit);
    deliver(permit);
    return true;
  }

  private async attempt(ttl: number): Promise<Lock | null> {
    this.ctx.shutdown.assertOpen(`semaphore "${this.name}" acquire`);
    // While callers of this process hold every permit, asking Redis is pointless: wait for one of their releases.
    if (this.heldHere.allHeld(this.limit)) return null;
    const token = newToken();
    const acquired = await this.owner.backend.tryAcquire(this.keys, token, ttl);
    if (!acquired) return null;
    const permit = new Lock(this.owner, this.keys, token, 0, acquired, ttl, 'semaphore');
    this.ctx.events.report('acquired', () => permit.info);
    this.heldHere.add(permit);
    return permit;
  }
}
