import type { RedisClient } from './lua-script.js';
import { RedisUnavailableError } from './errors.js';
import { setVerdictTimeout } from './timeout.js';

/**
 * What Redis's reply buffer holds of one value besides its bytes, counted per value: the bulk header (`$<len>\r\n`),
 * its `\r\n`, and the array header of a batch, rounded up generously. The budget scripts count the same
 * (budget-get.lua, session-read-many.lua).
 */
export const REPLY_OVERHEAD = 64;
/** Reads waiting for the budget of one connection at most; one more fails at once (RedisUnavailableError). */
export const MAX_WAITING = 10_000;
/** The first guess at a value's size (bytes), before any was read on the connection. */
const FIRST_GUESS = 1_024;

interface Waiter {
  bytes: number;
  resolve: (bytes: number) => void;
  reject: (err: unknown) => void;
  timer: NodeJS.Timeout | undefined;
}

/**
 * The reply bytes the budgeted reads in flight on one connection (a single server's, or one master's on a cluster)
 * may take together. Redis builds the replies of every command it read in one go (several pipelined commands, when
 * they arrive together or while it still writes an earlier reply) before it writes them, and closes the connection
 * when what it holds passes `client-output-buffer-limit normal`: values each under the size bound can pass it
 * together. A read reserves the bytes its reply may carry before it is sent and gives them back once the reply is in;
 * a read that does not fit waits its turn (first come, first served: a large read is not starved by small ones),
 * within the connection's commandTimeout, at most MAX_WAITING of them, else RedisUnavailableError.
 */
export class ReplyAccount {
  private used = 0;
  private readonly waiting: Waiter[] = [];
  /** An average of the value sizes (bytes) read on the connection: what a batch of unknown values reserves. */
  private average = FIRST_GUESS;

  constructor(private readonly budget: ReplyBudget) {}

  /** The budget's bound (bytes; 0: none). */
  get bound(): number {
    return this.budget.bound;
  }

  /** What a read of `count` values of unknown size reserves: twice the average each, at most the bound. */
  guess(count: number): number {
    return Math.min(this.budget.bound, Math.max(FIRST_GUESS, count * 2 * (this.average + REPLY_OVERHEAD)));
  }

  /** A value of `bytes` was read: the guess follows (a moving average, 1/8 the weight of the new one). */
  saw(bytes: number): void {
    this.average += (bytes - this.average) / 8;
  }

  /**
   * Resolves with the bytes reserved once `bytes` (capped at the bound: a value past the bound, written before it was
   * known, is read alone) fit beside the reads in flight; RedisUnavailableError when they did not within the timeout.
   */
  reserve(bytes: number): Promise<number> {
    const want = Math.max(1, Math.min(bytes, this.budget.bound));
    if (this.waiting.length === 0 && this.fits(want)) {
      this.used += want;
      return Promise.resolve(want);
    }
    if (this.waiting.length >= MAX_WAITING)
      return Promise.reject(
        new RedisUnavailableError(
          `${MAX_WAITING} reads wait already for the reply budget of this connection (client-output-buffer-limit ` +
            `normal, ${this.budget.bound} bytes in flight at most)`,
        ),
      );
    return new Promise((resolve, reject) => {
      const waiter: Waiter = { bytes: want, resolve, reject, timer: undefined };
      const ms = this.budget.timeoutMs;
      waiter.timer = setVerdictTimeout(() => {
        const at = this.waiting.indexOf(waiter);
        if (at < 0) return; // granted meanwhile
        this.waiting.splice(at, 1);
        reject(
          new RedisUnavailableError(
            `a read waited past commandTimeout (${ms} ms) for the reply budget of its connection: the reads before ` +
              `it hold ${this.used} of the ${this.budget.bound} bytes the replies in flight may take ` +
              '(client-output-buffer-limit normal)',
          ),
        );
        this.grant(); // the head may have been the one that did not fit
      }, ms);
      this.waiting.push(waiter);
    });
  }

  release(bytes: number): void {
    this.used = Math.max(0, this.used - bytes);
    this.grant();
  }

  /** The reads waiting that fit now, in order (all of them once the budget is off). */
  grant(): void {
    while (this.waiting.length > 0) {
      const head = this.waiting[0];
      const want = this.budget.bound > 0 ? Math.min(head.bytes, this.budget.bound) : head.bytes;
      if (this.budget.bound > 0 && !this.fits(want)) return;
      this.waiting.shift();
      clearTimeout(head.timer);
      this.used += want;
      head.resolve(want);
    }
  }

  /** Nothing in flight: any read fits (one past the bound is read alone). */
  private fits(bytes: number): boolean {
    return this.used === 0 || this.used + bytes <= this.budget.bound;
  }
}

/**
 * One client's reply budget: the bound (bytes) the replies in flight on each of its connections stay under, from the
 * server's `client-output-buffer-limit normal` (boundOfLimit of the smallest non-zero limit of its masters, set by
 * the shared read of reply-limit.ts, again at each reconnect), and one ReplyAccount per connection. `bound` 0 (no
 * limit, Redis's default, or not read): the reads go as they always did, with no budget kept and nothing more sent.
 */
export class ReplyBudget {
  /** Bytes; 0: none. */
  bound = 0;
  /** How long a read waits for the budget at most (ms): the connection's commandTimeout. */
  timeoutMs = 1_000;
  private readonly accounts = new Map<string, ReplyAccount>();

  /** The account of one connection: '' on a single server, a master's `host:port` on a cluster. */
  account(node = ''): ReplyAccount {
    let account = this.accounts.get(node);
    if (account === undefined) this.accounts.set(node, (account = new ReplyAccount(this)));
    return account;
  }

  /** A new bound (reply-limit.ts): reads waiting that fit under it now go. */
  setBound(bound: number, timeoutMs: number): void {
    this.bound = bound;
    this.timeoutMs = timeoutMs;
    for (const account of this.accounts.values()) account.grant();
  }
}

const budgets = new WeakMap<RedisClient, ReplyBudget>();

/** The budget of `client`'s connections, shared by every feature reading values on it (the cache, sessions). */
export function replyBudgetOf(client: RedisClient): ReplyBudget {
  let budget = budgets.get(client);
  if (budget === undefined) budgets.set(client, (budget = new ReplyBudget()));
  return budget;
}
