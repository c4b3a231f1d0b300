import { InvalidOptionsError, LockLostError, RedisUnavailableError } from '../common/errors.js';
import { MAX_TIMER_MS } from './lock.attempts.js';

export interface AutoExtendOptions {
  /**
   * Extend when this many ms (or fewer) of the lease are left (redlock's `automaticExtensionThreshold`). Must be less
   * than the ttl. Default `lock.extensionThreshold`, else two thirds of the ttl (an extension every third of it:
   * three chances before it would expire).
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
  readonly expiresAt: number;
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

/** A timer for any delay (see setLongTimeout). */
interface LongTimer {
  handle: NodeJS.Timeout | undefined;
}

/**
 * setTimeout for a delay of any length: Node fires a timer of more than MAX_TIMER_MS (~24.8 days) after 1 ms, so a
 * longer one waits in steps of at most that (the watchdog of a 30-day lock, the next extension of a 90-day one).
 */
function setLongTimeout(fn: () => void, ms: number): LongTimer {
  const timer: LongTimer = { handle: undefined };
  const arm = (left: number): void => {
    timer.handle =
      left > MAX_TIMER_MS ? setTimeout(() => arm(left - MAX_TIMER_MS), MAX_TIMER_MS) : setTimeout(fn, left);
  };
  arm(ms);
  return timer;
}

const clearLongTimeout = (timer: LongTimer | undefined): void => clearTimeout(timer?.handle);

/**
 * Keeps `lease` alive: extends it by its ttl whenever `threshold` ms or fewer are left. A refused extension loses it
 * at once; when Redis does not answer, it retries sooner until the lease would expire, and a watchdog at `expiresAt`
 * loses it then. `lost` is called once, before the signal aborts.
 */
export function startAutoExtension(
  lease: ExtendableLease,
  threshold: number | undefined,
  lost: (reason: LockLostError) => void,
  warn: (message: string) => void,
): AutoExtension {
  const controller = new AbortController();
  const leadTime = threshold ?? (lease.ttl * 2) / 3;
  let stopped = false;
  let extendTimer: LongTimer | undefined;
  let watchdog: LongTimer | undefined;
  const stop = (): void => {
    stopped = true;
    clearLongTimeout(extendTimer);
    clearLongTimeout(watchdog);
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
      Math.max(0, lease.expiresAt - Date.now()),
    );
  };
  const schedule = (delay: number): void => {
    extendTimer = setLongTimeout(
      () => {
        lease.extend(lease.ttl).then(
          () => {
            if (stopped) return;
            armWatchdog();
            schedule(lease.expiresAt - Date.now() - leadTime);
          },
          (err: unknown) => {
            if (stopped) return;
            const left = lease.expiresAt - Date.now();
            if (err instanceof RedisUnavailableError && left > 0) {
              // Not lost yet: try again soon; the watchdog loses it if no extension lands before it would expire.
              warn(`extending the lock on "${lease.resource}" failed, retrying: ${err.message}`);
              schedule(Math.min(leadTime / 2, left / 3));
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
  schedule(lease.expiresAt - Date.now() - leadTime);
  return { signal: controller.signal, stop };
}
