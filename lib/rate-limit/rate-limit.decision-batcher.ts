import type { LuaScript, ScriptArg } from '../common/lua-script.js';
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

/**
 * Decisions made in the same tick go to Redis as one call of consume.lua (single server and Sentinel; on a cluster
 * the counters of different clients live in different slots, so each decision is its own call). Each decision is
 * still all-or-nothing and atomic; the call runs them one after the other at one instant.
 */
export class DecisionBatcher {
  private readonly batcher: TickBatcher<Decision, number[]>;

  constructor(
    private readonly connection: RedisConnection,
    private readonly script: LuaScript<number[]>,
  ) {
    this.batcher = new TickBatcher<Decision, number[]>(
      {
        one: (d) => this.script.withNumberOfKeys(d.keys.length).run(this.connection.client, d.keys, d.args),
        many: async (decisions) => {
          const raw = await this.script.runWithAnyKeys(
            this.connection.client,
            decisions.flatMap((d) => d.keys),
            decisions.flatMap((d) => d.args),
          );
          // each decision's part of the reply: allAllowed, then 4 values per policy (ARGV[2] is the policy count)
          let at = 0;
          return decisions.map((d) => raw.slice(at, (at += 1 + 4 * Number(d.args[1]))));
        },
      },
      MAX_DECISIONS_PER_CALL,
    );
  }

  /**
   * Runs one decision: its keys (2 per policy), and its ARGV (mode, number of policies, 6 values per policy). Resolves
   * with that decision's part of the reply: allAllowed, then 4 values per policy.
   */
  run(keys: readonly string[], args: readonly ScriptArg[]): Promise<number[]> {
    if (this.connection.isCluster)
      return this.script.withNumberOfKeys(keys.length).run(this.connection.client, keys, args);
    return this.batcher.add({ keys, args });
  }
}
