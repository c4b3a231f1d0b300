import { FEATURES, KeyBuilder } from '../common/keys.js';

/**
 * Sessions destroyed (destroy, destroyAllForUser, regenerate's old id) are announced on this internal pub/sub
 * channel, so that every instance's notifications gateway disconnects the WebSockets they authenticated.
 */
export const SESSION_REVOKED_CHANNEL = KeyBuilder.internalChannel(FEATURES.session, 'revoked');

/** What SESSION_REVOKED_CHANNEL carries: the sessions' hashes (sessionIdHash), never the ids themselves. */
export interface SessionRevocation {
  s: string[];
}

/**
 * A fixed-length stand-in for a session id on the revocation channel: anyone who can SUBSCRIBE on that Redis sees
 * it, and an id is a bearer credential, so only its hash travels.
 */
export function sessionIdHash(id: string): string {
  return KeyBuilder.hash(`session:${id}`);
}
