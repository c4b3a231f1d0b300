import { RedisUnavailableError } from '../common/errors.js';

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

  /** The error of an acquisition (`what`: `lock acquire on "r"`) made or waiting at close. */
  error(what: string): RedisUnavailableError {
    return new RedisUnavailableError(
      `${what} failed: the application shut down (app.close() quit the lock's Redis connections)`,
    );
  }

  /** Throws `error(what)` once closed. */
  assertOpen(what: string): void {
    if (this.isClosed) throw this.error(what);
  }
}
