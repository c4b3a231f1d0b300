import { Cluster, type Command } from 'ioredis';
import { hashSlot } from './bulk-keys.js';
import { sendCorked } from './cluster-batch.js';
import { migratingTo, nodeKey, noteAsk } from './cluster-masters.js';
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
      return lone(client, accountsOf(client, budget, items.keyOf(item)), items, item);
    },
    many: (batch, settle) => {
      if (budget.bound === 0) return plain.many(batch, settle);
      return onCluster
        ? perMaster(client as Cluster, budget, items, batch)
        : singleServer(client, budget.account(), items, batch);
    },
  };
}

/**
 * The accounts of the connections `key` may be read on: the master that owns its slot as last known, on a cluster,
 * and while the slot migrates (a node answered ASK for it: migratingTo) the node its moved keys are on as well, since
 * the read may be answered by either; in node order, so that two reads never wait for each other's account.
 */
function accountsOf(client: RedisClient, budget: ReplyBudget, key: string): ReplyAccount[] {
  if (!(client instanceof Cluster)) return [budget.account()];
  const slot = hashSlot(key);
  const owner = client.slots[slot]?.[0] ?? '';
  const to = migratingTo(client, slot);
  if (to === undefined) return [budget.account(owner)];
  return [owner, to].sort().map((node) => budget.account(node));
}

/**
 * `run` once `want` bytes are reserved on each of `accounts` (in their order), with the least granted; each given back
 * once it settled.
 */
async function holding<T>(accounts: ReplyAccount[], want: number, run: (least: number) => Promise<T>): Promise<T> {
  const granted: number[] = [];
  try {
    for (const account of accounts) granted.push(await account.reserve(want));
    return await run(Math.min(...granted));
  } finally {
    for (const [i, held] of granted.entries()) accounts[i].release(held);
  }
}

/** One call within `want` bytes reserved on each of `accounts` (a lone value past the bound: alone, its length). */
function reserved<TItem, TResult>(
  client: RedisClient,
  accounts: ReplyAccount[],
  items: BudgetedItems<TItem, TResult>,
  batch: TItem[],
  want: number,
): Promise<(TResult | number)[]> {
  return holding(accounts, want, (least) =>
    items.call(client, batch, batch.length === 1 ? Math.max(least, want) : least),
  );
}

/** One item read alone: first within a guess, then within its length, until its value is in. */
async function lone<TItem, TResult>(
  client: RedisClient,
  accounts: ReplyAccount[],
  items: BudgetedItems<TItem, TResult>,
  item: TItem,
  size?: number,
): Promise<TResult> {
  const [account] = accounts;
  let want = size === undefined ? account.guess(1) : size + REPLY_OVERHEAD;
  for (;;) {
    const [result] = await reserved(client, accounts, items, [item], want);
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
      [account],
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
  // an item read alone: on its own slot's accounts (both nodes while it migrates), whatever group it came from
  const alone = (i: number, size?: number): Promise<void> =>
    lone(cluster, accountsOf(cluster, budget, items.keyOf(batch[i])), items, batch[i], size).then(
      (r) => void (results[i] = r),
      (err: unknown) => void (results[i] = new Rejected(err)),
    );
  const sendGroup = async (key: string, group: number[]): Promise<void> => {
    const account = budget.account(key);
    const node = masters.get(key);
    if (group.length === 1 || node?.status !== 'ready') {
      await Promise.all(group.map((i) => alone(i)));
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
              if (typeof result === 'number') later.push(alone(i, result));
              else {
                results[i] = result;
                account.saw(items.bytesOf(result));
              }
            },
            (err: unknown) => {
              if (!(err instanceof Error && DID_NOT_RUN.test(err.message))) results[i] = new Rejected(err);
              else {
                // the slot migrates: read again on both nodes' accounts (an ASK of the pipeline, sent to the node,
                // is not seen by the cluster client)
                if (err.message.startsWith('ASK ')) noteAsk(cluster, err.message);
                later.push(alone(i));
              }
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

/**
 * One item read alone under the budget of its connection (a feature's single read: the sessions' reads that are not
 * batched): first within a guess, then within its known length, until its value is in. Only while the budget is on
 * (`bound` > 0): the caller sends its plain command otherwise.
 */
export function readAlone<TItem, TResult>(
  client: RedisClient,
  budget: ReplyBudget,
  items: BudgetedItems<TItem, TResult>,
  item: TItem,
): Promise<TResult> {
  return lone(client, accountsOf(client, budget, items.keyOf(item)), items, item);
}

/**
 * `send` once `bytes` of the budget of `key`'s connection are reserved (at most the bound: one past it is sent alone),
 * given back once it settled: a call whose reply may carry a value of a known largest size. At once, with nothing
 * reserved, while the budget is off.
 */
export function whileReserved<T>(
  client: RedisClient,
  budget: ReplyBudget,
  key: string,
  bytes: number,
  send: () => Promise<T>,
): Promise<T> {
  if (budget.bound === 0) return send();
  return holding(accountsOf(client, budget, key), bytes, send);
}
