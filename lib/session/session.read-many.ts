import type { BudgetedItems } from '../common/budgeted-reads.js';
import { LuaScript, type RedisClient, type ScriptArg } from '../common/lua-script.js';

const readManyScript = LuaScript.fromFile<(string | null | Error | number)[]>(
  'rtk_sess_read_many',
  'session/session-read-many.lua',
  1,
);

/**
 * The touching reads of one tick on a single server as one script call (GETEX each): one command, one promise and one
 * timer in ioredis instead of one per read, which is where a read's CPU went (a pipeline of GETEXs: 46k reads/s vs
 * connect-redis 60k; one script: 79-100k vs 84k, same run). The reads' keys lie in different slots: never used on a
 * cluster (one pipeline of GETEXs per master there). An error reply of one key (WRONGTYPE) is that read's alone.
 * Without a server limit: no budget (under one, READS_UNDER_BUDGET).
 */
export function readMany(client: RedisClient, reads: [key: string, ttl: number][]): Promise<(string | null | Error)[]> {
  return send(client, reads, 0) as Promise<(string | null | Error)[]>;
}

/**
 * The touching reads under the reply budget of their connection (budgeted-reads.ts, reply-budget.ts): one script call
 * answers values adding up to at most its budget, and the length of each value it left out (touched all the same),
 * read again with its ttl when there is room. A reply past the server's `client-output-buffer-limit normal` made Redis
 * close the connection, failing every call on it: sessions each under that bound (SessionSizeBound) could pass it
 * together, in one call or in the calls of consecutive turns pipelined on the connection. On a cluster one call per
 * read (its own slot), in one pipeline per master.
 */
export const READS_UNDER_BUDGET: BudgetedItems<[key: string, ttl: number], string | null | Error> = {
  keyOf: ([key]) => key,
  call: (client, reads, budget) => send(client, reads, budget),
  command: ([key, ttl], budget) => readManyScript.command([key], [ttl, -budget]),
  bytesOf: (value) => (typeof value === 'string' ? value.length : 0),
};

/** One call: one ttl shared by every read, or each read's; then the budget, negated, when there is one. */
function send(client: RedisClient, reads: [key: string, ttl: number][], budget: number) {
  const keys: string[] = [];
  const args: ScriptArg[] = [];
  let shared = true;
  for (const [key, ttl] of reads) {
    keys.push(key);
    args.push(ttl);
    if (ttl !== reads[0][1]) shared = false;
  }
  if (shared) args.length = 1;
  if (budget > 0) args.push(-budget);
  return readManyScript.runWithAnyKeys(client, keys, args);
}
