import { Inject, Injectable, Logger, type OnModuleDestroy } from '@nestjs/common';
import type { Cluster } from 'ioredis';
import { InvalidOptionsError, RedisUnavailableError } from '../common/errors.js';
import { FailurePolicy, itemReplyError } from '../common/failure-policy.js';
import { FEATURES, KeyBuilder } from '../common/keys.js';
import type { RedisClient } from '../common/lua-script.js';
import type { TickBatcher } from '../common/tick-batcher.js';
import { SERIALIZER, type Serializer } from '../common/serializer.js';
import { RedisConnection } from '../connection/redis-connection.js';
import { FEATURE_CONNECTION } from '../connection/redis-connections.js';
import { explainedFailure } from '../connection/redis-down-reason.js';
import { checkMessageSize, checkPublishChannel, checkReplayArgs } from './pubsub.checks.js';
import { PUBSUB_OPTIONS, type ResolvedPubSubOptions } from './pubsub.options.js';
import { SubscriberReconnects } from './pubsub.reconnects.js';
import { MessageEnvelopes } from './pubsub.envelope.js';
import { DurableStreams } from './pubsub.durable-streams.js';
import { Handlers, MessageDispatcher } from './pubsub.dispatch.js';
import { PendingSubscriptions } from './pubsub.pending.js';
import { tracedPublish } from './pubsub.traced-error.js';
import { StaleSubscriptions } from './pubsub.stale-subscriptions.js';
import { createPublishBatcher, type PublishItem } from './pubsub.publish-batcher.js';
import { answered, type DroppedListener, RefusedSubscriptions, subscribeRefused } from './pubsub.refusals.js';
import { openSubscriber, subscriberReady } from './pubsub.subscriber-connection.js';
import { isPattern, type MessageHandler, type ReplayedMessage, type Unsubscribe } from './pubsub.types.js';
import { diagnose } from '../common/diagnostics.js';
import { withTimeout } from '../common/timeout.js';

interface Subscription {
  readonly name: string;
  readonly pattern: boolean;
  readonly handlers: Handlers;
  /** Settles when Redis confirmed the (P|S)SUBSCRIBE; every concurrent first subscriber awaits the same one. */
  ready: Promise<void>;
  /** Redis confirmed it once: checked after each reconnect (RefusedSubscriptions). */
  made: boolean;
}

/**
 * Publish and subscribe through one dedicated subscriber connection per app instance. Redis subscriptions are
 * reference-counted: the first handler of a channel sends SUBSCRIBE, the last unsubscribe sends UNSUBSCRIBE.
 * A name containing `*`, `?` or `[` is a pattern subscription. Channels live under `<keyPrefix>ps:` so apps
 * sharing one Redis do not hear each other. ioredis resubscribes everything after a reconnect; messages published
 * while the subscriber is away are lost (use `durable` with notifyUser when that matters).
 */
@Injectable()
export class PubSubService implements OnModuleDestroy {
  private subscriber: RedisClient | undefined;
  private readonly subscriptions = new Map<string, Subscription>();
  private readonly logger = new Logger('RedisToolkit:PubSub');
  private readonly refused: RefusedSubscriptions<Subscription>;
  private readonly reconnects: SubscriberReconnects;
  private readonly failures: FailurePolicy;
  private readonly channelPrefix: string;
  private readonly patternPrefix: string;
  private readonly sharded: boolean;
  /** Publishes of one event-loop turn as one call (see createPublishBatcher). */
  private readonly publishes: TickBatcher<PublishItem, number | string>;
  private readonly envelopes = new MessageEnvelopes();
  private readonly streams: DurableStreams;
  private readonly dispatcher: MessageDispatcher;
  /** lazyConnect: subscriptions made once Redis is reachable (see PendingSubscriptions). */
  private readonly pending: PendingSubscriptions;
  private readonly stale = new StaleSubscriptions<Subscription>(
    (name) => this.subscriptions.has(name),
    (sub) => this.redisUnsubscribe(sub, true),
  );
  private closed = false;

  constructor(
    @Inject(FEATURE_CONNECTION.pubsub) private readonly connection: RedisConnection,
    @Inject(PUBSUB_OPTIONS) private readonly options: ResolvedPubSubOptions,
    @Inject(SERIALIZER) private readonly serializer: Serializer,
    private readonly keys: KeyBuilder,
  ) {
    this.failures = new FailurePolicy(connection, { feature: 'pub/sub', logger: this.logger });
    this.channelPrefix = keys.channel('');
    this.patternPrefix = KeyBuilder.globEscape(this.channelPrefix);
    this.sharded = connection.isCluster && options.cluster === 'sharded';
    this.refused = new RefusedSubscriptions(this.logger, this.subscriptions, {
      redisName: (sub) => (sub.pattern ? this.patternPrefix : this.channelPrefix) + sub.name,
      subscribeAgain: (name) => this.subscribeAgain(name),
      count: () => void this.failures.counts.replyErrors++,
    });
    // Sharded: no patterns there, and ioredis rebuilds the SSUBSCRIBE connections itself (SubscriberReconnects).
    this.reconnects = new SubscriberReconnects(this.logger, this.sharded ? undefined : (c) => this.refused.restore(c));
    this.streams = new DurableStreams(connection, serializer, this.logger);
    this.dispatcher = new MessageDispatcher(this.envelopes, serializer, this.logger, this.options.maxMessageBytes);
    this.pending = new PendingSubscriptions(
      connection.client,
      this.logger,
      (name) => this.subscribeAgain(name),
      () => this.reconnects.notify(),
      (name, err) => this.refused.dropNamed(name, err),
    );
    this.reconnects.add(() => void this.stale.undoAll());
    this.publishes = createPublishBatcher(connection, this.sharded, options.maxMessageBytes);
  }

  /** True when channels use SPUBLISH/SSUBSCRIBE (a cluster with `pubsub.cluster: 'sharded'`). */
  get isSharded(): boolean {
    return this.sharded;
  }

  /** pubsub.maxMessageBytes as resolved: the largest serialized payload publish sends. */
  get maxMessageBytes(): number {
    return this.options.maxMessageBytes;
  }

  /**
   * Calls `listener` each time the subscriber connection is back after a loss, its subscriptions restored: messages
   * published while it was away were lost. Single server, Sentinel and Cluster (classic: the subscriber connection
   * ioredis opens on another node; sharded: the subscriber connections it rebuilds; see SubscriberReconnects).
   * Returns the remover.
   */
  onResubscribed(listener: () => void): () => void {
    return this.reconnects.add(listener);
  }

  /**
   * Calls `listener(name, error)` when Redis refuses a subscription after `subscribe` resolved: its (P)SUBSCRIBE sent
   * again after a reconnect (the ACL was tightened meanwhile), or a pending one (lazyConnect) made once Redis is
   * reachable. The subscription is dropped (its handlers receive nothing more) and logged once as an error; `error` is
   * RedisPermissionError for an ACL denial, naming the command, the pattern and the rule that grants it. Returns the
   * remover.
   */
  onSubscriptionDropped(listener: DroppedListener): () => void {
    return this.refused.onDropped(listener);
  }

  /** Whether `notifyUser` also writes each message to the user's capped stream. */
  get isDurable(): boolean {
    return this.options.durable !== false;
  }

  /**
   * Sends `payload` (serialized once) to every subscriber on every instance. Resolves to the receivers Redis counted.
   * A payload past pubsub.maxMessageBytes serialized fails with SerializationError, before anything is sent.
   */
  async publish(channel: string, payload: unknown): Promise<number> {
    checkPublishChannel(channel);
    const body = this.serializer.serialize(payload);
    checkMessageSize(channel, body, this.options.maxMessageBytes);
    const message = this.envelopes.wrap(this.envelopes.nextId(), Date.now(), body);
    return this.send(channel, message);
  }

  /**
   * Sends to the channel `user:<userId>`. In durable mode the message is first appended to the user's capped stream
   * (XADD MAXLEN ~), and its stream id is the message id, so a client can later replay everything after it.
   */
  async notifyUser(userId: string, payload: unknown): Promise<number> {
    KeyBuilder.validate(userId, 'userId');
    const channel = `user:${userId}`;
    checkPublishChannel(channel); // as publish checks it, before the durable path writes the stream
    const durable = this.options.durable;
    if (durable === false) return this.publish(channel, payload);
    const serialized = this.serializer.serialize(payload);
    checkMessageSize(channel, serialized, this.options.maxMessageBytes);
    const ts = Date.now();
    let id: string;
    try {
      id = await this.streams.append(this.streamKey(userId), durable, serialized, ts);
    } catch (err) {
      throw this.failed(err, `notifyUser ${userId}`);
    }
    return this.send(channel, this.envelopes.wrap(id, ts, serialized));
  }

  /**
   * The durable messages of `userId` after `afterId` (exclusive), oldest first: the first `limit` of them (an integer
   * from 1 to Number.MAX_SAFE_INTEGER, else InvalidOptionsError), the last with `{ newest: true }`. Not durable → [].
   */
  async replay<T = unknown>(
    userId: string,
    afterId: string,
    limit = 1_000,
    options?: { newest?: boolean },
  ): Promise<ReplayedMessage<T>[]> {
    KeyBuilder.validate(userId, 'userId');
    const newest = checkReplayArgs(afterId, limit, options);
    if (this.options.durable === false) return [];
    const entries = await this.streams.read(this.streamKey(userId), afterId, limit, newest).catch((err: unknown) => {
      throw this.failed(err, `replay for ${userId}`);
    });
    return this.streams.decode<T>(`user:${userId}`, entries);
  }

  /**
   * Calls `handler(payload, channel, meta)` for every message on `channelOrPattern` until the returned function is
   * called. Resolves once Redis confirmed the subscription. Redis not reachable (within connectTimeout +
   * commandTimeout): rejects with RedisUnavailableError naming the address and the cause (nothing is left behind);
   * with lazyConnect it resolves instead, the subscription pending (a warning says so) until Redis is reachable.
   */
  async subscribe<T = unknown>(channelOrPattern: string, handler: MessageHandler<T>): Promise<Unsubscribe> {
    KeyBuilder.validate(channelOrPattern, 'channel');
    if (typeof handler !== 'function') throw new InvalidOptionsError('subscribe needs a handler function');
    const name = channelOrPattern;
    const pattern = isPattern(name);
    if (pattern && this.sharded) {
      throw new InvalidOptionsError(
        `pattern subscriptions (${name}) are not available with sharded pub/sub on a cluster: Redis has no sharded ` +
          "PSUBSCRIBE and SPUBLISH never reaches PSUBSCRIBE. Set pubsub.cluster: 'classic' to use patterns.",
      );
    }
    // Each call is its own registration, even of a handler already registered: with the handler itself in the Set,
    // a second subscribe of it was no entry of its own and the first unsubscribe ended both.
    const h: MessageHandler = (payload, channel, meta) => handler(payload as T, channel, meta);
    let sub = this.subscriptions.get(name);
    if (!sub) {
      const created: Subscription = { name, pattern, handlers: new Handlers(h), ready: Promise.resolve(), made: false };
      created.ready = this.redisSubscribe(created).catch((err: unknown) => {
        // lazyConnect: the app starts and runs without Redis; the subscription is made once it is there.
        if (!this.connection.lazyConnect || answered(err) || this.closed) throw err;
        this.pending.add(name, err);
      });
      this.subscriptions.set(name, created);
      sub = created;
    } else {
      sub.handlers.add(h);
    }
    try {
      await sub.ready;
    } catch (err) {
      sub.handlers.delete(h);
      if (this.subscriptions.get(name) === sub && sub.handlers.size === 0) {
        this.subscriptions.delete(name);
        if (!answered(err)) this.stale.add(sub); // it may still be run: see StaleSubscriptions
      }
      throw this.failed(err, `subscribe to ${name}`);
    }
    let active = true;
    return async () => {
      if (!active) return;
      active = false;
      const current = this.subscriptions.get(name);
      if (current !== sub || !current.handlers.delete(h) || current.handlers.size > 0) return;
      this.subscriptions.delete(name);
      if (!(await this.redisUnsubscribe(current))) this.stale.add(current, false);
    };
  }

  /** Number of channels and patterns with at least one handler on this instance. */
  get subscriptionCount(): number {
    return this.subscriptions.size;
  }

  onModuleDestroy(): void {
    this.closed = true;
    this.pending.close();
    this.subscriptions.clear();
    this.failures.close();
    this.dispatcher.close();
  }

  private async redisSubscribe(sub: Subscription): Promise<void> {
    const subscriber = await this.ensureSubscriber();
    await this.connected(subscriber);
    const command = sub.pattern ? 'psubscribe' : this.sharded ? 'ssubscribe' : 'subscribe';
    const redisName = (sub.pattern ? this.patternPrefix : this.channelPrefix) + sub.name;
    const c = subscriber as Cluster;
    try {
      if (sub.pattern) await this.bounded(c.psubscribe(redisName));
      else await this.bounded(this.sharded ? c.ssubscribe(redisName) : c.subscribe(redisName));
    } catch (err) {
      throw subscribeRefused(err, command, redisName, sub.name);
    }
    sub.made = true;
  }

  /**
   * A (P|S)(UN)SUBSCRIBE within commandTimeout. A cluster's subscriber (a duplicate of the cluster client) queues one
   * while no node answers, and ioredis's commandTimeout only starts once a command reaches a node: with every master
   * paused, a classic subscribe waited until they resumed (90 s in a test) instead of failing as a transport failure.
   */
  private bounded<T>(command: Promise<T>): Promise<T> {
    return withTimeout(command, this.connection.commandTimeout, 'Command timed out');
  }

  /** A pending subscription (lazyConnect), once Redis is reachable; undone when unsubscribed meanwhile. */
  private async subscribeAgain(name: string): Promise<void> {
    const sub = this.subscriptions.get(name);
    if (!sub || this.closed) return;
    await this.redisSubscribe(sub);
    if (this.subscriptions.get(name) !== sub) await this.redisUnsubscribe(sub);
  }

  /** The subscriber connected (subscriber-connection.ts), then followed for reconnects. */
  private async connected(subscriber: RedisClient): Promise<void> {
    await subscriberReady(this.connection, subscriber);
    // Followed from its first connection on (so that a late first connect is not taken for a reconnect).
    if (!this.watched) {
      this.watched = true;
      this.reconnects.watch(subscriber);
    }
  }

  private watched = false;

  /** Whether Redis confirmed it. `quiet`: undoing a failed subscribe (StaleSubscriptions), reported already. */
  private async redisUnsubscribe(sub: Subscription, quiet = false): Promise<boolean> {
    if (this.pending.delete(sub.name)) return true; // never made
    const subscriber = this.subscriber;
    if (!subscriber || subscriber.status === 'end') return true;
    try {
      await sub.ready.catch(() => undefined);
      // A new subscriber may have arrived while we waited; it re-subscribes itself, so unsubscribing stays correct
      // only when the name is still unused.
      if (this.subscriptions.has(sub.name)) return true;
      if (sub.pattern) await this.bounded(subscriber.punsubscribe(this.patternPrefix + sub.name));
      else if (this.sharded) await this.bounded((subscriber as Cluster).sunsubscribe(this.channelPrefix + sub.name));
      else await this.bounded(subscriber.unsubscribe(this.channelPrefix + sub.name));
      return true;
    } catch (err) {
      if (!quiet) this.logger.warn(`unsubscribe of ${sub.name} failed (again at reconnect): ${(err as Error).message}`);
      return false;
    }
  }

  private subscriberPromise: Promise<RedisClient> | undefined;

  /** The one subscriber connection, created on first use; it reconnects by itself, `connected` waits for it. */
  private ensureSubscriber(): Promise<RedisClient> {
    this.subscriberPromise ??= openSubscriber(this.connection, this.sharded, (redisChannel, message, redisPattern) => {
      const pattern = redisPattern?.slice(this.patternPrefix.length);
      this.dispatch(pattern ?? this.nameOf(redisChannel), redisChannel, message, pattern);
    }).then(
      (subscriber) => (this.subscriber = subscriber),
      (err: unknown) => {
        this.subscriberPromise = undefined;
        throw err;
      },
    );
    return this.subscriberPromise;
  }

  private nameOf(redisChannel: string): string {
    return redisChannel.slice(this.channelPrefix.length);
  }

  private dispatch(name: string, redisChannel: string, message: string, pattern?: string): void {
    const sub = this.subscriptions.get(name);
    if (!sub || this.closed) return;
    this.dispatcher.deliver(sub.handlers, name, this.nameOf(redisChannel), redisChannel, message, pattern);
  }

  /** A traced publish; the traced call's error names no channel (see withoutChannel), the caller's does. */
  private send(channel: string, message: string): Promise<number> {
    return tracedPublish(channel, this.channelPrefix + channel, () => this.sendNow(channel, message));
  }

  private sendNow(channel: string, message: string): Promise<number> {
    const redisChannel = this.channelPrefix + channel;
    // after app.close() on a { client } the user gave (it stays ready): failed as on a closed connection of our own
    const closed = this.connection.status === 'end' ? Promise.reject(new Error('Connection is closed.')) : undefined;
    return Promise.resolve(closed ?? this.publishes.add([redisChannel, message])).then(
      (n) => {
        // a batched publish answers per message: its receiver count, or the error reply of that message alone
        if (typeof n === 'string') {
          const err = itemReplyError(`pub/sub publish to ${channel}`, n);
          this.failures.replyFailed(err);
          throw err;
        }
        const receivers = Number(n);
        diagnose('pubsubPublish', () => ({ feature: 'pubsub', operation: 'publish', outcome: 'sent', receivers }));
        return receivers;
      },
      (err: unknown) => {
        diagnose('pubsubPublish', () => ({ feature: 'pubsub', operation: 'publish', outcome: 'failed' }));
        throw this.failed(err, `publish to ${channel}`);
      },
    );
  }

  /**
   * The failure policy's typed error: RedisUnavailableError (a transport failure, thrown: the caller decides whether
   * to drop) or RedisReplyError (e.g. NOPERM on a channel outside the ACL's `&` patterns); counted and logged. A
   * transport failure says what health says (the address, the state, the last connection error: downReason).
   */
  private failed(err: unknown, what: string): Error {
    const typed = this.failures.classify(explainedFailure(this.connection, err), what);
    if (typed instanceof RedisUnavailableError) {
      try {
        this.failures.unavailable(typed, false);
      } catch {
        // counted and logged; thrown by the caller
      }
    }
    return typed;
  }

  /** Failed Redis calls since start (this process): transport failures and error replies. */
  stats(): { unavailable: number; replyErrors: number } {
    return { ...this.failures.counts };
  }

  private streamKey(userId: string): string {
    return this.keys.tagged(FEATURES.pubsubStream, userId);
  }
}
