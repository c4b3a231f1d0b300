import { LRUCache } from 'lru-cache';
import { dropCounters } from './rate-limit.keys.js';
import { capacityOf, type ResolvedPolicy } from './rate-limit.policy-resolver.js';
import { resetNotBeforeRetry } from './rate-limit.results.js';
import type { GroupOutcome, PreparedCheck } from './rate-limit.types.js';

/** What the last refused decision said of one counter (times on this process's monotonic clock, ms). */
interface Entry {
  /**
   * Calls of `cost` units or more on this counter, with the same policy, are refused until then (0: a snapshot that
   * refuses nothing).
   */
  until: number;
  cost: number;
  /** The policy Redis decided by: the entry answers only calls with the same one (see samePolicy). */
  policy: ResolvedPolicy;
  /** Units Redis said the counter had (as it stood: a refused decision charges nothing). */
  remaining: number;
  /** When its reset ran out: every unit counted then has left the window, a bucket is full. */
  resetAt: number;
  /** Units the counter has at least once `until` has passed: the refused cost (Redis admits it then); else 0. */
  afterRefusal: number;
  /** A token bucket Redis did not answer as blocked: it refills towards `resetAt` (see unitsLeft). */
  refills: boolean;
}

/** Per counter of a decision, what Redis answered: allowed, remaining, resetMs, retryAfterMs. */
export type PolicyReply = readonly [allowed: boolean, remaining: number, resetMs: number, retryAfterMs: number];

/**
 * The in-process block cache (`rateLimit.blockCache`): a counter Redis refused until time T is refused here until T,
 * with no Redis call (rate-limiter-flexible `inMemoryBlockOnConsumed`, Upstash `ephemeralCache`).
 *
 * Why it never admits what Redis would refuse, and refuses only what Redis refused: it only ever refuses, and only a
 * call of at least the refused cost on the same counter with the same policy (algorithm, limit, ttl, burst,
 * blockDuration: a guard's counter is its scope, so a per-request limit can put another policy on it, which Redis may
 * admit; a larger cost waits at least as long with every algorithm), until the instant Redis gave, measured from when
 * the call was *sent* (Redis decided later, so its refusal lasts at least as long) minus 1 ms (Redis rounds its waits
 * up to the ms). A decision answered here charges nothing, as a refused decision in Redis charges nothing; the one
 * write a Redis refusal can make is a `blockDuration` block of another policy of the decision that is full by then, so
 * a decision with such a policy is answered here only when that policy is itself refused here. reward() and reset() in
 * this process forget the counter (and a refusal that was in flight during them is not learnt); a reset or reward made
 * by ANOTHER process is not seen: until T this process still refuses what Redis would now admit — the reason the cache
 * is off by default. Its answers give each counter the units Redis would say it has at that moment (unitsLeft), not 0
 * for a refused one: with a cost over 1 a refused counter has units left, and a token bucket refills meanwhile.
 */
export class BlockCache {
  private readonly entries: LRUCache<string, Entry>;
  /** Bumped by every forget: a reply to a call sent before it is not learnt. */
  private generation = 0;

  constructor(maxKeys: number) {
    this.entries = new LRUCache({ max: maxKeys });
  }

  /** Taken when a decision is sent; give it back to `learn`. */
  stamp(): { sentAt: number; generation: number } {
    return { sentAt: performance.now(), generation: this.generation };
  }

  /**
   * The local answer to a decision, or undefined when Redis must decide: some counter is refused here, and every
   * policy with a blockDuration either is refused here or could not have been blocked by it. With `unread` (Redis
   * could not be reached: the failure policy's results for the decision's counters), a counter refused here refuses
   * the decision all the same (all or nothing), its counters not known here reported as `unread` says; no block can
   * be written then either.
   */
  answer(group: readonly PreparedCheck[], unread?: GroupOutcome['results']): GroupOutcome | undefined {
    if (this.entries.size === 0) return undefined;
    const now = performance.now();
    let refused = false;
    const entries: (Entry | undefined)[] = [];
    for (const c of group) {
      let e = this.entries.get(c.redisKey);
      if (e !== undefined && !samePolicy(e.policy, c.policy)) e = undefined;
      if (e === undefined && unread === undefined) return undefined;
      const refuses = e !== undefined && e.until > now && c.policy.cost >= e.cost;
      if (!refuses && c.policy.blockDuration > 0 && unread === undefined) return undefined;
      refused ||= refuses;
      entries.push(e);
    }
    if (!refused) return undefined;
    const results = group.map(({ policy, name }, i) => {
      const e = entries[i];
      // undefined only with `unread` given (else the loop above returned)
      if (e === undefined) return (unread as GroupOutcome['results'])[i];
      const refuses = e.until > now && policy.cost >= e.cost;
      const retryAfterMs = refuses ? Math.max(1, Math.ceil(e.until - now)) : 0;
      return {
        name,
        policy,
        allowed: !refuses,
        limit: capacityOf(policy),
        remaining: unitsLeft(e, now),
        // as in Redis's answers: a blocked counter's reset is its block's end, never before its retry
        resetMs: resetNotBeforeRetry(Math.max(0, Math.ceil(e.resetAt - now)), retryAfterMs),
        retryAfterMs,
      };
    });
    return { allowed: false, results, local: true };
  }

  /** Learns from a decision Redis refused (an admitted one forgets its counters: nothing of it is refused now). */
  learn(
    group: readonly PreparedCheck[],
    allowed: boolean,
    replies: readonly PolicyReply[],
    sent: { sentAt: number; generation: number },
  ): void {
    if (sent.generation !== this.generation) return;
    if (allowed) {
      if (this.entries.size > 0) for (const c of group) this.entries.delete(c.redisKey);
      return;
    }
    group.forEach((c, i) => {
      const [ok, remaining, resetMs, retryAfterMs] = replies[i];
      let until = ok || retryAfterMs <= 1 ? 0 : sent.sentAt + retryAfterMs - 1;
      let cost = c.policy.cost;
      const known = ok ? this.entries.get(c.redisKey) : undefined;
      // admitted for a smaller cost than an earlier refusal by the same policy: that refusal stands for the larger cost
      if (known && known.until > sent.sentAt && cost < known.cost && samePolicy(known.policy, c.policy))
        ({ until, cost } = known);
      this.entries.set(c.redisKey, {
        until,
        cost,
        policy: c.policy,
        remaining,
        resetAt: sent.sentAt + resetMs,
        afterRefusal: ok && until === 0 ? 0 : cost,
        refills: c.policy.algorithm === 'token-bucket' && (ok || bucketAnswer(c.policy, replies[i])),
      });
    });
  }

  /** Forgets one counter (reward, reset of one policy) or, with a prefix, every counter of a key. */
  forget(counter: string, isPrefix = false): void {
    this.generation++;
    dropCounters(this.entries, counter, isPrefix);
  }

  get size(): number {
    return this.entries.size;
  }
}

/**
 * Whether Redis decides a counter's calls by the same rule under both policies: everything but the cost (the entry
 * compares that itself). A different limit, ttl or burst can admit what the entry's policy refused, and a different
 * blockDuration makes Redis write (or not) a block on refusal that an answer here would skip.
 */
function samePolicy(a: ResolvedPolicy, b: ResolvedPolicy): boolean {
  return (
    a === b ||
    (a.algorithm === b.algorithm &&
      a.limit === b.limit &&
      a.ttl === b.ttl &&
      a.burst === b.burst &&
      a.blockDuration === b.blockDuration)
  );
}

/**
 * The units an entry's counter has at `now`, as Redis would answer them (docs/rate-limit.md, Block cache): what Redis
 * said, the full capacity once its reset has run out, at least the refused cost once the refusal is over, and for a
 * token bucket the tokens refilled since (one per ttl / limit ms, counted back from when it is full). While the
 * refusal lasts, fewer than the refused cost, as Redis says (a counter with that many units admits it). Times count
 * from when the call was sent, less 1 ms, as `until` does: a token shows up to a round trip early, never late.
 */
function unitsLeft(e: Entry, now: number): number {
  const full = capacityOf(e.policy);
  let left = e.remaining;
  if (now >= e.resetAt) left = full;
  else {
    if (e.refills) left = Math.max(left, full - Math.ceil(((e.resetAt - 1 - now) * e.policy.limit) / e.policy.ttl));
    if (e.until <= now) left = Math.max(left, e.afterRefusal);
  }
  return Math.max(0, Math.min(left, full, e.until > now ? e.cost - 1 : full));
}

/**
 * Whether Redis's refusal of a token bucket is the bucket's own, so its tokens follow from its reset: not a block,
 * which says 0 left until it ends whatever the bucket holds. A blockDuration policy's refusal always leaves it
 * blocked; a block() shows in figures no bucket gives (consume-token-bucket.lua): the bucket's own refusal waits
 * burst - cost tokens less than its reset, and has burst - ceil(reset / ms per token) tokens left (to the ms).
 */
function bucketAnswer(p: ResolvedPolicy, [, remaining, resetMs, retryAfterMs]: PolicyReply): boolean {
  if (p.blockDuration > 0) return false;
  const perToken = p.ttl / p.limit;
  if (Math.abs(resetMs - retryAfterMs - (p.burst - p.cost) * perToken) > 1 + 1e-6) return false;
  const fewest = p.burst - Math.ceil(resetMs / perToken - 1e-9);
  return remaining >= fewest && remaining <= p.burst - Math.floor((resetMs - 1) / perToken);
}
