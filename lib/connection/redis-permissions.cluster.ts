import { Cluster, type Redis } from 'ioredis';
import { type NodeAddress, slotMasters } from '../common/cluster-masters.js';
import { replyCodeOf } from '../common/failure-policy.js';
import { MAX_TIMER_MS } from '../common/timeout.js';
import { type NodeBound, onNodeConnection } from './cluster-nodes.js';

/**
 * An AbortSignal that aborts after `ms` with "no answer within <ms> ms" (the reason onNodeConnection names), and
 * `done`, which clears its timer (call it once the wait is over, in time or not).
 */
export function abortAfter(ms: number): { signal: AbortSignal; done: () => void } {
  const over = new AbortController();
  const wait = Math.max(0, Math.min(Math.round(ms), MAX_TIMER_MS));
  const timer = setTimeout(() => over.abort(new Error(`no answer within ${wait} ms`)), wait);
  return { signal: over.signal, done: () => clearTimeout(timer) };
}

/**
 * Asks `check` of every master of the cluster's slot table at once, each on a connection of its own (onNodeConnection,
 * within `bound`): the masters with their answers, or undefined when there is no slot table or a master answered
 * undefined (the caller checks through the cluster client instead). A master's connection failure rejects, naming it.
 */
export async function askMasters<T>(
  cluster: Cluster,
  check: (connection: Redis) => Promise<T | undefined>,
  bound?: NodeBound,
): Promise<{ node: NodeAddress; report: T }[] | undefined> {
  const masters = slotMasters(cluster);
  const reports = await Promise.all(masters.map((node) => onNodeConnection(cluster, node, check, bound)));
  if (masters.length === 0 || reports.some((r) => r === undefined)) return undefined;
  return masters.map((node, i) => ({ node, report: reports[i] as T }));
}

/** What ioredis needs the ACL user to run to connect to a cluster (its ready check's CLUSTER INFO; a node's name). */
const READY_COMMANDS = [
  ['CLUSTER INFO', ['cluster', 'info']],
  ['CLIENT SETNAME', ['client', 'setname', 'rtk-acl-check']],
] as const;

/**
 * Why a cluster never became ready, when the reason is the ACL: ioredis's ready check runs CLUSTER INFO and it names
 * each node connection (CLIENT SETNAME); a user without them leaves the cluster closing and retrying with no error
 * event at all, so the start would only say "no answer". Asked on short-lived connections to the masters of the slot
 * table with the cluster's own credentials and the toolkit's timeouts (when shorter than the cluster's); undefined when
 * none can be reached in time or nothing is denied.
 *
 * The start has usually spent its connectTimeout + commandTimeout when this runs (a refused ready check emits no error:
 * the wait ends with the budget), so it asks only where an answer can come, and for what `within` says. ioredis runs
 * its ready check once a node has answered CLUSTER SLOTS, whose answer fills the slot table (never emptied after): with
 * none, no node answered it (refused, silent, or the credentials: the cluster's error says so) and the ACL of the ready
 * check is not why. Until 2026-12-05 the first startup node was asked all the same, with the cluster's own
 * commandTimeout for each command: a `{ client }` whose node answered nothing (paused) and whose commandTimeout was
 * 20 s failed its start ~20 s after the toolkit's 1.5 s (connection-start-bound.spec.ts).
 */
export async function clusterReadyDenied(
  client: Cluster,
  /** The toolkit's: its timeouts, and `within`, the ms the start has left (RedisConnection.connect). */
  toolkit: { connectTimeout: number; commandTimeout: number; within: number },
): Promise<string | undefined> {
  const masters = slotMasters(client);
  if (masters.length === 0) return undefined;
  // Every master at once: the first that names a denial is the answer. A master that answers nothing is given up once
  // slotsRefreshTimeout has passed (the cluster's own bound on a node's answer: the slot table came within it) or the
  // start's time is up, whichever comes first.
  const limit = abortAfter(Math.min(client.options.slotsRefreshTimeout ?? 1_000, toolkit.within));
  const over = new AbortController();
  const signal = AbortSignal.any([limit.signal, over.signal]);
  try {
    const asked = masters.map((node) =>
      onNodeConnection(client, node, deniedOn, { ...toolkit, signal }).then((denied) =>
        denied.length > 0 ? denied : Promise.reject(new Error('nothing denied')),
      ),
    );
    return readyDeniedMessage(await Promise.any(asked));
  } catch {
    return undefined; // nothing denied where it was asked, or no master answered in time
  } finally {
    limit.done();
    over.abort(new Error('answered'));
  }
}

/** The commands of READY_COMMANDS the node refuses with NOPERM (asked at once: one round trip). */
async function deniedOn(probe: Redis): Promise<string[]> {
  const refused = await Promise.all(
    READY_COMMANDS.map(([command, args]) =>
      probe.call(args[0], ...args.slice(1)).then(
        () => undefined,
        (err: unknown) => (replyCodeOf(err) === 'NOPERM' ? command : undefined),
      ),
    ),
  );
  return refused.filter((c) => c !== undefined);
}

function readyDeniedMessage(denied: string[]): string {
  return (
    `the ACL user may not run ${denied.join(', ')}, which ioredis needs to connect to a cluster ` +
    `(grant ${denied.map((c) => `+${c.toLowerCase().replace(' ', '|')}`).join(' ')}; docs/security.md has the line)`
  );
}
