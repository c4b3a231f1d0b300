import { InvalidOptionsError } from '../common/errors.js';
import { kindOf } from '../common/option-checks.js';
import { cookieSession } from '../session/session.http.js';
import type { GatewayAuthenticate, GatewayHandshake, PubSubUser } from './notifications.options.js';

/** The SessionService methods the default `authenticate` needs. */
export interface SessionLookup {
  get(id: unknown): Promise<{ id: string; userId: string } | null>;
  idFromCookieHeader(header: string | string[] | undefined): string | null;
  /**
   * Every verified session id of the header's session cookies, in header order (SessionService has it); without it
   * only the first (`idFromCookieHeader`) is tried.
   */
  idsFromCookieHeader?(header: string | string[] | undefined): string[];
}

/**
 * The default `authenticate`: the session id from `auth.token` (what a non-browser client sends) or from the signed
 * session cookie of the handshake, loaded (and touched, when rolling) with SessionService.get. With several cookies
 * of the session's name (a sibling subdomain can set one, and the browser may send it first), the first live session
 * in the header's order of their verified ids, read at once, as SessionMiddleware and SessionGuard do: a dead one first
 * (an attacker's own logged-out session) cannot keep the user's socket out. Malformed ids are refused without a Redis
 * call. The user is `{ id: session.userId, sessionId }`; SessionService errors (Redis down) propagate, and the
 * gateway refuses the connection with E_AUTH_UNAVAILABLE.
 *
 * `sessions` without `get` and `idFromCookieHeader` functions (undefined: a SessionService read before Nest injected
 * it) is refused here with InvalidOptionsError, not at each handshake.
 */
export function sessionAuthenticate(sessions: SessionLookup): GatewayAuthenticate {
  const lookup = sessions as Partial<Record<keyof SessionLookup, unknown>> | null | undefined;
  const missing: string[] = ['get', 'idFromCookieHeader'].filter(
    (m) => typeof lookup?.[m as keyof SessionLookup] !== 'function',
  );
  if (lookup?.idsFromCookieHeader !== undefined && typeof lookup.idsFromCookieHeader !== 'function')
    missing.push('idsFromCookieHeader');
  if (missing.length > 0) {
    const got =
      typeof lookup === 'object' && lookup !== null ? `an object missing ${missing.join(', ')}` : kindOf(lookup);
    throw new InvalidOptionsError(
      'sessionAuthenticate(sessions): sessions must be the SessionService (or an object with get and ' +
        `idFromCookieHeader functions), got ${got}`,
    );
  }
  return async (handshake: GatewayHandshake): Promise<PubSubUser | null> => {
    const token = handshake.auth?.token;
    const ids = typeof token === 'string' && token.length > 0 ? [token] : cookieIds(sessions, handshake);
    const session = await cookieSession(sessions, ids);
    return session ? { id: String(session.userId), sessionId: session.id } : null;
  };
}

function cookieIds(sessions: SessionLookup, handshake: GatewayHandshake): string[] {
  const header = handshake.headers?.cookie;
  if (sessions.idsFromCookieHeader) return sessions.idsFromCookieHeader(header);
  const id = sessions.idFromCookieHeader(header);
  return id === null ? [] : [id];
}
