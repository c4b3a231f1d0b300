import type { Socket } from 'socket.io';
import type { ReplayedMessage } from '../pubsub/pubsub.types.js';
import { roomOf } from './notifications.channel-relays.js';
import { MAX_STREAM_ID_PART, STREAM_ID } from '../pubsub/pubsub.types.js';
import type { NotificationMessage } from './notifications.protocol.js';
import { drained } from './notifications.slow-client-policy.js';

/**
 * A socket replaying a durable channel: `buffer` while the replay runs, then `highWater` until live copies catch up.
 */
export interface CatchUp {
  buffer: NotificationMessage[] | undefined;
  highWater: string | undefined;
  /** Of `buffer`, how many the replay has sent so far. */
  taken: number;
  /** slowClient.maxBufferedMessages: most live messages waiting in `buffer` (unsent) while the replay runs. */
  limit: number;
  /** A live message found `limit` waiting: it was not kept, and the replay stops as slow. */
  overflowed: boolean;
}

/** After a replay, how long to wait for the live copy of the last replayed message before joining the room anyway. */
const CATCH_UP_MS = 2_000;

/**
 * Subscribes with `lastId` on a durable `user:<id>` channel: the missed messages are replayed from the stream before
 * live ones, without gaps or duplicates. Live messages wait in the socket's buffer while the replay runs; after it, the
 * socket gets them one by one (skipping live copies of replayed messages) until it has caught up and joins the room.
 */
export class DurableReplay {
  /** Sockets replaying missed messages of a channel: live messages wait in their buffer until the replay is sent. */
  private readonly replaying = new Map<string, Map<Socket, CatchUp>>();

  /** `subscribed(socket, channel)`: whether the socket is still subscribed (it may have left during the replay). */
  constructor(private readonly subscribed: (socket: Socket, channel: string) => boolean) {}

  /** Starts buffering the live messages of `channel` for `socket`, before its relay is acquired. */
  begin(socket: Socket, channel: string, limit: number): CatchUp {
    const catchUp: CatchUp = { buffer: [], highWater: undefined, taken: 0, limit, overflowed: false };
    let pending = this.replaying.get(channel);
    if (!pending) this.replaying.set(channel, (pending = new Map()));
    pending.set(socket, catchUp);
    return catchUp;
  }

  /**
   * Sends the `missed` messages (read after `lastId`), then the live ones buffered meanwhile, and joins the room of
   * `channel` when caught up; otherwise the socket catches up message by message (live()) for at most CATCH_UP_MS.
   * 'slow': the client did not read in time (the caller applies the policy); 'left': the socket is no longer
   * subscribed to `channel`, and was sent nothing more.
   */
  async send(
    socket: Socket,
    channel: string,
    catchUp: CatchUp,
    missed: readonly ReplayedMessage[],
    lastId: string,
    /** The slow-client test (packets or bytes): SlowClients.isSlow. */
    isSlow: (socket: Socket) => boolean,
  ): Promise<'sent' | 'slow' | 'left'> {
    const highWater = missed.at(-1)?.id ?? lastId;
    // The slow-client cap holds for the replay too: never more packets or bytes waiting for this socket than it
    // allows, and a client that does not read them within CATCH_UP_MS is slow (the caller applies the policy).
    // 'left': the socket unsubscribed, was revoked or disconnected (while this waited for a drain): nothing more of
    // the replay is its, and it is not slow for that.
    const emit = async (m: NotificationMessage): Promise<'sent' | 'slow' | 'left'> => {
      const inTime = !isSlow(socket) || (await drained(socket, CATCH_UP_MS));
      if (socket.disconnected || !this.subscribed(socket, channel)) return 'left';
      if (!inTime) return 'slow';
      socket.emit('notification', m);
      return 'sent';
    };
    for (const m of missed) {
      if (catchUp.overflowed) return 'slow';
      const sent = await emit({ channel: m.channel, data: m.data, id: m.id, ts: m.ts });
      if (sent !== 'sent') return sent;
    }
    // Live copies of what was just replayed may still be on their way (XADD happens before PUBLISH): skip them.
    // Live messages keep arriving while this awaits: the buffer is read until it is empty, and bounded by the cap.
    let caughtUp = missed.length === 0;
    const buffer = catchUp.buffer ?? [];
    for (let i = 0; i < buffer.length; i++) {
      if (catchUp.overflowed) return 'slow';
      catchUp.taken = i + 1;
      const m = buffer[i];
      // A plain publish (no stream id) is sent as it comes; a durable one only past what was replayed.
      const order = STREAM_ID.test(m.id) ? compareStreamIds(m.id, highWater) : undefined;
      if (order === undefined || order > 0) {
        const sent = await emit(m);
        if (sent !== 'sent') return sent;
      }
      if (order !== undefined && order >= 0) caughtUp = true;
    }
    if (caughtUp) {
      socket.join(roomOf(channel));
    } else {
      // Until the live copy of the last replayed message arrives, deliver to this socket one by one (live()).
      catchUp.buffer = undefined;
      catchUp.highWater = highWater;
      const timer = setTimeout(() => this.finish(socket, channel, catchUp), CATCH_UP_MS);
      timer.unref();
    }
    return 'sent';
  }

  /**
   * A live message of relay `name`, before it goes to the room: buffered or sent to the sockets still catching up.
   * Returns the sockets to join to the room after that emit.
   */
  live(name: string, message: NotificationMessage): Socket[] | undefined {
    const pending = this.replaying.get(name);
    let joinAfter: Socket[] | undefined;
    if (pending) {
      for (const [socket, catchUp] of pending) {
        if (catchUp.buffer) {
          // As bounded as the socket's own buffer: a replay that a slow reader stretches out (each of its emits may
          // wait CATCH_UP_MS for a drain) must not keep every live message meanwhile.
          if (catchUp.buffer.length - catchUp.taken < catchUp.limit) catchUp.buffer.push(message);
          else catchUp.overflowed = true;
        } else if (catchUp.highWater !== undefined) {
          // A plain publish (no stream id) goes to this socket alone, and only while it is subscribed: the room it
          // is not in yet does not check that for it.
          if (!STREAM_ID.test(message.id)) {
            if (this.subscribed(socket, name)) socket.emit('notification', message);
          } else {
            const order = compareStreamIds(message.id, catchUp.highWater);
            if (order < 0) continue;
            // Caught up: from now on the room delivers. A newer message goes out with the room just below; the live
            // copy of the last replayed one must not, so that socket joins after the emit.
            this.drop(socket, name);
            if (!this.subscribed(socket, name)) continue;
            if (order > 0) socket.join(roomOf(name));
            else (joinAfter ??= []).push(socket);
          }
        }
      }
    }
    return joinAfter;
  }

  /** Stops catching up `socket` on `channel` (only if that is still `only`, when given). */
  drop(socket: Socket, channel: string, only?: CatchUp): void {
    const pending = this.replaying.get(channel);
    if (only && pending?.get(socket) !== only) return;
    pending?.delete(socket);
    if (pending?.size === 0) this.replaying.delete(channel);
  }

  /** Forgets a disconnected socket. */
  forget(socket: Socket): void {
    for (const pending of this.replaying.values()) pending.delete(socket);
  }

  private finish(socket: Socket, channel: string, catchUp: CatchUp): void {
    if (this.replaying.get(channel)?.get(socket) !== catchUp) return;
    this.drop(socket, channel);
    if (this.subscribed(socket, channel)) socket.join(roomOf(channel));
  }
}

/**
 * The stream id just before `id` (both checked by isStreamId), undefined for 0-0: a read after it starts at `id`
 * itself, as the exclusive start of replay() cannot.
 */
export function streamIdBefore(id: string): string | undefined {
  const [ms, seq] = id.split('-').map(BigInt);
  if (seq > 0n) return `${ms}-${seq - 1n}`;
  return ms > 0n ? `${ms - 1n}-${MAX_STREAM_ID_PART}` : undefined;
}

/**
 * Orders two stream ids (`<ms>-<seq>`, both checked by isStreamId) as Redis does. Each part is compared as a BigInt:
 * Redis accepts leading zeros in a client's `lastId` ('0001-0' is 1-0), and a part goes up to 2^64-1, past what a
 * Number tells apart.
 */
export function compareStreamIds(a: string, b: string): number {
  const [am, as] = a.split('-').map(BigInt);
  const [bm, bs] = b.split('-').map(BigInt);
  if (am !== bm) return am < bm ? -1 : 1;
  if (as !== bs) return as < bs ? -1 : 1;
  return 0;
}
