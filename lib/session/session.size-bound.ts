import { SessionTooLargeError } from '../common/errors.js';
import {
  boundOfLimit,
  type ReplyLimit,
  type ReplyLimitSource,
  type ReplyLimitUser,
  type ReplyLimitWatch,
  type UnreadNote,
  pastServerLimit,
  watchReplyLimit,
} from '../common/reply-limit.js';

/**
 * The largest session stored, in bytes (its stored value, changes appended included): `maxSize` (the option, or its
 * default of 1 MiB), or less when the server's `client-output-buffer-limit normal` lets one reply carry less
 * (boundOfLimit of its smallest non-zero hard limit, read once per connection with the cache on it:
 * common/reply-limit.ts). A session past that limit could be written (a write's reply is small), but every read of
 * it made Redis close the connection, failing every call in flight on it, the other sessions' reads batched in the
 * same reply first, at each read. A `maxSize` given above the server's bound is lowered to it, with one warning; the
 * default is lowered without a word. Unread (CONFIG refused, renamed, a timeout), `maxSize` alone bounds a session.
 */
export class SessionSizeBound implements ReplyLimitUser {
  /** The bound (bytes). */
  max: number;
  /** The server's limit, when it is what bounds a session: for the error. */
  private server: { where: string; limit: number } | undefined;
  private limit: ReplyLimitWatch | undefined;
  /** The server limit a given maxSize was last warned to be past (a reconnect reading it again says nothing). */
  private warnedOf: number | undefined;

  /**
   * @param option the maxSize option (its default when not given)
   * @param optionName how errors and warnings name it: `session.maxSize`, `RedisSessionStore maxSize`
   * @param given whether it was given (a given one past the server's bound is warned about)
   * @param warn a warning's line (none: not said)
   */
  constructor(
    private readonly option: number,
    private readonly optionName = 'session.maxSize',
    private readonly given = false,
    private readonly warn: (message: string) => void = () => undefined,
  ) {
    this.max = option;
  }

  /** Joins the read of `source`'s limit (shared per client); start() reads it. */
  watch(source: ReplyLimitSource): this {
    this.limit = watchReplyLimit(source, this);
    return this;
  }

  /** Reads the server's limit now when connected (resolves once read; never rejects), else at the first `ready`. */
  start(): Promise<void> {
    return this.limit?.start() ?? Promise.resolve();
  }

  /** The read of the limit in flight, which a write may wait for (RedisSessionStore, which has no start). */
  pending(): Promise<void> | undefined {
    return this.limit?.pending();
  }

  close(): void {
    this.limit?.close();
  }

  /**
   * The limit as read (at start, again at each reconnect): the bound is the smaller of maxSize and what the server
   * sends in one reply; maxSize alone again when every limit is 0 now. A given maxSize past it is warned about once
   * per limit.
   */
  take({ smallest }: ReplyLimit): void {
    const bound = smallest === undefined ? Number.POSITIVE_INFINITY : boundOfLimit(smallest.limit);
    if (smallest === undefined || bound >= this.option) {
      this.max = this.option;
      this.server = undefined;
      return;
    }
    this.max = bound;
    this.server = smallest;
    if (!this.given || this.warnedOf === smallest.limit) return;
    this.warnedOf = smallest.limit;
    this.warn(
      pastServerLimit(this.optionName, this.option, smallest, 'a session') +
        `Sessions are bounded by ${bound} bytes instead; lower ${this.optionName} to it, or raise the server's limit`,
    );
  }

  /** A limit not read: what the shared log line says of sessions, unless maxSize was given (it is the bound then). */
  unread({ smallest }: ReplyLimit): UnreadNote | undefined {
    if (this.given) return undefined;
    return {
      consequence:
        smallest === undefined
          ? `a session is bounded by ${this.optionName}'s default (${this.option} bytes) alone`
          : `the bound on a session (${this.max} bytes) comes from the other masters alone`,
      option: this.optionName,
    };
  }

  /**
   * The error for a write that would make the session larger than the bound; nothing was written. `bytes`: the size
   * it would have (undefined when the merge ran in Redis, which does not say it), given by the caller that counted it.
   */
  tooLarge(detail: string, bytes: number | undefined): SessionTooLargeError {
    const server = this.server;
    if (server === undefined) {
      return new SessionTooLargeError(
        `the session would be larger than ${this.optionName} (${this.max} bytes) ${detail}; nothing was written`,
        bytes,
        this.max,
      );
    }
    return new SessionTooLargeError(
      `the session would be larger than ${this.max} bytes, the bound from client-output-buffer-limit normal ` +
        `${server.limit} of ${server.where} (a read of a larger one makes Redis close the connection, ` +
        `${this.optionName} is ${this.option}) ${detail}; nothing was written. Store less in the session, or raise ` +
        "the server's client-output-buffer-limit normal",
      bytes,
      this.max,
    );
  }
}
