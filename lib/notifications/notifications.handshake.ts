import type { Socket } from 'socket.io';
import type { ThrottledWarning } from '../common/throttled-logger.js';
import type { GatewayHandshake, PubSubUser } from './notifications.options.js';
import { refusal } from './notifications.protocol.js';
import type { GatewaySetup } from './notifications.setup.js';
import { originAllowed, usesCookie } from './notifications.origin-check.js';
import type { SessionRevocations } from './notifications.session-revocations.js';
import type { UserSockets } from './notifications.user-sockets.js';

/**
 * Decides a handshake: the Origin (for cookie authentication), then the user (`authenticate`), bound to its session's
 * revocations, then the user's sockets here (`maxSocketsPerUser`). Resolves the admitted user; rejects with the
 * refusal to hand to socket.io's `next`.
 */
export async function admitHandshake(
  socket: Socket,
  setup: GatewaySetup,
  revocations: SessionRevocations,
  userSockets: UserSockets,
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
  const sessionId = typeof user.sessionId === 'string' ? user.sessionId : undefined;
  // Unbound from its session when it goes (see UserSockets); unregister is idempotent.
  const unbind = (): void => {
    if (sessionId !== undefined) revocations.unregister(socket, sessionId);
  };
  if (!userSockets.admit(user.id, socket, unbind)) {
    unbind();
    const max = setup.options.maxSocketsPerUser;
    throw refusal('E_TOO_MANY_CONNECTIONS', `at most ${max} connections per user on this server (maxSocketsPerUser)`);
  }
  return user;
}
