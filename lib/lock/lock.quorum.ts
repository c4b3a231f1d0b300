import type { Logger } from '@nestjs/common';
import type { Redis } from 'ioredis';
import { ThrottledWarning } from '../common/throttled-logger.js';
import { describeConnection } from '../connection/redis-client.factory.js';
import { InvalidOptionsError, LockLostError, RedisUnavailableError } from '../common/errors.js';
import { classifyRedisError, type FailureCounts } from '../common/failure-policy.js';
import type { RedisConnection } from '../connection/redis-connection.js';
import type { RedisStandaloneConnection } from '../connection/connection.options.js';
import { quorumTtlProblem, quorumValidity } from './lock.options.js';
import { type NodeGate, quorumGates } from './lock.node-check.js';
import { type NodeLeave, UnansweredLeave } from './lock.pending-leaves.js';
import { LockShutdown } from './lock.shutdown.js';
import { UnsureReleases } from './lock.unsure-releases.js';
import { type LeaseEnd, leaseFrom, monotonicNow, sentNow } from './lock.clock.js';
import { answered, count, firstError, gather, type Outcome } from './lock.gather.js';
import { setImmediate } from '../common/real-timers.js';

/**
 * The Redlock steps for every lease script (locks, semaphores, multi-resource locks) over N independent servers:
 * granted when `quorum` nodes (default a majority) granted within the validity (ttl minus elapsed minus drift),
 * else undone where it may be ours; extend confirmed by as many; release sent to every node; the fencing-token step
 * (syncFences) of single and multi-resource locks. Scripts answer per node: a grant (per `granted`), 1 / 0 for extend
 * and release.
 */
export class QuorumCalls {
  readonly nodes: number;
  readonly quorum: number;
  /** Per node, the undoing of attempts whose call failed there (the script may have run): again once it is back. */
  private readonly unsure: UnsureReleases[];

  constructor(
    readonly clients: Redis[],
    private readonly driftFactor: number,
    readonly commandTimeout: number,
    /**
     * Told of every node call that failed (a timeout, a lost connection, an error reply), also one the others
     * outvoted or that failed after they decided: a minority node that is down or refusing changes no outcome, so
     * without this it would go unseen until a second node fails too.
     */
    private readonly nodeFailed: (node: number, error: unknown) => void = () => undefined,
    /** Per node, what a call waits for and whether the node is left out (NodeCheck, quorumGates). */
    private readonly gates: readonly (NodeGate | undefined)[] = [],
    /** app.close(): no undo waits for a node to come back after it. */
    shutdown: LockShutdown = new LockShutdown(),
  ) {
    this.nodes = clients.length;
    this.quorum = Math.floor(clients.length / 2) + 1;
    this.unsure = clients.map((client) => new UnsureReleases(client, shutdown));
  }

  /**
   * `call` on every node, each failure reported to nodeFailed (the returned promises are the calls themselves); a
   * node left out fails unsent and unreported (its error was logged once).
   */
  private onEveryNode<T>(call: (client: Redis, node: number) => Promise<T>): Promise<T>[] {
    return this.clients.map((client, i) => {
      const running = this.gated(i, () => call(client, i));
      running.catch((err: unknown) => {
        if (err !== this.gates[i]?.leftOut()) this.nodeFailed(i, err);
      });
      return running;
    });
  }

  /**
   * `call` on every node that takes part, for what needs no answer (cleanup: taking a waiter out, releasing a lock
   * found lost); a node left out is sent nothing (its call fails unsent). The promises settle as the calls do.
   */
  toEveryNode(call: (client: Redis, node: number) => Promise<unknown>): Promise<unknown>[] {
    return this.clients.map((client, i) => this.gated(i, () => call(client, i)));
  }

  /**
   * `call` on every node that takes part, for a cleanup worth sending again (taking a waiter out of a lock's waiting
   * services). Resolves once each node answered it, refused it with an error reply (a retry would be refused again)
   * or is left out (sent nothing); else rejects with UnansweredLeave, whose parts send it again to each node that did
   * not answer (a transport failure: down, paused, timed out, or a LOADING or BUSY reply), to that node alone.
   */
  async cleanUp(what: string, call: (client: Redis) => Promise<unknown>): Promise<void> {
    const parts = (await Promise.all(this.clients.map((_, i) => this.cleanUpOn(i, what, call)))).filter(
      (part): part is NodeLeave => part !== undefined,
    );
    if (parts.length > 0) {
      throw new UnansweredLeave(`${what}: ${parts.length} of ${this.nodes} lock servers did not answer`, parts);
    }
  }

  /**
   * `call` on node `i` once the calls of this turn have left (SharedTurn sends a node's lock calls at the end of the
   * turn): the attempt a removal follows may have failed on a majority before its own call left for this node, and a
   * ZREM sent ahead of it would be undone by its ZADD. Returns the part to send again when the node did not answer.
   */
  private cleanUpOn(
    i: number,
    what: string,
    call: (client: Redis) => Promise<unknown>,
  ): Promise<NodeLeave | undefined> {
    const client = this.clients[i];
    const send = () => new Promise<void>((turnOver) => setImmediate(turnOver)).then(() => call(client));
    return this.gated(i, send).then(
      () => undefined,
      (err: unknown) => {
        if (err === this.gates[i]?.leftOut() || !(classifyRedisError(err, what) instanceof RedisUnavailableError)) {
          return undefined;
        }
        return {
          node: i,
          reachable: () => client.status === 'ready',
          send: () =>
            this.cleanUpOn(i, what, call).then((part) => {
              if (part) throw new UnansweredLeave(`${what}: lock server ${i + 1} did not answer`, [part]);
            }),
        };
      },
    );
  }

  /** `call` on node `i` alone, once it may be called (its check; never a node left out): the promise settles as it. */
  toNode<T>(i: number, call: (client: Redis) => Promise<T>): Promise<T> {
    return this.gated(i, () => call(this.clients[i]));
  }

  /** Why node `i` is left out of every call (NodeGate); undefined while it takes part. */
  leftOut(i: number): Error | undefined {
    return this.gates[i]?.leftOut();
  }

  /** `listener` at node `i`'s verdict (NodeCheck.whenChecked); at once for a node without a check. */
  whenChecked(i: number, listener: () => void): void {
    const gate = this.gates[i];
    if (gate) gate.whenChecked(listener);
    else listener();
  }

  /** `send` once node `i` may be called: after the node's check, when one runs (NodeGate); never to a node left out. */
  private gated<T>(i: number, send: () => Promise<T>): Promise<T> {
    const gate = this.gates[i];
    const refused = gate?.leftOut();
    if (refused !== undefined) return Promise.reject(refused);
    const wait = gate?.wait();
    return wait === undefined ? send() : wait.then(() => this.gated(i, send));
  }

  /** ttl minus the clock drift allowance (a share of the ttl plus 2 ms for timer resolution, as in Redlock). */
  validity(ttl: number): number {
    return quorumValidity(ttl, this.driftFactor);
  }

  /**
   * InvalidOptionsError for a ttl (or extension) that leaves under MIN_QUORUM_VALIDITY_MS of validity: its attempts
   * could only fail, as if the nodes were down or busy. `what` names the caller.
   */
  checkTtl(ttl: number, what: string): void {
    const problem = quorumTtlProblem(ttl, this.driftFactor);
    if (problem !== undefined) throw new InvalidOptionsError(`${what}: ttl ${problem}`);
  }

  /**
   * Runs `call` on every node. Returns each node's answer and the lease's end when a majority granted in time (and
   * `confirm`, when given, agrees before the deadline, a monotonicNow() time); null when busy (after undoing it
   * everywhere); throws RedisUnavailableError when too few nodes answered to decide. The time the calls took is
   * measured on the monotonic clock: with the wall clock, a step back during the calls made an acquisition that took
   * longer than its validity count as valid (a lock Redis may already have let go).
   */
  async acquire<T>(
    what: string,
    ttl: number,
    call: (client: Redis, node: number) => Promise<T>,
    granted: (value: T) => boolean,
    undo: (client: Redis, node: number) => Promise<unknown>,
    confirm?: (outcomes: Outcome<T>[], deadline: number) => Promise<boolean>,
    quorum = this.quorum,
  ): Promise<({ outcomes: Outcome<T>[] } & LeaseEnd) | null> {
    this.checkTtl(ttl, what);
    const sent = sentNow();
    const budget = this.validity(ttl);
    const { nodes } = this;
    const isGrant = (o: Outcome<T>): boolean => o?.ok === true && granted(o.value);
    const calls = this.onEveryNode(call);
    const outcomes = await gather(
      calls,
      (o) => count(o, isGrant) >= quorum || count(o, (x) => x !== undefined && !isGrant(x)) > nodes - quorum,
      Math.min(budget, this.commandTimeout),
    );
    const end = leaseFrom(sent, budget);
    if (count(outcomes, isGrant) >= quorum && (!confirm || (await confirm(outcomes, end.validUntil)))) {
      if (end.validUntil > monotonicNow()) return { outcomes, ...end };
    }
    // Undo where we may hold it: wait for the nodes that granted (so our partial hold does not block the next
    // attempt); a node that failed may have run the call before its reply was lost, or runs it later (paused); one
    // that has not answered yet is undone once it grants (or fails). An undo the node does not answer is sent again
    // once its connection is back (UnsureReleases). A node that refused holds nothing of ours: no call to it.
    const undone: Promise<unknown>[] = [];
    this.clients.forEach((client, i) => {
      const o = outcomes[i];
      if ((o?.ok && !granted(o.value)) || this.gates[i]?.leftOut() !== undefined) return;
      // gated as every call to the node: an undo waiting for a node that was down went out at its next `ready`,
      // before its check (and to a node the check then left out)
      const undoHere = () => this.unsure[i].send(() => this.gated(i, () => undo(client, i)));
      if (o === undefined) {
        calls[i].then((value) => (granted(value) ? undoHere() : undefined), undoHere).catch(() => undefined);
        return;
      }
      const u = undoHere();
      if (o.ok) undone.push(u);
      else u.catch(() => undefined);
    });
    if (undone.length > 0) await gather(undone, () => false, this.commandTimeout);
    const refused = count(outcomes, (o) => o?.ok === true && !granted(o.value));
    if (nodes - count(outcomes, (o) => o === undefined || !o.ok) < quorum && refused === 0) {
      throw new RedisUnavailableError(
        `${what} failed: fewer than ${quorum} of ${nodes} lock servers answered (${firstError(outcomes)})`,
      );
    }
    return null;
  }

  /**
   * The fencing-token step of an acquisition a majority granted, for one lock or the resources of a multi-resource
   * lock: `fences[node][resource]` is what each granting node drew (0 where a node did not grant). Each resource's
   * token is the largest its granting nodes drew; the granting nodes below it are raised to it (`raise`, an
   * owner-checked script answering 1) so that `quorum` nodes hold a counter >= every token — any later majority
   * overlaps them and draws larger ones. True when that holds before `deadline` (monotonicNow() time; at once when the
   * nodes agree).
   */
  async syncFences(
    fences: number[][],
    raise: (node: number, resource: number, token: number) => Promise<number>,
    deadline: number,
    quorum = this.quorum,
  ): Promise<boolean> {
    const resources = fences.reduce((n, f) => Math.max(n, f.length), 0);
    const atToken: number[] = [];
    const calls: { resource: number; call: Promise<number> }[] = [];
    for (let j = 0; j < resources; j++) {
      const drawn = fences.map((f) => f[j] ?? 0);
      const token = Math.max(...drawn);
      atToken[j] = drawn.filter((f) => f === token).length;
      drawn.forEach((f, i) => {
        if (f > 0 && f < token) calls.push({ resource: j, call: raise(i, j, token) });
      });
    }
    const enough = (): boolean => atToken.every((n) => n >= quorum);
    if (calls.length === 0) return enough();
    const raised = await gather(
      calls.map((c) => c.call),
      () => false,
      Math.min(Math.floor(deadline - monotonicNow()), this.commandTimeout),
    );
    raised.forEach((o, n) => {
      if (answered(o, 1)) atToken[calls[n].resource]++;
    });
    return enough();
  }

  /** The lease's new end when a majority extended in time (see acquire); LockLostError when too many refused. */
  async extend(
    what: string,
    ttl: number,
    call: (client: Redis, node: number) => Promise<number>,
    quorum = this.quorum,
  ): Promise<LeaseEnd> {
    this.checkTtl(ttl, what);
    const sent = sentNow();
    const budget = this.validity(ttl);
    const { nodes } = this;
    const outcomes = await gather(
      this.onEveryNode(call),
      (o) => count(o, (x) => answered(x, 1)) >= quorum || count(o, (x) => answered(x, 0)) > nodes - quorum,
      Math.min(budget, this.commandTimeout),
    );
    const end = leaseFrom(sent, budget);
    if (count(outcomes, (o) => answered(o, 1)) >= quorum && end.validUntil > monotonicNow()) return end;
    if (count(outcomes, (o) => answered(o, 0)) > nodes - quorum) {
      throw new LockLostError(`cannot ${what}: it expired or is held by another owner`);
    }
    throw new RedisUnavailableError(
      `${what} failed: fewer than ${quorum} of ${nodes} lock servers confirmed (${firstError(outcomes)})`,
    );
  }

  /**
   * Done when `quorum` nodes (a majority) released it as ours; LockLostError when too many found it not ours. A node
   * that answers "not held" may hold another owner's lock: a release that counted those with ours resolved while
   * another owner held it on a majority (ours had expired there and lingered on one node).
   */
  async release(
    what: string,
    call: (client: Redis, node: number) => Promise<number>,
    quorum = this.quorum,
  ): Promise<void> {
    const { nodes } = this;
    const outcomes = await gather(
      this.onEveryNode(call),
      (o) => count(o, (x) => answered(x, 1)) >= quorum || count(o, (x) => answered(x, 0)) > nodes - quorum,
      this.commandTimeout,
    );
    const released = count(outcomes, (o) => answered(o, 1));
    const notHeld = count(outcomes, (o) => answered(o, 0));
    if (released >= quorum) return;
    if (notHeld > nodes - quorum) throw new LockLostError(`cannot ${what}: it expired or is held by another owner`);
    throw new RedisUnavailableError(
      `${what} failed: fewer than ${quorum} of ${nodes} lock servers confirmed (${firstError(outcomes)}); it expires ` +
        `by itself`,
    );
  }
}

/** The servers of `lock.quorum` on `connection`: a client per node (shared, see below), the Redlock steps over them. */
export function quorumOf(
  connection: RedisConnection,
  quorum: { nodes: RedisStandaloneConnection[]; driftFactor: number },
  logger: Logger,
  /** After app.close() a node call fails because its connection was quit: not a node failure to warn of. */
  shutdown?: LockShutdown,
  /** The lock service's failure counts (`LockService.stats()`): each failed node call is one. */
  counts?: FailureCounts,
): { clients: { client: Redis; description: string }[]; calls: QuorumCalls } {
  const clients = quorum.nodes.map((node) => ({
    client: quorumClient(connection, node),
    description: describeConnection(node),
  }));
  const nodeWarning = new ThrottledWarning(logger, undefined, () => 'failed lock quorum node calls');
  shutdown?.onClose(() => nodeWarning.close()); // its pending count now, no timer left to outlive the app
  // What the start does not check of a node is checked on its first ready (NodeCheck; all of it under lazyConnect)
  const gates = quorumGates(clients, connection.commandTimeout, connection.lazyConnect, logger);
  const calls = new QuorumCalls(
    clients.map((c) => c.client),
    quorum.driftFactor,
    connection.commandTimeout,
    (node, err) => {
      if (shutdown?.closed) return;
      if (counts) {
        if (classifyRedisError(err, 'lock') instanceof RedisUnavailableError) counts.unavailable++;
        else counts.replyErrors++;
      }
      nodeWarning.warn(
        `lock quorum node ${clients[node].description} failed a call ` +
          `(${err instanceof Error ? err.message : String(err)}); the other nodes decide while a majority answers`,
      );
    },
    gates,
    shutdown,
  );
  return { clients, calls };
}

/**
 * The lock services of one connection share a client per configured quorum node, as they share the main client
 * without a quorum: several services in one process (one per module, or built by hand) then pipeline their calls on
 * one connection per node instead of each keeping its own (20 services: 60 sockets to read and write, on both sides).
 */
const quorumNodeClients = new WeakMap<RedisConnection, Map<RedisStandaloneConnection, Redis>>();

export function quorumClient(connection: RedisConnection, node: RedisStandaloneConnection): Redis {
  let clients = quorumNodeClients.get(connection);
  if (!clients) quorumNodeClients.set(connection, (clients = new Map()));
  let client = clients.get(node);
  if (!client) clients.set(node, (client = connection.createStandaloneClient(node)));
  return client;
}
