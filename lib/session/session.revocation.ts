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

/** Announces destroyed sessions (by id) on SESSION_REVOKED_CHANNEL. */
export type SessionRevoker = (ids: string[]) => Promise<void>;

/**
 * The toolkit's revoker per Redis client: SessionService registers its own for the toolkit's client, so a
 * RedisSessionStore given that client (`app.get(REDIS_CLIENT)`) announces through the same PubSubService as the
 * gateways listen with (channel prefix, serializer, sharded pub/sub on a cluster).
 */
const revokers = new WeakMap<object, SessionRevoker>();

/**
 * Registers `revoker` for `client`; the function returned takes it back (the app's shutdown: a client the user gave
 * outlives the app, and the revoker would keep the closed app's services alive through it), unless another app has
 * registered its own for that client since.
 */
export function registerSessionRevoker(client: object, revoker: SessionRevoker): () => void {
  revokers.set(client, revoker);
  return () => {
    if (revokers.get(client) === revoker) revokers.delete(client);
  };
}

export function sessionRevokerFor(client: object): SessionRevoker | undefined {
  return revokers.get(client);
}
