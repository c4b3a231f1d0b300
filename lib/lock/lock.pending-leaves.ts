import { RedisUnavailableError } from '../common/errors.js';

/** How many removals are kept for a retry (per server for UnansweredLeave parts): past this many they are forgotten. */
const MAX_PENDING = 10_000;

/** One server's part of a removal that server did not answer (a quorum node): sent again to that server alone. */
export interface NodeLeave {
  /** The server (a quorum node's index): the parts of one server are kept, and retried, together. */
  readonly node: number;
  /** The server's connection is up: a retry may go (one that is down is sent nothing, not even looked at). */
  reachable(): boolean;
  /** Sends it again; rejects with an UnansweredLeave when the server does not answer this time either. */
  send(): Promise<unknown>;
}

/**
 * A removal some servers did not answer (down, paused, timed out): each of `parts` sends it again to one of them. The
 * servers that answered, or refused it with an error reply (which a retry would get again), or are left out of every
 * call, are not among them.
 */
export class UnansweredLeave extends RedisUnavailableError {
  constructor(
    message: string,
    readonly parts: readonly NodeLeave[],
  ) {
    super(message);
  }
}

/**
 * Best-effort removals of this service's entries from locks' waiting services, sent again when Redis did not answer
 * them: a wait ends by a failed attempt just when Redis is away, so its removal usually fails too. Each is kept until
 * an attempt of the service next gets an answer (`retry`), with no timer, so nothing runs while Redis is away or
 * after shutdown. Bounded: past MAX_PENDING they are forgotten, and an entry left costs the waiters one poll (or one
 * grant released by this service), or expires with its set. Used by LockGrants (one server) and LockWakeups (a
 * cluster or a quorum).
 *
 * On a quorum a removal is kept per node, for the nodes that did not answer it only (UnansweredLeave): the nodes that
 * took it are not sent it again, and a node that stays down (a majority still answers, so the service keeps making
 * answered attempts) costs each retry one look at its connection: its removals are neither sent nor gone through
 * until it is up again, and at most MAX_PENDING of them are kept.
 */
export class PendingLeaves<K> {
  private readonly pending = new Map<K, () => Promise<unknown> | undefined>();
  /** Per node: the removals only that node is still to take (UnansweredLeave parts). */
  private readonly byNode = new Map<number, Map<K, NodeLeave>>();

  /** @param retriable which failures are kept for a retry (by default every one); an UnansweredLeave always is */
  constructor(private readonly retriable: (err: unknown) => boolean = () => true) {}

  /** Sends `leave` now (replacing any kept for `key`: it goes to every server); when it fails, keeps it for `retry`. */
  send(key: K, leave: () => Promise<unknown> | undefined): void {
    this.drop(key);
    leave()?.catch((err: unknown) => this.keep(key, err, leave));
  }

  /** Forgets those kept for `key`: its entry is no longer to be taken out. */
  drop(key: K): void {
    this.pending.delete(key);
    for (const parts of this.byNode.values()) parts.delete(key);
  }

  /**
   * An attempt of the service got an answer: every one kept is sent again, except (dropped) those `skip` names; the
   * parts kept for a node whose connection is down wait, untouched, for an answered attempt once it is up.
   */
  retry(skip?: (key: K) => boolean): void {
    if (this.pending.size > 0) {
      const kept = [...this.pending];
      this.pending.clear();
      for (const [key, leave] of kept) if (!skip?.(key)) this.send(key, leave);
    }
    for (const parts of this.byNode.values()) {
      const first = parts.values().next();
      if (first.done || !first.value.reachable()) continue;
      const kept = [...parts];
      parts.clear();
      for (const [key, part] of kept) if (!skip?.(key)) part.send().catch((err: unknown) => this.keep(key, err));
    }
  }

  /** Removals kept for a retry (each node's part of one counted apart). */
  get size(): number {
    let size = this.pending.size;
    for (const parts of this.byNode.values()) size += parts.size;
    return size;
  }

  private keep(key: K, err: unknown, leave?: () => Promise<unknown> | undefined): void {
    if (err instanceof UnansweredLeave) {
      for (const part of err.parts) {
        let parts = this.byNode.get(part.node);
        if (!parts) this.byNode.set(part.node, (parts = new Map()));
        keepIn(parts, key, part);
      }
    } else if (leave && this.retriable(err)) keepIn(this.pending, key, leave);
  }
}

function keepIn<K, V>(kept: Map<K, V>, key: K, value: V): void {
  if (kept.size >= MAX_PENDING) kept.clear();
  kept.set(key, value);
}
