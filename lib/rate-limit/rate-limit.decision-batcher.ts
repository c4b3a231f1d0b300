import { Cluster } from 'ioredis';
import { CLUSTER_SLICE, perNodeSender } from '../common/cluster-batch.js';
import { LuaScript, type ScriptArg } from '../common/lua-script.js';
import { TickBatcher } from '../common/tick-batcher.js';
import type { RedisConnection } from '../connection/redis-connection.js';

/**
 * At most this many decisions in one script call; a tick with more sends several calls. A few per call, not all:
 * with several calls in flight Redis runs one while this process prepares the next, where one call holding every
 * waiting decision makes them take turns (50 concurrent callers on 2 cores: fixed window 94k decisions/s with no
 * cap, 150-165k/s with a cap of 8 to 24, 100k/s unbatched).
 */
export const MAX_DECISIONS_PER_CALL = 16;

interface Decision {
  keys: readonly string[];
  args: readonly ScriptArg[];
}

/** Put in front of the scripts that read a string counter: read_string_counter, one read of it and its block key. */
const READ_COUNTER_LUA = 'rate-limit/read-counter.lua';
/** Put in front of the scripts that keep a sliding-window log (and reward.lua): its writes and reads. */
export const SLIDING_LOG_LUA = 'rate-limit/sliding-log.lua';
/** Put in front of the lean scripts: decide_each, their loop over a call's decisions, and ms(). */
const EACH_CONSUME_LUA = 'rate-limit/each-consume.lua';
/** Every decision: any algorithm, mode and number of policies. */
const consumeScript = LuaScript.fromFile<number[]>('rtk_rl_consume', 'rate-limit/consume.lua', 1, [
  READ_COUNTER_LUA,
  SLIDING_LOG_LUA,
]);
/** By algorithm: consume.lua's answers to consumes of one policy each, without its general machinery. */
const leanScripts: Readonly<Record<string, LuaScript<number[]> | undefined>> = {
  f: LuaScript.fromFile<number[]>('rtk_rl_consume_fixed_window', 'rate-limit/consume-fixed-window.lua', 2, [
    READ_COUNTER_LUA,
    EACH_CONSUME_LUA,
  ]),
  // no prelude: the token bucket's read and loop are written out in it (see there why)
  t: LuaScript.fromFile<number[]>('rtk_rl_consume_token_bucket', 'rate-limit/consume-token-bucket.lua', 2),
  s: LuaScript.fromFile<number[]>('rtk_rl_consume_sliding_window', 'rate-limit/consume-sliding-window.lua', 2, [
    SLIDING_LOG_LUA,
    EACH_CONSUME_LUA,
  ]),
};

/** The lean script of a decision that is one consume ('c1') of one policy (its first letter names the algorithm). */
function leanScriptOf(d: Decision): LuaScript<number[]> | undefined {
  const spec = d.args[1];
  if (d.args[0] !== 'c1' || d.keys.length !== 2 || typeof spec !== 'string') return undefined;
  return spec[1] === ':' ? leanScripts[spec[0]] : undefined;
}

/**
 * Decisions made in the same tick go to Redis as one script call (single server and Sentinel): when every one of them
 * is one consume of one policy, and all of one algorithm, that algorithm's lean script (consume-fixed-window.lua,
 * consume-token-bucket.lua, consume-sliding-window.lua); else consume.lua. On a cluster, where the counters of
 * different clients live in different slots, each decision is its own call (its keys share one hash tag; the lean
 * script where it fits, else consume.lua) and the decisions of a tick go as one pipeline per master node
 * (cluster-batch.ts). Either way each decision is all-or-nothing and atomic, and decisions on one counter run in the
 * order they were made.
 */
export class DecisionBatcher {
  private readonly batcher: TickBatcher<Decision, number[]>;

  constructor(private readonly connection: RedisConnection) {
    const client = this.connection.client;
    // A call of one decision (a lone decision of a tick; every decision on a cluster): a lone consume of one policy
    // goes to its algorithm's lean script, which costs Redis a little over half as much per call (fixed window, token
    // bucket) or about three quarters (sliding window, whose sorted-set commands weigh more).
    const one = (d: Decision) =>
      (leanScriptOf(d) ?? consumeScript.withNumberOfKeys(d.keys.length)).run(client, d.keys, d.args);
    if (client instanceof Cluster) {
      this.batcher = new TickBatcher<Decision, number[]>(
        perNodeSender(client, {
          keyOf: (d) => d.keys[0],
          command: (d) => (leanScriptOf(d) ?? consumeScript).command(d.keys, d.args),
          reply: (raw) => raw as number[],
          one,
        }),
        MAX_DECISIONS_PER_CALL * CLUSTER_SLICE,
      );
      return;
    }
    this.batcher = new TickBatcher<Decision, number[]>(
      {
        one,
        many: async (decisions) => {
          // plain loops: flatMap and map cost more than the rest of this function (cpu profile, 50 callers)
          const keys: string[] = [];
          const args: ScriptArg[] = [];
          for (const d of decisions) {
            for (const k of d.keys) keys.push(k);
            for (const a of d.args) args.push(a);
          }
          // a tick of lone consumes of one algorithm (the guard's usual traffic) goes to its lean script whole
          let script = leanScriptOf(decisions[0]) ?? consumeScript;
          for (let i = 1; script !== consumeScript && i < decisions.length; i++) {
            if (leanScriptOf(decisions[i]) !== script) script = consumeScript;
          }
          const raw = await script.runWithAnyKeys(this.connection.client, keys, args);
          // each decision's part of the reply: allAllowed, then 4 values per policy (2 keys per policy)
          const parts: number[][] = [];
          let at = 0;
          for (const d of decisions) parts.push(raw.slice(at, (at += 1 + 2 * d.keys.length)));
          return parts;
        },
      },
      MAX_DECISIONS_PER_CALL,
    );
  }

  /**
   * Runs one decision: its keys (2 per policy), and its ARGV (its head, e.g. 'c1', then one value per policy). Resolves
   * with that decision's part of the reply: allAllowed, then 4 values per policy.
   */
  run(keys: readonly string[], args: readonly ScriptArg[]): Promise<number[]> {
    return this.batcher.add({ keys, args });
  }
}
