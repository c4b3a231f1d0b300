import { Cluster, type Command } from 'ioredis';
import { hashSlot } from './bulk-keys.js';
import { sendCorked } from './cluster-batch.js';
import { nodeKey } from './cluster-masters.js';
import type { RedisClient } from './lua-script.js';
import { REPLY_OVERHEAD, type ReplyAccount, type ReplyBudget } from './reply-budget.js';
import { Rejected, type TickBatchSender } from './tick-batcher.js';

/**
 * How a feature's batched read is sent under a reply budget: a script answering each value, or the byte length of a
 * value it left out to stay within the budget it is given (budget-get.lua, session-read-many.lua).
 */
export interface BudgetedItems<TItem, TResult> {
  /** The item's key (its hash slot on a cluster). */
  keyOf(item: TItem): string;
  /**
   * One call reading `items` with replies of at most `budget` bytes (values counted with REPLY_OVERHEAD each): each
   * result in order, or a number, the length of a value left out. On a cluster `items` is one item.
   */
  call(client: RedisClient, items: TItem[], budget: number): Promise<(TResult | number)[]>;
  /** The call of one item as a command, for a master's pipeline on a cluster (sendCorked). */
  command(item: TItem, budget: number): Command;
  /** The bytes of a result (what the guess of the next batch follows). */
  bytesOf(result: TResult): number;
}

/**
 * A TickBatchSender that sends through `plain` while the budget is off (`bound` 0: no limit, or not read), with not one
 * more command, and under the budget otherwise: each call reserves the bytes its replies may take on its connection
 * (ReplyAccount) before it is sent, and a value left out (past what was reserved) is read again once there is room for
 * its known length, alone or with others that fit together.
 */
export function budgetedSender<TItem, TResult>(
  client: RedisClient,
  budget: ReplyBudget,
  plain: TickBatchSender<TItem, TResult>,
  items: BudgetedItems<TItem, TResult>,
): TickBatchSender<TItem, TResult> {
  const onCluster = client instanceof Cluster;
  return {
    one: (item) => {
      if (budget.bound === 0) return plain.one(item);
      return lone(client, accountOf(client, budget, items.keyOf(item)), items, item);
    },
    many: (batch, settle) => {
      if (budget.bound === 0) return plain.many(batch, settle);
      return onCluster
        ? perMaster(client as Cluster, budget, items, batch)
        : singleServer(client, budget.account(), items, batch);
    },
  };
}

/** The account of the connection `key` is read on: the master that owns its slot as last known, on a cluster. */
function accountOf(client: RedisClient, budget: ReplyBudget, key: string): ReplyAccount {
  if (!(client instanceof Cluster)) return budget.account();
  return budget.account(client.slots[hashSlot(key)]?.[0] ?? '');
}

/** One call within `want` bytes reserved (a lone value past the bound: alone, the budget given its length). */
async function reserved<TItem, TResult>(
  client: RedisClient,
  account: ReplyAccount,
  items: BudgetedItems<TItem, TResult>,
  batch: TItem[],
  want: number,
): Promise<(TResult | number)[]> {
  const granted = await account.reserve(want);
  try {
    return await items.call(client, batch, batch.length === 1 ? Math.max(granted, want) : granted);
  } finally {
    account.release(granted);
  }
}

/** One item read alone: first within a guess, then within its length, until its value is in. */
async function lone<TItem, TResult>(
  client: RedisClient,
  account: ReplyAccount,
  items: BudgetedItems<TItem, TResult>,
  item: TItem,
  size?: number,
): Promise<TResult> {
  let want = size === undefined ? account.guess(1) : size + REPLY_OVERHEAD;
  for (;;) {
    const [result] = await reserved(client, account, items, [item], want);
    if (typeof result !== 'number') {
      account.saw(items.bytesOf(result));
      return result;
    }
    want = result + REPLY_OVERHEAD; // grown since: within its new length
  }
}

/**
 * A batch on a single server: one call within a guess of what its values take, then the values it left out in calls
 * packed up to the bound, each within their known lengths, sent together (each waits for its room), until every value
 * is in. A failed call fails the batch, as one MGET did.
 */
async function singleServer<TItem, TResult>(
  client: RedisClient,
  account: ReplyAccount,
  items: BudgetedItems<TItem, TResult>,
  batch: TItem[],
): Promise<TResult[]> {
  const results = new Array<TResult>(batch.length);
  let left: { at: number; size: number }[] = [];
  const round = async (indexes: number[], want: number): Promise<void> => {
    const replies = await reserved(
      client,
      account,
      items,
      indexes.map((i) => batch[i]),
      want,
    );
    for (let j = 0; j < indexes.length; j++) {
      const reply = replies[j];
      if (typeof reply === 'number') left.push({ at: indexes[j], size: reply });
      else {
        results[indexes[j]] = reply;
        account.saw(items.bytesOf(reply));
      }
    }
  };
  await round(
    batch.map((_, i) => i),
    account.guess(batch.length),
  );
  while (left.length > 0) {
    const groups = packed(left, account);
    left = [];
    await Promise.all(groups.map((g) => round(g.indexes, g.bytes)));
  }
  return results;
}

/** The values left out, in calls of at most the bound's worth each (a value past it alone). */
function packed(left: { at: number; size: number }[], account: ReplyAccount): { indexes: number[]; bytes: number }[] {
  const bound = account.bound;
  const groups: { indexes: number[]; bytes: number }[] = [];
  let current: { indexes: number[]; bytes: number } | undefined;
  for (const { at, size } of left) {
    const bytes = size + REPLY_OVERHEAD;
    if (current === undefined || current.bytes + bytes > bound) groups.push((current = { indexes: [], bytes: 0 }));
    current.indexes.push(at);
    current.bytes += bytes;
  }
  return groups;
}

/**
 * Replies meaning the command did not run on that node (the slot moved, the script unknown there): the item is read
 * again alone through the cluster client, which follows redirections (as cluster-batch.ts does).
 */
const DID_NOT_RUN = /^(MOVED|ASK|TRYAGAIN|CLUSTERDOWN|NOSCRIPT)\b/;

/**
 * A batch on a cluster: per master (the slot owner as last known), one pipeline of one call per item (an item's call
 * stays in its slot) within a guess of what the values take, shared evenly; the values left out are read alone within
 * their lengths. An item whose call failed fails alone (a Rejected result), as with cluster-batch.ts.
 */
async function perMaster<TItem, TResult>(
  cluster: Cluster,
  budget: ReplyBudget,
  items: BudgetedItems<TItem, TResult>,
  batch: TItem[],
): Promise<(TResult | Rejected)[]> {
  const results = new Array<TResult | Rejected>(batch.length);
  const byNode = new Map<string, number[]>();
  for (let i = 0; i < batch.length; i++) {
    const node = cluster.slots[hashSlot(items.keyOf(batch[i]))]?.[0] ?? '';
    let group = byNode.get(node);
    if (group === undefined) byNode.set(node, (group = []));
    group.push(i);
  }
  const masters = new Map(cluster.nodes('master').map((n) => [nodeKey(n), n]));
  const alone = (i: number, account: ReplyAccount, size?: number): Promise<void> =>
    lone(cluster, account, items, batch[i], size).then(
      (r) => void (results[i] = r),
      (err: unknown) => void (results[i] = new Rejected(err)),
    );
  const sendGroup = async (key: string, group: number[]): Promise<void> => {
    const account = budget.account(key);
    const node = masters.get(key);
    if (group.length === 1 || node?.status !== 'ready') {
      await Promise.all(group.map((i) => alone(i, account)));
      return;
    }
    const granted = await account.reserve(account.guess(group.length));
    const each = Math.floor(granted / group.length);
    const later: Promise<void>[] = [];
    try {
      const replies = sendCorked(
        node,
        group.map((i) => items.command(batch[i], each)),
      );
      await Promise.all(
        replies.map((reply, at) => {
          const i = group[at];
          return reply.then(
            (raw) => {
              const result = (raw as (TResult | number)[])[0];
              if (typeof result === 'number') later.push(alone(i, account, result));
              else {
                results[i] = result;
                account.saw(items.bytesOf(result));
              }
            },
            (err: unknown) => {
              if (err instanceof Error && DID_NOT_RUN.test(err.message)) later.push(alone(i, account));
              else results[i] = new Rejected(err);
            },
          );
        }),
      );
    } finally {
      account.release(granted);
    }
    await Promise.all(later);
  };
  await Promise.all([...byNode].map(([key, group]) => sendGroup(key, group)));
  return results;
}
