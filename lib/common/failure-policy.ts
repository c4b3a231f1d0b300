import type { Logger } from '@nestjs/common';
import { ReplyError } from 'ioredis';
import { RedisPermissionError, RedisReplyError, RedisToolkitError, RedisUnavailableError } from './errors.js';
import { ThrottledWarning } from './throttled-logger.js';

/**
 * Reply codes that mean "Redis cannot serve anyone right now" (loading a dump, a busy script, a failover in progress,
 * a cluster without a slot's master; NOREPLICAS: fewer good replicas than `min-replicas-to-write`; MISCONF: a failed
 * save under `stop-writes-on-bgsave-error`): transport-like, so they follow the feature's failure policy. The last two
 * refuse every write of every client for a state of the deployment (a replica link, a disk) that passes without this
 * app, as a failover does; as reply errors they made the rate limiter answer 500 to every request and the cache fail
 * every miss, where Redis down fails open. Every other error reply (WRONGTYPE, OOM, NOPERM, ERR...) is about this one
 * call, or the data (OOM: the data set, ours included, at maxmemory; DEL and refusals still pass), and fails only it.
 * READONLY only for a while: see FailurePolicy.lastingReadOnly.
 */
const UNAVAILABLE_REPLIES = new Set([
  'LOADING',
  'BUSY',
  'MASTERDOWN',
  'READONLY',
  'CLUSTERDOWN',
  'TRYAGAIN',
  'NOREPLICAS',
  'MISCONF',
]);
/** The RedisUnavailableErrors made from a READONLY reply (a demoted master): FailurePolicy asks how long it lasts. */
const READONLY_ERRORS = new WeakSet<RedisUnavailableError>();

function unavailableReply(message: string, code: string, options?: { cause?: unknown }): RedisUnavailableError {
  const err = new RedisUnavailableError(message, options);
  if (code === 'READONLY') READONLY_ERRORS.add(err);
  return err;
}
const PERMISSION_REPLIES = new Set(['NOPERM']);
const SCRIPT_ACL_DENIAL = /The user executing the script can't/;

/** The first word of an error reply (`WRONGTYPE`, `OOM`, `ERR`...), or undefined for a transport error. */
export function replyCodeOf(err: unknown): string | undefined {
  if (!(err instanceof ReplyError)) return undefined;
  return /^[A-Z][A-Z_-]*/.exec((err as Error).message)?.[0] ?? 'ERR';
}

/**
 * The typed error for a failed Redis call: our own errors pass through; an error reply becomes RedisReplyError
 * (RedisPermissionError for NOPERM) unless it says the server is unavailable; anything else (connection closed,
 * refused or reset, command timeout, no node reachable) becomes RedisUnavailableError.
 * `withCause: false` leaves the driver error out (its command arguments may hold secrets such as session ids).
 */
export function classifyRedisError(err: unknown, what: string, withCause = true): RedisToolkitError {
  if (err instanceof RedisToolkitError) return err;
  const reason = err instanceof Error ? err.message : String(err);
  const options = withCause ? { cause: err } : undefined;
  const code = replyCodeOf(err);
  // A MULTI whose queued command was refused (NOPERM, OOM...) fails with EXECABORT: the refusal is the reason.
  const previous = (err as { previousErrors?: unknown[] }).previousErrors?.[0];
  if (code === 'EXECABORT' && previous !== undefined) return classifyRedisError(previous, what, withCause);
  if (code === undefined) return new RedisUnavailableError(`${what} failed: ${reason}`, options);
  if (UNAVAILABLE_REPLIES.has(code)) return unavailableReply(`${what} failed: ${reason}`, code, options);
  return replyError(`${what} failed: ${reason}`, code, options);
}

/** A reply error from its text, e.g. the per-item error a batched script returns (`WRONGTYPE Operation...`). */
export function replyError(message: string, code: string, options?: { cause?: unknown }): RedisReplyError {
  // Inside a script Redis 7.0 reports an ACL denial as `ERR The user executing the script can't run this command`
  // (or `can't access ... keys/channels`), not NOPERM.
  if (PERMISSION_REPLIES.has(code) || SCRIPT_ACL_DENIAL.test(message))
    return new RedisPermissionError(message, 'NOPERM', options);
  return new RedisReplyError(message, code, options);
}

/**
 * The error a batched script reports for one item (`{ err = '...' }` caught by redis.pcall) as a typed error. READONLY
 * (a demoted master during a failover), LOADING... say Redis cannot serve anyone: RedisUnavailableError, as the same
 * reply outside a script, so the feature's failure policy applies.
 */
export function itemReplyError(what: string, text: string): RedisReplyError | RedisUnavailableError {
  const code = /^[A-Z][A-Z_-]*/.exec(text)?.[0] ?? 'ERR';
  if (UNAVAILABLE_REPLIES.has(code)) return unavailableReply(`${what} failed: ${text}`, code);
  return replyError(`${what} failed: ${text}`, code);
}

/** The part of the connection the policy looks at. */
export interface FailureConnection {
  readonly status: string;
  /** Its address, no credentials, for the message of a call made while it is not ready. */
  readonly description?: string;
  /** A transport failure in words that say where and why (RedisConnection: downReason); absent: as it is. */
  explain?(err: unknown): unknown;
  /**
   * The connection's last error (a refused connect: ECONNREFUSED, maxclients; an idle close), for the message of a
   * call made while it is not ready: "reconnecting" alone does not say why.
   */
  lastError?(): string | undefined;
  /** Opens a lazy client that was never opened (status `wait`). */
  connectInBackground(): void;
  /**
   * The server answered READONLY: undefined while that may be a failover in progress (within the connection's
   * `readOnlyGraceMs` of the first READONLY of a streak; always on a cluster), else why it is taken for a replica.
   * Absent: always undefined.
   */
  noteReadOnly?(): string | undefined;
}

/**
 * ioredis's status of a connection that is not ready, in words: `end` is a connection closed for good (app.close(),
 * or quit), where ioredis's own word reads as a typo ("the connection is end").
 */
export function notReadyState(status: string): string {
  switch (status) {
    case 'ready':
      return 'connection lost'; // still `ready`: the socket closed and ioredis has not handled it yet
    case 'wait':
      return 'not connected yet (lazyConnect)';
    case 'end':
      return 'closed: the application is shutting down, or the connection was quit';
    case 'disconnecting': // a Cluster's, while it quits
      return 'closing: the application is shutting down, or the connection was quit';
    case 'close':
      return 'connection lost, not reconnecting yet';
    default:
      return status; // connect, connecting, reconnecting
  }
}

/**
 * `not connected to <where> (<state>); last error: <cause>`: why a call on a connection that is not up failed, in the
 * words both the failure policy (a call refused before it is sent) and health (downReason) use.
 */
export function notConnected(where: string, status: string, cause: string | undefined): string {
  return `not connected to ${where} (${notReadyState(status)})${cause === undefined ? '' : `; last error: ${cause}`}`;
}

export interface FailureCounts {
  /** Transport failures: Redis unreachable, not ready or too slow. */
  unavailable: number;
  /** Calls Redis answered with an error (WRONGTYPE, OOM, NOPERM...). */
  replyErrors: number;
}

export interface FailurePolicyOptions {
  /** In messages: `cache`, `rate limit`, `session`, `lock`, `pub/sub`. */
  feature: string;
  logger: Logger;
  /**
   * At most one warning per interval (ms) and kind (transport failures; each reply code), default 10 s; the count of
   * the others is logged at the end of the interval.
   */
  warnIntervalMs?: number;
  /** Keep the driver error as `cause` (default true; sessions say false: its arguments hold session ids). */
  withCause?: boolean;
  /** The feature's option: carry on without Redis after a transport failure (true) or throw (false, default). */
  failOpen?: boolean;
  /** What failing open means, for the warning (`serving without the cache`). */
  failOpenMeans?: string;
}

/**
 * The one answer to "is Redis usable, and what do we do if not", shared by every feature:
 * - no command is sent while the connection is not ready (a queued command could run long after its caller gave up);
 *   a lazy connection never opened is opened in the background;
 * - a transport failure becomes RedisUnavailableError, counted and logged (throttled), and the feature's option
 *   decides: fail open (the caller carries on without Redis) or fail closed (the error is thrown);
 * - an error reply is never an outage: RedisReplyError / RedisPermissionError for that one call, counted and logged.
 */
export class FailurePolicy {
  readonly counts: FailureCounts = { unavailable: 0, replyErrors: 0 };
  private readonly unavailableWarning: ThrottledWarning;
  private readonly replyWarning: ThrottledWarning;
  private readonly feature: string;
  private readonly withCause: boolean;
  /** Reply errors already counted (one may pass through `classify` more than once on its way up). */
  private readonly seen = new WeakSet<RedisReplyError>();
  /** READONLY errors past the grace, and the reply error each became (it may pass here more than once). */
  private readonly lastingReadOnlyErrors = new WeakMap<RedisUnavailableError, RedisReplyError>();
  private readonly failOpen: boolean;
  private readonly failOpenMeans: string;

  constructor(
    private readonly connection: FailureConnection,
    options: FailurePolicyOptions,
  ) {
    this.feature = options.feature;
    this.withCause = options.withCause ?? true;
    this.failOpen = options.failOpen ?? false;
    this.failOpenMeans = options.failOpenMeans ?? 'carrying on without Redis';
    const feature = options.feature;
    this.unavailableWarning = new ThrottledWarning(
      options.logger,
      options.warnIntervalMs,
      () => `failed ${feature} calls (Redis unavailable)`,
    );
    // One throttle per reply code: a NOPERM (an ACL change) is logged at once, whatever WRONGTYPE came before it.
    this.replyWarning = new ThrottledWarning(
      options.logger,
      options.warnIntervalMs,
      (code) => `failed ${feature} calls (error reply ${code})`,
    );
  }

  /** At shutdown: the counts of warnings not logged yet are logged now (ThrottledWarning.close). */
  close(): void {
    this.unavailableWarning.close();
    this.replyWarning.close();
  }

  /** Throws RedisUnavailableError (not counted: the caller's `unavailable` does) unless the connection is ready. */
  assertReady(what: string): void {
    const status = this.connection.status;
    if (status === 'ready') return;
    if (status === 'wait') this.connection.connectInBackground();
    const where = this.connection.description === undefined ? 'Redis' : `Redis at ${this.connection.description}`;
    // closed by the app: an error from before that says nothing
    const last = status === 'end' || status === 'disconnecting' ? undefined : this.connection.lastError?.();
    throw new RedisUnavailableError(`${this.feature} ${what} failed: ${notConnected(where, status, last)}`);
  }

  /**
   * Runs Redis operations once the connection is ready. Rejects with our typed errors: RedisUnavailableError for a
   * transport failure (for the caller to pass to `unavailable`), RedisReplyError for an error reply (already counted
   * and logged here: it always fails the call), and the caller's own errors unchanged.
   */
  async run<T>(what: string, op: () => Promise<T>): Promise<T> {
    this.assertReady(what);
    try {
      return await op();
    } catch (err) {
      throw this.classify(err, what);
    }
  }

  /** `run` for a call that fails closed whatever the option: a transport failure is counted, logged and thrown. */
  async guard<T>(what: string, op: () => Promise<T>): Promise<T> {
    try {
      return await this.run(what, op);
    } catch (err) {
      this.unavailable(err, false);
      throw err;
    }
  }

  /** The typed error for `err`; an error reply is counted and logged on the way (once per error). */
  classify(err: unknown, what: string): RedisToolkitError {
    const explained = this.connection.explain === undefined ? err : this.connection.explain(err);
    const typed = this.lastingReadOnly(classifyRedisError(explained, `${this.feature} ${what}`, this.withCause));
    if (typed instanceof RedisReplyError) this.replyFailed(typed);
    return typed;
  }

  /**
   * READONLY is an outage only while it may be a failover (the connection's `readOnlyGraceMs` after the first of a
   * streak). Past that the server is a replica the connection should not point at, and failing open would last as
   * long as that mistake: the call fails with RedisReplyError (READONLY), whatever the feature's policy.
   */
  private lastingReadOnly(err: RedisToolkitError): RedisToolkitError {
    if (!(err instanceof RedisUnavailableError) || !READONLY_ERRORS.has(err)) return err;
    const known = this.lastingReadOnlyErrors.get(err);
    if (known !== undefined) return known;
    const why = this.connection.noteReadOnly?.();
    if (why === undefined) return err;
    const message = `${err.message} (${why}: it is a replica; point the connection at the master)`;
    const reply = new RedisReplyError(message, 'READONLY', err.cause === undefined ? undefined : { cause: err.cause });
    this.lastingReadOnlyErrors.set(err, reply);
    return reply;
  }

  /** Counts and logs an error reply that did not come through `run`/`classify` (a per-item error of a batch). */
  replyFailed(err: RedisToolkitError): void {
    // An item error that means "unavailable" is counted by the caller's `unavailable`, not here.
    if (!(err instanceof RedisReplyError) || this.seen.has(err)) return;
    this.seen.add(err);
    this.counts.replyErrors++;
    const message = `${err.message} (Redis answered with an error: this call fails, nothing falls back)`;
    this.replyWarning.warn(message, err.replyCode);
  }

  /**
   * After a failed call: a transport failure is counted and logged, then swallowed when `failOpen` (default: the
   * feature's option; the caller falls back: loader, allow, drop) or thrown; every other error is thrown unchanged.
   */
  unavailable(err: unknown, failOpen = this.failOpen, fallback = failOpen ? this.failOpenMeans : 'failing'): void {
    if (!(err instanceof RedisUnavailableError)) throw err;
    // A READONLY that did not come through `classify` (a per-item error of a batch) and outlasted the grace.
    const typed = this.lastingReadOnly(err);
    if (typed !== err) {
      this.replyFailed(typed);
      throw typed;
    }
    this.counts.unavailable++;
    this.unavailableWarning.warn(`${err.message}; ${fallback}`);
    if (!failOpen) throw err;
  }
}
