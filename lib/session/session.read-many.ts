import { LuaScript, type RedisClient, type ScriptArg } from '../common/lua-script.js';

const readManyScript = LuaScript.fromFile<(string | null | Error | 0)[]>(
  'rtk_sess_read_many',
  new URL('./session-read-many.lua', import.meta.url),
  1,
);

/**
 * The touching reads of one tick on a single server as one script call (GETEX each): one command, one promise and one
 * timer in ioredis instead of one per read, which is where a read's CPU went (a pipeline of GETEXs: 46k reads/s vs
 * connect-redis 60k; one script: 79-100k vs 84k, same run). The reads' keys lie in different slots: never used on a
 * cluster (one pipeline of GETEXs per master there). An error reply of one key (WRONGTYPE) is that read's alone.
 *
 * `budget` (bytes, 0: none): the values of one reply add up to at most that, or one value alone. A reply past the
 * server's `client-output-buffer-limit normal` makes Redis close the connection, failing every call on it: sessions
 * each under that bound (SessionSizeBound) could still pass it together. The values left out are read again in one
 * more call (touched again: the same ttl), until each is answered; a normal batch costs nothing more.
 */
export async function readMany(
  client: RedisClient,
  reads: [key: string, ttl: number][],
  budget = 0,
): Promise<(string | null | Error)[]> {
  const replies = await send(client, reads, budget);
  let left: number[] | undefined;
  for (let i = 0; i < replies.length; i++) if (replies[i] === 0) (left ??= []).push(i);
  while (left !== undefined && left.length > 0) {
    const again = await send(
      client,
      left.map((i) => reads[i]),
      budget,
    );
    const next: number[] = [];
    for (let j = 0; j < left.length; j++) {
      if (again[j] === 0) next.push(left[j]);
      else replies[left[j]] = again[j];
    }
    left = next;
  }
  return replies as (string | null | Error)[];
}

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
