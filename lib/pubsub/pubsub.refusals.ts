import type { Logger } from '@nestjs/common';
import type { Redis } from 'ioredis';
import { RedisPermissionError, RedisReplyError } from '../common/errors.js';
import { classifyRedisError, replyCodeOf } from '../common/failure-policy.js';

/** What a subscription looks like to the check after a reconnect. */
export interface RestorableSubscription {
  readonly name: string;
  readonly pattern: boolean;
  /** Redis confirmed its (P|S)SUBSCRIBE once (a pending or in-flight one is not checked). */
  made: boolean;
}

/** Called with the name and the typed refusal of a subscription Redis refused after it was made (or left pending). */
export type DroppedListener = (name: string, error: RedisReplyError) => void;

/** Redis answered with an error (an ioredis reply error, or the typed one made of it): no transport failure. */
export const answered = (err: unknown): boolean => err instanceof RedisReplyError || replyCodeOf(err) !== undefined;

/**
 * The typed error of a (P|S)SUBSCRIBE Redis answered with an error, naming the command, the Redis channel or pattern
 * and, for an ACL denial, the rule that grants it: Redis 7 checks a PSUBSCRIBE pattern literally against the user's
 * channel rules, so `&rtk:*` does not cover `rtk:ps:news:*`. A transport failure is returned unchanged (the caller's
 * failure policy classifies it).
 */
export function subscribeRefused(err: unknown, command: string, redisName: string, name: string): unknown {
  if (replyCodeOf(err) === undefined) return err;
  const what = `pub/sub ${command.toUpperCase()} ${redisName} (subscribe to ${name})`;
  const reason = (err as Error).message;
  // LOADING, MASTERDOWN...: RedisUnavailableError, as for any other call
  const typed = classifyRedisError(err, what);
  if (!(typed instanceof RedisPermissionError)) return typed;
  const literally =
    command === 'psubscribe'
      ? ' Redis checks a pattern literally against the channel rules (`&<prefix>*` does not cover it): grant this one'
      : ' Grant it';
  return new RedisPermissionError(
    `${what} was refused by the ACL: ${reason}.${literally}, e.g. \`ACL SETUSER <user> +${command} &${redisName}\`` +
      `${command === 'psubscribe' ? ' (or allchannels)' : ''}; docs/security.md.`,
    'NOPERM',
    { cause: err },
  );
}

/** The channels and patterns a subscriber connection has in effect (ioredis's record of confirmed subscriptions). */
function inEffect(connections: Redis[]): { subscribe: Set<string>; psubscribe: Set<string> } {
  const subscribe = new Set<string>();
  const psubscribe = new Set<string>();
  for (const c of connections) {
    const set = c.condition?.subscriber;
    if (!set) continue;
    for (const name of set.channels('subscribe')) subscribe.add(name);
    for (const name of set.channels('psubscribe')) psubscribe.add(name);
  }
  return { subscribe, psubscribe };
}

/**
 * Subscriptions Redis refused after they were made: ioredis re-sends every SUBSCRIBE and every PSUBSCRIBE in one
 * command after a reconnect, and the ACL may refuse one (tightened meanwhile: Redis 7 even cuts the subscriber
 * connection whose channels a new rule no longer allows). Redis then refuses that whole command and nothing reported
 * it (ioredis leaves the promise of a single server's re-sent command to resetOnCommandTimeout's handler, and catches a
 * cluster's): every pattern (or channel) of it was dead, its handlers still registered. So after a reconnect,
 * once the re-sent subscriptions are answered, each one made before and not in effect now is sent again on its own:
 * those Redis still refuses are dropped (`drop`), the others are restored. A pending one (lazyConnect) that Redis
 * refuses once it is reachable is dropped the same way instead of being tried again each second.
 *
 * Dropped rather than kept: an ACL refusal is a verdict, not an outage. Re-sending it at each reconnect cannot
 * succeed until the ACL changes, and an ACL that is widened causes no reconnect, so a kept subscription stayed dead
 * while its owner believed it alive. A dropped one is logged once as an error naming the command, the pattern and
 * the rule that grants it, and its owner is told (PubSubService.onSubscriptionDropped), who may subscribe again.
 */
export class RefusedSubscriptions<S extends RestorableSubscription> {
  private readonly listeners = new Set<DroppedListener>();
  private restoring: Promise<void> = Promise.resolve();

  constructor(
    private readonly logger: Logger,
    /** The service's subscriptions with handlers, by name. */
    private readonly subscriptions: Map<string, S>,
    private readonly sub: {
      /** Its channel or pattern as Redis knows it (with the prefix). */
      redisName: (sub: S) => string;
      /** Sends the (P)SUBSCRIBE of `name` again, if it is still wanted; rejects with the typed error. */
      subscribeAgain: (name: string) => Promise<void>;
      /** Counts a reply error in the service's stats. */
      count: () => void;
    },
  ) {}

  onDropped(listener: DroppedListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** After a reconnect of the classic subscriber, once every connection answered a PING; never rejects. */
  restore(connections: Redis[]): Promise<void> {
    this.restoring = this.restoring.then(() => this.restoreNow(connections));
    return this.restoring;
  }

  private async restoreNow(connections: Redis[]): Promise<void> {
    const effect = inEffect(connections);
    for (const sub of [...this.subscriptions.values()]) {
      if (!sub.made || (sub.pattern ? effect.psubscribe : effect.subscribe).has(this.sub.redisName(sub))) continue;
      try {
        await this.sub.subscribeAgain(sub.name);
      } catch (err) {
        if (err instanceof RedisReplyError) this.drop(sub, err);
        // A transport failure drops the connection (resetOnCommandTimeout): checked again after the next reconnect.
        else this.logger.warn(`pub/sub: restoring the subscription to ${sub.name} failed: ${(err as Error).message}`);
      }
    }
  }

  /** Redis refused the subscription `name` after its subscribe resolved: dropped, logged once, listeners told. */
  dropNamed(name: string, err: RedisReplyError): void {
    const sub = this.subscriptions.get(name);
    if (sub) this.drop(sub, err);
  }

  private drop(sub: S, err: RedisReplyError): void {
    if (this.subscriptions.get(sub.name) !== sub) return;
    this.subscriptions.delete(sub.name);
    this.sub.count();
    this.logger.error(
      `${err.message} The subscription to ${sub.name} is dropped: its handlers receive nothing more (subscribe ` +
        'again once the ACL allows it).',
    );
    for (const listener of this.listeners) {
      try {
        listener(sub.name, err);
      } catch (thrown) {
        this.logger.error(`a subscription-dropped listener threw: ${(thrown as Error).message}`);
      }
    }
  }
}
