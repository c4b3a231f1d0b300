import { firedLate, setVerdictTimeout } from '../common/timeout.js';
import { monotonicNow } from './lock.clock.js';

export type Outcome<T> = { ok: true; value: T } | { ok: false; error: unknown } | undefined;

/**
 * Waits for per-node calls until `enough` says the outcome is decided, every call settled, or `timeoutMs` passed.
 * Returns a snapshot: `undefined` marks a node that had not answered (a paused or slow server). Calls still running
 * finish in the background; their results are ignored (a late lock on a node is cleaned up by release-on-all).
 * The timeout's verdict comes after the poll phase (setVerdictTimeout): after a stall Node runs the due timers before
 * it reads the sockets, and the answers that came during it counted as none (an acquisition every node granted was an
 * outage). When the timer fired late by more than max(ms/4, 20 ms) (the loop was blocked) and answers are still
 * missing, it waits `timeoutMs` once more: the requests may have been written only after the stall (a node's lock
 * calls leave corked at the end of the turn), as the command timer does (redis-client.factory.ts). The callers'
 * validity is measured from their send all the same (acquire, extend).
 */
export function gather<T>(
  calls: Promise<T>[],
  enough: (outcomes: Outcome<T>[]) => boolean,
  timeoutMs: number,
): Promise<Outcome<T>[]> {
  return new Promise((resolve) => {
    const outcomes: Outcome<T>[] = calls.map(() => undefined);
    let pending = calls.length;
    let finished = false;
    const finish = (): void => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      resolve(outcomes.slice());
    };
    const ms = Math.max(0, timeoutMs);
    let armedAt = monotonicNow();
    const verdict = (): void => {
      if (finished) return;
      if (armedAt >= 0 && firedLate(monotonicNow() - armedAt - ms, ms)) {
        armedAt = -1; // armed again once, not a third time
        timer = setVerdictTimeout(verdict, ms);
        return;
      }
      finish();
    };
    let timer = setVerdictTimeout(verdict, ms);
    calls.forEach((call, i) => {
      call
        .then(
          (value) => {
            outcomes[i] = { ok: true, value };
          },
          (error: unknown) => {
            outcomes[i] = { ok: false, error };
          },
        )
        .then(() => {
          pending--;
          if (!finished && (pending === 0 || enough(outcomes))) finish();
        });
    });
  });
}

export const count = <T>(outcomes: Outcome<T>[], test: (o: Outcome<T>) => boolean): number =>
  outcomes.filter(test).length;
export const answered = <T>(o: Outcome<T>, value: T): boolean => o?.ok === true && o.value === value;
export const firstError = <T>(outcomes: Outcome<T>[]): string => {
  const failed = outcomes.find((o) => o !== undefined && !o.ok);
  if (failed && !failed.ok) return failed.error instanceof Error ? failed.error.message : String(failed.error);
  return 'no answer in time';
};
