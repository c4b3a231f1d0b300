import type { SessionData as ExpressSessionData } from 'express-session';
import type { Cluster, Redis } from 'ioredis';
import type { OptionShape } from '../common/option-checks.js';
import type { Serializer } from '../common/serializer.js';

/** The options RedisSessionStore accepts; anything else is an error naming it (e.g. a connect-redis option we lack). */
export const SESSION_STORE_OPTION_KEYS: OptionShape = {
  client: true,
  prefix: true,
  ttl: true,
  maxAgeMs: true,
  tombstoneMs: true,
  serializer: true,
  userIdField: true,
  touchOnGet: true,
  touchAfter: true,
  maxSize: true,
  disableTouch: true,
  disableTTL: true,
  scanCount: true,
};

export interface RedisSessionStoreOptions {
  /** The ioredis client (Redis or Cluster), e.g. `app.get(REDIS_CLIENT)`. Stays yours: the store never quits it. */
  client: Redis | Cluster;
  /** The toolkit's `keyPrefix`; keys are `<prefix>sess:{<sid>}`, the same as SessionService's. Default `rtk:`. */
  prefix?: string;
  /**
   * Idle ttl in **milliseconds** (connect-redis takes seconds) when the session cookie has no expiry, or a function of
   * the session returning it (used for every session, as in connect-redis; a result that is not > 0 means expired).
   * Default 24 h. A number below 1,000 gives a startup warning: it looks like seconds.
   */
  ttl?: number | ((session: ExpressSessionData) => number);
  /** connect-redis `disableTouch`: `touch` sends nothing and `get` is a plain read, so the ttl is set only by `set`. */
  disableTouch?: boolean;
  /** connect-redis `disableTTL`: keys get no Redis expiry (nor does `touch` set one); `maxAgeMs` still bounds reads. */
  disableTTL?: boolean;
  /** connect-redis `scanCount`: the COUNT of the SCANs of `all`, `ids`, `length` and `clear`. Default 500. */
  scanCount?: number;
  /** Absolute maximum lifetime in ms, whatever the activity. Default 30 days. */
  maxAgeMs?: number;
  /** How long a destroyed id stays blocked against late `set`s, ms. Default 60 s. */
  tombstoneMs?: number;
  /** Serializer for session fields. Default: JSON with Dates. */
  serializer?: Serializer;
  /**
   * The session field holding the user id, indexed for SessionService.listForUser / destroyAllForUser. Default
   * `userId`.
   */
  userIdField?: string;
  /**
   * `get` extends the ttl in the same round trip, so `touch` (called by express-session at the end of every unmodified
   * request) has nothing left to do and costs no round trip. Default true. `false`: `get` is a plain read and
   * `touch` extends the ttl.
   */
  touchOnGet?: boolean;
  /**
   * With `touchOnGet`: a `get` within this many ms of this process's last extension of the same session (with the
   * same ttl) reads it without extending it again (a plain GET, batched as an MGET), as connect-mongo's `touchAfter`
   * (seconds there, ms here). The idle expiry lags by up to this much, and never by more than half the session's
   * ttl. Default 0: every `get` extends.
   */
  touchAfter?: number;
  /**
   * Largest session in bytes (its stored JSON); a larger `set` fails with SessionTooLargeError (HTTP 413). Default 1
   * MiB.
   */
  maxSize?: number;
}
