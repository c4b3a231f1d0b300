import type { OptionProblems } from '../common/option-checks.js';
import type { RedisStandaloneConnection } from '../connection/connection.options.js';
import { checkConnection } from '../connection/connection.validation.js';
import { retryPauseProblem } from './lock.attempts.js';

/** Injection token of ResolvedLockOptions (`lock` of forRoot, defaults filled in). */
export const LOCK_OPTIONS = Symbol('LOCK_OPTIONS');

export interface LockRetryOptions {
  /** Attempts after the first. */
  count?: number;
  /** ms between attempts. delay + jitter: at most 2^31 - 1 (~24.8 days, the longest pause a Node timer keeps). */
  delay?: number;
  /** Up to this many ms added at random to each delay (the pause is rounded to whole ms). */
  jitter?: number;
}

export interface LockOptions {
  /** Default lock ttl in ms (rounded up to whole ms). Default 10_000. */
  ttl?: number;
  retry?: LockRetryOptions;
  /**
   * Longest ms `using` / @WithLock holds a lock: then the signal aborts, the lock is released and the call rejects
   * with LockHoldTimeoutError, so a function that never settles cannot keep the lock forever. Default 600_000
   * (10 min); `Infinity` for no limit.
   */
  maxHoldMs?: number;
  /**
   * At start the toolkit reads each lock server's maxmemory-policy: with a memory limit, `allkeys-*` can evict a held
   * lock. `'warn'` (default) logs it, `'refuse'` stops the bootstrap with UnsafeEvictionPolicyError.
   */
  onUnsafeEviction?: 'warn' | 'refuse';
  /**
   * Auto-extension (`using`, `@WithLock`, `lock.startAutoExtend()`) extends a lock when this many ms or fewer of it are
   * left (redlock's `automaticExtensionThreshold`). Default: two thirds of each lock's ttl (an extension every third
   * of the ttl; on a quorum of its validity). Below `lock.ttl` (else InvalidOptionsError at start); ignored for a
   * lock whose own ttl is not above it (that lock takes the default).
   */
  extensionThreshold?: number;
  /**
   * Waiting across processes: a caller that finds a lock held joins the lock's waiting services, and the release
   * passes the lock to the oldest (the `retry` poll stays the fallback). On one server the release grants it the
   * lock inside Redis; on a cluster or a quorum it wakes it to try at once (pub/sub). Default: on for one server
   * (the lock passes at once and in order, with a tenth of the p99 of polling and of redlock; its throughput against
   * theirs depends on the setup: docs/lock.md, rounds 10 and 11), off on a cluster or a quorum, where the wake
   * measured no faster than polling.
   */
  wakeOnRelease?: boolean;
  /** Redlock over N independent servers instead of the main connection. */
  quorum?: { nodes: RedisStandaloneConnection[]; driftFactor?: number };
}

/**
 * A quorum lock is ours for its validity: the ttl minus the clock drift allowance (a share of the ttl plus 2 ms for
 * timer resolution, as in Redlock).
 */
export const quorumValidity = (ttl: number, driftFactor: number): number => ttl - (Math.round(ttl * driftFactor) + 2);

/**
 * The least validity a quorum ttl (or extension) must leave: below it the nodes' answers come after the lock would
 * expire, and the attempt failed as if they were down or busy (a ttl of 1-2 ms has none at all).
 */
export const MIN_QUORUM_VALIDITY_MS = 10;

/** The least whole ttl whose validity is MIN_QUORUM_VALIDITY_MS with `driftFactor` (12 ms at 0.01, 24 at 0.5). */
export function minQuorumTtl(driftFactor: number): number {
  let ttl = MIN_QUORUM_VALIDITY_MS;
  while (quorumValidity(ttl, driftFactor) < MIN_QUORUM_VALIDITY_MS) ttl++;
  return ttl;
}

/** The problem with a ttl too short for a quorum with `driftFactor`, or undefined. */
export function quorumTtlProblem(ttl: number, driftFactor: number): string | undefined {
  if (quorumValidity(ttl, driftFactor) >= MIN_QUORUM_VALIDITY_MS) return undefined;
  return (
    `must be at least ${minQuorumTtl(driftFactor)} ms on a quorum with driftFactor ${driftFactor} (it must leave ` +
    `${MIN_QUORUM_VALIDITY_MS} ms of validity: ttl - ttl * driftFactor - 2 ms), got ${ttl}`
  );
}

export interface ResolvedLockOptions {
  ttl: number;
  retry: Required<LockRetryOptions>;
  maxHoldMs: number;
  onUnsafeEviction: 'warn' | 'refuse';
  extensionThreshold: number | undefined;
  /** undefined: by topology (on for one server, off on a cluster or a quorum). */
  wakeOnRelease: boolean | undefined;
  quorum: { nodes: RedisStandaloneConnection[]; driftFactor: number } | undefined;
}

const DEFAULT_DRIFT_FACTOR = 0.01;
const DEFAULT_TTL = 10_000;

export function resolveLockOptions(raw: LockOptions | undefined, problems: OptionProblems): ResolvedLockOptions {
  const o = raw ?? {};
  if (problems.object('lock', raw)) {
    problems.duration('lock.ttl', o.ttl);
    if (o.maxHoldMs !== Number.POSITIVE_INFINITY) problems.duration('lock.maxHoldMs', o.maxHoldMs);
    problems.oneOf('lock.onUnsafeEviction', o.onUnsafeEviction, ['warn', 'refuse'] as const);
    problems.duration('lock.extensionThreshold', o.extensionThreshold);
    // As every per-call threshold is checked against its ttl: a module one not below lock.ttl was ignored by every lock
    // of the default ttl, without a word (until 2026-12-06; test/lock/lock.doc-claims.spec.ts)
    const ttl = typeof o.ttl === 'number' ? Math.ceil(o.ttl) : DEFAULT_TTL;
    if (typeof o.extensionThreshold === 'number' && Number.isFinite(ttl) && o.extensionThreshold >= ttl)
      problems.add('lock.extensionThreshold', `must be below lock.ttl (${ttl}), got ${o.extensionThreshold}`);
    problems.boolean('lock.wakeOnRelease', o.wakeOnRelease);
    if (problems.object('lock.retry', o.retry) && o.retry) {
      problems.integer('lock.retry.count', o.retry.count, 0);
      problems.duration('lock.retry.delay', o.retry.delay, { allowZero: true });
      problems.duration('lock.retry.jitter', o.retry.jitter, { allowZero: true });
      const pause = retryPauseProblem({ delay: 100, jitter: 50, ...o.retry });
      if (pause !== undefined) problems.add('lock.retry', pause);
    }
    if (problems.object('lock.quorum', o.quorum) && o.quorum) {
      if (!Array.isArray(o.quorum.nodes) || o.quorum.nodes.length === 0) {
        problems.add('lock.quorum.nodes', 'must be a non-empty array of connections');
      } else {
        // Each node like `connection` (a missing url must not become 127.0.0.1:6379), and a single server each.
        o.quorum.nodes.forEach((node: unknown, i) => {
          const path = `lock.quorum.nodes[${i}]`;
          checkConnection(path, node, problems);
          const n = node as Record<string, unknown> | null;
          if (n && (n.sentinels !== undefined || n.cluster !== undefined || n.client !== undefined))
            problems.add(path, 'must be one server ({ url } or { host, port }): not sentinels, cluster or client');
        });
      }
      problems.number('lock.quorum.driftFactor', o.quorum.driftFactor, 0, 0.5);
      const drift = o.quorum.driftFactor ?? DEFAULT_DRIFT_FACTOR;
      if (typeof o.ttl === 'number' && typeof drift === 'number') {
        const short = quorumTtlProblem(Math.ceil(o.ttl), drift);
        if (short !== undefined) problems.add('lock.ttl', short);
      }
    }
  }
  return {
    // Whole ms, as a call's ttl (ttlOf): Redis's PX and PEXPIRE refuse a fraction ("ERR value is not an integer").
    ttl: typeof o.ttl === 'number' ? Math.ceil(o.ttl) : DEFAULT_TTL,
    retry: { count: 10, delay: 100, jitter: 50, ...o.retry },
    maxHoldMs: o.maxHoldMs ?? 600_000,
    onUnsafeEviction: o.onUnsafeEviction ?? 'warn',
    extensionThreshold: o.extensionThreshold,
    wakeOnRelease: o.wakeOnRelease,
    quorum: o.quorum ? { driftFactor: DEFAULT_DRIFT_FACTOR, ...o.quorum } : undefined,
  };
}
