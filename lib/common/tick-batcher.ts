import { setImmediate } from './real-timers.js';

/** In a batch's results: this item failed alone (its call rejects with `error`, the others resolve). */
export class Rejected {
  constructor(readonly error: unknown) {}
}

/** How a TickBatcher sends what it collected. */
export interface TickBatchSender<TItem, TResult> {
  /** A lone item, sent as it would be without batching. */
  one(item: TItem): Promise<TResult>;
  /**
   * Several items in one command (or one per node, see cluster-batch.ts); one result per item, in order. A sender may
   * hand over some results before the others through `settle` (a cluster node that answered first): those callers go
   * on at once instead of waiting for the slowest node.
   */
  many(items: TItem[], settle?: (index: number, result: TResult | Rejected) => void): Promise<(TResult | Rejected)[]>;
}

/**
 * Collects the calls made in one turn of the event loop and sends them as one command. Many concurrent callers then
 * cost one command, one socket write and one reply to parse instead of one each, like node-redis's and ioredis's
 * auto-pipelining, without their per-command cost. With `maxPerCall`, a turn with more calls sends several commands,
 * so Redis can work on one while this process prepares the next. A failed command rejects every call in it; a sender
 * may fail single items instead (a Rejected result), as the per-node sender of a cluster does for one node's calls.
 *
 * Flushed with setImmediate, after the I/O callbacks of the current turn: the requests of an HTTP server arrive as
 * separate callbacks, so a flush on process.nextTick would send each alone (measured on the sample app, 32
 * connections: toolkit overhead over plain Nest 33 % with nextTick, 19 % with setImmediate). A lone call waits only
 * for the callbacks already due in this turn.
 */
export class TickBatcher<TItem, TResult> {
  private pending: { item: TItem; resolve: (r: TResult) => void; reject: (err: unknown) => void }[] = [];
  private scheduled = false;

  constructor(
    private readonly sender: TickBatchSender<TItem, TResult>,
    private readonly maxPerCall = Infinity,
    private readonly turn?: SharedTurn,
  ) {
    turn?.join(this);
  }

  add(item: TItem): Promise<TResult> {
    return new Promise((resolve, reject) => {
      // full: sent at once, so Redis works on it while this turn goes on; in a SharedTurn it waits for the turn's end
      // instead, where the batchers that joined it before this one send first (a lock's releases before its
      // acquisitions: sent at once, acquisitions past the first call's worth reached Redis before the turn's releases)
      if (this.pending.length >= this.maxPerCall && !this.turn) this.flush();
      this.pending.push({ item, resolve, reject });
      if (this.turn) this.turn.schedule();
      else if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(() => {
          this.scheduled = false;
          this.flush();
        });
      }
    });
  }

  /**
   * Sends what this turn collected so far now, instead of at the end of the turn (see sendingAfter), in calls of at
   * most `maxPerCall`, in order.
   */
  flush(): void {
    const all = this.pending;
    if (all.length === 0) return;
    this.pending = [];
    if (all.length <= this.maxPerCall) this.send(all);
    else
      for (let from = 0; from < all.length; from += this.maxPerCall) this.send(all.slice(from, from + this.maxPerCall));
  }

  private send(batch: { item: TItem; resolve: (r: TResult) => void; reject: (err: unknown) => void }[]): void {
    if (batch.length === 1) {
      const [only] = batch;
      this.sender.one(only.item).then(only.resolve, only.reject);
      return;
    }
    // settling twice is harmless: a promise keeps its first outcome
    const settle = (i: number, result: TResult | Rejected): void => {
      if (result instanceof Rejected) batch[i].reject(result.error);
      else batch[i].resolve(result);
    };
    this.sender
      .many(
        batch.map((b) => b.item),
        settle,
      )
      .then(
        (results) => {
          for (let i = 0; i < batch.length; i++) settle(i, results[i]);
        },
        (err: unknown) => {
          for (const b of batch) b.reject(err);
        },
      );
  }
}

/**
 * `sender`, sending what `first` collected in this turn before each of its own commands: on one connection Redis runs
 * commands in the order they are sent, so `first`'s calls of a turn run before this sender's.
 */
export function sendingAfter<TItem, TResult>(
  first: { flush(): void },
  sender: TickBatchSender<TItem, TResult>,
): TickBatchSender<TItem, TResult> {
  return {
    one: (item) => {
      first.flush();
      return sender.one(item);
    },
    many: (items, settle) => {
      first.flush();
      return sender.many(items, settle);
    },
  };
}

/**
 * Batchers of one connection flushed together at the end of a turn, in the order they joined, with the socket corked
 * meanwhile: their commands leave in one write (one system call here, one read for Redis) instead of one each. A
 * batcher that fills up (`maxPerCall`) sends its calls at the end of the turn too, in calls of `maxPerCall`: were it
 * to send at once, its first calls would leave ahead of those of the batchers before it.
 */
export class SharedTurn {
  private readonly batchers: { flush(): void }[] = [];
  private scheduled = false;

  constructor(private readonly stream: () => { cork(): void; uncork(): void } | undefined) {}

  join(batcher: { flush(): void }): void {
    this.batchers.push(batcher);
  }

  schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      const stream = this.stream();
      stream?.cork();
      try {
        for (const batcher of this.batchers) batcher.flush();
      } finally {
        stream?.uncork();
      }
    });
  }
}
