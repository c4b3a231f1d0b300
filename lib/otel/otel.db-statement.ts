import { createHash } from 'node:crypto';
import { noteToolkitSerializer, toolkitScriptName } from '../common/traced-scripts.js';
import { withoutSessionIds, withoutSessionKeyIds } from './otel.session-ids.js';

/** The arguments of an ioredis command as OpenTelemetry's ioredis instrumentation passes them (its `CommandArgs`). */
export type RedisCommandArgs = Array<string | Buffer | number | unknown[]>;

/**
 * A `dbStatementSerializer` of `@opentelemetry/instrumentation-ioredis` (and the shape of
 * `@opentelemetry/redis-common`'s `defaultDbStatementSerializer`): the text of a command's `db.query.text`.
 */
export type DbStatementSerializer = (cmdName: string, cmdArgs: RedisCommandArgs) => string;

/**
 * The `dbStatementSerializer` to give OpenTelemetry's ioredis instrumentation in an app that uses the toolkit:
 *
 * ```ts
 * new IORedisInstrumentation({ dbStatementSerializer: redisToolkitDbStatementSerializer() })
 * ```
 *
 * A call of one of the toolkit's Lua scripts (EVALSHA, or EVAL the first time on a socket) is written
 * `evalsha <script name> <numkeys> <keys…> [<n> other arguments]`: its ARGV (session contents, published messages,
 * lock tokens) and the script's text are left out. Every other command (the app's own, another library's, a script that
 * is not the toolkit's) goes to `fallback`: by default its name and number of arguments only (commandNameOnly); pass
 * `@opentelemetry/redis-common`'s `defaultDbStatementSerializer` (the instrumentation's default), or a serializer of
 * yours, to write those as it does.
 *
 * No session id is written: a session id is a bearer credential. In a session key (`rtk:sess:{<id>}`, under every
 * keyPrefix the sessions of this process use) and as a member of a user's session index, in the script calls' keys
 * and in what the fallback is given, each is replaced by a stand-in, `#` and 8 characters of its HMAC under a secret of
 * the process (otel.session-ids.ts): the spans of one session still read alike, and tell nothing of its id.
 *
 * Making it also tells the toolkit, at its start, that the instrumentation is set up for it (no warning).
 */
export function redisToolkitDbStatementSerializer(
  fallback: DbStatementSerializer = commandNameOnly,
): DbStatementSerializer {
  if (typeof fallback !== 'function') {
    throw new TypeError('redisToolkitDbStatementSerializer(fallback): fallback must be a function');
  }
  noteToolkitSerializer();
  return (cmdName, cmdArgs) => {
    const script = Array.isArray(cmdArgs) && cmdArgs.length > 0 ? toolkitScriptOf(cmdName, cmdArgs[0]) : undefined;
    if (script !== undefined) return scriptStatement(cmdName, script, cmdArgs);
    // the default fallback writes no argument: nothing to replace
    return fallback === commandNameOnly ? fallback(cmdName, cmdArgs) : fallback(cmdName, withoutSessionIds(cmdArgs));
  };
}

/** The toolkit's script name for `EVALSHA <sha>` / `EVAL <lua>` (and their `_RO` forms), else undefined. */
function toolkitScriptOf(cmdName: string, first: unknown): string | undefined {
  const name = cmdName.toLowerCase();
  const bySha = name === 'evalsha' || name === 'evalsha_ro';
  if (!bySha && name !== 'eval' && name !== 'eval_ro') return undefined;
  const text = typeof first === 'string' ? first : Buffer.isBuffer(first) ? first.toString('utf8') : undefined;
  if (text === undefined) return undefined;
  return toolkitScriptName(bySha ? text : createHash('sha1').update(text).digest('hex'));
}

/** `<command> <script name> <numkeys> <keys…> [<n> other arguments]`: what redis-common writes, less the ARGV. */
function scriptStatement(cmdName: string, script: string, cmdArgs: RedisCommandArgs): string {
  const numberOfKeys = Number(cmdArgs[1]);
  const keyCount =
    Number.isSafeInteger(numberOfKeys) && numberOfKeys >= 0 && numberOfKeys <= cmdArgs.length - 2 ? numberOfKeys : -1;
  const keys = cmdArgs.slice(2, 2 + Math.max(keyCount, 0)).map((key) => withoutSessionKeyIds(String(key)));
  const kept = keyCount < 0 ? [] : [String(cmdArgs[1]), ...keys];
  const others = cmdArgs.length - 1 - kept.length;
  const parts = [cmdName, script, ...kept];
  if (others > 0) parts.push(`[${others} other arguments]`);
  return parts.join(' ');
}

/**
 * The fallback when none is given, for every command that is not one of the toolkit's scripts: the command's name and
 * how many arguments it had, none of them (`set [4 arguments]`). It cannot leak a value, a password (`AUTH`, `HELLO`)
 * or a key, whatever the command. To keep what @opentelemetry/redis-common's `defaultDbStatementSerializer` writes
 * for those commands (the keys of most, every argument of some), pass it: `redisToolkitDbStatementSerializer(
 * defaultDbStatementSerializer)`.
 */
function commandNameOnly(cmdName: string, cmdArgs: RedisCommandArgs): string {
  const count = Array.isArray(cmdArgs) ? cmdArgs.length : 0;
  return count === 0 ? cmdName : `${cmdName} [${count} ${count === 1 ? 'argument' : 'arguments'}]`;
}
