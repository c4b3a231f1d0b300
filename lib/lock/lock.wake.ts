import type { RedisClient } from '../common/lua-script.js';
import { FEATURES, KeyBuilder } from '../common/keys.js';
import { newToken } from './lock.attempts.js';
import type { WaitingChannels } from './lock.backend.js';
import { PendingLeaves } from './lock.pending-leaves.js';
import type { LocalWaiters } from './lock.waiters.js';

/** Per lock server (a quorum node, by index), whether the wake subscriber subscribes there: QuorumCalls. */
export interface SubscriberGates {
  /** Why node `node` is left out of every lock call; undefined while it takes part. */
  leftOut(node: number): Error | undefined;
  /** `listener` at the node's verdict (at once when it has one, or when no check is armed), see NodeCheck. */
  whenChecked(node: number, listener: () => void): void;
}

/** A fencing token as a grant carries it. */
const DIGITS = /^\d+$/;

/**
 * Wake-on-release across processes. Every LockService has an id and, from its first wait on, listens on its own
 * channels (`<prefix>ps:__rtk:lock:wake:<id>` and `...:grant:<id>`) on every lock server. A caller that finds a lock
 * held joins the lock's waiting services (a sorted set beside the lock, oldest first, one entry per service); a
 * release pops the oldest and either grants it the lock (one server: see LockGrants) or publishes 'token lock key' (the
 * released owner token) on its wake channel, so one waiting service gets the lock or tries again at once instead of at
 * its next poll (and services are served in the order they started waiting). On a quorum one node's release wakes,
 * and another's when that one cannot (lock.quorum-wake.ts): a wake of a release can then come twice (the first node's
 * release ran late, after a timeout), and the service takes the first (`repeated` counts the others). The poll stays:
 * a message lost on the way (the subscriber connection down, a service that stopped waiting) costs one poll pause, no
 * more.
 */
export class LockWakeups {
  /** This service's id among the waiting services (random, 128 bits). */
  readonly id = newToken();
  /** Every service's channels start with these; the scripts append the id. */
  readonly channels: WaitingChannels;
  /** Wakes and grants received since start (a release's wake once, however many quorum nodes sent it). */
  received = 0;
  /**
   * Wakes dropped since start: the same release's wake again, through another quorum node, while a caller here still
   * waits for the lock (once none does, nothing is kept of its wakes: a later one is counted in `received`).
   */
  repeated = 0;
  /** On a quorum (set by LockService): the subscriber of a node subscribes once it takes part, never where left out. */
  nodes: SubscriberGates | undefined;
  private subscribers: RedisClient[] | undefined;
  /**
   * Lock keys whose wake arrived while the attempt that queued for it was still in flight (its reply and the wake come
   * on different connections): that caller tries again at once instead of sleeping a poll pause.
   */
  private readonly early = new Set<string>();
  /**
   * Wake only (a cluster or a quorum): lock keys whose waiting services may hold this service's id, put there by a
   * busy attempt of an `acquire`, or by one whose reply was lost (see `attempted`, `failed`, `stopWaiting`).
   */
  private readonly joined = new Set<string>();
  /**
   * Wake only: taking the id out of locks' waiting services, again when Redis did not answer (by lock key; on a
   * quorum only on the nodes that did not answer, each once its connection is up: PendingLeaves).
   */
  private readonly leaving = new PendingLeaves<string>();
  /**
   * Per lock key a caller here waits for, the released token of the last wake taken: that release's wake through
   * another node is dropped. Emptied per key when its wait ends (forgetWakes).
   */
  private readonly woken = new Map<string, string>();
  /** Lock keys start with this (`<prefix>lock:{`): a wake that does (a release before 2026-12-04) has no token. */
  private readonly lockKeyHead: string;

  constructor(
    keys: KeyBuilder,
    /** Opens one subscriber connection per lock server (quit by the connection on shutdown). */
    private readonly open: () => RedisClient[],
    /**
     * The service's callers waiting for a lock (a wake goes to the oldest), or asking Redis for it (an `acquire`'s
     * attempt in flight takes a wake that comes).
     */
    private readonly waiters: LocalWaiters,
    /** A release granted this service the lock key for `token`, with fencing token `fence` (see LockGrants). */
    private readonly granted: (lockKey: string, token: string, fence: number) => void,
    private readonly warn: (message: string) => void,
  ) {
    this.channels = {
      wake: keys.channel(KeyBuilder.internalChannel(FEATURES.lock, 'wake:')),
      grant: keys.channel(KeyBuilder.internalChannel(FEATURES.lock, 'grant:')),
    };
    this.lockKeyHead = keys.tagHead(FEATURES.lock);
  }

  /** True (once) when a wake for `lockKey` arrived while its attempt was in flight: try again at once. */
  takeEarly(lockKey: string): boolean {
    return this.early.delete(lockKey);
  }

  /**
   * Wake only: an attempt with this service's id found the lock busy (`busy`: the id joined the lock's waiting
   * services, or was there already) or took it (the acquire script took the id out).
   */
  attempted(lockKey: string, busy: boolean): void {
    this.leaving.drop(lockKey); // waited for again (its entry is the wait's), or taken (the script took the id out)
    this.answered();
    if (!busy) {
      this.joined.delete(lockKey);
      // the attempt in flight counts as asking
      if (!this.waiters.first(lockKey) && this.waiters.askers(lockKey) <= 1) this.forgetWakes(lockKey);
      return;
    }
    this.join(lockKey);
  }

  /**
   * Wake only: an attempt with this service's id failed (Redis did not answer it, or refused it): its caller's wait is
   * over. The id may have joined the lock's waiting services though the reply was lost, so it leaves them as a
   * given-up wait does (`stopWaiting`; not while another caller here waits for the lock or asks for it). When Redis
   * does not answer that either, again at the service's next attempt it answers (`attempted`): else the next release
   * would wake this service, which wants nothing, and the real waiters would sleep until their next poll.
   */
  failed(lockKey: string, leave: () => Promise<void> | undefined): void {
    this.join(lockKey);
    // the failed attempt still counts as asking until its error reaches its caller
    if (this.waiters.first(lockKey) || this.waiters.askers(lockKey) > 1) return;
    this.joined.delete(lockKey);
    this.forgetWakes(lockKey);
    this.leaving.send(lockKey, leave);
  }

  /**
   * Wake only: a caller stopped waiting for the lock (it gave up, or a caller of this process handed it the lock).
   * When no caller of this service waits for it or asks Redis for it any more, its id leaves the lock's waiting
   * services (`leave`): a release then wakes a real waiter instead of this service, which wanted nothing (a wake it
   * would not use, and the waiters slept until their next poll).
   */
  stopWaiting(lockKey: string, leave: () => Promise<void> | undefined): void {
    if (this.waiters.first(lockKey) || this.waiters.isAsking(lockKey)) return;
    this.forgetWakes(lockKey);
    if (this.joined.delete(lockKey)) this.leaving.send(lockKey, leave);
  }

  /**
   * Nobody here waits for the lock or asks for it now: what was kept of its wakes goes (a wake that still comes finds
   * nobody to wake, and is not kept). Until 2026-12-06 the last wake's token stayed per lock key until 10,000 were
   * kept, so every contended resource left one behind (test/lock/lock.churn.spec.ts).
   */
  private forgetWakes(lockKey: string): void {
    this.woken.delete(lockKey);
    this.early.delete(lockKey);
  }

  /**
   * An attempt got an answer (`attempted`; or, wake only, one with no id: a `tryAcquire`, an `acquire`'s last): the ids
   * it could not take out before leave now, except where a caller here waits for the lock again (its wait's entry is
   * the same id, and its end takes it out).
   */
  answered(): void {
    this.leaving.retry(this.waitedFor);
  }

  /** Whether a caller here waits for, or asks for, the lock of `lockKey`. */
  private readonly waitedFor = (lockKey: string): boolean =>
    this.waiters.first(lockKey) !== undefined || this.waiters.isAsking(lockKey);

  private join(lockKey: string): void {
    if (this.joined.size >= 10_000) this.joined.clear(); // forgotten: an entry they leave costs the waiters a poll
    this.joined.add(lockKey);
  }

  get channel(): string {
    return this.channels.wake + this.id;
  }

  get grantChannel(): string {
    return this.channels.grant + this.id;
  }

  /**
   * Starts listening (once; a no-op after). Until the subscription is active, the releases find nobody listening on
   * this channel and wake the next waiting service instead: the callers of this one poll meanwhile. On a quorum, on
   * the nodes that take part only (`nodes`).
   */
  listen(): void {
    if (this.subscribers) return;
    this.subscribers = this.open();
    const { channel, grantChannel } = this;
    this.subscribers.forEach((subscriber, node) => {
      subscriber.on('message', (from: string, message: string) => {
        if (from === grantChannel) this.grant(message);
        else if (from === channel) this.wake(message);
      });
      // ioredis subscribes again by itself after a reconnect; 'ready' covers a connection that was not up yet.
      const subscribe = (): void => {
        subscriber.subscribe(channel, grantChannel).catch((err: unknown) => {
          this.warn(`lock wake-ups: subscribing failed, waiters poll until it succeeds: ${(err as Error).message}`);
        });
      };
      let started = false;
      const start = (): void => {
        if (this.nodes?.leftOut(node) !== undefined) {
          subscriber.off('ready', subscribe);
          subscriber.disconnect();
          return;
        }
        if (started) return;
        started = true;
        subscriber.on('ready', subscribe);
        if (subscriber.status === 'wait') subscriber.connect().catch(() => undefined);
        else if (subscriber.status === 'ready') subscribe();
      };
      // A quorum node left out by its check (a replica, a missing db, an ACL user without a lock command...) is sent
      // no lock call, so nothing is published to this service there: its subscriber is closed, and one whose node is
      // still to be checked (lazyConnect, or down at start) waits for the verdict unconnected. Else it was a
      // connection for nothing and, where the ACL denies SUBSCRIBE, a warning at each connect.
      if (this.nodes) this.nodes.whenChecked(node, start);
      else start();
    });
  }

  /**
   * 'token lock key' (release-many.lua, wake.lua): a release of the lock by the holder `token` woke this service.
   * Taken once per release while a caller here waits (on a quorum it may come through two nodes). The lock key alone (a
   * release before 2026-12-04) is taken too.
   */
  private wake(message: string): void {
    const space = message.startsWith(this.lockKeyHead) ? -1 : message.indexOf(' ');
    const lockKey = space > 0 ? message.slice(space + 1) : message;
    const token = space > 0 ? message.slice(0, space) : undefined;
    if (token !== undefined && this.woken.get(lockKey) === token) {
      this.repeated++;
      return;
    }
    this.received++;
    if (!this.waiters.wakeOne(lockKey)) {
      if (!this.waiters.isAsking(lockKey)) return; // nobody here wants it: nothing kept (see forgetWakes)
      if (this.early.size >= 10_000) this.early.clear();
      this.early.add(lockKey);
    }
    if (token === undefined) return;
    if (this.woken.size >= 10_000) this.woken.clear(); // forgotten: a repeated wake costs an attempt at most
    this.woken.set(lockKey, token);
  }

  /** 'fence token lock key' (release-many.lua); anything else on the channel is not ours and is reported. */
  private grant(message: string): void {
    const afterFence = message.indexOf(' ');
    const afterToken = message.indexOf(' ', afterFence + 1);
    const digits = message.slice(0, afterFence);
    const fence = Number(digits);
    // digits only: a token in e-notation ('1.796282276709e+15') was rounded by whoever wrote it
    if (afterFence < 1 || afterToken < 0 || !DIGITS.test(digits) || !Number.isSafeInteger(fence) || fence < 1) {
      this.warn(`lock wake-ups: a message on the grant channel is not a grant; ignored: ${message.slice(0, 200)}`);
      return;
    }
    this.received++;
    this.granted(message.slice(afterToken + 1), message.slice(afterFence + 1, afterToken), fence);
  }
}
