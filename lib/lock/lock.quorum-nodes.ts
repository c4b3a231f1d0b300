import type { Redis } from 'ioredis';
import { InvalidOptionsError, RedisUnavailableError } from '../common/errors.js';
import { withTimeout } from '../common/timeout.js';
import { checkServer, parseInfo, replicaOf } from '../connection/redis-info.js';
import type { RedisConnection } from '../connection/redis-connection.js';

/** A quorum node's client, and how messages name it (its address, no password). */
export interface QuorumNode {
  client: Redis;
  description: string;
}

/** Connects every quorum node; start-up fails unless a majority answers (a minority may be down). */
export async function connectQuorum(
  connection: RedisConnection,
  nodes: readonly QuorumNode[],
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
export async function checkDistinctNodes(nodes: readonly QuorumNode[], warn: (message: string) => void): Promise<void> {
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
  nodes: readonly QuorumNode[],
  ms: number,
  warn: (message: string) => void,
): Promise<void> {
  for (const { client, description } of nodes) {
    if (client.status !== 'ready') continue;
    try {
      await checkQuorumNode(client, description, ms);
    } catch (err) {
      if (!(err instanceof RedisUnavailableError)) throw err;
      warn(`lock quorum node ${description}: could not check the server (${err.message})`);
    }
  }
}

/** One node's check (checkQuorumNodeServers); RedisUnavailableError when it did not answer: no verdict. */
async function checkQuorumNode(client: Redis, description: string, ms: number): Promise<void> {
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
  await checkServer(client, where, ms);
}

/** What QuorumCalls asks before each call to a node (lazyConnect: LazyNodeCheck). */
export interface NodeGate {
  /** Why the node is left out of every call (its calls fail with this, unsent); undefined while it takes part. */
  leftOut(): Error | undefined;
  /** What a call must wait for before it is sent; undefined: nothing. */
  wait(): Promise<void> | undefined;
}

/** Until a node's first connection attempt is over: `ready`, or the attempt failed. */
const FIRST_ATTEMPT_OVER = ['ready', 'close', 'end'] as const;

/**
 * lazyConnect: nothing is connected at start, so the start-up check of a node's server (checkQuorumNodeServers) runs
 * on its first `ready` instead, before any lock call reaches it: until its first connection attempt and that check
 * are over, its calls wait for them (a lock call itself waits for no node longer than commandTimeout: the node is
 * then one that has not answered). A replica, or a server without the node's db, is logged once as an error and left
 * out of every call from then on: its calls fail with that InvalidOptionsError unsent, as a node that is down would
 * (a majority of all the nodes must still agree). A check the node did not answer gives no verdict: it runs again on
 * the node's next `ready`. After a verdict nothing is asked again. One per client: the lock services sharing a node's
 * client (quorumClient) share its check, and its error is logged once.
 */
class LazyNodeCheck implements NodeGate {
  /** Its first connection attempt is over (or it was ready when the check was made). */
  private attempted = false;
  private firstAttempt: Promise<void> | undefined;
  /** The check, while it runs. */
  private check: Promise<void> | undefined;
  private refused: Error | undefined;
  private readonly onReady = (): void => this.ready();

  constructor(
    private readonly node: QuorumNode,
    private readonly ms: number,
    private readonly log: { error(message: string): void; warn(message: string): void },
  ) {
    node.client.on('ready', this.onReady);
    if (node.client.status === 'ready') this.ready();
  }

  leftOut(): Error | undefined {
    return this.refused;
  }

  wait(): Promise<void> | undefined {
    if (this.check !== undefined) return this.check;
    if (this.attempted) return undefined;
    const { client } = this.node;
    if (client.status === 'end') return undefined;
    if (client.status === 'wait') client.connect().catch(() => undefined);
    this.firstAttempt ??= this.firstAttemptOver();
    return this.firstAttempt;
  }

  private async firstAttemptOver(): Promise<void> {
    const { client } = this.node;
    const { connectTimeout = 10_000, commandTimeout = this.ms } = client.options;
    let over = (): void => undefined;
    try {
      // Not on 'error': a SELECT refused while connecting is one, and the client becomes ready all the same.
      const attempt = new Promise<void>((resolve) => {
        over = resolve;
        for (const event of FIRST_ATTEMPT_OVER) client.once(event, resolve);
      });
      await withTimeout(attempt, connectTimeout + commandTimeout, 'no first connection').catch(() => undefined);
    } finally {
      for (const event of FIRST_ATTEMPT_OVER) client.off(event, over);
      this.attempted = true;
    }
  }

  private ready(): void {
    this.attempted = true;
    if (this.check !== undefined) return;
    const { client, description } = this.node;
    this.check = checkQuorumNode(client, description, this.ms)
      .then(
        () => void client.off('ready', this.onReady),
        (err: unknown) => {
          if (err instanceof RedisUnavailableError) {
            this.log.warn(
              `lock quorum node ${description}: could not check the server (${err.message}); checked again when ` +
                'it next connects',
            );
            return;
          }
          client.off('ready', this.onReady);
          this.refused = err instanceof Error ? err : new Error(String(err));
          this.log.error(
            `${this.refused.message} It is left out of every lock call from now on, as a node that is down (a ` +
              'majority of all the nodes must still agree); fix lock.quorum.nodes and restart.',
          );
        },
      )
      .finally(() => {
        this.check = undefined;
      });
  }
}

const lazyChecks = new WeakMap<Redis, LazyNodeCheck>();

/** The lazyConnect check of `node` (LazyNodeCheck), made once per client. */
export function lazyNodeCheck(
  node: QuorumNode,
  ms: number,
  log: { error(message: string): void; warn(message: string): void },
): NodeGate {
  let check = lazyChecks.get(node.client);
  if (!check) lazyChecks.set(node.client, (check = new LazyNodeCheck(node, ms, log)));
  return check;
}
