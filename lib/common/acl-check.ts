import { LuaScript, type RedisClient } from './lua-script.js';
import { withTimeout } from './timeout.js';

/**
 * acl-check.lua: whether the connected ACL user may run each command given (redis.acl_check_cmd, Redis >= 7.0),
 * asked without running any: a command run to find out, and refused, leaves an entry in ACL LOG. Used by the start-up
 * permission check (redis-permissions.ts) and by reads that are optional (reply-limit.ts's CONFIG GET).
 */
export const ACL_CHECK = LuaScript.fromFile<(number | string)[]>('rtk_acl_check', 'common/acl-check.lua', 0);

/**
 * Whether the user of `client` may run `args` (one command and its arguments): true or false, or undefined when the
 * check could not tell (Redis < 7.0 has no redis.acl_check_cmd, scripts refused, a command Redis does not know, no
 * answer within `ms`): then the caller may run the command itself.
 */
export async function mayRun(client: RedisClient, args: readonly string[], ms: number): Promise<boolean | undefined> {
  try {
    const [answer] = await withTimeout(ACL_CHECK.run(client, [], [String(args.length), ...args]), ms, 'no answer');
    return answer === 1 ? true : answer === 0 ? false : undefined;
  } catch {
    return undefined;
  }
}
