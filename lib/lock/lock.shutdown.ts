import { RedisUnavailableError } from '../common/errors.js';
import { type FailureConnection, FailurePolicy, type FailurePolicyOptions } from '../common/failure-policy.js';

/**
 * What `app.close()` ends in a LockService (and its semaphores and multi-resource locks). Once its connections are
 * quit nothing can extend a lock or ask Redis for one, yet auto-extensions kept retrying until the lock expired
 * (holding the process open up to the ttl, a warning each time, then onLost long after close), and a caller waiting
 * for a lock held in this process waited until that lock expired. At close each of them is ended at once: an
 * auto-extension reports its lock lost (not released: it expires by itself at `expiresAt`), a pause rejects.
 * Holds only what runs now (each entry removes itself when it ends), so it never grows with the locks taken.
 */
export class LockShutdown {
  private isClosed = false;
  private readonly running = new Set<() => void>();

  get closed(): boolean {
    return this.isClosed;
  }

  /** Calls `end` at close (at once when closed already) unless the returned remover was called first. */
  onClose(end: () => void): () => void {
    if (this.isClosed) {
      end();
      return () => undefined;
    }
    this.running.add(end);
    return () => void this.running.delete(end);
  }

  close(): void {
    this.isClosed = true;
    const ends = [...this.running];
    this.running.clear();
    for (const end of ends) end();
  }

  /**
   * The error of an acquisition (`what`: `lock acquire on "r"`) made or waiting at close, or of a release after it
   * that Redis did not answer (`cause`: its failure).
   */
  error(what: string, cause?: unknown): RedisUnavailableError {
    return new RedisUnavailableError(
      `${what} failed: the application shut down (app.close() quit the lock's Redis connections)`,
      cause === undefined ? undefined : { cause },
    );
  }

  /** Throws `error(what)` once closed. */
  assertOpen(what: string): void {
    if (this.isClosed) throw this.error(what);
  }
}

/**
 * The lock service's failure policy (fail closed). After app.close() a call that Redis does not answer failed because
 * the shutdown quit the connections, not because Redis is down: it is thrown, not counted or logged as an outage here.
 * Its caller says what the shutdown did (a `using` section's release: one warning, runHolding); until 2026-12-04 that
 * release was logged twice, here as an outage and there.
 */
export class LockFailures extends FailurePolicy {
  constructor(
    connection: FailureConnection,
    options: FailurePolicyOptions,
    private readonly shutdown: LockShutdown,
  ) {
    super(connection, options);
  }

  override unavailable(err: unknown, failOpen?: boolean, fallback?: string): void {
    if (this.shutdown.closed && err instanceof RedisUnavailableError) throw err;
    super.unavailable(err, failOpen, fallback);
  }
}
