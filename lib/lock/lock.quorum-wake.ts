import type { LockKeys } from './lock.backend.js';
import type { QuorumCalls } from './lock.quorum.js';
import { WAKE } from './lock.scripts.js';

/** A node's release: released, but every waiting service it popped no longer listened there (release-many.lua). */
const RELEASED_UNHEARD = 2;

/** The first node but `skip` that takes part and whose connection is up; -1 when none. */
export function firstNodeUp(quorum: QuorumCalls, skip = -1): number {
  const { clients } = quorum;
  for (let i = 0; i < clients.length; i++) {
    if (i !== skip && clients[i].status === 'ready' && quorum.leftOut(i) === undefined) return i;
  }
  return -1;
}

/**
 * On a quorum one node's release wakes the oldest waiting service: the first that takes part and whose connection is
 * up (firstNodeUp; the others release without waking, so the service is told once). `release` is that node's release
 * call. When it wakes nobody who waits - it fails (the node down, paused or slower than commandTimeout), finds the lock
 * not held there, or every waiting service it popped no longer listens there (its subscriber lost) - the next node
 * that is up wakes its oldest waiting service instead, unless the lock is held again there (wake.lua). So a minority
 * of nodes lost costs the waiters no poll, and a release whose first node wakes sends nothing more (its cost: this
 * `then` on one node's call). Returns the call, read as a plain release (1) when it reached nobody listening.
 * `channel`: the wake channel prefix; `tries`: see release-many.lua.
 */
export function wakingRelease(
  quorum: QuorumCalls,
  node: number,
  release: Promise<number>,
  keys: LockKeys,
  token: string,
  channel: string,
  tries: number,
): Promise<number> {
  const wakeElsewhere = (): void => {
    // After the lock calls of the turn are sent (SharedTurn, on setImmediate too), so the other node's release of this
    // lock goes first: a wake ahead of it would find the lock still held there and wake nobody.
    setImmediate(() => {
      const other = firstNodeUp(quorum, node);
      if (other < 0) return;
      // best effort: lost, it costs the waiters a poll, as a lost wake does
      WAKE.run(quorum.clients[other], [keys.lock, keys.waiters], [channel, token, tries]).catch(() => undefined);
    });
  };
  return release.then(
    (result) => {
      if (result === 1) return result;
      wakeElsewhere();
      return result === RELEASED_UNHEARD ? 1 : result;
    },
    (err: unknown) => {
      wakeElsewhere();
      throw err;
    },
  );
}
