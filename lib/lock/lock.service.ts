import { randomBytes } from 'node:crypto';
import { Inject, Injectable, Logger, type OnModuleInit } from '@nestjs/common';
import type { Redis } from 'ioredis';
import {
  InvalidOptionsError,
  LockHoldTimeoutError,
  LockLostError,
  LockNotAcquiredError,
  RedisUnavailableError,
} from '../common/errors.js';
import { durationProblem, isDuration } from '../common/option-checks.js';
import { FailurePolicy } from '../common/failure-policy.js';
import { FEATURES, KeyBuilder } from '../common/keys.js';
import { RedisConnection } from '../connection/redis-connection.js';
import { describeConnection } from '../connection/redis-client.factory.js';
import { QuorumLockBackend, SingleLockBackend, type LockBackend, type LockKeys } from './lock.backend.js';
import { LOCK_OPTIONS, type LockRetryOptions, type ResolvedLockOptions } from './lock.options.js';
import { Lock, type LockOwner } from './lock.js';

export interface AcquireOptions {
  /** Time to live in ms (default `lock.ttl`, 10 s). The lock expires by itself after this unless extended. */
  ttl?: number;
  /** Attempts after the first, pause and jitter between them (default `lock.retry`). Ignored when `waitMs` is given. */
  retry?: LockRetryOptions;
  /** Keep retrying for at most this many ms, then throw LockNotAcquiredError. 0: one attempt. */
  waitMs?: number;
}

export interface UsingOptions extends AcquireOptions {
  /** `using` only: longest ms the lock is held (default `lock.maxHoldMs`), then LockHoldTimeoutError. */
  maxHoldMs?: number;
}

export interface TryAcquireOptions {
  ttl?: number;
}

export type LockedFunction<T> = (signal: AbortSignal, lock: Lock) => Promise<T> | T;

/** The longest delay setTimeout honours (2^31 - 1 ms, ~24.8 days); a longer hold limit is no limit. */
const MAX_TIMER_MS = 2_147_483_647;

/** Part of the ttl after which `using` extends the lock: three chances to extend before it would expire. */
const EXTEND_EVERY = 1 / 3;

/**
 * Distributed locks on the toolkit's Redis, or on N independent servers (Redlock) when `lock.quorum.nodes` is set.
 *
 * Failure policy: fail closed. When Redis cannot decide, `acquire` / `tryAcquire` / `using` throw
 * RedisUnavailableError and the critical section does not run.
 */
@Injectable()
export class LockService implements OnModuleInit {
  private readonly logger = new Logger('LockService');
  private readonly backend: LockBackend;
  /** Locks fail closed: every transport failure and error reply is thrown to the caller, counted and logged. */
  private readonly failures: FailurePolicy;
  private readonly lockOptions: ResolvedLockOptions;
  private readonly quorumClients: { client: Redis; description: string }[] = [];
  /**
   * Callers of this process waiting for a resource, keyed by lock key, oldest first. A release by another caller of
   * this process hands the lock straight to the oldest (one script call, FIFO, the lock never free in between) on a
   * single server, or wakes it to try at once on a quorum.
   */
  private readonly waiters = new Map<string, Set<Waiter>>();
  private readonly owner: LockOwner;
  /** The lock a caller of this process holds per lock key (at most one can be valid at a time). */
  private readonly heldHere = new Map<string, Lock>();
  /** Lock keys an attempt of this process is asking Redis for right now. */
  private readonly inFlight = new Set<string>();

  constructor(
    @Inject(LOCK_OPTIONS) options: ResolvedLockOptions,
    private readonly connection: RedisConnection,
    private readonly keys: KeyBuilder,
  ) {
    this.lockOptions = options;
    this.failures = new FailurePolicy(connection, { feature: 'lock', logger: this.logger });
    const quorum = options.quorum;
    if (quorum) {
      for (const node of quorum.nodes) {
        this.quorumClients.push({
          client: connection.createStandaloneClient(node),
          description: describeConnection(node),
        });
      }
      this.backend = new QuorumLockBackend(
        this.quorumClients.map((c) => c.client),
        quorum.driftFactor,
        connection.commandTimeout,
      );
    } else {
      this.backend = new SingleLockBackend(connection.client, this.failures);
    }
    this.owner = {
      backend: this.backend,
      released: (k, lock) => {
        if (this.heldHere.get(k.lock) === lock) this.heldHere.delete(k.lock);
        this.wakeOne(k.lock);
      },
      handOver: (k, token) => this.handOver(k, token),
    };
  }

  /** Failed Redis calls since start (this process, single server or cluster): transport failures and error replies. */
  stats(): { unavailable: number; replyErrors: number } {
    return { ...this.failures.counts };
  }

  /** Number of independent lock servers (1 without a quorum). */
  get nodes(): number {
    return this.backend.nodes;
  }

  async onModuleInit(): Promise<void> {
    if (this.quorumClients.length > 0 && !this.connection.lazyConnect) await this.connectQuorum();
  }

  /**
   * Acquires the lock on `resource`, retrying while someone else holds it: `retry.count` more attempts
   * `retry.delay` + up to `retry.jitter` ms apart, or for up to `waitMs` ms when given. Throws LockNotAcquiredError
   * when it stays busy, RedisUnavailableError when Redis cannot decide (never returns a lock it is unsure about).
   */
  async acquire(resource: string, options: AcquireOptions = {}): Promise<Lock> {
    const keys = this.keysFor(resource);
    const ttl = this.ttlOf(options.ttl);
    const retry =
      options.retry === undefined
        ? this.lockOptions.retry
        : { ...this.lockOptions.retry, ...checkRetry(options.retry) };
    const waitMs = options.waitMs;
    if (waitMs !== undefined && (typeof waitMs !== 'number' || !Number.isFinite(waitMs) || waitMs < 0)) {
      throw new InvalidOptionsError(`waitMs must be a non-negative number of milliseconds, got ${String(waitMs)}`);
    }
    const startedAt = Date.now();
    const deadline = waitMs === undefined ? undefined : startedAt + waitMs;
    for (let attempt = 0; ; attempt++) {
      // While a caller of this process holds it (or is asking Redis for it), asking Redis is pointless: wait to be
      // woken by its release, or for the next retry.
      const busyHere = this.heldHere.get(keys.lock)?.isHeld === true || this.inFlight.has(keys.lock);
      const lock = busyHere ? null : await this.attempt(keys, ttl);
      if (lock) return lock;
      let pause = retry.delay + Math.random() * retry.jitter;
      const left = deadline === undefined ? undefined : deadline - Date.now();
      if (left === undefined ? attempt >= retry.count : left <= 0) {
        throw new LockNotAcquiredError(
          `the lock on "${resource}" is held by another owner (${attempt + 1} attempt${attempt === 0 ? '' : 's'} in ${Date.now() - startedAt} ms)`,
        );
      }
      if (left !== undefined) pause = Math.min(pause, left);
      const handed = await this.pause(keys.lock, pause, ttl);
      if (handed) return handed;
    }
  }

  /** One attempt: the lock, or null when someone else holds it. Throws RedisUnavailableError when Redis cannot decide. */
  async tryAcquire(resource: string, options: TryAcquireOptions = {}): Promise<Lock | null> {
    return this.attempt(this.keysFor(resource), this.ttlOf(options.ttl));
  }

  /**
   * Runs `fn` holding the lock on `resource` (acquired like `acquire`), then releases it, also when `fn` throws.
   *
   * While `fn` runs the lock is extended every third of its ttl. When an extension fails (the lock was lost, or
   * Redis could not confirm it before it would expire) `signal` is aborted with the reason: stop writing then. If
   * `fn` still returns normally after that, `using` throws LockLostError: the section did not run exclusively.
   */
  async using<T>(resource: string, options: UsingOptions, fn: LockedFunction<T>): Promise<T> {
    if (typeof fn !== 'function') throw new InvalidOptionsError('using(resource, options, fn): fn must be a function');
    const maxHoldMs = this.maxHoldOf(options?.maxHoldMs);
    const lock = await this.acquire(resource, options ?? {});
    return this.runHolding(lock, fn, maxHoldMs);
  }

  /**
   * Runs `fn` under an already acquired lock with auto-extension and releases it afterwards (see `using`). After
   * `maxHoldMs` (default `lock.maxHoldMs`) the signal aborts, the lock is released and the call rejects with
   * LockHoldTimeoutError without waiting for `fn` (which may never settle).
   */
  async runHolding<T>(lock: Lock, fn: LockedFunction<T>, maxHoldMs = this.lockOptions.maxHoldMs): Promise<T> {
    const controller = new AbortController();
    const { signal } = controller;
    let stopped = false;
    let extendTimer: NodeJS.Timeout | undefined;
    let watchdog: NodeJS.Timeout | undefined;
    const lose = (reason: Error): void => {
      if (stopped || signal.aborted) return;
      clearTimeout(extendTimer);
      clearTimeout(watchdog);
      controller.abort(reason);
    };
    const armWatchdog = (): void => {
      clearTimeout(watchdog);
      watchdog = setTimeout(
        () => lose(new LockLostError(`the lock on "${lock.resource}" expired before it could be extended`)),
        Math.max(0, lock.expiresAt - Date.now()),
      );
    };
    const every = Math.max(1, Math.floor(lock.ttl * EXTEND_EVERY));
    const scheduleExtension = (delay: number): void => {
      extendTimer = setTimeout(() => {
        lock.extend(lock.ttl).then(
          () => {
            if (stopped) return;
            armWatchdog();
            scheduleExtension(every);
          },
          (err: unknown) => {
            if (stopped) return;
            if (err instanceof RedisUnavailableError && lock.expiresAt - Date.now() > 0) {
              // Not lost yet: try again soon; the watchdog aborts if no extension lands before it would expire.
              this.logger.warn(`extending the lock on "${lock.resource}" failed, retrying: ${err.message}`);
              scheduleExtension(Math.max(1, Math.min(every, Math.floor((lock.expiresAt - Date.now()) / 3))));
              return;
            }
            lose(err instanceof Error ? err : new LockLostError(String(err)));
          },
        );
      }, delay);
    };
    armWatchdog();
    scheduleExtension(every);
    const stop = (): void => {
      stopped = true;
      clearTimeout(extendTimer);
      clearTimeout(watchdog);
    };

    let holdTimer: NodeJS.Timeout | undefined;
    const heldTooLong =
      maxHoldMs > MAX_TIMER_MS // Infinity, or past what setTimeout can wait (it would fire at once)
        ? undefined
        : new Promise<never>((_, reject) => {
            holdTimer = setTimeout(() => {
              const err = new LockHoldTimeoutError(
                `the function holding the lock on "${lock.resource}" did not settle within maxHoldMs (${maxHoldMs} ms); the lock was released`,
              );
              lose(err);
              reject(err);
            }, maxHoldMs);
          });
    let result: T;
    try {
      const running = new Promise<T>((resolve) => resolve(fn(signal, lock)));
      // fn may still settle (or fail) after the hold timed out: nobody awaits it then, so its rejection is dropped here
      running.catch(() => undefined);
      result = await (heldTooLong ? Promise.race([running, heldTooLong]) : running);
    } catch (err) {
      clearTimeout(holdTimer);
      stop();
      await this.releaseQuietly(lock);
      throw err;
    }
    clearTimeout(holdTimer);
    const lostReason: unknown = signal.aborted ? signal.reason : undefined;
    stop();
    if (lostReason !== undefined) {
      await this.releaseQuietly(lock);
      const why = lostReason instanceof Error ? lostReason.message : String(lostReason);
      throw new LockLostError(`the lock on "${lock.resource}" was lost while the locked function ran (${why})`, {
        cause: lostReason,
      });
    }
    try {
      await lock.release();
    } catch (err) {
      // Lost: it expired while fn ran (e.g. the event loop was blocked past the ttl), so exclusivity was not kept.
      if (err instanceof LockLostError) throw err;
      this.logger.warn(
        `releasing the lock on "${lock.resource}" failed; it expires by itself: ${(err as Error).message}`,
      );
    }
    return result;
  }

  private async releaseQuietly(lock: Lock): Promise<void> {
    try {
      await lock.release();
    } catch (err) {
      if (!(err instanceof LockLostError)) {
        this.logger.warn(
          `releasing the lock on "${lock.resource}" failed; it expires by itself: ${(err as Error).message}`,
        );
      }
    }
  }

  private async attempt(keys: LockKeys, ttl: number): Promise<Lock | null> {
    // A fresh token per attempt: a background clean-up of a failed attempt can never delete a later success.
    const token = newToken();
    let acquired: Awaited<ReturnType<LockBackend['tryAcquire']>>;
    this.inFlight.add(keys.lock);
    try {
      acquired = await this.backend.tryAcquire(keys, token, ttl);
    } finally {
      this.inFlight.delete(keys.lock);
    }
    if (!acquired) return null;
    const lock = new Lock(this.owner, keys, token, acquired.fencingToken, acquired.expiresAt, ttl);
    if (this.heldHere.size >= 10_000) {
      // Locks left to expire without release: forget them, so the map stays small.
      for (const [key, held] of this.heldHere) if (!held.isHeld) this.heldHere.delete(key);
    }
    this.heldHere.set(keys.lock, lock);
    return lock;
  }

  private keysFor(resource: string): LockKeys {
    KeyBuilder.validate(resource, 'lock resource');
    const lock = this.keys.tagged(FEATURES.lock, resource);
    return { resource, lock, fence: `${lock}:fence` };
  }

  private maxHoldOf(ms: number | undefined): number {
    if (ms === undefined) return this.lockOptions.maxHoldMs;
    if (ms !== Number.POSITIVE_INFINITY && !isDuration(ms)) {
      throw new InvalidOptionsError(`maxHoldMs ${durationProblem(ms)} (or Infinity)`);
    }
    return ms;
  }

  private ttlOf(ttl: number | undefined): number {
    if (ttl === undefined) return this.lockOptions.ttl;
    if (!isDuration(ttl)) throw new InvalidOptionsError(`ttl ${durationProblem(ttl)}`);
    return Math.ceil(ttl);
  }

  /**
   * Sleeps up to `ms`, or less when a caller of this process releases the same resource; resolves with the lock when
   * that caller handed it over.
   */
  private pause(lockKey: string, ms: number, ttl: number): Promise<Lock | null> {
    return new Promise((resolve) => {
      let set = this.waiters.get(lockKey);
      if (!set) {
        set = new Set();
        this.waiters.set(lockKey, set);
      }
      const waiters = set;
      const leave = (): void => {
        waiters.delete(waiter);
        if (waiters.size === 0 && this.waiters.get(lockKey) === waiters) this.waiters.delete(lockKey);
      };
      const waiter: Waiter = {
        ttl,
        wake: () => {
          clearTimeout(timer);
          leave();
          resolve(null);
        },
        claim: () => {
          // Picked for a hand-over: stop the timer so the caller waits for the outcome (bounded by commandTimeout).
          clearTimeout(timer);
          leave();
          return (lock) => resolve(lock);
        },
      };
      const timer = setTimeout(waiter.wake, ms);
      waiters.add(waiter);
    });
  }

  private wakeOne(lockKey: string): void {
    const first = this.waiters.get(lockKey)?.values().next();
    if (first && !first.done) first.value.wake();
  }

  private async handOver(keys: LockKeys, token: string): Promise<boolean> {
    if (!(this.backend instanceof SingleLockBackend)) return false;
    const first = this.waiters.get(keys.lock)?.values().next();
    if (!first || first.done) return false;
    const waiter = first.value;
    const deliver = waiter.claim();
    const nextToken = newToken();
    try {
      const acquired = await this.backend.handOver(keys, token, nextToken, waiter.ttl);
      const lock = new Lock(this.owner, keys, nextToken, acquired.fencingToken, acquired.expiresAt, waiter.ttl);
      this.heldHere.set(keys.lock, lock);
      deliver(lock);
      return true;
    } catch (err) {
      deliver(null); // it tries again on its own
      if (err instanceof LockLostError && this.heldHere.get(keys.lock)?.token === token)
        this.heldHere.delete(keys.lock);
      throw err;
    }
  }

  /** Connects every quorum node; start-up fails unless a majority answers (a minority may be down). */
  private async connectQuorum(): Promise<void> {
    const ready = await Promise.all(
      this.quorumClients.map(({ client }) =>
        // A node down at start keeps reconnecting in the background: a minority may come back later.
        this.connection.waitUntilReady(client).then(
          () => undefined,
          (err: unknown) => (err instanceof Error ? err.message : String(err)),
        ),
      ),
    );
    const down = ready.flatMap((err, i) =>
      err === undefined ? [] : [`${this.quorumClients[i].description} (${err})`],
    );
    const quorum = Math.floor(this.quorumClients.length / 2) + 1;
    if (this.quorumClients.length - down.length < quorum) {
      // The app is not going to start: stop every node's reconnect loop.
      for (const { client } of this.quorumClients) client.disconnect();
      throw new RedisUnavailableError(
        `Cannot reach a majority (${quorum} of ${this.quorumClients.length}) of the lock.quorum.nodes: ${down.join(', ')}. ` +
          'Check that the servers are running, or set lazyConnect: true to start without them.',
      );
    }
    if (down.length > 0)
      this.logger.warn(`lock quorum nodes unreachable at start (a minority, locks work): ${down.join(', ')}`);
  }
}

interface Waiter {
  readonly ttl: number;
  /** Resolve the wait now (the caller tries Redis itself). */
  wake(): void;
  /** Take it out of the queue for a hand-over; call the result with the lock, or null when the hand-over failed. */
  claim(): (lock: Lock | null) => void;
}

/** Owner tokens: 128 random bits, base64url. Drawn from a pooled buffer (one getrandom call per 256 tokens). */
let pool = Buffer.alloc(0);
let poolOffset = 0;
function newToken(): string {
  if (poolOffset + 16 > pool.length) {
    pool = randomBytes(16 * 256);
    poolOffset = 0;
  }
  poolOffset += 16;
  return pool.toString('base64url', poolOffset - 16, poolOffset);
}

function checkRetry(retry: LockRetryOptions | undefined): Partial<LockRetryOptions> {
  if (retry === undefined) return {};
  if (retry === null || typeof retry !== 'object')
    throw new InvalidOptionsError('retry must be an object { count, delay, jitter }');
  const out: Partial<LockRetryOptions> = {};
  for (const name of ['count', 'delay', 'jitter'] as const) {
    const value = retry[name];
    if (value === undefined) continue;
    if (
      typeof value !== 'number' ||
      !Number.isFinite(value) ||
      value < 0 ||
      (name === 'count' && !Number.isInteger(value))
    ) {
      throw new InvalidOptionsError(
        `retry.${name} must be a non-negative ${name === 'count' ? 'integer' : 'number of milliseconds'}, got ${String(value)}`,
      );
    }
    out[name] = value;
  }
  return out;
}
