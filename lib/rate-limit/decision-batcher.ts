import type { LuaScript, ScriptArg } from '../common/lua-script.js';
import type { RedisConnection } from '../connection/redis-connection.js';

/**
 * At most this many decisions in one script call; a tick with more sends several calls. A few per call, not all:
 * with several calls in flight Redis runs one while this process prepares the next, where one call holding every
 * waiting decision makes them take turns (50 concurrent callers on 2 cores: fixed window 94k decisions/s with no
 * cap, 150-165k/s with a cap of 8 to 24, 100k/s unbatched).
 */
export const MAX_DECISIONS_PER_CALL = 16;

interface PendingDecision {
  keys: readonly string[];
  args: readonly ScriptArg[];
  resolve: (raw: number[]) => void;
  reject: (err: unknown) => void;
}

/**
 * Decisions made in the same tick go to Redis as one call of consume.lua (single server and Sentinel; on a cluster
 * the counters of different clients live in different slots, so each decision is its own call). Each decision is
 * still all-or-nothing and atomic; the call runs them one after the other at one instant. One command, one socket
 * write and one script dispatch for many decisions is where the throughput under concurrency comes from, the same
 * way the cache batches GETs of one tick into an MGET.
 */
export class DecisionBatcher {
  private pending: PendingDecision[] = [];
  private scheduled = false;

  constructor(
    private readonly connection: RedisConnection,
    private readonly script: LuaScript<number[]>,
  ) {}

  /**
   * Runs one decision: its keys, and its ARGV (mode, number of policies, 5 values per policy). Resolves with that
   * decision's part of the reply: allAllowed, then 4 values per policy.
   */
  run(keys: readonly string[], args: readonly ScriptArg[]): Promise<number[]> {
    if (this.connection.isCluster) return this.script.withNumberOfKeys(keys.length).run(this.connection.client, keys, args);
    return new Promise((resolve, reject) => {
      if (this.pending.length >= MAX_DECISIONS_PER_CALL) this.flush();
      this.pending.push({ keys, args, resolve, reject });
      if (!this.scheduled) {
        this.scheduled = true;
        process.nextTick(() => {
          this.scheduled = false;
          this.flush();
        });
      }
    });
  }

  private flush(): void {
    const batch = this.pending;
    if (batch.length === 0) return;
    this.pending = [];
    const client = this.connection.client;
    if (batch.length === 1) {
      const [only] = batch;
      this.script.withNumberOfKeys(only.keys.length).run(client, only.keys, only.args).then(only.resolve, only.reject);
      return;
    }
    const keys: string[] = [];
    const args: ScriptArg[] = [];
    for (const d of batch) {
      keys.push(...d.keys);
      args.push(...d.args);
    }
    this.script.runWithAnyKeys(client, keys, args).then(
      (raw) => {
        let at = 0;
        for (const d of batch) {
          const size = 1 + 4 * d.keys.length;
          d.resolve(raw.slice(at, at + size));
          at += size;
        }
      },
      (err: unknown) => {
        for (const d of batch) d.reject(err);
      },
    );
  }
}
