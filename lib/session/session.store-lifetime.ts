import { InvalidKeyError } from '../common/errors.js';

/**
 * Session ids from express-session's default `genid`, @fastify/session's `idGenerator` (both base64url) or ours;
 * anything else never reaches Redis.
 */
export const STORE_ID = /^[A-Za-z0-9_-]{16,128}$/;

/**
 * The error of a `set` whose id the store cannot key. The id comes from the framework's generator, so the message
 * names both generators and the remedy; the id itself is never put in it (only its length and what is wrong).
 */
export function badStoreId(sid: unknown): InvalidKeyError {
  const text = String(sid);
  const what =
    text.length < 16 || text.length > 128
      ? `${text.length} characters`
      : `${text.length} characters, one outside [A-Za-z0-9_-]`;
  return new InvalidKeyError(
    `session id must be 16 to 128 characters of [A-Za-z0-9_-], got ${what}: the framework's id generator ` +
      "(express-session's genid, @fastify/session's idGenerator) must make such ids; its default does, and so does " +
      'generateSessionId (nestjs-redis-toolkit/advanced)',
  );
}

/**
 * One warning per store when a session's cookie outlives its absolute lifetime: the store ends every session
 * `maxAgeMs` after it was created (30 days by default), whatever its activity and its cookie's maxAge; connect-redis
 * has no such bound, so a "remember me" cookie of 90 days kept its session 90 days there, and here the user was logged
 * out on day 30 without a word. A ttl from the store's `ttl` function is left alone (Infinity for "remember me" is
 * documented to mean "until maxAgeMs").
 */
export class CookiePastLifetime {
  private warned = false;

  constructor(
    private readonly maxAgeMs: number,
    private readonly warn: (message: string) => void,
  ) {}

  check(ttl: number): void {
    if (this.warned || !(ttl > this.maxAgeMs)) return;
    this.warned = true;
    this.warn(
      `RedisSessionStore: a session's cookie lasts ${ttl} ms, past maxAgeMs (${this.maxAgeMs} ms): the store ends ` +
        'every session maxAgeMs after its creation, whatever its activity and its cookie (connect-redis has no such ' +
        'bound). Give the store a maxAgeMs at least as long as the cookie to keep such sessions as long',
    );
  }
}
