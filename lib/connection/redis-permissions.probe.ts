import { replyCodeOf } from '../common/failure-policy.js';
import { LuaScript, type RedisClient } from '../common/lua-script.js';
import type { RequiredCommand } from './redis-permissions.js';

const PROBE_SCRIPT = LuaScript.fromFile<number[]>('rtk_acl_probe', 'connection/acl-probe.lua', 1);

/** Commands Redis refuses inside a script: checked on their own (MULTI/EXEC) or not at all (subscriptions). */
const NOT_IN_SCRIPTS = new Set([
  'multi',
  'exec',
  'subscribe',
  'psubscribe',
  'punsubscribe',
  'ssubscribe',
  'unsubscribe',
  'sunsubscribe',
  'eval',
  'evalsha',
  'client',
]);

/** The probe key a command's arguments carry (`<prefix><feature>:{acl:check}`), if any. */
const probeKeyOf = (c: RequiredCommand): string | undefined => c.args.find((a) => a.endsWith('{acl:check}'));

/**
 * The permission check of servers without ACL DRYRUN and redis.acl_check_cmd (Redis < 7): every command runs for
 * real under redis.pcall, on a probe key of the toolkit's own (deleted at the end) — one script per probe key, so
 * each stays in one slot of a cluster. Denied: the commands Redis refused for the ACL. MULTI/EXEC are checked with
 * an empty transaction; `unchecked`: the commands no script may run (SUBSCRIBE...); `unknown`: the commands the server
 * does not know (renamed or disabled with rename-command). Called once the probe script itself may run (EVAL/EVALSHA
 * allowed).
 */
export async function probePermissions(
  client: RedisClient,
  commands: RequiredCommand[],
): Promise<{ denied: RequiredCommand[]; unchecked: RequiredCommand[]; unknown: RequiredCommand[] }> {
  const denied: RequiredCommand[] = [];
  const unchecked: RequiredCommand[] = [];
  const unknown: RequiredCommand[] = [];
  const byKey = new Map<string, RequiredCommand[]>();
  // A probe script goes out by EVALSHA once loaded on the connection (EVAL the first time): a renamed EVALSHA stops
  // the probe, with the reply the caller reports.
  if (commands.some((c) => c.args[0] === 'evalsha')) await throwIfEvalshaUnknown(client);
  const transactions = commands.some((c) => c.args[0] === 'multi' || c.args[0] === 'exec');
  const transactionsDenied = transactions && (await transactionDenied(client));
  for (const c of commands) {
    const command = c.args[0];
    if (command === 'eval' || command === 'evalsha') continue; // the probe script ran: both are allowed
    if (command === 'multi' || command === 'exec') {
      if (transactionsDenied) denied.push(c);
      continue;
    }
    if (NOT_IN_SCRIPTS.has(command)) {
      unchecked.push(c);
      continue;
    }
    const key = probeKeyOf(c) ?? '';
    byKey.set(key, [...(byKey.get(key) ?? []), c]);
  }
  for (const [key, group] of byKey) {
    // A command without a key (TIME, PING, INFO) goes with any probe key.
    const probeKey = key || [...byKey.keys()].find((k) => k !== '') || '';
    if (probeKey === '') continue;
    const answers = await PROBE_SCRIPT.run(
      client,
      [probeKey],
      group.flatMap((c) => [String(c.args.length), ...c.args]),
    );
    group.forEach((c, i) => {
      if (answers[i] === 0) denied.push(c);
      if (answers[i] === 2) unknown.push(c);
    });
  }
  return { denied, unchecked, unknown };
}

/** EVALSHA of a script no server has: NOSCRIPT when it exists; its `unknown command` is thrown when it is renamed. */
async function throwIfEvalshaUnknown(client: RedisClient): Promise<void> {
  try {
    await client.call('evalsha', '0'.repeat(40), '0');
  } catch (err) {
    if (/unknown command/i.test(String(err))) throw err;
  }
}

/** An empty MULTI/EXEC: whether the ACL denies transactions. */
async function transactionDenied(client: RedisClient): Promise<boolean> {
  try {
    await client.multi().exec();
    return false;
  } catch (err) {
    return replyCodeOf(err) === 'NOPERM' || /NOPERM/.test(String(err));
  }
}
