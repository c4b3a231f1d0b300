import type { Cluster, Redis } from 'ioredis';
import { slotMasters } from '../common/cluster-masters.js';
import { replyCodeOf } from '../common/failure-policy.js';
import { MAX_TIMER_MS } from '../common/timeout.js';
import { onNodeConnection } from './cluster-nodes.js';

/** What ioredis needs the ACL user to run to connect to a cluster (its ready check's CLUSTER INFO; a node's name). */
const READY_COMMANDS = [
  ['CLUSTER INFO', ['cluster', 'info']],
  ['CLIENT SETNAME', ['client', 'setname', 'rtk-acl-check']],
] as const;

/**
 * Why a cluster never became ready, when the reason is the ACL: ioredis's ready check runs CLUSTER INFO and it names
 * each node connection (CLIENT SETNAME); a user without them leaves the cluster closing and retrying with no error
 * event at all, so the start would only say "no answer". Asked on short-lived connections to the masters of the slot
 * table with the cluster's own credentials; undefined when none can be reached in time or nothing is denied.
 *
 * The start has already spent its connectTimeout + commandTimeout when this runs, so it asks only where an answer can
 * come. ioredis runs its ready check once a node has answered CLUSTER SLOTS, whose answer fills the slot table (never
 * emptied after): with none, no node answered it (refused, silent, or the credentials: the cluster's error says so)
 * and the ACL of the ready check is not why. Until 2026-12-05 the first startup node was asked all the same, with the
 * cluster's own commandTimeout for each command: a `{ client }` whose node answered nothing (paused) and whose
 * commandTimeout was 20 s failed its start ~20 s after the toolkit's 1.5 s (connection-start-bound.spec.ts).
 */
export async function clusterReadyDenied(client: Cluster): Promise<string | undefined> {
  const masters = slotMasters(client);
  if (masters.length === 0) return undefined;
  // Every master at once: the first that names a denial is the answer. A master that answers nothing is given up once
  // slotsRefreshTimeout has passed, the cluster's own bound on a node's answer (the slot table came within it).
  const over = new AbortController();
  const ms = Math.min(client.options.slotsRefreshTimeout ?? 1_000, MAX_TIMER_MS);
  const limit = setTimeout(() => over.abort(new Error('no answer in time')), ms);
  try {
    const asked = masters.map((node) =>
      onNodeConnection(client, node, deniedOn, over.signal).then((denied) =>
        denied.length > 0 ? denied : Promise.reject(new Error('nothing denied')),
      ),
    );
    return readyDeniedMessage(await Promise.any(asked));
  } catch {
    return undefined; // nothing denied where it was asked, or no master answered in time
  } finally {
    clearTimeout(limit);
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
