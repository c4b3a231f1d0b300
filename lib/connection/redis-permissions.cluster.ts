import type { Cluster } from 'ioredis';
import { replyCodeOf } from '../common/failure-policy.js';
import { onNodeConnection } from './cluster-nodes.js';

/**
 * Why a cluster never became ready, when the reason is the ACL: ioredis's ready check runs CLUSTER INFO and it names
 * each node connection (CLIENT SETNAME); a user without them leaves the cluster closing and retrying with no error
 * event at all, so the start would only say "no answer". Asked on a short-lived connection to the first startup node
 * with the cluster's own credentials; undefined when that node cannot be reached or nothing is denied.
 */
export async function clusterReadyDenied(client: Cluster): Promise<string | undefined> {
  // ioredis keeps the startup nodes on the instance but does not type them (it is the list given to `new Cluster`).
  const first = (client as unknown as { startupNodes?: { host?: string; port?: number }[] }).startupNodes?.[0];
  if (first?.port === undefined) return undefined;
  const denied: string[] = [];
  try {
    await onNodeConnection(client, { host: first.host ?? 'localhost', port: first.port }, async (probe) => {
      for (const [command, args] of [
        ['CLUSTER INFO', ['cluster', 'info']],
        ['CLIENT SETNAME', ['client', 'setname', 'rtk-acl-check']],
      ] as const) {
        await probe.call(args[0], ...args.slice(1)).catch((err: unknown) => {
          if (replyCodeOf(err) === 'NOPERM') denied.push(command);
        });
      }
    });
  } catch {
    return undefined;
  }
  if (denied.length === 0) return undefined;
  return (
    `the ACL user may not run ${denied.join(', ')}, which ioredis needs to connect to a cluster ` +
    `(grant ${denied.map((c) => `+${c.toLowerCase().replace(' ', '|')}`).join(' ')}; docs/security.md has the line)`
  );
}
