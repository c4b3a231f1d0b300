import type { LockKeys, WaitingChannels } from './lock.backend.js';
import type { QuorumCalls } from './lock.quorum.js';
import { WAKE } from './lock.scripts.js';
import type { LockFailures } from './lock.shutdown.js';
import { setImmediate } from '../common/real-timers.js';

/** A node's release: released, but every waiting service it popped no longer listened there (release-many.lua). */
const RELEASED_UNHEARD = 2;
/**
 * A release's answer (release-many.lua; wake.lua's too): the lock was released, but Redis refused the PUBLISH of its
 * grant or wake (an ACL without +publish or without the lock's channels, e.g. `ACL SETUSER app -publish` at run
 * time). The release resolves; the refusal is reported (LockFailures.publishRefused).
 */
export const RELEASED_UNPUBLISHED = 3;

/** The first node but `skip` that takes part and whose connection is up; -1 when none. */
export function firstNodeUp(quorum: QuorumCalls, skip = -1): number {
  const { clients } = quorum;
  for (let i = 0; i < clients.length; i++) {
    if (i !== skip && clients[i].status === 'ready' && quorum.leftOut(i) === undefined) return i;
  }
  return -1;
}

/** Where a quorum release wakes (see wakingRelease). */
export interface QuorumWake {
  readonly channels: WaitingChannels;
  /** How many waiting services a node may try (see release-many.lua). */
  readonly tries: number;
  /** Told of each node whose PUBLISH Redis refused (the release still counts there). */
  readonly failures: LockFailures;
}

/**
 * On a quorum one node's release wakes the oldest waiting service: the first that takes part and whose connection is
 * up (firstNodeUp; the others release without waking, so the service is told once). `release` is that node's release
 * call. When it wakes nobody who waits - it fails (the node down, paused or slower than commandTimeout), finds the lock
 * not held there, every waiting service it popped no longer listens there (its subscriber lost), or Redis refused its
 * PUBLISH there - the next node that is up wakes its oldest waiting service instead, unless the lock is held again
 * there (wake.lua). So a minority of nodes lost costs the waiters no poll, and a release whose first node wakes sends
 * nothing more (its cost: this `then` on one node's call). A PUBLISH refused on either node is reported
 * (LockFailures.publishRefused, naming the node). Returns the call, read as a plain release (1) when it reached nobody
 * listening or its PUBLISH was refused (the lock was released there all the same).
 */
export function wakingRelease(
  quorum: QuorumCalls,
  node: number,
  release: Promise<number>,
  keys: LockKeys,
  token: string,
  wake: QuorumWake,
): Promise<number> {
  const refused = (i: number) => wake.failures.publishRefused(keys.resource, wake.channels, quorum.clients[i]);
  const wakeElsewhere = (): void => {
    // After the lock calls of the turn are sent (SharedTurn, on setImmediate too), so the other node's release of this
    // lock goes first: a wake ahead of it would find the lock still held there and wake nobody.
    setImmediate(() => {
      const other = firstNodeUp(quorum, node);
      if (other < 0) return;
      // best effort: lost, it costs the waiters a poll, as a lost wake does (a refused PUBLISH is reported)
      const woken = quorum.toNode(other, (client) =>
        WAKE.run(client, [keys.lock, keys.waiters], [wake.channels.wake, token, wake.tries]),
      );
      woken.then(
        (woke) => woke === RELEASED_UNPUBLISHED && refused(other),
        () => undefined,
      );
    });
  };
  return release.then(
    (result) => {
      if (result === 1) return result;
      if (result === RELEASED_UNPUBLISHED) refused(node);
      wakeElsewhere();
      return result === RELEASED_UNHEARD || result === RELEASED_UNPUBLISHED ? 1 : result;
    },
    (err: unknown) => {
      wakeElsewhere();
      throw err;
    },
  );
}
