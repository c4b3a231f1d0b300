import type { Redis } from 'ioredis';
import { RedisUnavailableError } from '../common/errors.js';
import { withTimeout } from '../common/timeout.js';
import { checkQuorumNode, type QuorumNode } from './lock.quorum-nodes.js';

/** What QuorumCalls asks before each call to a node (NodeCheck). */
export interface NodeGate {
  /** Why the node is left out of every call (its calls fail with this, unsent); undefined while it takes part. */
  leftOut(): Error | undefined;
  /** What a call must wait for before it is sent; undefined: nothing. */
  wait(): Promise<void> | undefined;
}

export interface NodeLog {
  error(message: string): void;
  warn(message: string): void;
}

/** The error line of a node left out: why, and what that means. */
const leftOutLine = (reason: Error, description: string): string =>
  `${reason.message} Lock quorum node ${description} is left out of every lock call from now on, as a node that is ` +
  'down (a majority of all the nodes must still agree); fix lock.quorum.nodes and restart.';

/** Until a node's first connection attempt is over: `ready`, or the attempt failed. */
const FIRST_ATTEMPT_OVER = ['ready', 'close', 'end'] as const;

/**
 * The start-up check of a node's server (checkQuorumNode: a replica, a server without the node's db), made on its
 * first `ready` when the start could not make it: under lazyConnect (nothing is connected at start), and without it
 * for a node that was down at start or did not answer its check there (armed by startLockServers; the nodes the start
 * checked take part at once). Until the check is over its calls wait for it (a lock call itself waits for no node
 * longer than commandTimeout: the node is then one that has not answered); under lazyConnect they also wait for its
 * first connection attempt. A node the start would refuse is logged once as an ERROR naming it and left out of every
 * call: they fail with that error unsent, as a node that is down would (a majority of all the nodes must still
 * agree). A check the node did not answer gives no verdict: it runs again on the node's next `ready`. After a verdict
 * nothing is asked again. One per client: the lock services sharing a node's client (quorumClient) share its check,
 * and its error is logged once.
 */
export class NodeCheck implements NodeGate {
  /** Listening for `ready` (lazyConnect from the start; otherwise once the start left the node unchecked). */
  private armed = false;
  /** Its first connection attempt is over (without lazyConnect: the start's). */
  private attempted: boolean;
  private firstAttempt: Promise<void> | undefined;
  /** The check, while it runs. */
  private check: Promise<void> | undefined;
  private verdict = false;
  private refused: Error | undefined;
  private readonly onReady = (): void => this.ready();

  constructor(
    private readonly node: QuorumNode,
    private readonly ms: number,
    private readonly log: NodeLog,
    lazy: boolean,
  ) {
    this.attempted = !lazy;
    if (lazy) this.arm();
  }

  /** Checks the node on its next `ready` (at once when it is ready now), unless it has a verdict. */
  arm(): void {
    if (this.armed || this.verdict) return;
    this.armed = true;
    this.node.client.on('ready', this.onReady);
    if (this.node.client.status === 'ready') this.ready();
  }

  /** The start checked the node: it takes part. */
  passed(): void {
    if (!this.verdict && this.check === undefined) this.pass();
  }

  leftOut(): Error | undefined {
    return this.refused;
  }

  wait(): Promise<void> | undefined {
    if (this.check !== undefined) return this.check;
    if (!this.armed || this.attempted) return undefined;
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

  private pass(): void {
    this.verdict = true;
    this.node.client.off('ready', this.onReady);
  }

  private ready(): void {
    this.attempted = true;
    if (this.check !== undefined || this.verdict) return;
    const { description } = this.node;
    // Set synchronously on `ready` (emitted as the status changes): no call is sent to the node before it.
    this.check = checkQuorumNode(this.node.client, description, this.ms)
      .then(
        () => this.pass(),
        (err: unknown) => {
          if (err instanceof RedisUnavailableError) {
            this.log.warn(
              `lock quorum node ${description}: could not check the server (${err.message}); checked again when ` +
                'it next connects',
            );
            return;
          }
          this.verdict = true;
          this.node.client.off('ready', this.onReady);
          this.refused = err instanceof Error ? err : new Error(String(err));
          this.log.error(leftOutLine(this.refused, description));
        },
      )
      .finally(() => {
        this.check = undefined;
      });
  }
}

const nodeChecks = new WeakMap<Redis, NodeCheck>();

/** The check of a node's client (made by quorumGates), for startLockServers. */
export const nodeCheckOf = (client: Redis): NodeCheck | undefined => nodeChecks.get(client);

/** Per node of a quorum, what its calls ask first: its client's NodeCheck (made once per client). */
export function quorumGates(nodes: readonly QuorumNode[], ms: number, lazy: boolean, log: NodeLog): NodeGate[] {
  return nodes.map((node) => {
    let check = nodeChecks.get(node.client);
    if (!check) nodeChecks.set(node.client, (check = new NodeCheck(node, ms, log, lazy)));
    return check;
  });
}
