import { RedisUnavailableError } from '../common/errors.js';
import type { DecisionOutage } from './rate-limit.fallback.js';
import type { GroupOutcome, PreparedCheck, RateLimitDecision } from './rate-limit.types.js';

/** What the script calls of a decision's trackers said, in order (see decideByTracker). */
export interface TrackerGroupsOutcome {
  results: RateLimitDecision['results'];
  /** The first refusal (Redis's, the block cache's or insurance's): it decides the call. */
  refusal: GroupOutcome | undefined;
  /** Admitted: whether a group was degraded (failed open or decided by insurance). */
  degraded: RateLimitDecision['degraded'];
  /** A group Redis could not decide under failOpen false: the call is refused (503 unless another refused). */
  unavailable: RedisUnavailableError | undefined;
}

/**
 * A decision over several trackers on a cluster: one script call per tracker (per hash slot), in order, each group
 * run by `run` (its failure policy applied by the fallback, once per decision through `outage`). Once the call cannot
 * be admitted (a refusal, or a group that failed closed), the rest are read as they stand, not charged; a group
 * Redis could not read is reported with `unread`'s results.
 */
export async function decideByTracker(
  groups: readonly (readonly PreparedCheck[])[],
  mode: 'c' | 'p',
  run: (group: readonly PreparedCheck[], mode: 'c' | 'p', outage: DecisionOutage) => Promise<GroupOutcome>,
  unread: (group: readonly PreparedCheck[]) => GroupOutcome['results'],
): Promise<TrackerGroupsOutcome> {
  const outage: DecisionOutage = { met: false, refused: false };
  const out: TrackerGroupsOutcome = { results: [], refusal: undefined, degraded: undefined, unavailable: undefined };
  for (const group of groups) {
    const settled = out.refusal !== undefined || out.unavailable !== undefined;
    let outcome: GroupOutcome;
    try {
      outcome = await run(group, settled ? 'p' : mode, outage);
    } catch (err) {
      if (!(err instanceof RedisUnavailableError)) throw err;
      out.unavailable ??= err;
      out.results.push(...unread(group));
      continue;
    }
    out.results.push(...outcome.results);
    if (!outcome.allowed) {
      out.refusal ??= outcome;
      outage.refused = true;
    } else out.degraded ??= outcome.degraded;
  }
  return out;
}
