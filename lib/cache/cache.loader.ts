import { CacheLoadTimeoutError } from '../common/errors.js';
import { MAX_TIMER_MS, setVerdictTimeout } from '../common/timeout.js';

/**
 * The loader's value, or CacheLoadTimeoutError after `ms` (the hard timeout, `cache.loadTimeout` by default): whoever
 * shares this load (single-flight, the background refresh) is released and the key freed, while the loader itself
 * (which cannot be cancelled) runs on and its late result is dropped. The error's message does not name the key (see
 * CacheLoadTimeoutError.key). The verdict waits for the poll phase (setVerdictTimeout): a loader whose reply came while
 * the event loop was blocked past `ms` gives its value.
 */
export function boundedLoad<T>(
  loader: () => T | Promise<T>,
  ms: number,
  key: string,
  option: string,
  timers?: LoadTimers,
): Promise<T> {
  if (ms > MAX_TIMER_MS) return Promise.resolve().then(loader); // past what a timer can wait: no limit
  return new Promise<T>((resolve, reject) => {
    const timer = setVerdictTimeout(() => {
      timers?.delete(timer);
      reject(new CacheLoadTimeoutError(`a cache loader did not settle within ${ms} ms (${option})`, key));
    }, ms);
    timers?.add(timer);
    new Promise<T>((r) => r(loader())).then(
      (value) => {
        clearTimeout(timer);
        timers?.delete(timer);
        resolve(value);
      },
      (err: unknown) => {
        clearTimeout(timer);
        timers?.delete(timer);
        reject(err);
      },
    );
  });
}

/**
 * The timers that bound a caller's wait on a load in flight: each load's hard timeout (boundedLoad) and the soft
 * timeout of a caller waiting for a refresh (within). At the cache's close they stop holding the process open: a
 * loader that never settles kept the closed app's process alive until `loadTimeout` (10 s by default), or a stale
 * read's caller until its `softTimeout` (connection-leaks.spec.ts). They still bound their callers' wait, should the
 * process run on.
 */
export class LoadTimers {
  private readonly pending = new Set<NodeJS.Timeout>();
  private closed = false;

  add(timer: NodeJS.Timeout): void {
    if (this.closed) timer.unref();
    else this.pending.add(timer);
  }

  delete(timer: NodeJS.Timeout): void {
    this.pending.delete(timer);
  }

  close(): void {
    this.closed = true;
    for (const timer of this.pending) timer.unref();
    this.pending.clear();
  }
}

/**
 * `work`'s value if it settles within `ms` (read after the poll phase: setVerdictTimeout), else `undefined` (work goes
 * on; its failure is the caller's to handle). `timers`: unref'd at the cache's close (LoadTimers).
 */
export function within<T>(work: Promise<T>, ms: number, timers?: LoadTimers): Promise<T | undefined> {
  if (ms > MAX_TIMER_MS) return work;
  return new Promise<T | undefined>((resolve) => {
    const timer = setVerdictTimeout(() => {
      timers?.delete(timer);
      resolve(undefined);
    }, ms);
    timers?.add(timer);
    const settled = (value: T | undefined): void => {
      clearTimeout(timer);
      timers?.delete(timer);
      resolve(value);
    };
    work.then(settled, () => settled(undefined));
  });
}
