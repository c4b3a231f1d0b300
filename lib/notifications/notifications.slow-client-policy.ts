import type { Namespace, Socket } from 'socket.io';
import type { ThrottledWarning } from '../common/throttled-logger.js';
import type { ResolvedNotificationsGatewayOptions } from './notifications.options.js';
import type { NotificationMessage } from './notifications.protocol.js';

/** The gateway counters a broadcast updates. */
export interface DeliveryCounters {
  delivered: number;
  droppedSlow: number;
  disconnectedSlow: number;
}

/**
 * The slow-client policy: a socket whose buffer holds `maxBufferedMessages` or more packets, or `maxBufferedBytes` or
 * more bytes, is slow, and is skipped for what it was about to be sent (`drop`) or disconnected (`disconnect`), so
 * memory stays bounded. One policy for a room broadcast, a durable replay and a request's answer.
 */
export class SlowClients {
  constructor(
    private readonly slowClient: ResolvedNotificationsGatewayOptions['slowClient'],
    private readonly counters: DeliveryCounters,
    private readonly warning: ThrottledWarning,
  ) {}

  isSlow(socket: Socket): boolean {
    return (
      bufferedPackets(socket) >= this.slowClient.maxBufferedMessages ||
      bufferedBytes(socket) >= this.slowClient.maxBufferedBytes
    );
  }

  /** Applies the policy to `sockets`, found slow while sending them `what` ('a message on news', 'a request'). */
  apply(sockets: Socket[], what: string): void {
    if (this.slowClient.policy === 'disconnect') {
      // Already disconnected (a request and its replay both found it slow): counted once.
      const open = sockets.filter((socket) => !socket.disconnected);
      if (open.length === 0) return;
      for (const socket of open) socket.disconnect(true);
      this.counters.disconnectedSlow += open.length;
      this.warning.warn(`notifications: disconnected ${open.length} slow client(s) during ${what}`);
    } else {
      this.counters.droppedSlow += sockets.length;
      this.warning.warn(`notifications: dropped ${what} for ${sockets.length} slow client(s)`);
    }
  }

  /** Emits `message` to the room of channel `name`, except to slow clients (the policy decides what they get). */
  broadcast(server: Namespace, name: string, room: string, message: NotificationMessage): void {
    const members = server.adapter.rooms.get(room);
    if (!members || members.size === 0) return;
    let slow: Socket[] | undefined;
    for (const id of members) {
      const socket = server.sockets.get(id);
      if (socket && this.isSlow(socket)) (slow ??= []).push(socket);
    }
    if (slow) this.apply(slow, `a message on ${name}`);
    this.counters.delivered += members.size - (slow?.length ?? 0);
    // Encoded once by socket.io for the whole room. `local`: to this instance's sockets only. Every instance with
    // sockets in the room relays the Redis message itself, so an adapter the app installed (Redis, Redis streams,
    // cluster) must not carry this emit to the others: their clients got it once per relaying instance, past the
    // slow-client policy of their own instance (gateway-io-adapter.spec.ts).
    const toRoom = server.local.to(room);
    (slow ? toRoom.except(slow.map((socket) => socket.id)) : toRoom).emit('notification', message);
  }
}

/** engine.io's buffer of a connection: what it holds while its transport is not writable (a client reading slowly). */
type WriteBuffer = { data?: unknown }[];

const writeBufferOf = (socket: Socket): WriteBuffer | undefined =>
  (socket.conn as unknown as { writeBuffer?: WriteBuffer }).writeBuffer;

/** Packets engine.io holds for this socket because its transport is not writable yet (the client reads too slowly). */
export function bufferedPackets(socket: Socket): number {
  return writeBufferOf(socket)?.length ?? 0;
}

/** What bufferedBytes counted of a buffer: engine.io replaces the array at each flush, so identity marks a new one. */
const counted = new WeakMap<Socket, { buffer: WriteBuffer; packets: number; bytes: number }>();

/**
 * Bytes of the packets engine.io holds for this socket (each packet's encoded data: a string's length, a binary
 * attachment's bytes), counted once per packet: a broadcast checks every member, and a fast client's buffer is empty.
 */
export function bufferedBytes(socket: Socket): number {
  const buffer = writeBufferOf(socket);
  if (buffer === undefined || buffer.length === 0) return 0;
  let c = counted.get(socket);
  if (c === undefined || c.buffer !== buffer || c.packets > buffer.length) {
    c = { buffer, packets: 0, bytes: 0 };
    counted.set(socket, c);
  }
  for (; c.packets < buffer.length; c.packets++) {
    const data = buffer[c.packets]?.data;
    c.bytes += typeof data === 'string' ? data.length : ArrayBuffer.isView(data) ? data.byteLength : 0;
  }
  return c.bytes;
}

/**
 * Resolves true once engine.io has handed this socket's buffer to its transport (its `drain`), false when `timeoutMs`
 * passes first or the socket closes: a client that does not read within that time is slow.
 */
export function drained(socket: Socket, timeoutMs: number): Promise<boolean> {
  if (socket.disconnected) return Promise.resolve(false);
  if (bufferedPackets(socket) === 0) return Promise.resolve(true);
  return new Promise((resolve) => {
    const conn = socket.conn;
    const done = (ok: boolean) => {
      clearTimeout(timer);
      conn.off('drain', onDrain);
      conn.off('close', onClose);
      resolve(ok);
    };
    const onDrain = () => done(true);
    const onClose = () => done(false);
    const timer = setTimeout(() => done(false), timeoutMs);
    conn.on('drain', onDrain);
    conn.on('close', onClose);
  });
}
