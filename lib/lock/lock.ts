import { InvalidOptionsError, LockLostError, RedisUnavailableError } from '../common/errors.js';
import { durationProblem, isDuration } from '../common/option-checks.js';
import {
  type AutoExtendOptions,
  type AutoExtension,
  checkExtensionThreshold,
  startAutoExtension,
} from './lock.auto-extend.js';
import type { LockBackend, LockKeys } from './lock.backend.js';
import type { LockEventInfo } from './lock.events.js';
import type { LockShutdown } from './lock.shutdown.js';
import { AUTO_EXTEND, checkNames } from './lock.option-names.js';
import { type TracingContext, traced } from '../common/diagnostics.js';
import { type LeaseEnd, monotonicNow } from './lock.clock.js';

/** What a Lock needs from the service that made it. */
export interface LockOwner {
  readonly backend: LockBackend;
  /** Called once the lock is released or found lost: wakes a waiter of this process for the same resource. */
  released(keys: LockKeys, lock: Lock): void;
  /** Instead of releasing, passes the lock to a waiter of this process when one waits: true when it did. */
  handOver(keys: LockKeys, token: string): Promise<boolean>;
  /** Reports an event of this lock (the service's one emitting point). */
  event(name: 'acquired' | 'extended' | 'released' | 'lost', lock: Lock, reason?: Error): void;
  /** `lock.extensionThreshold`, the default for auto-extension. */
  readonly extensionThreshold: number | undefined;
  warn(message: string): void;
  /** The service's app.close(): ends the auto-extension (see startAutoExtension). */
  readonly shutdown: LockShutdown;
}

/**
 * A held lock. Returned by `LockService.acquire` / `tryAcquire` and passed to `using` callbacks.
 *
 * `extend` and `release` are checked against the owner token in Lua: once the lock expired (and maybe was taken by
 * someone else) they fail with `LockLostError` and touch nothing. `release` after a successful release is a no-op, and
 * one called while a release is under way shares its outcome.
 */
export class Lock {
  private state: 'held' | 'released' | 'lost' = 'held';
  private expiry: number;
  /** When the lease ends on this process's monotonic clock (see lock.clock.ts): what isHeld decides by. */
  private validTill: number;
  private lostReported = false;
  private autoExtension: AutoExtension | undefined;
  private onLost: ((error: LockLostError) => void) | undefined;
  /** The release under way: a second call meanwhile returns it (its own would find the lock gone: LockLostError). */
  private releasing: Promise<void> | undefined;

  /** @internal Created by LockService. */
  constructor(
    private readonly owner: LockOwner,
    private readonly keys: LockKeys,
    /** Random 128-bit owner token (base64url) stored as the lock's value. */
    readonly token: string,
    /**
     * Strictly increasing per resource: every acquisition gets a larger number than every earlier one. Pass it to the
     * storage you protect and have it reject writes carrying a smaller token than one it has seen (see docs/lock.md).
     */
    readonly fencingToken: number,
    end: LeaseEnd,
    /** The ttl it was acquired with (ms); the default for `extend()`. */
    readonly ttl: number,
    /** 'lock', 'multi' (MultiLock) or 'semaphore' (a permit of a Semaphore). */
    readonly kind: LockEventInfo['kind'] = 'lock',
  ) {
    this.expiry = end.expiresAt;
    this.validTill = end.validUntil;
  }

  /** What lock events carry about this lock (never the token). */
  get info(): LockEventInfo {
    return {
      kind: this.kind,
      resource: this.resource,
      fencingToken: this.fencingToken,
      expiresAt: this.expiry,
      ttl: this.ttl,
    };
  }

  /** The resource name given to acquire. */
  get resource(): string {
    return this.keys.resource;
  }

  /**
   * Epoch ms until which the lock is ours (computed conservatively, from before the request was sent), on this
   * process's wall clock as it read then: for display. What this process decides by (isHeld, auto-extension) is the
   * time since the request on its monotonic clock, which a wall clock stepped back or forward does not change.
   */
  get expiresAt(): number {
    return this.expiry;
  }

  /** @internal The end of the lease on the monotonic clock (monotonicNow, lock.clock.ts). */
  get validUntil(): number {
    return this.validTill;
  }

  /**
   * False after release, after a failed extend/release found it lost, or once the lease has run out: its ttl (its
   * validity on a quorum) since the request was sent, on the monotonic clock, whatever the wall clock does.
   */
  get isHeld(): boolean {
    return this.state === 'held' && monotonicNow() < this.validTill;
  }

  /**
   * Sets the remaining time to live to `ms` from now (default: the ttl it was acquired with).
   * Throws LockLostError when the lock is no longer ours, RedisUnavailableError when Redis could not confirm.
   */
  extend(ms: number = this.ttl): Promise<void> {
    return traced(
      'lockExtend',
      () => this.traceFields('extend'),
      () => this.extendNow(ms),
      extended,
    );
  }

  private async extendNow(ms: number): Promise<void> {
    if (!isDuration(ms)) throw new InvalidOptionsError(`extend(ms): ms ${durationProblem(ms)}`);
    if (this.state === 'released')
      throw new LockLostError(`cannot extend the lock on "${this.resource}": it was released`);
    if (this.state === 'lost') throw new LockLostError(`cannot extend the lock on "${this.resource}": it was lost`);
    try {
      const end = await this.owner.backend.extend(this.keys, this.token, Math.ceil(ms));
      if (this.state === 'held') {
        this.expiry = end.expiresAt;
        this.validTill = end.validUntil;
        this.owner.event('extended', this);
      }
    } catch (err) {
      if (err instanceof LockLostError && this.state === 'held') {
        this.state = 'lost';
        this.owner.released(this.keys, this);
        this.reportLost(err);
      }
      throw err;
    }
  }

  /**
   * Keeps the lock alive until `release()` or `stopAutoExtend()`: extended by its ttl whenever
   * `extensionThreshold` ms or fewer are left. Returns a signal that aborts (with a LockLostError) when the lock is
   * lost; `onLost` is called then too. Calling it again while it runs returns the same signal.
   */
  startAutoExtend(options: AutoExtendOptions = {}): AbortSignal {
    checkNames(options, AUTO_EXTEND, 'startAutoExtend');
    if (this.state !== 'held')
      throw new LockLostError(`cannot keep the lock on "${this.resource}" alive: ${this.state}`);
    if (options.onLost !== undefined && typeof options.onLost !== 'function') {
      throw new InvalidOptionsError('startAutoExtend: onLost must be a function');
    }
    if (options.onLost) this.onLost = options.onLost;
    if (this.autoExtension) return this.autoExtension.signal;
    const threshold =
      checkExtensionThreshold(options.extensionThreshold, this.ttl, 'startAutoExtend') ??
      (this.owner.extensionThreshold !== undefined && this.owner.extensionThreshold < this.ttl
        ? this.owner.extensionThreshold
        : undefined);
    this.autoExtension = startAutoExtension(
      this,
      threshold,
      (reason) => this.reportLost(reason),
      (message) => this.owner.warn(message),
      this.owner.shutdown,
    );
    return this.autoExtension.signal;
  }

  /** Stops the auto-extension started by `startAutoExtend` (the lock then expires at `expiresAt` unless released). */
  stopAutoExtend(): void {
    this.autoExtension?.stop();
    this.autoExtension = undefined;
  }

  /** Reports the loss once: the 'lost' event and the onLost callback. */
  private reportLost(reason: LockLostError): void {
    if (this.lostReported) return;
    this.lostReported = true;
    this.owner.event('lost', this, reason);
    if (this.onLost) {
      try {
        this.onLost(reason);
      } catch (err) {
        this.owner.warn(`onLost for the lock on "${this.resource}" threw: ${(err as Error).message}`);
      }
    } else if (this.autoExtension) {
      this.owner.warn(`the lock on "${this.resource}" was lost: ${reason.message}`);
    }
  }

  /**
   * Releases the lock if it is still ours. Throws LockLostError when it expired (and maybe was taken) before, and
   * RedisUnavailableError when Redis could not confirm (the lock then expires by itself at `expiresAt`). A call while
   * a release is under way returns that release's outcome; after a successful one, it does nothing.
   */
  release(): Promise<void> {
    this.releasing ??= traced(
      'lockRelease',
      () => this.traceFields('release'),
      () => this.releaseNow(),
      released,
    ).finally(() => {
      this.releasing = undefined;
    });
    return this.releasing;
  }

  /** The traced call's fields: the token never (docs/observability.md). */
  private traceFields(operation: string): TracingContext {
    return { feature: 'lock', operation, kind: this.kind, resource: this.resource, fencingToken: this.fencingToken };
  }

  private async releaseNow(): Promise<void> {
    if (this.state === 'released') return;
    if (this.state === 'lost') throw new LockLostError(`cannot release the lock on "${this.resource}": it was lost`);
    this.stopAutoExtend();
    let handedOver = false;
    try {
      handedOver = await this.owner.handOver(this.keys, this.token);
      if (!handedOver) await this.owner.backend.release(this.keys, this.token, this.validTill);
    } catch (err) {
      if (err instanceof LockLostError) {
        this.state = 'lost';
        this.owner.released(this.keys, this);
        this.reportLost(err);
      }
      // unanswered after app.close(): its connections were quit (LockFailures did not log it as an outage)
      if (err instanceof RedisUnavailableError && this.owner.shutdown.closed) {
        throw this.owner.shutdown.error(`lock release of "${this.resource}"`, err);
      }
      throw err;
    }
    this.state = 'released';
    this.owner.event('released', this);
    if (!handedOver) this.owner.released(this.keys, this);
  }
}

const extended = () => ({ outcome: 'extended' });
const released = () => ({ outcome: 'released' });
