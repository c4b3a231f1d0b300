import { Cluster, Command } from 'ioredis';
import { CLUSTER_SLICE, perNodeSender } from '../common/cluster-batch.js';
import { budgetedSender } from '../common/budgeted-reads.js';
import { getBatcher } from '../common/get-batcher.js';
import { LuaScript, type RedisClient, type ScriptArg } from '../common/lua-script.js';
import { replyBudgetOf } from '../common/reply-budget.js';
import { TickBatcher } from '../common/tick-batcher.js';
import { IDLE_EXPIRY } from './session.deadline.js';
import { READS_UNDER_BUDGET, readMany } from './session.read-many.js';

/** What both write scripts put in front: whether a key still holds the value a caller read (session.stamp.ts). */
const HOLDS = 'session/session-holds.lua';

/** Reads (and compare-and-set writes) per command, per pipeline on a cluster; a tick with more sends several. */
export const PER_CALL = 32;

/** A touching read: the session key and the ttl its GETEX sets. */
export type TouchRead = [key: string, ttl: number];
/**
 * Written: the key's expiry (epoch ms by Redis's clock; 0: none); changed meanwhile: the current value (null when
 * gone, and when the deadline has come by Redis's clock: then nothing was written and the key is deleted, as Redis
 * expires it), or CAS_CHANGED under a reply budget; tombstoned: -1.
 */
export type CasReply = number | string | null;
/**
 * A compare-and-set's "changed meanwhile" under a reply budget (reply-budget.ts): the session's value is not in the
 * reply, the caller reads it under the budget (session.single-reads.ts). The writes of one turn go in one script call:
 * each conflict answering its session whole put several sessions in one reply, past the server's limit.
 */
export const CAS_CHANGED = -2;
/** A change's "the value now" under a reply budget (the first of its ChangeReply): read it (as CAS_CHANGED). */
export const CHANGE_CHANGED = -3;
/** The last argument of a write script's call under a reply budget: answer CAS_CHANGED / CHANGE_CHANGED, no value. */
const LEAN = 'lean';
/**
 * A compare-and-set write: session key, tombstone key, expected value (or its stamp), new value, expiry (the idle ttl
 * in ms, timed by Redis's clock; 'keep' the key's; 'none') and the session's deadline (epoch ms), which caps it.
 */
export type CasWrite = [
  key: string,
  tombstone: string,
  expected: string,
  value: string,
  expiry: number | 'keep' | 'none',
  deadline: number,
];

/**
 * An update appended to a session (session-change.lua): session key, the byte length of the value the caller knows,
 * the change text, the expiry (the idle ttl in ms, timed by Redis's clock; 'keep'; 'skip'), the session's deadline
 * (epoch ms, which caps it), and '' or what the caller expects of the known value
 * (session.stamp.ts's expectedOf), a space and the whole merged session, to write instead when the session is still
 * that value.
 */
export type ChangeWrite = [
  key: string,
  length: number,
  change: string,
  expiry: number | 'keep' | 'skip',
  deadline: number,
  whole: string,
];
/**
 * Written, the value before as long as the known one: [its new length, the expiry]; written over another value: [the
 * value now, the expiry]; gone: [null, 0] (also when a write that times the expiry finds the deadline come by Redis's
 * clock: the key is deleted); over the size limit, nothing kept: [-2, 0]; under a reply budget, [CHANGE_CHANGED, the
 * expiry] where the value now would be (the caller reads it). The expiry: epoch ms by Redis's clock, 0 none, -1 with
 * 'skip'.
 */
export type ChangeReply = [result: number | string | null, expiresAt: number];

const changeScript = LuaScript.fromFile<(number | string | null | Error)[]>(
  'rtk_sess_change',
  'session/session-change.lua',
  1,
  [HOLDS, IDLE_EXPIRY],
);

/** One reply per write: its CasReply, or its own error reply (the other writes of the call are unaffected). */
const compareAndSetScript = LuaScript.fromFile<(CasReply | Error)[]>(
  'rtk_sess_compare_and_set',
  'session/session-compare-and-set.lua',
  2,
  [HOLDS, IDLE_EXPIRY],
);

/**
 * The touching reads of one tick: one script call of GETEXs on a single server (ioredis costs this process far more
 * per command than the script costs Redis, see readMany), one pipeline of GETEXs per master on a cluster. Under a
 * server's `client-output-buffer-limit normal`, the values in flight on the connection stay under its bound, shared
 * with the cache's reads on it (budgetedSender, READS_UNDER_BUDGET): one script call per read on a cluster then.
 */
export function touchReadBatcher(client: RedisClient): TickBatcher<TouchRead, string | null | Error> {
  const one = ([key, ttl]: TouchRead) => client.getex(key, 'PX', ttl);
  const budget = replyBudgetOf(client);
  if (client instanceof Cluster)
    return new TickBatcher(
      budgetedSender(
        client,
        budget,
        perNodeSender<TouchRead, string | null | Error>(client, {
          keyOf: ([key]) => key,
          command: ([key, ttl]) => new Command('getex', [key, 'PX', ttl], { replyEncoding: 'utf8' }),
          reply: (raw) => raw as string | null,
          one,
        }),
        READS_UNDER_BUDGET,
      ),
      PER_CALL * CLUSTER_SLICE,
    );
  const plain = { one, many: (reads: TouchRead[]) => readMany(client, reads) };
  return new TickBatcher(budgetedSender(client, budget, plain, READS_UNDER_BUDGET), PER_CALL);
}

/**
 * The plain (not touching) reads of one tick, for `touchAfter`: one MGET on a single server (a native command: no
 * script overhead in Redis), one pipeline of GETs per master on a cluster. MGET answers nil for a key holding another
 * type, where GET answers WRONGTYPE: the caller reads a nil again with a touching read, which tells them apart.
 */
export const plainReadBatcher = (client: RedisClient): TickBatcher<string, string | null> =>
  getBatcher(client, PER_CALL);

/**
 * The compare-and-set writes of one tick, as the reads: one script call for all of them on a single server (one
 * command, promise and timer in ioredis instead of one per write, and one script call's overhead in Redis; the keys
 * lie in different slots), one pipeline of calls per master on a cluster.
 */
export function compareAndSetBatcher(client: RedisClient): TickBatcher<CasWrite, CasReply | Error> {
  const budget = replyBudgetOf(client);
  const lean = (args: ScriptArg[]) => (budget.bound > 0 ? [...args, LEAN] : args);
  const one = async ([key, tombstone, ...args]: CasWrite) =>
    (await compareAndSetScript.run(client, [key, tombstone], lean(args)))[0];
  if (client instanceof Cluster)
    return new TickBatcher(
      perNodeSender<CasWrite, CasReply | Error>(client, {
        keyOf: ([key]) => key,
        command: ([key, tombstone, ...args]) => compareAndSetScript.command([key, tombstone], lean(args)),
        reply: (raw) => (raw as (CasReply | Error)[])[0],
        one,
      }),
      PER_CALL * CLUSTER_SLICE,
    );
  return new TickBatcher(
    {
      one,
      many: (writes) => {
        // indexed pushes: a rest element and a spread per write allocated an array each and took V8's generic path
        const keys: string[] = [];
        const args: ScriptArg[] = [];
        for (let i = 0; i < writes.length; i++) {
          const w = writes[i];
          keys.push(w[0], w[1]);
          args.push(w[2], w[3], w[4], w[5]);
        }
        if (budget.bound > 0) args.push(LEAN);
        return compareAndSetScript.runWithAnyKeys(client, keys, args);
      },
    },
    PER_CALL,
  );
}

/**
 * The updates of one tick appended as the compare-and-sets are written: one script call on a single server (up to
 * PER_CALL), one pipeline of calls per master on a cluster. `maxSize`: the largest value the script lets a change make
 * (the size bound as the call is sent: the server's reply limit may lower it after start).
 */
export function changeBatcher(
  client: RedisClient,
  maxSize: () => number,
): TickBatcher<ChangeWrite, ChangeReply | Error> {
  const pair = (flat: (number | string | null | Error)[], i: number): ChangeReply | Error => {
    const first = flat[2 * i];
    return first instanceof Error ? first : [first, Number(flat[2 * i + 1])];
  };
  const budget = replyBudgetOf(client);
  const lean = (args: ScriptArg[]) => (budget.bound > 0 ? [...args, LEAN] : args);
  const one = async ([key, ...args]: ChangeWrite) =>
    pair(await changeScript.run(client, [key], lean([maxSize(), ...args])), 0);
  if (client instanceof Cluster)
    return new TickBatcher(
      perNodeSender<ChangeWrite, ChangeReply | Error>(client, {
        keyOf: ([key]) => key,
        command: ([key, ...args]) => changeScript.command([key], lean([maxSize(), ...args])),
        reply: (raw) => pair(raw as (number | string | null | Error)[], 0),
        one,
      }),
      PER_CALL * CLUSTER_SLICE,
    );
  return new TickBatcher(
    {
      one,
      many: async (writes) => {
        const keys: string[] = [];
        const args: ScriptArg[] = [maxSize()];
        for (let i = 0; i < writes.length; i++) {
          const w = writes[i];
          keys.push(w[0]);
          args.push(w[1], w[2], w[3], w[4], w[5]);
        }
        if (budget.bound > 0) args.push(LEAN);
        const flat = await changeScript.runWithAnyKeys(client, keys, args);
        const replies = new Array<ChangeReply | Error>(writes.length);
        for (let i = 0; i < writes.length; i++) replies[i] = pair(flat, i);
        return replies;
      },
    },
    PER_CALL,
  );
}
