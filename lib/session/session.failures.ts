import type { FailurePolicy } from '../common/failure-policy.js';

/**
 * Runs a Redis operation under the sessions' failure policy: sessions fail closed (RedisUnavailableError, a 503), an
 * error reply is a RedisReplyError; both logged once per interval, without ids. FailurePolicy.guard's checks, counts
 * and errors, without its two async layers (this wraps every read).
 */
export function guardSessionCall<R>(failures: FailurePolicy, what: string, run: () => Promise<R>): Promise<R> {
  let pending: Promise<R>;
  try {
    failures.assertReady(what);
  } catch (err) {
    return Promise.reject(failed(failures, err));
  }
  try {
    pending = run();
  } catch (err) {
    return Promise.reject(failed(failures, failures.classify(err, what)));
  }
  return pending.catch((err: unknown) => {
    throw failed(failures, failures.classify(err, what));
  });
}

/** The error a failed call rejects with: a transport failure is counted and logged first (sessions fail closed). */
function failed(failures: FailurePolicy, err: unknown): unknown {
  try {
    failures.unavailable(err, false);
  } catch (thrown) {
    return thrown;
  }
  return err;
}
