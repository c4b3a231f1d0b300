import type { Socket } from 'socket.io';

/**
 * The admitted sockets of each user on this instance (`maxSocketsPerUser`), and what to undo when one goes. A socket
 * goes at its namespace disconnect (the gateway's handleDisconnect, `leave`) or when its connection closes first:
 * socket.io drops a socket whose client left while its handshake was decided, without a disconnect event. The close
 * listener goes with the socket, so a client that connects and disconnects the namespace again and again over one
 * connection (socket.io multiplexes namespaces on it) leaves none behind.
 */
export class UserSockets {
  private readonly byUser = new Map<string, Set<Socket>>();
  private readonly admitted = new WeakMap<Socket, () => void>();

  constructor(private readonly max: () => number) {}

  /** Admits `socket` for `userId` unless that user has `max` sockets here already; `gone` runs once when it goes. */
  admit(userId: string, socket: Socket, gone: () => void): boolean {
    let sockets = this.byUser.get(userId);
    if (sockets !== undefined && sockets.size >= this.max()) return false;
    if (sockets === undefined) this.byUser.set(userId, (sockets = new Set()));
    const own = sockets;
    own.add(socket);
    const left = (): void => {
      socket.conn.off('close', left);
      this.admitted.delete(socket);
      own.delete(socket);
      if (own.size === 0 && this.byUser.get(userId) === own) this.byUser.delete(userId);
      gone();
    };
    this.admitted.set(socket, left);
    if (socket.conn.readyState === 'open') socket.conn.once('close', left);
    else left();
    return true;
  }

  /** The socket disconnected from the namespace (a no-op for one never admitted, or gone already). */
  leave(socket: Socket): void {
    this.admitted.get(socket)?.();
  }

  /** Sockets of `userId` admitted on this instance and not gone. */
  count(userId: string): number {
    return this.byUser.get(userId)?.size ?? 0;
  }
}
