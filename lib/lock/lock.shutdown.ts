import type { Redis } from 'ioredis';
import { RedisUnavailableError } from '../common/errors.js';
import { type FailureConnection, FailurePolicy, type FailurePolicyOptions } from '../common/failure-policy.js';
import { ThrottledWarning } from '../common/throttled-logger.js';
import type { WaitingChannels } from './lock.backend.js';

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
 * release was logged twice, here as an outage and there. Also reports the one error reply that fails no call: a
 * release's PUBLISH that Redis refused (`publishRefused`).
 */
export class LockFailures extends FailurePolicy {
  private readonly publishWarning: ThrottledWarning;

  constructor(
    connection: FailureConnection,
    options: FailurePolicyOptions,
    /** Ends what waits on a connection (SingleLockBackend's releases waiting for 'ready'). */
    readonly shutdown: LockShutdown,
  ) {
    super(connection, options);
    this.publishWarning = new ThrottledWarning(options.logger, options.warnIntervalMs);
  }

  override close(): void {
    super.close();
    this.publishWarning.close();
  }

  /**
   * Redis refused the PUBLISH of the grant or wake of a release of `resource` (on quorum node `node`, else on the
   * lock's own Redis; release-many.lua and wake.lua answer RELEASED_UNPUBLISHED): the lock was released and its waiting
   * services take it by their poll, so the release resolves. Not silent though: counted with the error replies
   * (`LockService.stats().replyErrors`) and logged with the remedy, at most once per 10 s with the number since (an
   * ACL that lacks PUBLISH refuses every contended release). Redis's own words are not in the script's answer: inside
   * a script an ACL denial reads `ERR The user executing the script can't run this command...`, naming no command.
   */
  publishRefused(resource: string, channels: WaitingChannels, node?: Redis): void {
    this.counts.replyErrors++;
    const where = node === undefined ? '' : ` on lock quorum node ${node.options.host}:${node.options.port}`;
    this.publishWarning.warn(
      `lock release of "${resource}"${where}: released, but Redis refused the PUBLISH that passes it to a waiting ` +
        `service (the ACL user lacks +publish or the lock's channels): its waiters take it by their poll, a retry ` +
        `pause late; grant the ACL user +publish &${channels.wake}* &${channels.grant}*`,
    );
  }

  override unavailable(err: unknown, failOpen?: boolean, fallback?: string): void {
    if (this.shutdown.closed && err instanceof RedisUnavailableError) throw err;
    super.unavailable(err, failOpen, fallback);
  }
}
