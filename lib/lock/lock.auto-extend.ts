import { InvalidOptionsError, LockLostError, RedisUnavailableError } from '../common/errors.js';
import { clearLongTimeout, type LongTimer, setLongTimeout } from '../common/timeout.js';
import { ttlOf } from './lock.attempts.js';
import { checkNames } from './lock.option-names.js';
import type { LockShutdown } from './lock.shutdown.js';
import { monotonicNow, msLeft } from './lock.clock.js';

export interface AutoExtendOptions {
  /**
   * Extend when this many ms (or fewer) of the lease are left (redlock's `automaticExtensionThreshold`). Must be less
   * than the ttl. Default `lock.extensionThreshold`, else two thirds of what an extension gives (the ttl; on a quorum
   * its validity): an extension every third of it, three chances before it would expire. At most 9/10 of that is
   * used, so a tenth of it passes between two extensions.
   */
  extensionThreshold?: number;
  /**
   * Called once when the lock is lost while kept alive: an extension was refused (someone else has it now) or none
   * landed before it would expire. Stop writing then. Default: a warning in the log.
   */
  onLost?: (error: LockLostError) => void;
}

/** What auto-extension needs from a lock (a Lock, a multi-resource lock or a semaphore permit). */
export interface ExtendableLease {
  readonly resource: string;
  readonly ttl: number;
  /** Epoch ms, for the messages. */
  readonly expiresAt: number;
  /** The lease's end on the monotonic clock (lock.clock.ts): what the extensions and the watchdog are timed by. */
  readonly validUntil: number;
  extend(ms?: number): Promise<void>;
}

export interface AutoExtension {
  /** Aborted with a LockLostError when the lock is lost. */
  readonly signal: AbortSignal;
  stop(): void;
}

export function checkExtensionThreshold(threshold: unknown, ttl: number, where: string): number | undefined {
  if (threshold === undefined) return undefined;
  if (typeof threshold !== 'number' || !Number.isFinite(threshold) || threshold <= 0 || threshold >= ttl) {
    throw new InvalidOptionsError(
      `${where}: extensionThreshold must be a number of ms above 0 and below the ttl (${ttl}), got ` +
        `${String(threshold)}`,
    );
  }
  return threshold;
}

/**
 * Checks an acquisition's `autoExtend` option (true, false or `{ extensionThreshold?, onLost? }`) against the ttl it
 * will be acquired with, as `startAutoExtend` would: call it before the first attempt, so a bad option fails the call
 * before anything is taken, instead of after, with the lock or permit left held. `threshold`: the call's own
 * `extensionThreshold`, which auto-extension takes when `autoExtend` gives none (autoExtendOptions).
 */
export function checkAutoExtend(autoExtend: unknown, ttl: number, where: string, threshold?: unknown): void {
  if (autoExtend === undefined || autoExtend === null || autoExtend === false) return;
  if (autoExtend === true) {
    checkExtensionThreshold(threshold, ttl, where);
    return;
  }
  if (typeof autoExtend !== 'object') {
    throw new InvalidOptionsError(
      `${where}: autoExtend must be true, false or { extensionThreshold?, onLost? }, got ${String(autoExtend)}`,
    );
  }
  const { onLost, extensionThreshold } = autoExtend as AutoExtendOptions;
  if (onLost !== undefined && typeof onLost !== 'function') {
    throw new InvalidOptionsError(`${where}: autoExtend.onLost must be a function`);
  }
  checkExtensionThreshold(extensionThreshold ?? threshold, ttl, where);
}

/**
 * The options of an `acquire` / `tryAcquire` checked before the first attempt, so nothing is taken when one is wrong:
 * their names, the ttl (returned), and `autoExtend` against it as acquireAll and a semaphore check theirs (`'false'`
 * or `1` is refused, not taken as true).
 */
export function acquisitionTtl(
  options: { ttl?: unknown; autoExtend?: unknown; extensionThreshold?: unknown } | undefined,
  known: ReadonlySet<string>,
  where: string,
  fallback: number,
): number {
  checkNames(options, known, where);
  const ttl = ttlOf(fallback, options?.ttl);
  checkAutoExtend(options?.autoExtend, ttl, where, options?.extensionThreshold);
  return ttl;
}

/**
 * What an acquisition's `autoExtend` asks for: its own options, with the call's `extensionThreshold` unless it gives
 * one of its own (`acquire(r, { autoExtend: true, extensionThreshold })`).
 */
export function autoExtendOptions(options: {
  autoExtend?: boolean | AutoExtendOptions;
  extensionThreshold?: number;
}): AutoExtendOptions {
  const { autoExtend, extensionThreshold } = options;
  if (typeof autoExtend !== 'object' || autoExtend === null) return { extensionThreshold };
  return { ...autoExtend, extensionThreshold: autoExtend.extensionThreshold ?? extensionThreshold };
}

/** At least this share of what an extension gives passes before the next one (see startAutoExtension). */
const MIN_EXTENSION_GAP = 0.1;

/**
 * Keeps `lease` alive: extends it by its ttl whenever `threshold` ms (default two thirds of what an extension gives)
 * or fewer are left. A refused extension loses it at once; when Redis does not answer, it retries sooner until the
 * lease would expire, and a watchdog at its end loses it then. `lost` is called once, before the signal aborts. Every
 * time here is on the monotonic clock: timed by the wall clock, a step back an hour put the next extension an hour
 * away (the lock expired in Redis unseen, the signal never aborted) and a step forward lost it at once.
 *
 * What an extension gives (`span`) is the ttl on one server but less on a quorum: its validity, the ttl minus the
 * drift allowance. The lead is taken from the span, not the ttl: with driftFactor 0.4 the validity of a 3 s lock is
 * 1.8 s, below a lead of 2 s, so every extension was due at once (hundreds a second). Until the first extension
 * measures it, the span is what is left now (about it, right after the acquisition). The lead is at most 9/10 of the
 * span, so a tenth of it passes between extensions even with a threshold just under the ttl.
 *
 * At `shutdown` (app.close()) nothing can extend it any more: the lease is lost at once, with the time it expires by
 * itself (it is not released: the section may still be running), rather than after retries until it expires.
 */
export function startAutoExtension(
  lease: ExtendableLease,
  threshold: number | undefined,
  lost: (reason: LockLostError) => void,
  warn: (message: string) => void,
  shutdown?: LockShutdown,
): AutoExtension {
  const controller = new AbortController();
  let span = Math.min(lease.ttl, msLeft(lease));
  const leadTime = (): number => Math.min(threshold ?? (span * 2) / 3, span * (1 - MIN_EXTENSION_GAP));
  let stopped = false;
  let extendTimer: LongTimer | undefined;
  let watchdog: LongTimer | undefined;
  let offClose: (() => void) | undefined;
  const stop = (): void => {
    stopped = true;
    clearLongTimeout(extendTimer);
    clearLongTimeout(watchdog);
    offClose?.();
  };
  const lose = (reason: unknown): void => {
    if (stopped) return;
    stop();
    const error =
      reason instanceof LockLostError
        ? reason
        : new LockLostError(`the lock on "${lease.resource}" was lost: ${String(reason)}`, { cause: reason });
    lost(error);
    controller.abort(error);
  };
  const armWatchdog = (): void => {
    clearLongTimeout(watchdog);
    watchdog = setLongTimeout(
      () => lose(new LockLostError(`the lock on "${lease.resource}" expired before it could be extended`)),
      Math.max(0, Math.ceil(msLeft(lease))), // whole ms (see nextPause), never before the lease's end
    );
  };
  const schedule = (delay: number): void => {
    extendTimer = setLongTimeout(
      () => {
        const sentAt = monotonicNow();
        lease.extend(lease.ttl).then(
          () => {
            if (stopped) return;
            span = lease.validUntil - sentAt;
            armWatchdog();
            schedule(msLeft(lease) - leadTime());
          },
          (err: unknown) => {
            if (stopped) return;
            const left = msLeft(lease);
            if (err instanceof RedisUnavailableError && left > 0) {
              // Not lost yet: try again soon; the watchdog loses it if no extension lands before it would expire.
              warn(`extending the lock on "${lease.resource}" failed, retrying: ${err.message}`);
              schedule(Math.min(leadTime() / 2, left / 3));
              return;
            }
            lose(err);
          },
        );
      },
      Math.max(1, Math.floor(delay)),
    );
  };
  armWatchdog();
  schedule(msLeft(lease) - leadTime());
  offClose = shutdown?.onClose(() =>
    lose(
      new LockLostError(
        `the lock on "${lease.resource}" is no longer extended: the application shut down (app.close()); it was not ` +
          `released and expires by itself at ${new Date(lease.expiresAt).toISOString()}`,
      ),
    ),
  );
  return { signal: controller.signal, stop };
}
