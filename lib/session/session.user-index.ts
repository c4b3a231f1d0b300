import { FEATURES, type KeyBuilder } from '../common/keys.js';
import { LuaScript, type RedisClient } from '../common/lua-script.js';

/** How many ids of a user's index are checked for liveness on each write (a random sample; all when fewer). */
const PRUNE_SAMPLE = 32;
/**
 * How long an id added to a user's index is protected from pruning while its session is being written (the write
 * follows at once; this only has to outlast a slow round trip, with a wide margin).
 */
const PENDING_MS = 60_000;

const indexAddScript = LuaScript.fromFile<number>('rtk_sess_index_add', 'session/session-index-add.lua', 2);
const indexSampleScript = LuaScript.fromFile<string[]>('rtk_sess_index_sample', 'session/session-index-sample.lua', 2);

/**
 * Each user's index of session ids (`<prefix>sess:user:{<userId>}`, a sorted set scored by each session's absolute
 * deadline) and its pending set (`…:new`), both in the user's own slot, maintained with separate commands from the
 * sessions themselves (which live in other slots).
 */
export class SessionUserIndex {
  constructor(
    private readonly client: RedisClient,
    private readonly keys: KeyBuilder,
    /** Whether each session exists (the sessions' side, for pruning). */
    private readonly existing: (ids: string[]) => Promise<boolean[]>,
  ) {}

  indexKey(userId: string): string {
    return this.keys.tagged(FEATURES.sessionUserIndex, userId);
  }

  /** The ids of the user's index whose session may still be being written (same slot as the index). */
  pendingKey(userId: string): string {
    return this.keys.tagged(FEATURES.sessionUserIndex, userId, ':new');
  }

  /**
   * Adds `id` to the user's index — BEFORE its session is written, so that destroyAllForUser (which reads the index)
   * never misses a session that exists — and prunes the index: ids past their absolute deadline go in the same
   * script; with `prune`, a random sample of the other ids is checked first (EXISTS, one command per id,
   * concurrently: they live in other slots) and the dead ones go too, unless added in the last PENDING_MS (their
   * session may still be on its way), so dead ids never pile up and a write costs a bounded amount of work.
   */
  async add(userId: string, id: string, deadline: number, prune: boolean): Promise<void> {
    const dead = prune ? await this.deadSample(userId, id) : [];
    await this.runIndexScript(userId, id, deadline, dead);
  }

  /** The session of `id` is written: pruning may drop the id again once it dies (see add). */
  async settled(userId: string, id: string): Promise<void> {
    await this.client.zrem(this.pendingKey(userId), id);
  }

  /**
   * Removes ids found dead from the user's index. Only ids that were not pending when found dead may be passed (an id
   * settles once its session is written, so one pending then may be alive now); pending ones stay anyway.
   */
  async prune(userId: string, dead: string[]): Promise<void> {
    if (dead.length > 0) await this.runIndexScript(userId, '', 0, dead);
  }

  /** Removes ids whose session was destroyed (with a tombstone, so they can never be written again). */
  async remove(userId: string, ids: string[]): Promise<void> {
    if (ids.length > 0) await this.client.zrem(this.indexKey(userId), ...ids);
  }

  /** Ids in the user's index whose absolute deadline has not passed (some may have expired idle or been destroyed). */
  async ids(userId: string, now = Date.now()): Promise<string[]> {
    return this.client.zrangebyscore(this.indexKey(userId), now, '+inf');
  }

  /**
   * Every id in the user's index, and which of them are still pending (their session may not be written yet: not dead
   * when missing), read together (one MULTI on the user's slot). Those past their deadline too: this process's clock
   * may run ahead of Redis's, which judges the deadline when each is read (session.deadline.ts); the dead are pruned.
   */
  async idsWithPending(userId: string): Promise<{ ids: string[]; pending: Set<string> }> {
    const replies = await this.client
      .multi()
      .zrangebyscore(this.indexKey(userId), '-inf', '+inf')
      .zrange(this.pendingKey(userId), '0', '-1')
      .exec();
    const [[idsErr, ids], [pendingErr, pending]] = (replies ?? [[new Error('transaction aborted'), null], []]) as [
      [Error | null, string[]],
      [Error | null, string[]],
    ];
    if (idsErr) throw idsErr;
    if (pendingErr) throw pendingErr;
    return { ids, pending: new Set(pending) };
  }

  private async deadSample(userId: string, except: string): Promise<string[]> {
    const keys = [this.indexKey(userId), this.pendingKey(userId)];
    const ids = (await indexSampleScript.run(this.client, keys, [PRUNE_SAMPLE])).filter((other) => other !== except);
    const alive = await this.existing(ids);
    return ids.filter((_, i) => !alive[i]);
  }

  private async runIndexScript(userId: string, id: string, deadline: number, dead: string[]): Promise<void> {
    await indexAddScript.run(
      this.client,
      [this.indexKey(userId), this.pendingKey(userId)],
      [Date.now(), PENDING_MS, id, deadline, ...dead],
    );
  }
}
