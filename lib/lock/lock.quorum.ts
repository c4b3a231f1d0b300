import type { Logger } from '@nestjs/common';
import type { Redis } from 'ioredis';
import { ThrottledWarning } from '../common/throttled-logger.js';
import { describeConnection } from '../connection/redis-client.factory.js';
import { InvalidOptionsError, LockLostError, RedisUnavailableError } from '../common/errors.js';
import { checkServer, parseInfo, replicaOf } from '../connection/redis-info.js';
import { withTimeout } from '../common/timeout.js';
import type { RedisConnection } from '../connection/redis-connection.js';
import type { RedisStandaloneConnection } from '../connection/connection.options.js';
import { quorumTtlProblem, quorumValidity } from './lock.options.js';

export type Outcome<T> = { ok: true; value: T } | { ok: false; error: unknown } | undefined;

/**
 * Waits for per-node calls until `enough` says the outcome is decided, every call settled, or `timeoutMs` passed.
 * Returns a snapshot: `undefined` marks a node that had not answered (a paused or slow server). Calls still running
 * finish in the background; their results are ignored (a late lock on a node is cleaned up by release-on-all).
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
    const timer = setTimeout(finish, Math.max(0, timeoutMs));
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
  ) {
    this.nodes = clients.length;
    this.quorum = Math.floor(clients.length / 2) + 1;
  }

  /** `call` on every node, each failure reported to nodeFailed (the returned promises are the calls themselves). */
  private onEveryNode<T>(call: (client: Redis, node: number) => Promise<T>): Promise<T>[] {
    return this.clients.map((client, i) => {
      const running = call(client, i);
      running.catch((err: unknown) => this.nodeFailed(i, err));
      return running;
    });
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
   * Runs `call` on every node. Returns each node's answer and the expiry when a majority granted in time (and
   * `confirm`, when given, agrees before the deadline); null when busy (after undoing it everywhere); throws
   * RedisUnavailableError when too few nodes answered to decide.
   */
  async acquire<T>(
    what: string,
    ttl: number,
    call: (client: Redis, node: number) => Promise<T>,
    granted: (value: T) => boolean,
    undo: (client: Redis, node: number) => Promise<unknown>,
    confirm?: (outcomes: Outcome<T>[], deadline: number) => Promise<boolean>,
    quorum = this.quorum,
  ): Promise<{ outcomes: Outcome<T>[]; expiresAt: number } | null> {
    this.checkTtl(ttl, what);
    const startedAt = Date.now();
    const budget = this.validity(ttl);
    const { nodes } = this;
    const isGrant = (o: Outcome<T>): boolean => o?.ok === true && granted(o.value);
    const calls = this.onEveryNode(call);
    const outcomes = await gather(
      calls,
      (o) => count(o, isGrant) >= quorum || count(o, (x) => x !== undefined && !isGrant(x)) > nodes - quorum,
      Math.min(budget, this.commandTimeout),
    );
    const expiresAt = startedAt + budget;
    if (count(outcomes, isGrant) >= quorum && (!confirm || (await confirm(outcomes, expiresAt)))) {
      if (expiresAt > Date.now()) return { outcomes, expiresAt };
    }
    // Undo where we may hold it: wait for the nodes that granted (so our partial hold does not block the next
    // attempt); a node that failed may have run the call before its reply was lost; one that has not answered yet is
    // undone once it grants (or fails). A node that refused holds nothing of ours: no call to it.
    const undone: Promise<unknown>[] = [];
    this.clients.forEach((client, i) => {
      const o = outcomes[i];
      if (o?.ok && !granted(o.value)) return;
      if (o === undefined) {
        calls[i]
          .then(
            (value) => (granted(value) ? undo(client, i) : undefined),
            () => undo(client, i),
          )
          .catch(() => undefined);
        return;
      }
      const u = undo(client, i);
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
   * overlaps them and draws larger ones. True when that holds before `deadline` (at once when the nodes agree).
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
      Math.min(deadline - Date.now(), this.commandTimeout),
    );
    raised.forEach((o, n) => {
      if (answered(o, 1)) atToken[calls[n].resource]++;
    });
    return enough();
  }

  /** The new expiry when a majority extended in time; LockLostError when too many refused. */
  async extend(
    what: string,
    ttl: number,
    call: (client: Redis, node: number) => Promise<number>,
    quorum = this.quorum,
  ): Promise<number> {
    this.checkTtl(ttl, what);
    const startedAt = Date.now();
    const budget = this.validity(ttl);
    const { nodes } = this;
    const outcomes = await gather(
      this.onEveryNode(call),
      (o) => count(o, (x) => answered(x, 1)) >= quorum || count(o, (x) => answered(x, 0)) > nodes - quorum,
      Math.min(budget, this.commandTimeout),
    );
    const expiresAt = startedAt + budget;
    if (count(outcomes, (o) => answered(o, 1)) >= quorum && expiresAt > Date.now()) return expiresAt;
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

/** Connects every quorum node; start-up fails unless a majority answers (a minority may be down). */
export async function connectQuorum(
  connection: RedisConnection,
  nodes: readonly { client: Redis; description: string }[],
  warn: (message: string) => void,
): Promise<void> {
  const ready = await Promise.all(
    nodes.map(({ client }) =>
      // A node down at start keeps reconnecting in the background: a minority may come back later.
      connection.waitUntilReady(client).then(
        () => undefined,
        (err: unknown) => (err instanceof Error ? err.message : String(err)),
      ),
    ),
  );
  const down = ready.flatMap((err, i) => (err === undefined ? [] : [`${nodes[i].description} (${err})`]));
  const quorum = Math.floor(nodes.length / 2) + 1;
  if (nodes.length - down.length < quorum) {
    // The app is not going to start: stop every node's reconnect loop.
    for (const { client } of nodes) client.disconnect();
    throw new RedisUnavailableError(
      `Cannot reach a majority (${quorum} of ${nodes.length}) of the lock.quorum.nodes: ${down.join(', ')}. ` +
        'Check that the servers are running, or set lazyConnect: true to start without them.',
    );
  }
  if (down.length > 0) warn(`lock quorum nodes unreachable at start (a minority, locks work): ${down.join(', ')}`);
}

/**
 * Refuses two quorum nodes that are one Redis server (the same `run_id`: one address spelled twice, `localhost` and
 * `127.0.0.1`, a proxy in front of it): that server would hold two votes, so it alone could grant a lock of three
 * "nodes", and its restart would lose a majority. A node that denies INFO is named in a warning.
 */
export async function checkDistinctNodes(
  nodes: readonly { client: Redis; description: string }[],
  warn: (message: string) => void,
): Promise<void> {
  const seen = new Map<string, string>();
  const duplicates: string[] = [];
  for (const { client, description } of nodes) {
    if (client.status !== 'ready') continue;
    let runId: string | undefined;
    try {
      runId = parseInfo(String(await client.info('server'))).run_id;
    } catch (err) {
      warn(`lock quorum node ${description}: cannot read INFO to check it is a distinct server (${String(err)})`);
      continue;
    }
    if (!runId) continue;
    const first = seen.get(runId);
    if (first === undefined) seen.set(runId, description);
    else duplicates.push(`${first} and ${description}`);
  }
  if (duplicates.length > 0) {
    throw new InvalidOptionsError(
      `lock.quorum.nodes must be distinct Redis servers: ${duplicates.join('; ')} are one server (same run_id), ` +
        'which would then cast two votes of the quorum.',
    );
  }
}

/**
 * Refuses a quorum node the locks would fail on at first use, as RedisConnection.verifyServer refuses the main server
 * (checkServer): a replica (it answers each acquisition READONLY, so its vote is lost) and a db the server does not
 * have (ioredis's SELECT failed with only an error event, and its locks went to db 0) are InvalidOptionsErrors naming
 * the node; a db other than 0 whose SELECT the ACL user may not run is a RedisPermissionError. A node that does not
 * answer is named in a warning: a minority may be down.
 */
export async function checkQuorumNodeServers(
  nodes: readonly { client: Redis; description: string }[],
  ms: number,
  warn: (message: string) => void,
): Promise<void> {
  for (const { client, description } of nodes) {
    if (client.status !== 'ready') continue;
    const where = `lock quorum node ${description}`;
    const replica = await withTimeout(client.info('replication'), ms, `no answer within ${ms} ms`).then(
      (info) => replicaOf(parseInfo(String(info))),
      () => undefined, // checkServer below tells a denial (skipped) from no answer
    );
    if (replica !== undefined) {
      throw new InvalidOptionsError(
        `Redis at ${where} is ${replica} (INFO replication says role:slave): it refuses the lock's writes ` +
          '(READONLY), so it would never grant a lock and the quorum would lose its vote. List independent masters ' +
          'in lock.quorum.nodes, not replicas.',
      );
    }
    try {
      await checkServer(client, where, ms);
    } catch (err) {
      if (!(err instanceof RedisUnavailableError)) throw err;
      warn(`${where}: could not check the server (${err.message})`);
    }
  }
}

/** The servers of `lock.quorum` on `connection`: a client per node (shared, see below), the Redlock steps over them. */
export function quorumOf(
  connection: RedisConnection,
  quorum: { nodes: RedisStandaloneConnection[]; driftFactor: number },
  logger: Logger,
): { clients: { client: Redis; description: string }[]; calls: QuorumCalls } {
  const clients = quorum.nodes.map((node) => ({
    client: quorumClient(connection, node),
    description: describeConnection(node),
  }));
  const nodeWarning = new ThrottledWarning(logger);
  const calls = new QuorumCalls(
    clients.map((c) => c.client),
    quorum.driftFactor,
    connection.commandTimeout,
    (node, err) =>
      nodeWarning.warn(
        `lock quorum node ${clients[node].description} failed a call ` +
          `(${err instanceof Error ? err.message : String(err)}); the other nodes decide while a majority answers`,
      ),
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
