import { RedisUnavailableError } from '../common/errors.js';
import { classifyRedisError } from '../common/failure-policy.js';
import type { RedisClient } from '../common/lua-script.js';
import type { LockShutdown } from './lock.shutdown.js';

/** At most this many releases wait for a connection to come back; past it, what they free expires with its ttl. */
const MAX_WAITING = 1_000;

/**
 * The releases of what a call that failed in transport may have taken on one client (a lock, a permit, a
 * multi-resource lock, a quorum node's part of one): its request may have run before its reply was lost, or later
 * still, since a paused server runs what it had read when it resumes, with the whole ttl from then. Each release is
 * sent at once; when that fails in transport too (a timeout resets the connection, so it usually does), it is sent
 * again at the client's next 'ready', however late: until the server answers, this process cannot tell whether the
 * request ran, nor when, and a release of a token nobody holds changes nothing (every release is owner-checked, and
 * the token was this call's alone). Until 2026-12-06 only a single lock's was sent again, and only until its ttl
 * after the send, so a server paused past the ttl kept the lock a whole ttl after it resumed; a semaphore's,
 * `acquireAll`'s and a quorum node's were sent once, on the connection being reset: the permit or lock stayed held
 * by nobody for its ttl (test/lock/lock.doc-claims.spec.ts).
 *
 * Waits for 'ready' only while a release waits, and never past app.close() (a `{ client }` of the user's may stay
 * ready and never say 'ready' again: a listener left on it kept the closed app's lock backend alive).
 */
export class UnsureReleases {
  private readonly waiting = new Set<() => Promise<unknown>>();
  private stopWaiting: (() => void) | undefined;

  constructor(
    private readonly client: RedisClient,
    private readonly shutdown: LockShutdown,
  ) {}

  /** Sends `release` now and, when it fails in transport, again at the client's next 'ready'. Returns the first. */
  send<T>(release: () => Promise<T>): Promise<T> {
    const sent = release();
    sent.catch((err: unknown) => {
      // an error reply (NOPERM, a foreign value): Redis answered, and would answer the same again
      if (classifyRedisError(err, 'release') instanceof RedisUnavailableError) this.later(release);
    });
    return sent;
  }

  private later(release: () => Promise<unknown>): void {
    if (this.shutdown.closed || this.waiting.size >= MAX_WAITING) return;
    this.waiting.add(release);
    if (this.stopWaiting) return;
    const onReady = (): void => {
      this.stop();
      const releases = [...this.waiting];
      this.waiting.clear();
      for (const again of releases) this.send(again).catch(() => undefined);
    };
    this.client.once('ready', onReady);
    const offClose = this.shutdown.onClose(() => {
      this.stop();
      this.waiting.clear(); // what they would free expires with its ttl
    });
    this.stopWaiting = () => {
      this.client.off('ready', onReady);
      offClose();
    };
  }

  private stop(): void {
    this.stopWaiting?.();
    this.stopWaiting = undefined;
  }
}
