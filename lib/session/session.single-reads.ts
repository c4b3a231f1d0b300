import { type BudgetedItems, readAlone, whileReserved } from '../common/budgeted-reads.js';
import { LuaScript, type RedisClient } from '../common/lua-script.js';
import { REPLY_OVERHEAD, replyBudgetOf } from '../common/reply-budget.js';

/** A session's value (null: absent) and its key's PEXPIRETIME (-1: no expiry, -2: absent). */
export type ValueAndExpiry = [value: string | null, expireTime: number];

const readAloneScript = LuaScript.fromFile<ValueAndExpiry | number>(
  'rtk_sess_read_alone',
  'session/session-read-alone.lua',
  1,
);

/** A session read alone under the budget (session-read-alone.lua): its value and expiry, or the length left out. */
const READ_ALONE: BudgetedItems<string, ValueAndExpiry> = {
  keyOf: (key) => key,
  call: async (client, [key], budget) => [await readAloneScript.run(client, [key], [budget, REPLY_OVERHEAD])],
  command: (key, budget) => readAloneScript.command([key], [budget, REPLY_OVERHEAD]),
  bytesOf: ([value]) => (value === null ? 0 : value.length),
};

/*
 * The sessions' reads that are not batched, under the reply budget of their connection (reply-budget.ts): a read
 * without rolling, and the GET of a session a write (update, the store's set, regenerate) has not seen or must read
 * again. Each carries one session under the size bound, but several in one turn, or beside the budgeted reads in
 * flight (touching reads, the cache's), passed the server's `client-output-buffer-limit normal` together: Redis
 * closed the connection, failing every call on it. Under a limit each reserves its share first (readAlone: a guess,
 * then the value's length); without one (bound 0, Redis's default) the commands are exactly those sent before.
 */

/** The value and expiry of the session under `key`: MULTI GET + PEXPIRETIME; under a budget, session-read-alone.lua. */
export async function readWithExpiry(client: RedisClient, key: string): Promise<ValueAndExpiry> {
  const budget = replyBudgetOf(client);
  if (budget.bound > 0) return readAlone(client, budget, READ_ALONE, key);
  // PEXPIRETIME (Redis 7): the exact expiry, in the same round trip as the value.
  const [[getErr, raw], [timeErr, expireTime]] = (await client.multi().get(key).pexpiretime(key).exec()) as [
    [Error | null, string | null],
    [Error | null, number],
  ];
  if (getErr) throw getErr;
  if (timeErr) throw timeErr;
  return [raw, expireTime];
}

/** The value of the session under `key`: a GET; under a budget, session-read-alone.lua. */
export async function sessionValue(client: RedisClient, key: string): Promise<string | null> {
  const budget = replyBudgetOf(client);
  if (budget.bound === 0) return client.get(key);
  return (await readAlone(client, budget, READ_ALONE, key))[0];
}

/**
 * `send`, a call whose reply may carry the session under `key` whole, once `bytes` (its largest size: the size
 * bound, with the framing) are reserved on its connection; at once while the budget is off.
 */
export function withSessionReply<T>(client: RedisClient, key: string, bytes: number, send: () => Promise<T>) {
  return whileReserved(client, replyBudgetOf(client), key, bytes + REPLY_OVERHEAD, send);
}

/** Whether the reads and writes on `client` are under a reply budget now (the scripts answer no value then). */
export const underBudget = (client: RedisClient): boolean => replyBudgetOf(client).bound > 0;
