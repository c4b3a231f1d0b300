import { readFileSync } from 'node:fs';
import type { Cluster, Redis } from 'ioredis';
import { InvalidOptionsError } from './errors.js';

export type RedisClient = Redis | Cluster;
export type ScriptArg = string | number | Buffer;

type DefinedCommand<T> = (...keysAndArgs: ScriptArg[]) => Promise<T>;

/**
 * A Lua script kept in a `.lua` file beside the feature that uses it, registered once per client with ioredis
 * `defineCommand`. ioredis sends EVALSHA and falls back to EVAL (which loads the script) on NOSCRIPT, so the script
 * survives SCRIPT FLUSH and server restarts. Scripts declare a fixed number of keys; callers pass keys that share a
 * hash tag so the script runs on a Redis Cluster.
 */
export class LuaScript<TResult> {
  private readonly definedOn = new WeakSet<RedisClient>();
  private readonly anyKeysDefinedOn = new WeakSet<RedisClient>();
  private readonly variants = new Map<number, LuaScript<TResult>>();

  constructor(
    readonly name: string,
    readonly lua: string,
    readonly numberOfKeys: number,
  ) {}

  /** `LuaScript.fromFile<number>('rtk_release_lock', new URL('./release-lock.lua', import.meta.url), 1)` */
  static fromFile<T>(name: string, file: URL, numberOfKeys: number): LuaScript<T> {
    return new LuaScript<T>(name, readFileSync(file, 'utf8'), numberOfKeys);
  }

  /**
   * The same source for another fixed number of keys (a script whose callers pass 1..N keys), registered under its
   * own name; one instance per count.
   */
  withNumberOfKeys(numberOfKeys: number): LuaScript<TResult> {
    if (numberOfKeys === this.numberOfKeys) return this;
    let variant = this.variants.get(numberOfKeys);
    if (!variant) {
      variant = new LuaScript<TResult>(`${this.name}_${numberOfKeys}`, this.lua, numberOfKeys);
      this.variants.set(numberOfKeys, variant);
    }
    return variant;
  }

  /**
   * Runs the script with any number of keys (a batch of independent calls), under its own command name registered
   * without a fixed key count, so batches of every size share one registration.
   */
  runWithAnyKeys(client: RedisClient, keys: readonly string[], args: readonly ScriptArg[] = []): Promise<TResult> {
    return this.command(client, `${this.name}_any`, this.anyKeysDefinedOn).call(client, keys.length, ...keys, ...args);
  }

  run(client: RedisClient, keys: readonly string[], args: readonly ScriptArg[] = []): Promise<TResult> {
    if (keys.length !== this.numberOfKeys) {
      throw new InvalidOptionsError(`script ${this.name} takes ${this.numberOfKeys} keys, got ${keys.length}`);
    }
    return this.command(client, this.name, this.definedOn, this.numberOfKeys).call(client, ...keys, ...args);
  }

  /**
   * The ioredis command `name` of `client`, registered with defineCommand the first time; registered without a key
   * count, its callers pass the count first.
   */
  private command(
    client: RedisClient,
    name: string,
    definedOn: WeakSet<RedisClient>,
    numberOfKeys?: number,
  ): DefinedCommand<TResult> {
    if (!definedOn.has(client)) {
      client.defineCommand(name, numberOfKeys === undefined ? { lua: this.lua } : { numberOfKeys, lua: this.lua });
      definedOn.add(client);
    }
    return (client as unknown as Record<string, DefinedCommand<TResult>>)[name];
  }
}
