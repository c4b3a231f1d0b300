import { Inject, Injectable, Logger, type OnApplicationShutdown, type OnModuleInit, Optional } from '@nestjs/common';
import { Cluster, type Redis } from 'ioredis';
import { LockLostError, LockNotAcquiredError } from '../common/errors.js';
import { FEATURES, KeyBuilder } from '../common/keys.js';
import { RedisConnection } from '../connection/redis-connection.js';
import { FEATURE_CONNECTION, RedisConnections } from '../connection/redis-connections.js';
import { describeAttempts, maxHoldOf, newToken, nextPause, planRetries, ttlOf } from './lock.attempts.js';
import { monotonicNow } from './lock.clock.js';
import { acquired, acquiring, busyOrFailed } from './lock.trace.js';
import { acquisitionTtl, autoExtendOptions, checkExtensionThreshold } from './lock.auto-extend.js';
import { type LockBackend, type LockKeys, lockKeysOf, QuorumLockBackend, SingleLockBackend } from './lock.backend.js';
import { LockGrants } from './lock.grants.js';
import { type CurrentLock, lockContext } from './lock.context.js';
import { checkLockedFunction, type RunHoldingOptions, runHolding } from './lock.holding.js';
import { LockEvents } from './lock.events.js';
import { type LeaseAcquireOptions, type LeaseContext, type LeaseUsingOptions, leaseOwner } from './lock.lease.js';
import { type MultiLock, MultiLocks } from './lock.multi.js';
import { LocalWaiters } from './lock.waiters.js';
import { HeldHere } from './lock.held-here.js';
import { LockFailures, LockShutdown } from './lock.shutdown.js';
import { LockWakeups } from './lock.wake.js';
import { type QuorumCalls, quorumOf } from './lock.quorum.js';
import { Semaphore, type SemaphoreOptions } from './lock.semaphore.js';
import { LOCK_OPTIONS, type ResolvedLockOptions } from './lock.options.js';
import { Lock, type LockOwner } from './lock.js';
import type { AcquireOptions, LockedFunction, TryAcquireOptions, UsingOptions } from './lock.types.js';
import { ACQUIRE, checkNames, TRY_ACQUIRE, USING } from './lock.option-names.js';
import { startLockServers } from './lock.eviction-check.js';
import { traced } from '../common/diagnostics.js';

/**
 * Distributed locks on the toolkit's Redis, or on N independent servers (Redlock) when `lock.quorum.nodes` is set.
 *
 * Failure policy: fail closed. When Redis cannot decide, `acquire` / `tryAcquire` / `using` throw
 * RedisUnavailableError and the critical section does not run.
 */
@Injectable()
export class LockService implements OnModuleInit, OnApplicationShutdown {
  private readonly logger = new Logger('RedisToolkit:Lock');
  private readonly backend: LockBackend;
  /** Locks fail closed: every transport failure and error reply is thrown to the caller, counted and logged. */
  private readonly failures: LockFailures;
  private readonly lockOptions: ResolvedLockOptions;
  private readonly quorumClients: { client: Redis; description: string }[] = [];
  /** The Redlock steps over `quorumClients`, shared by locks, semaphores and multi-resource locks. */
  private readonly quorumCalls: QuorumCalls | undefined;
  /** app.close(): ends waits and auto-extensions, refuses later acquisitions (see LockShutdown). */
  private readonly shutdown = new LockShutdown();
  /** Callers of this process waiting for a resource, or asking Redis for it (see LocalWaiters). */
  private readonly waiters = new LocalWaiters(this.shutdown);
  private readonly owner: LockOwner;
  /** What semaphores and multi-resource locks share with this service. */
  private readonly leaseContext: LeaseContext;
  /** The lock a caller of this process holds per lock key (see HeldHere). */
  private readonly heldHere = new HeldHere();
  /** Releases by other services wake a waiter of this one (see LockWakeups). */
  private readonly wakeups: LockWakeups;
  /** This service's id among a lock's waiting services with `lock.wakeOnRelease`, else '' (it never joins). */
  private readonly waiterId: string;
  /** With `lock.wakeOnRelease` on one server (not a cluster or a quorum): a release grants the lock to a waiter. */
  private readonly grants: LockGrants | undefined;
  /** acquired, extended, released, lost, busy: `locks.events.on('lost', (e) => ...)`. Payloads carry no token. */
  readonly events = new LockEvents((name, err) =>
    this.logger.error(`a '${name}' lock event listener threw: ${(err as Error).message}`),
  );

  /**
   * The lock the current `using` callback or `@WithLock` method runs under (also in functions it calls), with the
   * signal that aborts when it is lost; undefined outside a locked section.
   */
  static current(): CurrentLock | undefined {
    return lockContext.getStore();
  }

  constructor(
    @Inject(LOCK_OPTIONS) options: ResolvedLockOptions,
    @Inject(FEATURE_CONNECTION.lock) private readonly connection: RedisConnection,
    private readonly keys: KeyBuilder,
    /** Every connection of the toolkit, closed when the lock servers stop the start (absent when built by hand). */
    @Optional() private readonly connections?: RedisConnections,
  ) {
    this.lockOptions = options;
    this.failures = new LockFailures(connection, { feature: 'lock', logger: this.logger }, this.shutdown);
    const quorum = options.quorum;
    this.wakeups = new LockWakeups(
      keys,
      () =>
        quorum ? quorum.nodes.map((node) => connection.createStandaloneClient(node)) : [connection.createSubscriber()],
      this.waiters,
      (lockKey, token, fence) =>
        this.grants
          ? this.grants.received(lockKey, token, fence)
          : this.logger.warn(`lock grants: a grant for "${lockKey.slice(0, 200)}", but this service waits by wake-ups`),
      (message) => this.logger.warn(message),
    );
    // On a cluster PUBLISH reaches the subscribers of one node only, so a release cannot tell a grant went unheard;
    // a quorum's nodes would each grant their own oldest waiter. There a release wakes the waiter instead, which
    // measured no faster than polling: off unless asked for.
    const grantable = !quorum && !(connection.client instanceof Cluster);
    this.waiterId = (options.wakeOnRelease ?? grantable) ? this.wakeups.id : '';
    if (quorum) {
      const servers = quorumOf(connection, quorum, this.logger, this.shutdown, this.failures.counts);
      this.quorumClients.push(...servers.clients);
      this.quorumCalls = servers.calls;
      this.wakeups.nodes = servers.calls; // no wake subscription on a node left out
      this.backend = new QuorumLockBackend(servers.calls, this.wakeups.channels, this.failures);
    } else {
      this.backend = new SingleLockBackend(connection.client, this.failures, this.wakeups.channels);
    }
    this.leaseContext = {
      client: this.connection.client,
      quorum: this.quorumCalls,
      keys: this.keys,
      options: this.lockOptions,
      commandTimeout: this.connection.commandTimeout,
      failures: this.failures,
      events: this.events,
      shutdown: this.shutdown,
      warn: (message) => this.logger.warn(message),
      runHolding: (lock, fn, options) => this.runHolding(lock, fn, options),
    };
    // a lock of this service's own: a release also forgets it as held here
    const owner = leaseOwner(this.leaseContext, this.backend, this.waiters, (k, token) => this.handOver(k, token));
    this.owner = {
      ...owner,
      released: (k, lock) => {
        this.heldHere.released(k.lock, lock);
        owner.released(k, lock);
      },
    };
    if (this.waiterId && grantable) {
      this.grants = new LockGrants(keys, {
        backend: this.backend,
        id: this.waiterId,
        waiters: this.waiters,
        hold: (k, token, fence, end, ttl) => this.holding(k, new Lock(this.owner, k, token, fence, end, ttl)),
        warn: (message) => this.logger.warn(message),
      });
    }
  }

  /** Failed Redis calls since start (this process, single server or cluster): transport failures and error replies. */
  stats(): { unavailable: number; replyErrors: number } {
    return { ...this.failures.counts };
  }

  /**
   * Now, in this process: single-resource locks a caller holds, and callers waiting in `acquire` for one (what the
   * dashboard shows). Computed when asked, so the lock path does no extra work for it.
   */
  activity(): { held: number; waiting: number } {
    return { held: this.heldHere.held, waiting: this.waiters.size };
  }

  private multiLocks: MultiLocks | undefined;

  /**
   * A counting semaphore: at most `limit` holders of `name` at once (on the quorum with `lock.quorum`). Make it once
   * and keep it: its local waiters are woken by its own releases.
   */
  semaphore(name: string, options: SemaphoreOptions): Semaphore {
    return new Semaphore(this.leaseContext, name, options);
  }

  /**
   * Locks every resource in `resources` or none (deadlock-free with overlapping sets), retrying like `acquire`.
   * Excludes single locks on the same resources; `lock.fencingTokens[resource]` per resource.
   */
  acquireAll(resources: readonly string[], options: LeaseAcquireOptions = {}): Promise<MultiLock> {
    return this.multi().acquire(resources, options);
  }

  /** One attempt at `acquireAll`: the lock, or null when any of the resources is held. */
  tryAcquireAll(resources: readonly string[], options: Pick<LeaseAcquireOptions, 'ttl' | 'autoExtend'> = {}) {
    return this.multi().tryAcquire(resources, options);
  }

  /** `using` for several resources at once (see `acquireAll`). */
  async usingAll<T>(
    resources: readonly string[],
    options: LeaseUsingOptions,
    fn: (signal: AbortSignal, lock: MultiLock) => Promise<T> | T,
  ): Promise<T> {
    return this.multi().using(resources, options, fn);
  }

  private multi(): MultiLocks {
    this.multiLocks ??= new MultiLocks(this.leaseContext, (resource) => this.keysFor(resource));
    return this.multiLocks;
  }

  /** Number of independent lock servers (1 without a quorum). */
  get nodes(): number {
    return this.backend.nodes;
  }

  async onModuleInit(): Promise<void> {
    await startLockServers(
      this.connection,
      this.quorumClients,
      this.keys.prefix,
      this.lockOptions.onUnsafeEviction,
      (m) => this.logger.warn(m),
      () => (this.connections ?? this.connection).onApplicationShutdown(),
    );
  }

  /**
   * The connections are quit now (or a moment later): each auto-extension ends, its lock reported lost (it expires by
   * itself; not released, its section may still run), each caller waiting for a lock, a permit or a multi-lock is
   * rejected, and so is every later acquisition: RedisUnavailableError naming the shutdown. A `using` section sees its
   * signal abort. After the HTTP server stopped (Nest's order), so no request still being answered loses its lock.
   */
  onApplicationShutdown(): void {
    this.shutdown.close();
    this.failures.close();
  }

  /**
   * Acquires the lock on `resource`, retrying while someone else holds it: `retry.count` more attempts
   * `retry.delay` + up to `retry.jitter` ms apart, or for up to `waitMs` ms when given. Throws LockNotAcquiredError
   * when it stays busy, RedisUnavailableError when Redis cannot decide (never returns a lock it is unsure about).
   */
  acquire(resource: string, options: AcquireOptions = {}): Promise<Lock> {
    return traced(
      'lockAcquire',
      () => acquiring(resource),
      () => this.acquireWaiting(resource, options),
      acquired,
      busyOrFailed,
    );
  }

  private async acquireWaiting(resource: string, options: AcquireOptions): Promise<Lock> {
    const ttl = acquisitionTtl(options, ACQUIRE, 'acquire', this.lockOptions.ttl); // autoExtend too: nothing taken
    const keys = this.keysFor(resource);
    const plan = planRetries(options, this.lockOptions.retry);
    let joined = false; // an attempt of this call joined the lock's waiting services
    let tries = 0; // attempts that reached Redis
    const ticket = this.waiters.ticket(); // its place among this process's waiters, kept across its pauses (FIFO)
    for (let attempt = 0; ; attempt++) {
      // a lock held here is not released after app.close(): without this the wait would last until it expires
      this.shutdown.assertOpen(`lock acquire on "${resource}"`);
      // While a caller of this process holds it (or an acquire of it is asking Redis for it), asking Redis is
      // pointless: wait to be woken by its release (or handed the lock), or for the next retry. A tryAcquire in flight
      // does not stop it: that waits for nothing, and a wait's grant is not its to take.
      const busyHere = this.heldHere.holds(keys.lock) || this.waiters.isAsking(keys.lock);
      // With this service's id: when busy, it joins the lock's waiting services, and the release wakes it (or grants it
      // the lock). The last attempt joins only when it is in already (it may take over a grant made to the wait):
      // nobody would be left to take what a release passes it.
      const last = plan.deadline === undefined ? attempt >= plan.retry.count : plan.deadline <= monotonicNow();
      const waiter: string = joined || !last || this.grants?.waits(keys.lock) ? this.waiterId : '';
      joined ||= !busyHere && waiter !== '';
      if (!busyHere) tries++;
      const lock = busyHere ? null : await this.waiters.ask(keys.lock, () => this.attempt(keys, ttl, waiter));
      if (lock) return this.started(lock, options);
      const pause = nextPause(plan, attempt);
      if (pause === undefined) {
        this.stopWaiting(keys); // nobody here waits for it now: the wait leaves the waiting services
        // how many reached Redis, when some did not (a caller here held the lock, or another was asking for it)
        const sent =
          tries > attempt ? '' : `, of which ${tries} reached Redis: this process held it or was asking for it`;
        this.events.report('busy', () => ({ kind: 'lock', resource, attempts: attempt + 1 }));
        throw new LockNotAcquiredError(
          `the lock on "${resource}" is held by another owner (${describeAttempts(plan, attempt)}${sent})`,
        );
      }
      if (this.waiterId) {
        this.wakeups.listen();
        if (this.wakeups.takeEarly(keys.lock)) continue;
      }
      const handed = await this.waiters.pause(keys.lock, pause, ttl, ticket);
      if (!handed) continue;
      this.stopWaiting(keys); // handed over by a caller here, or granted (then the wait is over already)
      return this.started(handed, options);
    }
  }

  /**
   * One attempt: the lock, or null when someone else holds it. Throws RedisUnavailableError when Redis cannot decide.
   */
  tryAcquire(resource: string, options: TryAcquireOptions = {}): Promise<Lock | null> {
    return traced(
      'lockAcquire',
      () => acquiring(resource),
      () => this.tryAcquireOnce(resource, options),
      acquired,
    );
  }

  private async tryAcquireOnce(resource: string, options: TryAcquireOptions): Promise<Lock | null> {
    const ttl = acquisitionTtl(options, TRY_ACQUIRE, 'tryAcquire', this.lockOptions.ttl);
    const lock = await this.attempt(this.keysFor(resource), ttl);
    if (lock) return this.started(lock, options);
    this.events.report('busy', () => ({ kind: 'lock', resource, attempts: 1 }));
    return null;
  }

  /** Starts the auto-extension `acquire` was asked for. When it refuses its options, the lock is released first. */
  private async started(lock: Lock, options: AcquireOptions): Promise<Lock> {
    try {
      if (options.autoExtend) lock.startAutoExtend(autoExtendOptions(options));
    } catch (err) {
      await lock.release().catch(() => undefined); // passed on to the next waiter, or freed
      throw err;
    }
    return lock;
  }

  /**
   * Runs `fn` holding the lock on `resource` (acquired like `acquire`), then releases it, also when `fn` throws.
   *
   * While `fn` runs the lock is extended whenever `extensionThreshold` ms or fewer are left (default: every third of
   * its ttl). When an extension fails (the lock was lost, or Redis could not confirm it before it would expire)
   * `signal` is aborted with the reason: stop writing then. If `fn` still returns normally after that, `using` throws
   * LockLostError: the section did not run exclusively. Inside `fn`, `LockService.current()` returns the lock and
   * the signal.
   */
  async using<T>(resource: string, options: UsingOptions, fn: LockedFunction<T>): Promise<T> {
    checkLockedFunction(fn, 'using(resource, options, fn)');
    checkNames(options, USING, 'using');
    const maxHoldMs = maxHoldOf(this.lockOptions.maxHoldMs, options?.maxHoldMs);
    const ttl = ttlOf(this.lockOptions.ttl, options?.ttl);
    checkExtensionThreshold(options?.extensionThreshold, ttl, 'using');
    const lock = await this.acquire(resource, { ttl, retry: options?.retry, waitMs: options?.waitMs });
    return this.runHolding(lock, fn, { maxHoldMs, extensionThreshold: options?.extensionThreshold });
  }

  /**
   * Runs `fn` under an already acquired lock with auto-extension and releases it afterwards (see `using`). After
   * `maxHoldMs` (default `lock.maxHoldMs`) the signal aborts, the lock is released and the call rejects with
   * LockHoldTimeoutError without waiting for `fn` (which may never settle).
   */
  runHolding<T, L extends Lock = Lock>(
    lock: L,
    fn: (signal: AbortSignal, lock: L) => Promise<T> | T,
    options: RunHoldingOptions = {},
  ): Promise<T> {
    return runHolding(lock, fn, options, this.lockOptions.maxHoldMs, (message) => this.logger.warn(message));
  }

  /** `waiter`: this service's id when the caller waits if the lock is busy (see LockWakeups), else ''. */
  private async attempt(keys: LockKeys, ttl: number, waiter = ''): Promise<Lock | null> {
    this.shutdown.assertOpen(`lock acquire on "${keys.resource}"`);
    // A fresh token per attempt: a background clean-up of a failed attempt can never delete a later success.
    const token = newToken();
    // with grants, an attempt of the service's wait, which a release grants the lock to (acquire-many.lua)
    const grants = waiter ? this.grants : undefined;
    const ofWait = grants?.begin(keys, token, ttl);
    const acquired = await this.backend.tryAcquire(keys, token, ttl, waiter, ofWait?.field).catch((err: unknown) => {
      // the wait is over: it leaves the waiting services (grants: the backend also releases the wait's token)
      if (ofWait) grants?.failed(ofWait);
      else if (waiter) this.wakeups.failed(keys.lock, () => this.backend.leave?.(keys, waiter));
      throw err;
    });
    if (waiter && !this.grants) this.wakeups.attempted(keys.lock, !acquired);
    else if (!ofWait) (this.grants ?? this.wakeups).answered(); // the leaves kept while Redis was away go now
    // granted while the busy reply was on its way (the grant comes on the subscriber connection)
    if (!acquired) return ofWait ? (grants?.busy(ofWait, ttl) ?? null) : null;
    if (ofWait) grants?.acquired(ofWait);
    this.wakeups.takeEarly(keys.lock);
    return this.holding(keys, new Lock(this.owner, keys, token, acquired.fencingToken, acquired, ttl));
  }

  /** A caller stopped waiting for the lock (gave up, or handed it here): the service's wait may end with it. */
  private stopWaiting(keys: LockKeys): void {
    if (this.grants) this.grants.stopWaiting(keys.lock);
    else this.wakeups.stopWaiting(keys.lock, () => this.backend.leave?.(keys, this.waiterId));
  }

  /** A lock this process now holds: reported, and known as held here (local callers wait for its release). */
  private holding(keys: LockKeys, lock: Lock): Lock {
    this.events.report('acquired', () => lock.info);
    this.heldHere.add(keys.lock, lock);
    return lock;
  }

  private keysFor(resource: string): LockKeys {
    KeyBuilder.validate(resource, 'lock resource');
    return lockKeysOf(resource, this.keys.tagged(FEATURES.lock, resource));
  }

  private async handOver(keys: LockKeys, token: string): Promise<boolean> {
    const { backend } = this;
    if (!(backend instanceof SingleLockBackend)) return false;
    return this.waiters.handOver(keys.lock, async (ttl) => {
      const next = newToken();
      const handed = await backend.handOver(keys, token, next, ttl).catch((err: unknown) => {
        if (err instanceof LockLostError) this.heldHere.lost(keys.lock, token);
        throw err;
      });
      return this.holding(keys, new Lock(this.owner, keys, next, handed.fencingToken, handed, ttl));
    });
  }
}
