import { createHash } from 'node:crypto';
import { type Cluster, Command, type Redis } from 'ioredis';
import { InvalidOptionsError, RedisToolkitError } from './errors.js';
import { LUA_SOURCES, type LuaPath } from './lua-sources.generated.js';
import { registerToolkitScript } from './traced-scripts.js';

export type RedisClient = Redis | Cluster;
export type ScriptArg = string | number | Buffer;

/**
 * A Lua script kept in a `.lua` file beside the feature that uses it. Its text reaches the code through
 * lua-sources.generated.ts (scripts/embed-assets.mjs writes every .lua file of lib/ into it), never by reading the file
 * at run time: a bundled app (webpack, esbuild, ncc) has no package directory to read from. Each call is one command:
 * EVAL the first time it goes out on a socket (which loads the script), EVALSHA after that; a NOSCRIPT reply (SCRIPT
 * FLUSH, a restarted server behind the same socket) forgets the socket and sends the call once more, as EVAL. Nothing
 * is registered on the client — ioredis `defineCommand` would add a method per script to a client the user may own
 * and share (`connection: { client }`). Scripts declare a fixed number of keys; callers pass keys that share a hash
 * tag so the script runs on a Redis Cluster (ioredis routes the command by its first key).
 */
export class LuaScript<TResult> {
  readonly sha: string;
  private readonly variants = new Map<number, LuaScript<TResult>>();
  /** The sockets this script was sent on as EVAL (so it is loaded there), read and written by ScriptCommand. */
  readonly loadedOn = new WeakSet<object>();

  constructor(
    readonly name: string,
    readonly lua: string,
    readonly numberOfKeys: number,
  ) {
    this.sha = createHash('sha1').update(lua).digest('hex');
    registerToolkitScript(this.sha, name); // a tracer's serializer tells our calls from others' (traced-scripts.ts)
  }

  /**
   * `LuaScript.fromFile<number>('rtk_release_lock', 'common/release-lock.lua', 1)`: the file by its path under lib/;
   * `preludes`: files whose functions it uses, put in front of it (one script, one EVALSHA). A path that is not
   * a .lua file of lib/ (a stale generated module: run `node scripts/embed-assets.mjs`) throws at import.
   */
  static fromFile<T>(
    name: string,
    file: LuaPath,
    numberOfKeys: number,
    preludes: readonly LuaPath[] = [],
  ): LuaScript<T> {
    const lua = [...preludes, file].map((path) => luaSource(path)).join('\n');
    return new LuaScript<T>(name, lua, numberOfKeys);
  }

  /** The same source for another fixed number of keys (a script whose callers pass 1..N keys); one per count. */
  withNumberOfKeys(numberOfKeys: number): LuaScript<TResult> {
    if (numberOfKeys === this.numberOfKeys) return this;
    let variant = this.variants.get(numberOfKeys);
    if (!variant) {
      variant = new LuaScript<TResult>(`${this.name}_${numberOfKeys}`, this.lua, numberOfKeys);
      this.variants.set(numberOfKeys, variant);
    }
    return variant;
  }

  /** Runs the script with any number of keys (a batch of independent calls). */
  runWithAnyKeys(client: RedisClient, keys: readonly string[], args: readonly ScriptArg[] = []): Promise<TResult> {
    return this.send(client, keys, args);
  }

  run(client: RedisClient, keys: readonly string[], args: readonly ScriptArg[] = []): Promise<TResult> {
    if (keys.length !== this.numberOfKeys) {
      throw new InvalidOptionsError(`script ${this.name} takes ${this.numberOfKeys} keys, got ${keys.length}`);
    }
    return this.send(client, keys, args);
  }

  /**
   * One call of the script as a command, for a caller that builds its own pipeline (cluster-batch.ts); EVAL or EVALSHA
   * is chosen when it is written, as for run(). A NOSCRIPT reply is the caller's to retry.
   */
  command(keys: readonly string[], args: readonly ScriptArg[] = []): Command {
    return new ScriptCommand(this, this.callArgs(keys, args));
  }

  private send(client: RedisClient, keys: readonly string[], args: readonly ScriptArg[]): Promise<TResult> {
    const call = this.callArgs(keys, args);
    return this.sendOnce(client, call).catch((err: unknown) => {
      if (!(err instanceof Error) || !err.message.startsWith('NOSCRIPT')) throw err;
      return this.sendOnce(client, call); // the socket is forgotten now: this one goes as EVAL
    });
  }

  /**
   * The sha, the number of keys, the keys, the arguments. Pushed one by one: an array literal mixing values and spreads
   * went through V8's generic element path (`AddDataElement` under every script call in an on-CPU profile).
   */
  private callArgs(keys: readonly string[], args: readonly ScriptArg[]): ScriptArg[] {
    const call: ScriptArg[] = [this.sha, keys.length];
    for (let i = 0; i < keys.length; i++) call.push(keys[i]);
    for (let i = 0; i < args.length; i++) call.push(args[i]);
    return call;
  }

  private sendOnce(client: RedisClient, call: ScriptArg[]): Promise<TResult> {
    return client.sendCommand(new ScriptCommand(this, call)) as Promise<TResult>;
  }
}

/** The text of lib/`path` (a programming error, RedisToolkitError, when there is none). */
function luaSource(path: LuaPath): string {
  const lua = Object.hasOwn(LUA_SOURCES, path) ? LUA_SOURCES[path] : undefined;
  if (lua === undefined) {
    throw new RedisToolkitError(
      `no Lua script lib/${String(path)} in lua-sources.generated.ts (run node scripts/embed-assets.mjs)`,
    );
  }
  return lua;
}

/**
 * One call of a script: EVALSHA, or EVAL when the script was not sent on this socket yet (the socket is known only
 * when the command is written, so the choice is made there). One class for every script, not one per script: ioredis's
 * Command code then sees one object shape, and its property accesses stay monomorphic (a class per script made them
 * megamorphic: 12 scripts in rotation, 50 callers, 5.05 µs of user CPU per call then, 4.16 now; docs/lock.md, round 6).
 */
class ScriptCommand extends Command {
  /** `args`: the sha, the number of keys, the keys, the arguments. */
  constructor(
    private readonly script: LuaScript<unknown>,
    args: ScriptArg[],
  ) {
    super('evalsha', args, { replyEncoding: 'utf8' });
  }

  override toWritable(socket: object): string | Buffer {
    const { script } = this;
    const reject = this.reject;
    this.reject = (err: Error) => {
      if (err.message.startsWith('NOSCRIPT')) script.loadedOn.delete(socket);
      reject.call(this, err);
    };
    const loaded = script.loadedOn.has(socket);
    script.loadedOn.add(socket);
    this.name = loaded ? 'evalsha' : 'eval';
    this.args[0] = loaded ? script.sha : script.lua;
    return super.toWritable(socket);
  }
}
