import type { Redis } from 'ioredis';
import { InvalidOptionsError, RedisUnavailableError } from '../common/errors.js';
import { classifyRedisError, replyCodeOf } from '../common/failure-policy.js';
import { MAX_TIMER_MS, withTimeout } from '../common/timeout.js';
import { parseInfo } from '../connection/redis-info.js';
import { checkQuorumNode, type QuorumNode } from './lock.quorum-nodes.js';

/** What QuorumCalls asks before each call to a node (NodeCheck, and the distinct-server check of its quorum). */
export interface NodeGate {
  /** Why the node is left out of every call (its calls fail with this, unsent); undefined while it takes part. */
  leftOut(): Error | undefined;
  /** What a call must wait for before it is sent; undefined: nothing. */
  wait(): Promise<void> | undefined;
  /** `listener` at the node's verdict (NodeCheck.whenChecked): what must not start before it (a subscriber). */
  whenChecked(listener: () => void): void;
}

export interface NodeLog {
  error(message: string): void;
  warn(message: string): void;
}

/** The checks of a node's server that need the lock service's options (ACL, eviction policy): startLockServers. */
export type ServerChecks = (node: QuorumNode, warn: (message: string) => void) => Promise<void>;

/** The error line of a node left out: why, and what that means. */
const leftOutLine = (reason: Error, description: string): string =>
  `${reason.message} Lock quorum node ${description} is left out of every lock call from now on, as a node that is ` +
  'down (a majority of all the nodes must still agree); fix lock.quorum.nodes and restart.';

/** Until a node's first connection attempt is over: `ready`, or the attempt failed. */
const FIRST_ATTEMPT_OVER = ['ready', 'close', 'end'] as const;

/**
 * The start-up checks of a node's server, made on its first `ready` when the start could not make them: under
 * lazyConnect (nothing is connected at start), and without it for a node that was down at start or did not answer its
 * check there (armed by startLockServers; the nodes the start checked take part at once). Until the check is over its
 * calls wait for it (a lock call itself waits for no node longer than commandTimeout: the node is then one that has
 * not answered); under lazyConnect they also wait for its first connection attempt. The checks are the start's: a
 * replica, a server without the node's db (checkQuorumNode), then the ACL permissions of the lock's commands and the
 * eviction policy (`ServerChecks`), and its `run_id`, which its quorums compare (DistinctServers). What would stop the
 * start is logged once as an ERROR naming the node, which is then left out of every call: they fail with that error
 * unsent, as a node that is down would (a majority of all the nodes must still agree); what is a warning at start is
 * one here. A check the node did not answer gives no verdict, and until one answers the node's calls fail unsent, as
 * a node that does not answer: the next call after `commandTimeout` asks it again, and so does the node's next `ready`.
 * Until 2026-12-07 its calls went meanwhile, unchecked (a loaded CI run wrote lock keys into db 0 of a server that
 * has no db 9, the node's: test/lock/lock-quorum-late-check.spec.ts). After a verdict nothing is asked again. One per
 * client: the lock services sharing a node's client (quorumClient) share its check, and its error is logged once.
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
  /** The last check had no answer (and there is no verdict): the node's calls fail with this, unsent. */
  private unanswered: RedisUnavailableError | undefined;
  /** When a call may ask again after an unanswered check (performance.now()). */
  private askAgainAt = 0;
  private runId: string | undefined;
  private readonly onPass: ((runId: string | undefined) => void)[] = [];
  private readonly onVerdict: (() => void)[] = [];
  /** Set by startLockServers (LockService.onModuleInit), before anything connects the node. */
  private serverChecks: ServerChecks | undefined;
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

  /** The checks that need the lock service's options; the first service to start on the client sets them. */
  configure(checks: ServerChecks): void {
    this.serverChecks ??= checks;
  }

  /** Checks the node on its next `ready` (at once when it is ready now), unless it has a verdict. */
  arm(): void {
    if (this.armed || this.verdict) return;
    this.armed = true;
    this.node.client.on('ready', this.onReady);
    if (this.node.client.status === 'ready') this.ready();
  }

  /** The start checked the node (its `run_id`, when it could be read): it takes part. */
  passed(runId: string | undefined): void {
    if (!this.verdict && this.check === undefined) this.pass(runId);
  }

  /** `listener` is told the node's `run_id` once it passed (at once if it has). */
  whenPassed(listener: (runId: string | undefined) => void): void {
    if (this.verdict) {
      if (this.refused === undefined) listener(this.runId);
    } else this.onPass.push(listener);
  }

  /**
   * `listener` once the node has a verdict (it passed, its quorum's DistinctServers included, or it is left out): at
   * once when it has one. Also at once when no check is armed (nothing has decided about the node yet: its calls go
   * meanwhile), and then again at a verdict, should one come.
   */
  whenChecked(listener: () => void): void {
    if (this.verdict) {
      listener();
      return;
    }
    this.onVerdict.push(listener);
    if (!this.armed) listener();
  }

  leftOut(): Error | undefined {
    return this.refused;
  }

  wait(): Promise<void> | undefined {
    if (this.check !== undefined) return this.check;
    if (this.unanswered !== undefined) {
      // asked again by a call at most once per commandTimeout: a node that never answers fails its calls at once
      if (this.node.client.status === 'ready' && performance.now() >= this.askAgainAt) this.ready();
      return this.check ?? Promise.reject(this.unanswered);
    }
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
      // Each is at most MAX_TIMER_MS (validated), their sum may not be: a longer timer fires after 1 ms, and every call
      // to the node would go out before its first attempt was over (failing at once: no offline queue).
      const ms = Math.min(connectTimeout + commandTimeout, MAX_TIMER_MS);
      await withTimeout(attempt, ms, 'no first connection').catch(() => undefined);
    } finally {
      for (const event of FIRST_ATTEMPT_OVER) client.off(event, over);
      this.attempted = true;
    }
  }

  private pass(runId: string | undefined): void {
    this.verdict = true;
    this.unanswered = undefined;
    this.runId = runId;
    this.node.client.off('ready', this.onReady);
    for (const listener of this.onPass.splice(0)) listener(runId);
    for (const listener of this.onVerdict.splice(0)) listener();
  }

  private ready(): void {
    this.attempted = true;
    if (this.check !== undefined || this.verdict) return;
    const { description } = this.node;
    // Set synchronously on `ready` (emitted as the status changes): no call is sent to the node before it.
    this.check = this.checkServer()
      .then(
        (runId) => this.pass(runId),
        (err: unknown) => {
          if (err instanceof RedisUnavailableError) {
            const first = this.unanswered === undefined;
            this.unanswered = new RedisUnavailableError(
              `lock quorum node ${description} is not checked yet: its check had no answer (${err.message})`,
              { cause: err },
            );
            this.askAgainAt = performance.now() + this.ms;
            if (first)
              this.log.warn(
                `lock quorum node ${description}: could not check the server (${err.message}); its calls fail ` +
                  `unsent until a check answers (asked again by a call after ${this.ms} ms, and when it next connects)`,
              );
            return;
          }
          this.verdict = true;
          this.unanswered = undefined;
          this.node.client.off('ready', this.onReady);
          this.refused = err instanceof Error ? err : new Error(String(err));
          this.log.error(leftOutLine(this.refused, description));
          for (const listener of this.onVerdict.splice(0)) listener();
        },
      )
      .finally(() => {
        this.check = undefined;
      });
  }

  /** The node's `run_id` (undefined when INFO is denied) once every check passed. */
  private async checkServer(): Promise<string | undefined> {
    const { client, description } = this.node;
    await checkQuorumNode(client, description, this.ms, (message) => this.log.warn(message));
    let runId: string | undefined;
    try {
      const info = await withTimeout(client.info('server'), this.ms, `no answer within ${this.ms} ms`);
      runId = parseInfo(String(info)).run_id || undefined;
    } catch (err) {
      if (replyCodeOf(err) === undefined) throw classifyRedisError(err, `Checking lock quorum node ${description}`);
      const why = err instanceof Error ? err.message : String(err);
      this.log.warn(`lock quorum node ${description}: cannot read INFO to check it is a distinct server (${why})`);
    }
    // Unset only for a service that never started (built by hand, no onModuleInit): its replica and db are checked.
    await this.serverChecks?.(this.node, (message) => this.log.warn(message));
    return runId;
  }
}

/**
 * Two nodes of one quorum that are one Redis server (same `run_id`) would give it two votes: the start refuses them
 * (checkDistinctNodes). A node that connects after the start is compared with the nodes of its quorum that passed
 * before it: the first node of a server keeps its place, a later one is logged once as an ERROR naming both and left
 * out. Per quorum (one list of node clients), not per client: another quorum may use that client with other nodes.
 */
class DistinctServers {
  /** run_id → the node (index) that has it. */
  private readonly kept = new Map<string, number>();
  private readonly duplicates = new Map<number, Error>();

  constructor(
    private readonly nodes: readonly QuorumNode[],
    private readonly log: NodeLog,
  ) {}

  passed(i: number, runId: string | undefined): void {
    if (runId === undefined) return;
    const first = this.kept.get(runId);
    if (first === undefined) this.kept.set(runId, i);
    if (first === undefined || first === i) return;
    const { description } = this.nodes[i];
    const error = new InvalidOptionsError(
      `lock.quorum.nodes must be distinct Redis servers: lock quorum node ${description} is the server of lock ` +
        `quorum node ${this.nodes[first].description} (same run_id), which would then cast two votes of the quorum.`,
    );
    this.duplicates.set(i, error);
    this.log.error(leftOutLine(error, description));
  }

  leftOut(i: number): Error | undefined {
    return this.duplicates.get(i);
  }
}

const nodeChecks = new WeakMap<Redis, NodeCheck>();

/** The check of a node's client (made by quorumGates), for startLockServers. */
export const nodeCheckOf = (client: Redis): NodeCheck | undefined => nodeChecks.get(client);

/** One DistinctServers per list of node clients (the lock services of one connection with the same nodes share it). */
const distinctServers = new WeakMap<Redis, Map<string, DistinctServers>>();
const clientIds = new WeakMap<Redis, number>();
let nextClientId = 0;

/**
 * Per node of a quorum, what its calls ask first: its client's NodeCheck (made once per client, armed at once under
 * lazyConnect) and whether its quorum found it to be another node's server.
 */
export function quorumGates(nodes: readonly QuorumNode[], ms: number, lazy: boolean, log: NodeLog): NodeGate[] {
  const checks = nodes.map((node) => {
    let check = nodeChecks.get(node.client);
    if (!check) nodeChecks.set(node.client, (check = new NodeCheck(node, ms, log, lazy)));
    return check;
  });
  const ids = nodes.map(({ client }) => {
    let id = clientIds.get(client);
    if (id === undefined) clientIds.set(client, (id = nextClientId++));
    return id;
  });
  let byList = distinctServers.get(nodes[0].client);
  if (!byList) distinctServers.set(nodes[0].client, (byList = new Map()));
  const key = ids.join(',');
  let servers = byList.get(key);
  if (!servers) {
    const made = new DistinctServers(nodes, log);
    byList.set(key, (servers = made));
    checks.forEach((check, i) => {
      check.whenPassed((runId) => made.passed(i, runId));
    });
  }
  const distinct = servers;
  return checks.map((check, i) => ({
    leftOut: () => check.leftOut() ?? distinct.leftOut(i),
    wait: () => check.wait(),
    // after the DistinctServers of the node's quorums heard of its pass (whenPassed listeners go first)
    whenChecked: (listener) => check.whenChecked(listener),
  }));
}
