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
 * Emits `message` to the room of channel `name`, except to slow clients: sockets whose buffer holds
 * `maxBufferedMessages` or more are skipped (`drop`) or disconnected (`disconnect`), so memory stays bounded.
 */
export function broadcastToRoom(
  server: Namespace,
  name: string,
  room: string,
  message: NotificationMessage,
  slowClient: ResolvedNotificationsGatewayOptions['slowClient'],
  counters: DeliveryCounters,
  warning: ThrottledWarning,
): void {
  const members = server.adapter.rooms.get(room);
  if (!members || members.size === 0) return;
  const max = slowClient.maxBufferedMessages;
  let slow: string[] | undefined;
  for (const id of members) {
    const socket = server.sockets.get(id);
    if (socket && bufferedPackets(socket) >= max) (slow ??= []).push(id);
  }
  if (slow) {
    if (slowClient.policy === 'disconnect') {
      for (const id of slow) server.sockets.get(id)?.disconnect(true);
      counters.disconnectedSlow += slow.length;
      warning.warn(`notifications: disconnected ${slow.length} slow client(s) on ${name}`);
    } else {
      counters.droppedSlow += slow.length;
      warning.warn(`notifications: dropped a message for ${slow.length} slow client(s) on ${name}`);
    }
  }
  counters.delivered += members.size - (slow?.length ?? 0);
  // Encoded once by socket.io for the whole room.
  (slow ? server.to(room).except(slow) : server.to(room)).emit('notification', message);
}

/** Packets engine.io holds for this socket because its transport is not writable yet (the client reads too slowly). */
export function bufferedPackets(socket: Socket): number {
  const conn = socket.conn as unknown as { writeBuffer?: unknown[] };
  return conn.writeBuffer?.length ?? 0;
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
