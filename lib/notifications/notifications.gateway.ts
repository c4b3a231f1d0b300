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
import { ThrottledWarning } from '../common/throttled-logger.js';
import { PubSubService } from '../pubsub/pubsub.service.js';
import type { MessageMeta } from '../pubsub/pubsub.types.js';
import { RateLimitService } from '../rate-limit/rate-limit.service.js';
import { SessionService } from '../session/session.service.js';
import { ChannelRelays, roomOf } from './notifications.channel-relays.js';
import { DurableReplay } from './notifications.durable-replay.js';
import { admitHandshake } from './notifications.handshake.js';
import { http1Refused, http1RefusedWarning } from './notifications.http2.js';
import {
  NOTIFICATIONS_GATEWAY_OPTIONS,
  type NotificationsGatewayOptions,
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
import { GatewaySubscribes, type SocketState } from './notifications.subscribe.js';
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

/** Deprecated: gateway options given to NotificationsGatewayModule.register(); they win over `pubsub.gateway`. */
export const NOTIFICATIONS_GATEWAY_OVERRIDES = Symbol('NOTIFICATIONS_GATEWAY_OVERRIDES');

/**
 * Relays Redis pub/sub channels to authenticated Socket.IO clients on the `/notifications` namespace.
 *
 * client → server: `subscribe` / `unsubscribe` `{ channel, lastId? }` with an ack `{ ok, error?, code? }`;
 * server → client: `notification` `{ channel, data, id, ts }`. Sockets join one room per channel (or pattern); this
 * instance holds one PubSubService subscription per room, so a publish on any instance reaches clients on all of them.
 * Its emits stay on this instance (`local`): a Socket.IO adapter the app installed (Redis, Redis streams, cluster)
 * carries none of them, and the gateway needs none.
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

  private readonly subscribes = new GatewaySubscribes({
    pubsub: this.pubsub,
    sessions: this.sessions,
    sockets: this.sockets,
    relays: this.relays,
    durableReplay: this.durableReplay,
    counters: this.counters,
    warning: this.warning,
    options: () => this.options,
    slowClients: () => this.slowClients,
    stateOf: (socket) => this.stateOf(socket),
    limit: (state) => this.limit(state),
    release: (socket, state, name) => this.release(socket, state, name),
    failed: (err) => this.failed(err),
  });

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
    const refused = http1Refused(nsp.server?.httpServer);
    if (refused !== undefined) this.logger.warn(http1RefusedWarning(refused));
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
    return this.subscribes.subscribe(socket, body);
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
