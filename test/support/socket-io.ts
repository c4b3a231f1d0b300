/** A Socket.IO client of a test app's gateway, and what one message gets from it. */
import { io, type ManagerOptions, type Socket, type SocketOptions } from 'socket.io-client';

/**
 * A client of the Socket.IO namespace at `url` (`http://127.0.0.1:<port>/<namespace>`) over WebSocket only and without
 * reconnection, pushed onto `sockets` before it connects (the spec disconnects them); resolves once connected, rejects
 * with the server's connect_error. `options` adds to those (extraHeaders, forceNew).
 */
export function connectSocket(
  url: string,
  sockets: Socket[],
  options: Partial<ManagerOptions & SocketOptions> = {},
): Promise<Socket> {
  const socket = io(url, { transports: ['websocket'], reconnection: false, ...options });
  sockets.push(socket);
  return new Promise<Socket>((resolve, reject) => {
    socket.once('connect', () => resolve(socket));
    socket.once('connect_error', reject);
  });
}

/** What one message got: the handler's acknowledgement, or the `exception` event a guard or filter sent instead. */
export interface SocketAnswer {
  ack?: unknown;
  exception?: unknown;
}

/**
 * Emits `event` with an acknowledgement and resolves with whichever comes first, the acknowledgement or an `exception`
 * event; neither within 5 s rejects. `settleMs` waits that long after the exception, so that an acknowledgement sent
 * after it (a refused message must get none) wins and fails the spec's assertion.
 */
export function ackOrException(socket: Socket, event: string, settleMs = 0): Promise<SocketAnswer> {
  return new Promise<SocketAnswer>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`neither an answer nor an exception for ${event}`)), 5_000);
    const onException = (exception: unknown) => {
      clearTimeout(timer);
      if (settleMs > 0) setTimeout(() => resolve({ exception }), settleMs);
      else resolve({ exception });
    };
    socket.once('exception', onException);
    socket.emit(event, {}, (ack: unknown) => {
      clearTimeout(timer);
      socket.off('exception', onException);
      resolve({ ack });
    });
  });
}
