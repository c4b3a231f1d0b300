import type { Socket } from 'socket.io';
import type { ThrottledWarning } from '../common/throttled-logger.js';
import type { GatewayHandshake, PubSubUser } from './notifications.options.js';
import { refusal } from './notifications.protocol.js';
import type { GatewaySetup } from './notifications.setup.js';
import { originAllowed, usesCookie } from './notifications.origin-check.js';
import type { SessionRevocations } from './notifications.session-revocations.js';

/**
 * Decides a handshake: the Origin (for cookie authentication), then the user (`authenticate`), bound to its session's
 * revocations. Resolves the admitted user; rejects with the refusal to hand to socket.io's `next`.
 */
export async function admitHandshake(
  socket: Socket,
  setup: GatewaySetup,
  revocations: SessionRevocations,
  warning: ThrottledWarning,
): Promise<PubSubUser> {
  const handshake = socket.handshake as GatewayHandshake;
  if (!setup.disabled && usesCookie(handshake) && !originAllowed(handshake, setup.options.allowedOrigins)) {
    // Before any lookup: a cross-site page must not even learn whether the browser's cookie is valid.
    throw refusal('E_FORBIDDEN_ORIGIN', 'this origin may not connect with the session cookie (allowedOrigins)');
  }
  let user: PubSubUser | null | undefined;
  try {
    // Subscribed to revocations before the session is looked up, so none can fall between lookup and register.
    if (setup.sessionAuth && !setup.disabled) await revocations.ready();
    user = await setup.authenticate(handshake);
    if (user && typeof user.sessionId === 'string' && !setup.sessionAuth) await revocations.ready();
  } catch (err) {
    warning.warn(`notifications: authenticate failed: ${err instanceof Error ? err.message : String(err)}`);
    throw refusal('E_AUTH_UNAVAILABLE', 'authentication is unavailable, try again later');
  }
  if (setup.disabled) throw refusal('E_DISABLED', 'notifications are disabled on this server');
  if (
    !user ||
    typeof user.id !== 'string' ||
    user.id.length === 0 ||
    (typeof user.sessionId === 'string' && !revocations.register(socket, user.sessionId))
  ) {
    throw refusal('E_UNAUTHENTICATED', 'unauthenticated: a valid session (cookie or auth.token) is required');
  }
  if (typeof user.sessionId === 'string') unbindWhenClosed(socket, user.sessionId, revocations);
  return user;
}

/**
 * A client that leaves while its handshake is decided: socket.io then drops the socket without a `disconnect` event,
 * so the gateway's handleDisconnect never runs for it, and the socket stayed bound to its session for good (memory
 * that any client with a session could grow by opening and dropping handshakes). Unbound when its connection closes;
 * for a socket that connected, handleDisconnect unbinds it too (unregister is idempotent).
 */
function unbindWhenClosed(socket: Socket, sessionId: string, revocations: SessionRevocations): void {
  const unbind = () => revocations.unregister(socket, sessionId);
  if (socket.conn.readyState !== 'open') unbind();
  else socket.conn.once('close', unbind);
}
