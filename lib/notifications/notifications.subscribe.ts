import type { Socket } from 'socket.io';
import { RedisToolkitError } from '../common/errors.js';
import type { ThrottledWarning } from '../common/throttled-logger.js';
import { MAX_REPLAY_LIMIT } from '../pubsub/pubsub.checks.js';
import type { PubSubService } from '../pubsub/pubsub.service.js';
import { isPattern } from '../pubsub/pubsub.types.js';
import type { SessionService } from '../session/session.service.js';
import { type ChannelRelays, roomOf, type Relay } from './notifications.channel-relays.js';
import { compareStreamIds, type DurableReplay, streamIdBefore } from './notifications.durable-replay.js';
import type { PubSubUser, ResolvedNotificationsGatewayOptions } from './notifications.options.js';
import { AckError, type NotificationAck, parseRequest } from './notifications.protocol.js';
import type { SlowClients } from './notifications.slow-client-policy.js';
import { setImmediate } from '../common/real-timers.js';

/** What the gateway holds of each socket it admitted. */
export interface SocketState {
  user: PubSubUser;
  subscriptions: Map<string, Relay>;
  /** Subscribes in progress, so a repeated subscribe is answered only once delivery has started. */
  joining: Map<string, Promise<NotificationAck>>;
}

/** What the subscribe path uses of the gateway: its state, its services, and the steps it shares with unsubscribe. */
export interface SubscribeHost {
  pubsub: PubSubService;
  sessions: SessionService | undefined;
  sockets: WeakMap<Socket, SocketState>;
  relays: ChannelRelays;
  durableReplay: DurableReplay;
  counters: { revoked: number };
  warning: ThrottledWarning;
  /** The gateway's options and slow-client policy, read when a request arrives: they are set up at module init. */
  options(): ResolvedNotificationsGatewayOptions;
  slowClients(): SlowClients;
  stateOf(socket: Socket): SocketState;
  limit(state: SocketState): Promise<void>;
  release(socket: Socket, state: SocketState, name: string): void;
  failed(err: unknown): NotificationAck;
}

/**
 * The gateway's `subscribe`: the checks (the request, the rate limit, the session, `authorize`, the limits), the
 * resync of a subscription the socket holds already, and the join, with the durable replay after `lastId`.
 */
export class GatewaySubscribes {
  private readonly pubsub: PubSubService;
  private readonly sessions: SessionService | undefined;
  private readonly sockets: WeakMap<Socket, SocketState>;
  private readonly relays: ChannelRelays;
  private readonly durableReplay: DurableReplay;
  private readonly counters: { revoked: number };
  private readonly warning: ThrottledWarning;
  private readonly stateOf: SubscribeHost['stateOf'];
  private readonly limit: SubscribeHost['limit'];
  private readonly release: SubscribeHost['release'];
  private readonly failed: SubscribeHost['failed'];

  constructor(private readonly host: SubscribeHost) {
    this.pubsub = host.pubsub;
    this.sessions = host.sessions;
    this.sockets = host.sockets;
    this.relays = host.relays;
    this.durableReplay = host.durableReplay;
    this.counters = host.counters;
    this.warning = host.warning;
    this.stateOf = host.stateOf;
    this.limit = host.limit;
    this.release = host.release;
    this.failed = host.failed;
  }

  private get options(): ResolvedNotificationsGatewayOptions {
    return this.host.options();
  }

  private get slowClients(): SlowClients {
    return this.host.slowClients();
  }

  /** Answers a `subscribe` the slow-client cap let through (NotificationsGateway.onSubscribe). */
  async subscribe(socket: Socket, body: unknown): Promise<NotificationAck> {
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

  /**
   * Whether messages after `lastId` may have been trimmed from the user's stream (XADD MAXLEN ~, or the stream expired
   * and began again): `read` (of `limit`, from lastId itself) reached back to lastId without finding it, and the stream
   * no longer holds anything older, so it does not reach back to lastId. Until 2026-12-06 such a replay said nothing
   * of the gap: `{ ok: true, replayed: n }` as if n were all the client had missed (gateway-churn.spec.ts). One more
   * read (the oldest entry), only when lastId is missing. '0-0' has seen nothing: the stream's oldest is no gap.
   */
  private async trimmedAfter(userId: string, lastId: string, read: { id: string }[], limit: number): Promise<boolean> {
    if (read.length === 0 || read.length >= limit || read[0].id === lastId || compareStreamIds(lastId, '0-0') === 0)
      return false;
    const [oldest] = await this.pubsub.replay(userId, '0-0', 1);
    return oldest === undefined || compareStreamIds(oldest.id, lastId) > 0;
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
      // Read from lastId itself (one more again): a stream with nothing at or after lastId says it is past the end.
      const max = this.options.maxReplay;
      const from = streamIdBefore(lastId) ?? lastId;
      const read = await this.pubsub.replay(userId, from, Math.min(max + 2, MAX_REPLAY_LIMIT), { newest: true });
      const after = read.filter((m) => compareStreamIds(m.id, lastId) > 0);
      const skipped = after.length > max || (await this.trimmedAfter(userId, lastId, read, max + 2));
      const missed = skipped ? after.slice(after.length - max) : after;
      // A lastId past the stream's end (no id it gave out, e.g. far in the future) is the end itself: every message
      // published since the subscribe began reaches the socket, none is taken for one the client has seen already.
      const seen = read.length === 0 ? '0-0' : lastId;
      if (state.subscriptions.get(channel) !== relay)
        return { ok: false, code: 'E_BAD_REQUEST', error: 'unsubscribed during replay' };
      // Joins the room now, or once the live copies caught up with the replay (DurableReplay.live()).
      const isSlow = (s: Socket) => this.slowClients.isSlow(s);
      const sent = await this.durableReplay.send(socket, channel, catchUp, missed, seen, isSlow);
      if (sent === 'slow') {
        if (state.subscriptions.get(channel) === relay) this.release(socket, state, channel);
        this.slowClients.apply([socket], `the replay of ${channel}`);
        throw new AckError(
          'E_SLOW',
          'the replay stopped: the connection reads too slowly; subscribe again with lastId',
        );
      }
      if (sent === 'left' || state.subscriptions.get(channel) !== relay)
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
}
