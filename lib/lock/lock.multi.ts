import { Cluster } from 'ioredis';
import { InvalidOptionsError, LockLostError } from '../common/errors.js';
import { KeyBuilder } from '../common/keys.js';
import { itemReplyError } from '../common/failure-policy.js';
import { newToken, nextFenceFloor, ttlOf } from './lock.attempts.js';
import { autoExtendOptions, checkAutoExtend, checkExtensionThreshold } from './lock.auto-extend.js';
import type { Acquired, LockBackend, LockKeys } from './lock.backend.js';
import { Lock, type LockOwner } from './lock.js';
import { type LeaseEnd, leaseFrom, sentNow } from './lock.clock.js';
import {
  acquireWithRetries,
  type LeaseAcquireOptions,
  type LeaseContext,
  type LeaseUsingOptions,
  leaseOwner,
} from './lock.lease.js';
import { gather } from './lock.gather.js';
import { checkLockedFunction } from './lock.holding.js';
import { LocalWaiters } from './lock.waiters.js';
import { UnsureReleases } from './lock.unsure-releases.js';
import { checkNames, LEASE_ACQUIRE, LEASE_TRY, LEASE_USING } from './lock.option-names.js';
import {
  ACQUIRE_MANY,
  EXTEND,
  MULTI_ACQUIRE,
  MULTI_EXTEND,
  MULTI_RELEASE,
  RAISE_FENCE,
  RELEASE,
} from './lock.scripts.js';

/** At most this many resources in one multi-resource lock (each is a key pair in one script call). */
export const MAX_MULTI_RESOURCES = 100;

/** The keys of every resource of a multi-resource lock, sorted by lock key; `lock`/`fence` are the first one's. */
interface MultiKeys extends LockKeys {
  readonly all: readonly LockKeys[];
}

interface MultiAcquired extends Acquired {
  fencingTokens: number[];
}

/**
 * A lock on several resources at once (all or none): from `LockService.acquireAll` / `tryAcquireAll` / `usingAll`.
 * It excludes single locks on the same resources too (the same keys). `fencingTokens[resource]` is each resource's
 * fencing token (the same counter `acquire(resource)` draws from); `fencingToken` is the largest of them.
 */
export class MultiLock extends Lock {
  /** @internal */
  constructor(
    owner: LockOwner,
    keys: MultiKeys,
    token: string,
    acquired: MultiAcquired,
    ttl: number,
    /** The resources, in the order the lock was taken (sorted by key). */
    readonly resources: readonly string[],
  ) {
    super(owner, keys, token, Math.max(...acquired.fencingTokens), acquired, ttl, 'multi');
    this.fencingTokens = Object.fromEntries(resources.map((r, i) => [r, acquired.fencingTokens[i]]));
  }

  /** Each resource's fencing token. */
  readonly fencingTokens: Readonly<Record<string, number>>;
}

const lostAll = (keys: MultiKeys, what: string): LockLostError =>
  new LockLostError(`cannot ${what} the lock on "${keys.resource}": one of them expired or is held by another owner`);

/**
 * One server: one script takes every key at once (all or none). A cluster: the resources live in different slots, so
 * they are taken one by one in key order, and the first busy one rolls back every one taken so far — nobody holds
 * one while waiting for another, so overlapping sets cannot deadlock. A quorum: the all-or-none script on every node,
 * granted by a majority (Redlock), each resource's fencing token synced like a single lock's.
 */
class MultiBackend implements LockBackend {
  readonly nodes: number;
  /** Locks a failed call may hold on the main connection, released now or when it is back (one server, a cluster). */
  private readonly unsure: UnsureReleases;

  constructor(private readonly ctx: LeaseContext) {
    this.nodes = ctx.quorum?.nodes ?? 1;
    this.unsure = new UnsureReleases(ctx.client, ctx.shutdown);
  }

  private pairs(keys: MultiKeys): string[] {
    return keys.all.flatMap((k) => [k.lock, k.fence]);
  }

  private locks(keys: MultiKeys): string[] {
    return keys.all.map((k) => k.lock);
  }

  async tryAcquire(keys: LockKeys, token: string, ttl: number): Promise<MultiAcquired | null> {
    const multi = keys as MultiKeys;
    const { quorum, client } = this.ctx;
    const what = `acquire of "${multi.resource}"`;
    if (quorum) {
      const floor = String(nextFenceFloor());
      const won = await quorum.acquire(
        what,
        ttl,
        (c) => MULTI_ACQUIRE.runWithAnyKeys(c, this.pairs(multi), [token, ttl, floor]),
        (fences) => Array.isArray(fences) && fences.length === multi.all.length,
        (c) => MULTI_RELEASE.runWithAnyKeys(c, this.locks(multi), [token]),
        (outcomes, deadline) =>
          quorum.syncFences(
            outcomes.map((o) => (o?.ok && o.value.length === multi.all.length ? o.value : [])),
            (i, j, to) => RAISE_FENCE.run(quorum.clients[i], [multi.all[j].lock, multi.all[j].fence], [token, to]),
            deadline,
          ),
      );
      if (!won) return null;
      const fencingTokens = multi.all.map((_, j) =>
        Math.max(...won.outcomes.map((o) => (o?.ok && o.value.length > j ? o.value[j] : 0))),
      );
      const { expiresAt, validUntil } = won;
      return { fencingTokens, fencingToken: Math.max(...fencingTokens), expiresAt, validUntil };
    }
    const sent = sentNow();
    let fences: number[] | null;
    try {
      fences = await this.ctx.failures.guard(what, () =>
        client instanceof Cluster
          ? this.acquireInOrder(client, multi, token, ttl)
          : MULTI_ACQUIRE.runWithAnyKeys(client, this.pairs(multi), [token, ttl]),
      );
    } catch (err) {
      // Some SETs may have run before the reply was lost (or run later: a paused server): release what may be ours,
      // now or when the connection is back, rather than keep it for a ttl.
      this.unsure.send(() => this.releaseAll(multi, token)).catch(() => undefined);
      throw err;
    }
    if (!fences || fences.length !== multi.all.length) return null;
    return { fencingTokens: fences, fencingToken: Math.max(...fences), ...leaseFrom(sent, ttl) };
  }

  /** Cluster: one resource at a time in key order; the first busy one rolls back the ones taken. */
  private async acquireInOrder(client: Cluster, keys: MultiKeys, token: string, ttl: number): Promise<number[] | null> {
    const fences: number[] = [];
    for (const k of keys.all) {
      // A batch of one of the lock's own acquire script (no waiting service: a multi-lock attempt joins no queue).
      const [fence] = await ACQUIRE_MANY.runWithAnyKeys(client, [k.lock, k.fence, k.waiters], [token, ttl, '', '', '']);
      if (typeof fence === 'string') throw itemReplyError(`acquiring the lock on "${k.resource}"`, fence);
      if (fence <= 0) {
        await Promise.all(keys.all.slice(0, fences.length).map((t) => RELEASE.run(client, [t.lock], [token])));
        return null;
      }
      fences.push(fence);
    }
    return fences;
  }

  /**
   * Extends every key, or frees them all: once an extension finds one key lost the lock is lost (its release() no
   * longer asks Redis), so the keys still ours are released here instead of staying held for their ttl (on a cluster
   * or a quorum some may even have been extended).
   */
  async extend(keys: LockKeys, token: string, ttl: number): Promise<LeaseEnd> {
    const multi = keys as MultiKeys;
    try {
      return await this.extendAll(multi, token, ttl);
    } catch (err) {
      if (err instanceof LockLostError) await this.releaseLost(multi, token);
      throw err;
    }
  }

  /**
   * Releases what is still ours of a lost lock, on every node that takes part (none to a node left out); bounded by
   * commandTimeout, failures ignored.
   */
  private async releaseLost(keys: MultiKeys, token: string): Promise<void> {
    const { quorum } = this.ctx;
    const calls: Promise<unknown>[] = quorum
      ? quorum.toEveryNode((c) => MULTI_RELEASE.runWithAnyKeys(c, this.locks(keys), [token]))
      : [this.releaseAll(keys, token)];
    await gather(calls, () => false, this.ctx.commandTimeout);
  }

  private async extendAll(multi: MultiKeys, token: string, ttl: number): Promise<LeaseEnd> {
    const { quorum, client } = this.ctx;
    if (quorum) {
      return quorum.extend(`extend the lock on "${multi.resource}"`, ttl, (c) =>
        MULTI_EXTEND.runWithAnyKeys(c, this.locks(multi), [token, ttl]),
      );
    }
    const sent = sentNow();
    const extended = await this.ctx.failures.guard(`extend of "${multi.resource}"`, async () =>
      client instanceof Cluster
        ? (await Promise.all(multi.all.map((k) => EXTEND.run(client, [k.lock], [token, ttl])))).every((e) => e === 1)
        : (await MULTI_EXTEND.runWithAnyKeys(client, this.locks(multi), [token, ttl])) === 1,
    );
    if (!extended) throw lostAll(multi, 'extend');
    return leaseFrom(sent, ttl);
  }

  async release(keys: LockKeys, token: string): Promise<void> {
    const multi = keys as MultiKeys;
    const { quorum } = this.ctx;
    if (quorum) {
      return quorum.release(`release the lock on "${multi.resource}"`, (c) =>
        MULTI_RELEASE.runWithAnyKeys(c, this.locks(multi), [token]),
      );
    }
    const released = await this.ctx.failures.guard(`release of "${multi.resource}"`, () =>
      this.releaseAll(multi, token),
    );
    if (!released) throw lostAll(multi, 'release');
  }

  private async releaseAll(keys: MultiKeys, token: string): Promise<boolean> {
    const { client } = this.ctx;
    if (client instanceof Cluster) {
      const released = await Promise.all(keys.all.map((k) => RELEASE.run(client, [k.lock], [token])));
      return released.every((r) => r === 1);
    }
    return (await MULTI_RELEASE.runWithAnyKeys(client, this.locks(keys), [token])) === 1;
  }
}

/** Multi-resource locks wait in one queue: any release may free what a waiter needs. */
const MULTI_WAIT = 'multi';

/** Multi-resource locks of one LockService. */
export class MultiLocks {
  private readonly owner: LockOwner;
  private readonly waiters: LocalWaiters;

  constructor(
    private readonly ctx: LeaseContext,
    private readonly keysOf: (resource: string) => LockKeys,
  ) {
    this.waiters = new LocalWaiters(ctx.shutdown);
    this.owner = leaseOwner(ctx, new MultiBackend(ctx), this.waiters, undefined, MULTI_WAIT);
  }

  async acquire(resources: readonly string[], options: LeaseAcquireOptions = {}): Promise<MultiLock> {
    checkNames(options, LEASE_ACQUIRE, 'acquireAll');
    const keys = this.multiKeys(resources);
    const ttl = ttlOf(this.ctx.options.ttl, options.ttl, 'acquireAll');
    checkAutoExtend(options.autoExtend, ttl, 'acquireAll', options.extensionThreshold);
    return acquireWithRetries(
      this.ctx,
      'multi',
      keys.resource,
      options,
      { waiters: this.waiters, key: MULTI_WAIT, ttl },
      () => this.attempt(keys, ttl),
    );
  }

  /** `LockService.usingAll`: `using` for several resources at once, the lock kept alive while `fn` runs. */
  async using<T>(
    resources: readonly string[],
    options: LeaseUsingOptions,
    fn: (signal: AbortSignal, lock: MultiLock) => Promise<T> | T,
  ): Promise<T> {
    checkLockedFunction(fn, 'usingAll(resources, options, fn)');
    checkNames(options, LEASE_USING, 'usingAll');
    checkExtensionThreshold(options?.extensionThreshold, ttlOf(this.ctx.options.ttl, options?.ttl), 'usingAll');
    const lock = await this.acquire(resources, { ...options, autoExtend: undefined });
    return this.ctx.runHolding(lock, fn, { extensionThreshold: options?.extensionThreshold });
  }

  async tryAcquire(
    resources: readonly string[],
    options: Pick<LeaseAcquireOptions, 'ttl' | 'autoExtend'> = {},
  ): Promise<MultiLock | null> {
    checkNames(options, LEASE_TRY, 'tryAcquireAll');
    const keys = this.multiKeys(resources);
    const ttl = ttlOf(this.ctx.options.ttl, options.ttl, 'tryAcquireAll');
    checkAutoExtend(options.autoExtend, ttl, 'tryAcquireAll');
    const lock = await this.attempt(keys, ttl);
    if (!lock) {
      this.ctx.events.report('busy', () => ({ kind: 'multi', resource: keys.resource, attempts: 1 }));
      return null;
    }
    if (options.autoExtend) lock.startAutoExtend(autoExtendOptions(options));
    return lock;
  }

  private async attempt(keys: MultiKeys, ttl: number): Promise<MultiLock | null> {
    this.ctx.shutdown.assertOpen(`lock acquire of "${keys.resource}"`);
    const token = newToken();
    const acquired = (await this.owner.backend.tryAcquire(keys, token, ttl)) as MultiAcquired | null;
    if (!acquired) return null;
    const lock = new MultiLock(
      this.owner,
      keys,
      token,
      acquired,
      ttl,
      keys.all.map((k) => k.resource),
    );
    this.ctx.events.report('acquired', () => lock.info);
    return lock;
  }

  private multiKeys(resources: readonly string[]): MultiKeys {
    if (!Array.isArray(resources) || resources.length === 0 || resources.length > MAX_MULTI_RESOURCES) {
      throw new InvalidOptionsError(
        `acquireAll(resources): resources must be an array of 1 to ${MAX_MULTI_RESOURCES} resource names`,
      );
    }
    for (const r of resources) KeyBuilder.validate(r, 'lock resource');
    if (new Set(resources).size !== resources.length) {
      throw new InvalidOptionsError('acquireAll(resources): a resource is listed twice');
    }
    // One order for every caller: overlapping sets meet their first common resource first (no hold-and-wait cycle).
    const all = resources.map(this.keysOf).sort((a, b) => (a.lock < b.lock ? -1 : a.lock > b.lock ? 1 : 0));
    return {
      resource: all.map((k) => k.resource).join(','),
      lock: all[0].lock,
      fence: all[0].fence,
      waiters: all[0].waiters,
      all,
    };
  }
}
