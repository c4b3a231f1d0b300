import { LuaScript, type RedisClient } from '../common/lua-script.js';

const readManyScript = LuaScript.fromFile<(string | null | Error)[]>(
  'rtk_sess_read_many',
  new URL('./session-read-many.lua', import.meta.url),
  1,
);

/**
 * The touching reads of one tick on a single server as one script call (GETEX each): one command, one promise and one
 * timer in ioredis instead of one per read, which is where a read's CPU went (a pipeline of GETEXs: 46k reads/s vs
 * connect-redis 60k; one script: 79-100k vs 84k, same run). The reads' keys lie in different slots: never used on a
 * cluster (one pipeline of GETEXs per master there). An error reply of one key (WRONGTYPE) is that read's alone.
 */
export function readMany(client: RedisClient, reads: [key: string, ttl: number][]): Promise<(string | null | Error)[]> {
  const keys: string[] = [];
  const ttls: number[] = [];
  let shared = true;
  for (const [key, ttl] of reads) {
    keys.push(key);
    ttls.push(ttl);
    if (ttl !== ttls[0]) shared = false;
  }
  return readManyScript.runWithAnyKeys(client, keys, shared ? [ttls[0]] : ttls);
}
