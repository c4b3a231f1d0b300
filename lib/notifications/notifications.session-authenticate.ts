import type { GatewayAuthenticate, GatewayHandshake, PubSubUser } from './notifications.options.js';

/** The SessionService methods the default `authenticate` needs. */
export interface SessionLookup {
  get(id: unknown): Promise<{ id: string; userId: string } | null>;
  idFromCookieHeader(header: string | string[] | undefined): string | null;
}

/**
 * The default `authenticate`: the session id from `auth.token` (what a non-browser client sends) or from the signed
 * session cookie of the handshake, loaded (and touched, when rolling) with SessionService.get. Malformed ids are
 * refused without a Redis call. The user is `{ id: session.userId, sessionId }`; SessionService errors (Redis down)
 * propagate, and the gateway refuses the connection with E_AUTH_UNAVAILABLE.
 */
export function sessionAuthenticate(sessions: SessionLookup): GatewayAuthenticate {
  return async (handshake: GatewayHandshake): Promise<PubSubUser | null> => {
    const token = handshake.auth?.token;
    const id =
      typeof token === 'string' && token.length > 0 ? token : sessions.idFromCookieHeader(handshake.headers?.cookie);
    if (id === null) return null;
    const session = await sessions.get(id);
    return session ? { id: String(session.userId), sessionId: session.id } : null;
  };
}
