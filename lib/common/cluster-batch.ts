import type { Cluster, Command, Redis } from 'ioredis';
import { hashSlot } from './bulk-keys.js';
import { Rejected, type TickBatchSender } from './tick-batcher.js';
import { nodeKey } from './cluster-masters.js';

/** How a per-node sender sends one item of a batch on a Redis Cluster. */
export interface NodeBatchItems<TItem, TResult> {
  /** A key of the item: every key the item touches lies in this key's hash slot. */
  keyOf(item: TItem): string;
  /** The item as one command (a new one each time: a command is sent once). */
  command(item: TItem): Command;
  /** The command's reply as the item's result. */
  reply(raw: unknown, item: TItem): TResult;
  /** The item alone through the cluster client, which follows MOVED/ASK redirections itself. */
  one(item: TItem): Promise<TResult>;
}

/**
 * How many more calls a turn's slice holds on a cluster than on one server (the `maxPerCall` of a TickBatcher): split
 * over the masters, a slice of `cap × CLUSTER_SLICE` gives each master of a 3-master cluster about `cap` calls per
 * pipeline, as one server gets per command (a slice of only `cap`, split three ways, made pipelines of a few commands
 * whose fixed cost showed: rate limit 47k decisions/s with cap 16 on the cluster).
 */
export const CLUSTER_SLICE = 3;

/**
 * Replies meaning the command did not run: another node owns the slot now (MOVED, ASK), the slot is migrating or the
 * cluster is down (TRYAGAIN, CLUSTERDOWN), or the node does not know the script yet (NOSCRIPT). Such an item is sent
 * again alone, through the cluster client. A connection lost mid-command is not among them: the command may have run.
 */
const DID_NOT_RUN = /^(MOVED|ASK|TRYAGAIN|CLUSTERDOWN|NOSCRIPT)\b/;

/**
 * Sends `commands` to one node in one socket write and returns their replies. ioredis writes a command to the socket
 * as it is sent: the socket is corked for the loop and uncorked after it, so the writes go out as one writev. An
 * ioredis pipeline does the same write but costs more per command: a 3-master cluster, 50 callers of cache.get,
 * 83–107k gets/s at 11–14 µs of this process's CPU per get with node.pipeline(), 109–134k at 7.4–9.2 µs corked.
 */
export function sendCorked(node: Redis, commands: Command[]): Promise<unknown>[] {
  // (a connection not open yet has no socket: ioredis queues the commands until it connects)
  const { stream } = node;
  stream?.cork();
  try {
    return commands.map((command) => {
      try {
        node.sendCommand(command);
      } catch (err) {
        // this command fails alone, and the ones already sent keep the handlers the caller attaches to every reply
        command.reject(err instanceof Error ? err : new Error(String(err)));
      }
      return command.promise as Promise<unknown>;
    });
  } finally {
    stream?.uncork();
  }
}

/**
 * The sockets of every master's own connection as one stream for a SharedTurn: corked together for the turn, so what
 * the turn's batchers send to one master (a lock's releases, then its acquisitions) leaves in one write per master
 * instead of one per batcher (sendCorked's own cork nests inside). A master without a socket yet is left out: its
 * calls go alone through the cluster client, which queues them until it connects.
 */
export function masterStreams(cluster: Cluster): { cork(): void; uncork(): void } {
  const streams = cluster.nodes('master').flatMap((node) => (node.stream ? [node.stream] : []));
  return {
    cork: () => {
      for (const stream of streams) stream.cork();
    },
    uncork: () => {
      for (const stream of streams) stream.uncork();
    },
  };
}

/** Each master's own connection by its node key (`host:port`, as in `cluster.slots`). */
function mastersByKey(cluster: Cluster): Map<string, Redis> {
  const byKey = new Map<string, Redis>();
  for (const node of cluster.nodes('master')) byKey.set(nodeKey(node), node);
  return byKey;
}

/**
 * Sends a batch on a Redis Cluster as on a single server: the items are grouped by the master that owns their hash
 * slot, and each group goes to its node on that node's own connection in one socket write (sendCorked: one round
 * trip, without the cluster client's per-command routing), all nodes at once. Each item stays one command on its own
 * slot, so a script call stays atomic and all-or-nothing for its item, and items of different slots never share a
 * command (which a cluster refuses). Results come back in the items' order, each as soon as its reply is read; an item
 * whose node failed or answered with an error fails alone (a Rejected result), so a failed node fails only its own
 * items. An item answered with a redirection (MOVED/ASK: the slot moved since ioredis last read the slot map) is sent
 * again alone through the cluster client, as is every item whose master has no ready connection of its own.
 */
export function perNodeSender<TItem, TResult>(
  cluster: Cluster,
  items: NodeBatchItems<TItem, TResult>,
): TickBatchSender<TItem, TResult> {
  return {
    one: (item) => items.one(item),
    many: (batch, settle) => sendPerNode(cluster, batch, items, settle),
  };
}

async function sendPerNode<TItem, TResult>(
  cluster: Cluster,
  batch: TItem[],
  items: NodeBatchItems<TItem, TResult>,
  settle: (index: number, result: TResult | Rejected) => void = () => undefined,
): Promise<(TResult | Rejected)[]> {
  const byNode = new Map<string, number[]>();
  const alone: number[] = [];
  for (let i = 0; i < batch.length; i++) {
    const node = cluster.slots[hashSlot(items.keyOf(batch[i]))]?.[0];
    if (node === undefined) {
      alone.push(i); // the slot map is not known yet: ioredis waits for it on a lone command
      continue;
    }
    let group = byNode.get(node);
    if (!group) byNode.set(node, (group = []));
    group.push(i);
  }
  const masters = mastersByKey(cluster);
  const results = new Array<TResult | Rejected>(batch.length);
  // each node's results go to their callers as soon as that node answers
  const put = (i: number, result: TResult | Rejected): void => {
    results[i] = result;
    settle(i, result);
  };
  const sendAlone = (i: number): Promise<void> =>
    items.one(batch[i]).then(
      (r) => put(i, r),
      (err: unknown) => put(i, new Rejected(err)),
    );
  const sendGroup = async (key: string, group: number[]): Promise<void> => {
    const node = masters.get(key);
    // a lone item, or a node without a ready connection (connecting, or gone from the slot map): each alone
    if (group.length === 1 || node?.status !== 'ready') {
      await Promise.all(group.map(sendAlone));
      return;
    }
    const replies = sendCorked(
      node,
      group.map((i) => items.command(batch[i])),
    );
    await Promise.all(
      replies.map((reply, at) => {
        const i = group[at];
        return reply.then(
          (raw) => {
            try {
              put(i, items.reply(raw, batch[i]));
            } catch (e) {
              put(i, new Rejected(e));
            }
          },
          (err: unknown) =>
            err instanceof Error && DID_NOT_RUN.test(err.message) ? sendAlone(i) : put(i, new Rejected(err)),
        );
      }),
    );
  };
  await Promise.all([...[...byNode].map(([nodeKey, group]) => sendGroup(nodeKey, group)), ...alone.map(sendAlone)]);
  return results;
}
