import { Cluster, Command } from 'ioredis';
import { type BudgetedItems, budgetedSender } from './budgeted-reads.js';
import { CLUSTER_SLICE, perNodeSender } from './cluster-batch.js';
import { LuaScript, type RedisClient } from './lua-script.js';
import { REPLY_OVERHEAD, replyBudgetOf } from './reply-budget.js';
import { type TickBatchSender, TickBatcher } from './tick-batcher.js';

const budgetGetScript = LuaScript.fromFile<(string | null | number)[]>('rtk_budget_get', 'common/budget-get.lua', 1);

/** GETs under a reply budget (budget-get.lua): a value, nil, or the length of a value left out. */
const BUDGETED_GETS: BudgetedItems<string, string | null> = {
  keyOf: (key) => key,
  call: (client, keys, budget) => budgetGetScript.runWithAnyKeys(client, keys, [budget, REPLY_OVERHEAD]),
  command: (key, budget) => budgetGetScript.command([key], [budget, REPLY_OVERHEAD]),
  bytesOf: (value) => (value === null ? 0 : value.length),
};

/**
 * The GETs of one turn as one command: an MGET of up to `perCall` keys on a single server (a key asked twice is sent
 * once), one pipeline of GETs per master on a cluster, where an MGET must stay in one slot (see cluster-batch.ts: a
 * node that fails fails only the reads of its own keys). MGET answers nil for a key holding another type, where a GET
 * answers WRONGTYPE. Used by the cache's reads and the sessions' plain reads.
 *
 * Under a server's `client-output-buffer-limit normal` (known: reply-limit.ts) the values in flight on a connection
 * add up to at most its bound (reply-budget.ts): a batch is one call of budget-get.lua instead (STRLEN before GET; a
 * key of another type answers nil there too, on a cluster as well), and what it leaves out is read again when there is
 * room. Without a limit (Redis's default, or not read) the commands are those above, nothing more.
 */
export function getBatcher(client: RedisClient, perCall: number): TickBatcher<string, string | null> {
  const budget = replyBudgetOf(client);
  const one = (key: string) => client.get(key);
  let plain: TickBatchSender<string, string | null>;
  if (client instanceof Cluster)
    plain = perNodeSender<string, string | null>(client, {
      keyOf: (key) => key,
      command: (key) => new Command('get', [key], { replyEncoding: 'utf8' }),
      reply: (raw) => raw as string | null,
      one,
    });
  else
    plain = {
      one,
      many: async (keys) => {
        const unique = [...new Set(keys)];
        const values = await client.mget(...unique);
        const byKey = new Map(unique.map((k, i) => [k, values[i]]));
        return keys.map((k) => byKey.get(k) ?? null);
      },
    };
  const sender = budgetedSender(client, budget, plain, BUDGETED_GETS);
  return new TickBatcher(sender, client instanceof Cluster ? perCall * CLUSTER_SLICE : perCall);
}
