import { Inject, Logger, Optional, type OnModuleDestroy, type OnModuleInit } from '@nestjs/common';
import {
  ConnectedSocket,
  MessageBody,
  SubscribeMessage,
  WebSocketGateway,
  WebSocketServer,
  type OnGatewayConnection,
  type OnGatewayDisconnect,
  type OnGatewayInit,
} from '@nestjs/websockets';
import type { Namespace, Socket } from 'socket.io';
import { RedisToolkitError } from '../common/errors.js';
import { ThrottledWarning } from '../common/throttled-logger.js';
import { MAX_REPLAY_LIMIT } from '../pubsub/pubsub.checks.js';
import { PubSubService } from '../pubsub/pubsub.service.js';
import { isPattern, type MessageMeta } from '../pubsub/pubsub.types.js';
import { RateLimitService } from '../rate-limit/rate-limit.service.js';
import { SessionService } from '../session/session.service.js';
import { ChannelRelays, roomOf, type Relay } from './notifications.channel-relays.js';
import { DurableReplay } from './notifications.durable-replay.js';
import { admitHandshake } from './notifications.handshake.js';
import {
  NOTIFICATIONS_GATEWAY_OPTIONS,
  type NotificationsGatewayOptions,
  type PubSubUser,
  type ResolvedNotificationsGatewayOptions,
} from './notifications.options.js';
import {
  AckError,
  failure,
  isInternalChannel,
  parseRequest,
  type NotificationAck,
  type NotificationMessage,
} from './notifications.protocol.js';
import { setUpGateway, type GatewaySetup } from './notifications.setup.js';
import { SessionRevocations } from './notifications.session-revocations.js';
import { SlowClients } from './notifications.slow-client-policy.js';
import { UserSockets } from './notifications.user-sockets.js';

export interface NotificationsGatewayStats {
  connections: number;
  refused: number;
  /** Channels and patterns this instance relays (one Redis subscription each). */
  relays: number;
  delivered: number;
  /** Socket deliveries skipped because the socket's buffer was full (`drop` policy). */
  droppedSlow: number;
  /** Sockets disconnected because their buffer was full (`disconnect` policy). */
  disconnectedSlow: number;
  /** Sockets disconnected because their session was destroyed (on any instance) or found gone on subscribe. */
  revoked: number;
}

interface SocketState {
  user: PubSubUser;
  subscriptions: Map<string, Relay>;
  /** Subscribes in progress, so a repeated subscribe is answered only once delivery has started. */
  joining: Map<string, Promise<NotificationAck>>;
}

/** Deprecated: gateway options given to NotificationsGatewayModule.register(); they win over `pubsub.gateway`. */
export const NOTIFICATIONS_GATEWAY_OVERRIDES = Symbol('NOTIFICATIONS_GATEWAY_OVERRIDES');

/**
 * Relays Redis pub/sub channels to authenticated Socket.IO clients on the `/notifications` namespace.
 *
 * client → server: `subscribe` / `unsubscribe` `{ channel, lastId? }` with an ack `{ ok, error?, code? }`;
 * server → client: `notification` `{ channel, data, id, ts }`. Sockets join one room per channel (or pattern); this
 * instance holds one PubSubService subscription per room, so a publish on any instance reaches clients on all of them.
 */
@WebSocketGateway({ namespace: '/notifications' })
export class NotificationsGateway
  implements
    OnModuleInit,
    OnModuleDestroy,
    OnGatewayInit<Namespace>,
    OnGatewayConnection<Socket>,
    OnGatewayDisconnect<Socket>
{
  @WebSocketServer() server!: Namespace;

  private readonly logger = new Logger('RedisToolkit:Notifications');
  private readonly warning = new ThrottledWarning(this.logger, undefined, () => 'notifications gateway warnings');
  private setup!: GatewaySetup;
  private slowClients!: SlowClients;
  private readonly relays = new ChannelRelays((name) =>
    this.pubsub.subscribe(name, (payload, channel, meta) => {
      // A pattern that a permissive `authorize` accepted also matches the toolkit's own channels (cache keys in L1
      // invalidations): those never reach a client, whatever the subscription.
      if (isInternalChannel(channel)) return;
      this.deliver(name, payload, channel, meta);
    }),
  );
  private readonly sockets = new WeakMap<Socket, SocketState>();
  private readonly userSockets = new UserSockets(() => this.options.maxSocketsPerUser);
  private readonly durableReplay = new DurableReplay(
    (socket, channel) => this.sockets.get(socket)?.subscriptions.has(channel) === true,
  );
  private readonly counters = { refused: 0, delivered: 0, droppedSlow: 0, disconnectedSlow: 0, revoked: 0 };
  private readonly revocations = new SessionRevocations(
    this.pubsub,
    (socket) => {
      this.counters.revoked++;
      socket.disconnect(true);
    },
    this.sessions && ((sessionId) => this.sessions?.exists(sessionId) ?? Promise.resolve(true)),
    (err) =>
      this.warning.warn(
        `notifications: re-checking sessions after a reconnect failed: ${err instanceof Error ? err.message : err}`,
      ),
  );

  constructor(
    private readonly pubsub: PubSubService,
    @Inject(NOTIFICATIONS_GATEWAY_OPTIONS) private readonly configured: ResolvedNotificationsGatewayOptions | false,
    @Optional() private readonly sessions?: SessionService,
    @Optional() private readonly rateLimitService?: RateLimitService,
    @Optional() @Inject(NOTIFICATIONS_GATEWAY_OVERRIDES) private readonly overrides?: NotificationsGatewayOptions,
  ) {}

  onModuleInit(): void {
    this.setup = setUpGateway({
      configured: this.configured,
      overrides: this.overrides,
      sessions: this.sessions,
      rateLimitService: this.rateLimitService,
      logger: this.logger,
    });
    this.slowClients = new SlowClients(this.setup.options.slowClient, this.counters, this.warning);
    this.pubsub.onSubscriptionDropped((name) => this.relays.forget(name));
  }

  private get options(): ResolvedNotificationsGatewayOptions {
    return this.setup.options;
  }

  onModuleDestroy(): void {
    this.relays.closeAll();
    this.warning.close(); // its pending count now: no timer outlives the app
  }

  afterInit(nsp: Namespace): void {
    // Runs before onModuleInit: the setup is read when a handshake arrives.
    nsp.use((socket, next) => {
      admitHandshake(socket, this.setup, this.revocations, this.userSockets, this.warning).then(
        (user) => {
          this.sockets.set(socket, { user, subscriptions: new Map(), joining: new Map() });
          next();
        },
        (refused: Error) => {
          this.counters.refused++;
          next(refused);
        },
      );
    });
  }

  handleConnection(socket: Socket): void {
    // Only sockets that passed the middleware get here; anything else is closed.
    if (!this.sockets.has(socket)) socket.disconnect(true);
  }

  handleDisconnect(socket: Socket): void {
    const state = this.sockets.get(socket);
    if (!state) return;
    for (const name of [...state.subscriptions.keys()]) this.release(socket, state, name);
    this.durableReplay.forget(socket);
    this.sockets.delete(socket);
    this.userSockets.leave(socket); // unbinds it from its session's revocations
  }

  @SubscribeMessage('subscribe')
  async onSubscribe(
    @ConnectedSocket() socket: Socket,
    @MessageBody() body: unknown,
  ): Promise<NotificationAck | undefined> {
    if (this.overCap(socket)) return undefined;
    try {
      const state = this.stateOf(socket);
      const { channel, lastId } = parseRequest(body, true, this.options.maxChannelLength);
      await this.limit(state);
      await this.sessionStillValid(socket, state);
      const pattern = isPattern(channel);
      const replays = this.replayUserOf(channel, lastId) !== undefined;
      // A replay is authorized like a subscription, also when it resyncs one the socket holds.
      if ((replays || !state.subscriptions.has(channel)) && !(await this.allowed(state.user, channel, pattern))) {
        throw new AckError('E_FORBIDDEN', `not allowed to subscribe to ${channel}`);
      }
      // The socket may have left (or been revoked) while the checks above awaited: a subscription registered now
      // would never be released (handleDisconnect has run), leaking its relay and its Redis subscription.
      const gone = () => this.sockets.get(socket) !== state || socket.disconnected;
      if (gone()) throw new AckError('E_UNAUTHENTICATED', 'disconnected while subscribing');
      // From here on synchronous until join() registers the subscription, so concurrent subscribes cannot pass the
      // limit together. One to the same channel still in progress is answered when delivery has started, not before;
      // a replay asked for meanwhile runs after it.
      for (let inflight = state.joining.get(channel); inflight; inflight = state.joining.get(channel)) {
        const first = await inflight;
        if (!first.ok || !replays) return first.ok ? { ok: true } : first;
        if (gone()) throw new AckError('E_UNAUTHENTICATED', 'disconnected while subscribing');
      }
      // Held already: a no-op, unless it asks for a replay (a resync after a gap): that starts the subscription
      // afresh from lastId, taking over its relay (join()).
      const held = state.subscriptions.get(channel);
      if (held && !replays) return { ok: true };
      if (!held && state.subscriptions.size >= this.options.maxSubscriptionsPerSocket) {
        throw new AckError('E_LIMIT', `at most ${this.options.maxSubscriptionsPerSocket} subscriptions per connection`);
      }
      if (pattern && this.pubsub.isSharded)
        throw new AckError('E_BAD_REQUEST', 'pattern subscriptions are not available on this server');
      const joining = this.join(socket, state, channel, lastId, held).catch((err: unknown) => this.failed(err));
      state.joining.set(channel, joining);
      try {
        return await joining;
      } finally {
        if (state.joining.get(channel) === joining) state.joining.delete(channel);
      }
    } catch (err) {
      return this.failed(err);
    }
  }

  @SubscribeMessage('unsubscribe')
  async onUnsubscribe(
    @ConnectedSocket() socket: Socket,
    @MessageBody() body: unknown,
  ): Promise<NotificationAck | undefined> {
    if (this.overCap(socket)) return undefined;
    try {
      const state = this.stateOf(socket);
      const { channel } = parseRequest(body, false, this.options.maxChannelLength);
      await this.limit(state);
      if (!state.subscriptions.has(channel)) return { ok: true };
      socket.leave(roomOf(channel));
      this.release(socket, state, channel);
      return { ok: true };
    } catch (err) {
      return this.failed(err);
    }
  }

  /**
   * A client that keeps sending requests while it does not read what it is sent (its buffer is at the slow-client
   * cap) is slow like any other: `disconnect` disconnects it, `drop` drops the request unanswered (an ack would grow
   * the buffer past the cap).
   */
  private overCap(socket: Socket): boolean {
    if (!this.slowClients.isSlow(socket)) return false;
    this.slowClients.apply([socket], 'a request');
    return true;
  }

  private failed(err: unknown): NotificationAck {
    const ack = failure(err);
    if (ack.code === 'E_INTERNAL')
      this.warning.warn(`notifications: a request failed: ${err instanceof Error ? err.message : String(err)}`);
    return ack;
  }

  stats(): NotificationsGatewayStats {
    return { connections: this.server?.sockets.size ?? 0, relays: this.relays.size, ...this.counters };
  }

  private stateOf(socket: Socket): SocketState {
    const state = this.sockets.get(socket);
    if (!state) throw new AckError('E_UNAUTHENTICATED', 'unauthenticated');
    return state;
  }

  private async limit(state: SocketState): Promise<void> {
    const policy = this.options.subscribeRateLimit;
    if (policy === false) return;
    let decision: { allowed: boolean; retryAfterMs: number };
    try {
      decision = await this.setup.rateLimiter(`ws-subscribe:${state.user.id}`, policy);
    } catch (err) {
      // Fail open like the HTTP rate limiter: a Redis outage must not lock every client out.
      this.warning.warn(
        `notifications: rate limiter failed, allowing: ${err instanceof Error ? err.message : String(err)}`,
      );
      return;
    }
    if (!decision.allowed) {
      throw new AckError(
        'E_RATE_LIMITED',
        `too many subscribe messages, retry in ${Math.ceil(decision.retryAfterMs)} ms`,
        decision.retryAfterMs,
      );
    }
  }

  /**
   * A socket bound to a session (`user.sessionId`) subscribes only while that session exists: a revocation lost on the
   * way (the subscriber reconnecting), an expiry or an eviction is caught here, and the socket is disconnected.
   */
  private async sessionStillValid(socket: Socket, state: SocketState): Promise<void> {
    const sessionId = state.user.sessionId;
    if (typeof sessionId !== 'string' || !this.sessions) return;
    if ((await this.sessions.get(sessionId)) !== null) return;
    this.counters.revoked++;
    // After the ack: the client learns why before it sees the disconnect.
    setImmediate(() => socket.disconnect(true));
    throw new AckError('E_UNAUTHENTICATED', 'the session has ended: sign in again');
  }

  private async allowed(user: PubSubUser, channel: string, pattern: boolean): Promise<boolean> {
    if (this.options.authorize) {
      try {
        return (await this.options.authorize(user, channel, { pattern })) === true;
      } catch (err) {
        this.warning.warn(
          `notifications: authorize threw, refusing: ${err instanceof Error ? err.message : String(err)}`,
        );
        return false;
      }
    }
    return !pattern && (channel === `user:${user.id}` || this.options.publicChannels.includes(channel));
  }

  /** The user whose durable stream a subscribe to `channel` with `lastId` replays, or undefined: no replay. */
  private replayUserOf(channel: string, lastId: string | undefined): string | undefined {
    if (lastId === undefined || !this.pubsub.isDurable || this.options.maxReplay === 0) return undefined;
    // Not /^user:(.+)$/: `.` stops at a line separator (U+2028), and such a user's lastId was ignored.
    return channel.startsWith('user:') && channel.length > 'user:'.length ? channel.slice('user:'.length) : undefined;
  }

  /**
   * Subscribes `socket` to `channel`, replaying its durable stream after `lastId` first when there is one. `held`: the
   * subscription the socket holds already (a resync): it leaves the room and its live messages wait for the replay
   * like a new subscription's, and the new registration takes over its relay (no Redis unsubscribe in between).
   */
  private async join(
    socket: Socket,
    state: SocketState,
    channel: string,
    lastId: string | undefined,
    held?: Relay,
  ): Promise<NotificationAck> {
    const userId = this.replayUserOf(channel, lastId);
    const replay = userId !== undefined;
    // A new subscription starts afresh (begin() replaces any earlier catch-up): nothing of an earlier replay of this
    // channel may still reach the socket.
    if (!replay) this.durableReplay.drop(socket, channel);
    const catchUp = replay
      ? this.durableReplay.begin(socket, channel, this.options.slowClient.maxBufferedMessages)
      : undefined;
    if (held) socket.leave(roomOf(channel));
    const relay = this.relays.acquire(channel);
    state.subscriptions.set(channel, relay);
    if (held) this.relays.release(channel, held);
    let joined = false;
    try {
      await relay.ready;
      if (!replay || !catchUp || userId === undefined || lastId === undefined) {
        if (state.subscriptions.get(channel) !== relay)
          return { ok: false, code: 'E_BAD_REQUEST', error: 'unsubscribed while subscribing' };
        socket.join(roomOf(channel));
        joined = true;
        return { ok: true };
      }
      // The newest maxReplay of what came after lastId, in order; reading one more says whether older ones were left.
      const max = this.options.maxReplay;
      const read = await this.pubsub.replay(userId, lastId, Math.min(max + 1, MAX_REPLAY_LIMIT), { newest: true });
      const skipped = read.length > max;
      const missed = skipped ? read.slice(1) : read;
      if (state.subscriptions.get(channel) !== relay)
        return { ok: false, code: 'E_BAD_REQUEST', error: 'unsubscribed during replay' };
      // Joins the room now, or once the live copies caught up with the replay (DurableReplay.live()).
      const isSlow = (s: Socket) => this.slowClients.isSlow(s);
      if ((await this.durableReplay.send(socket, channel, catchUp, missed, lastId, isSlow)) === 'slow') {
        if (state.subscriptions.get(channel) === relay) this.release(socket, state, channel);
        this.slowClients.apply([socket], `the replay of ${channel}`);
        throw new AckError(
          'E_SLOW',
          'the replay stopped: the connection reads too slowly; subscribe again with lastId',
        );
      }
      if (state.subscriptions.get(channel) !== relay)
        return { ok: false, code: 'E_BAD_REQUEST', error: 'unsubscribed during replay' };
      joined = true;
      return { ok: true, replayed: missed.length, ...(skipped && { skipped: true }) };
    } catch (err) {
      if (state.subscriptions.get(channel) === relay) this.release(socket, state, channel);
      if (err instanceof RedisToolkitError && err.code === 'E_REDIS_UNAVAILABLE') {
        throw new AckError('E_UNAVAILABLE', 'notifications are unavailable, try again later');
      }
      throw err;
    } finally {
      if (catchUp && (joined === false || catchUp.highWater === undefined)) {
        this.durableReplay.drop(socket, channel, catchUp);
      }
    }
  }

  /** Ends the socket's subscription to `name`, with any catch-up of a replay of it still going on. */
  private release(socket: Socket, state: SocketState, name: string): void {
    const relay = state.subscriptions.get(name);
    if (!relay) return;
    state.subscriptions.delete(name);
    this.durableReplay.drop(socket, name);
    this.relays.release(name, relay);
  }

  private deliver(name: string, data: unknown, channel: string, meta: MessageMeta): void {
    const message: NotificationMessage = { channel, data, id: meta.id, ts: meta.ts };
    const joinAfter = this.durableReplay.live(name, message);
    const room = roomOf(name);
    this.slowClients.broadcast(this.server, name, room, message);
    if (joinAfter) for (const socket of joinAfter) socket.join(room);
  }
}
