/**
 * Every error the toolkit throws on purpose is a RedisToolkitError with a stable `code`,
 * so callers can branch on `err.code` (or `instanceof`) without parsing messages.
 *
 * An error that stands for an HTTP answer (RedisUnavailableError 503, SessionNotFoundError 401, LockNotAcquiredError
 * 409, RateLimitExceededError 429, CacheLoadTimeoutError 504) carries it as `status` / `statusCode` with `expose:
 * false`, the "http-errors" shape: thrown from a route handler, Nest's default exception filter answers with that
 * status and its standard text (`{ statusCode: 409, message: 'Conflict' }`, the message itself only logged: it may name
 * a resource or an address), as Express's and Fastify's own error handlers do. Any other is a 500, as before.
 */
export class RedisToolkitError extends Error {
  static readonly code: string = 'E_REDIS_TOOLKIT';
  /** The HTTP status this error stands for, where it stands for one. */
  static readonly httpStatus?: number;
  readonly code: string;
  readonly status?: number;
  readonly statusCode?: number;
  /** false: an HTTP answer carries the status's standard text, not this message. */
  readonly expose?: boolean;

  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    const type = new.target as typeof RedisToolkitError;
    this.code = type.code;
    if (type.httpStatus !== undefined) {
      this.status = type.httpStatus;
      this.statusCode = type.httpStatus;
      this.expose = false;
    }
  }
}

/** Options given to forRoot / forRootAsync (or to a single call) are wrong; the message names the option. */
export class InvalidOptionsError extends RedisToolkitError {
  static override readonly code: string = 'E_INVALID_OPTIONS';
}

/**
 * An entry point of the package (`nestjs-redis-toolkit/otel`, `/terminus`, `/notifications`, `/testing`) was imported
 * in an app without the optional peer it loads; the message names the subpath, the missing packages and the install
 * line. Thrown by the import itself, in place of Node's ERR_MODULE_NOT_FOUND from inside the package.
 */
export class MissingPeerError extends RedisToolkitError {
  static override readonly code: string = 'E_MISSING_PEER';
}

/**
 * Fake timers (jest.useFakeTimers) stop something the toolkit cannot do without: ioredis connecting while
 * `process.nextTick` is faked by a clock the test advances by hand. The message names the setting that works.
 */
export class FakeTimersError extends RedisToolkitError {
  static override readonly code: string = 'E_FAKE_TIMERS';
}

/** A key, resource, channel or id given by the caller cannot be used (empty, too long, control characters). */
export class InvalidKeyError extends RedisToolkitError {
  static override readonly code: string = 'E_INVALID_KEY';
}

/**
 * A value could not be serialized (BigInt, circular structure, undefined), is larger than a size bound
 * (pubsub.maxMessageBytes; cache.maxValueBytes: CacheValueTooLargeError), or a stored payload could not be read back.
 */
export class SerializationError extends RedisToolkitError {
  static override readonly code: string = 'E_SERIALIZATION';
}

/** Redis could not be reached, or did not answer within `commandTimeout`. */
export class RedisUnavailableError extends RedisToolkitError {
  static override readonly code: string = 'E_REDIS_UNAVAILABLE';
  static override readonly httpStatus = 503;
}

export class LockNotAcquiredError extends RedisToolkitError {
  static override readonly code: string = 'E_LOCK_NOT_ACQUIRED';
  static override readonly httpStatus = 409;
}

/** The lock expired or was taken by another owner before release/extend. */
export class LockLostError extends RedisToolkitError {
  static override readonly code: string = 'E_LOCK_LOST';
}

/** `using` held the lock for `maxHoldMs`: the signal was aborted, the lock released, the call rejected. */
export class LockHoldTimeoutError extends RedisToolkitError {
  static override readonly code: string = 'E_LOCK_HOLD_TIMEOUT';
}

/**
 * A guard was asked to decide for an execution context it cannot read (e.g. `rpc`, or a custom transport): it refuses
 * rather than let the call through unlimited. Override `getRequestResponse` to support it, or `@SkipThrottle()`.
 */
export class UnsupportedContextError extends RedisToolkitError {
  static override readonly code: string = 'E_UNSUPPORTED_CONTEXT';
}

export class RateLimitExceededError extends RedisToolkitError {
  static override readonly code: string = 'E_RATE_LIMIT_EXCEEDED';
  static override readonly httpStatus = 429;

  constructor(
    message: string,
    readonly retryAfterMs: number,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

export class SessionNotFoundError extends RedisToolkitError {
  static override readonly code: string = 'E_SESSION_NOT_FOUND';
  static override readonly httpStatus = 401;
}

/** A cache loader did not settle within `cache.loadTimeout`: its callers get this, and the key is free again. */
export class CacheLoadTimeoutError extends RedisToolkitError {
  static override readonly code: string = 'E_CACHE_LOAD_TIMEOUT';
  static override readonly httpStatus = 504;

  /**
   * @param key the entry whose loader timed out, as stored (the Redis key after the cache's prefix, its reserved
   * characters percent-encoded): a property, not part of the message, which becomes the failed spans' status and
   * exception event (cache spans carry no key: it may hold a user id or an email)
   */
  constructor(
    message: string,
    readonly key: string,
  ) {
    super(message);
  }
}

/**
 * A cache entry (the value serialised, with its header) is larger than the cache's bound on a value:
 * `cache.maxValueBytes`, or by default what the server's `client-output-buffer-limit normal` lets one reply carry (a
 * read of a larger one makes Redis close the connection, failing every call in flight on it). `set` and `mset` throw
 * it and write nothing; a loaded value (getOrSet, @Cacheable, HttpCacheInterceptor) is returned uncached instead.
 * A SerializationError, as pub/sub's message past `pubsub.maxMessageBytes` is: a value that cannot be stored as given.
 */
export class CacheValueTooLargeError extends SerializationError {
  static override readonly code: string = 'E_CACHE_VALUE_TOO_LARGE';

  /**
   * @param key the key as given to `set`
   * @param bytes the entry's size as sent to Redis (UTF-8 bytes)
   * @param maxBytes the bound it is over
   * @param boundFrom where the bound came from: `cache.maxValueBytes`, or the server's limit (which server)
   */
  constructor(
    message: string,
    readonly key: string,
    readonly bytes: number,
    readonly maxBytes: number,
    readonly boundFrom: string,
  ) {
    super(message);
  }
}

/** A lock server may evict any key (`maxmemory-policy allkeys-*`) and `lock.onUnsafeEviction` is `'refuse'`. */
export class UnsafeEvictionPolicyError extends RedisToolkitError {
  static override readonly code: string = 'E_UNSAFE_EVICTION_POLICY';
}

/**
 * A session would be larger than its bound: `session.maxSize` (RedisSessionStore's `maxSize`), or less, what the
 * server's `client-output-buffer-limit normal` lets one reply carry (what one call writes, or the whole session after
 * a merge). Nothing was written.
 */
export class SessionTooLargeError extends RedisToolkitError {
  static override readonly code: string = 'E_SESSION_TOO_LARGE';

  /**
   * @param bytes the session's size as it would be stored (UTF-8 bytes); undefined when the merge ran in Redis
   * (appendUpdates' or the Lua fallback's), which does not report it
   * @param maxBytes the bound it is over (bytes)
   */
  constructor(
    message: string,
    readonly bytes?: number,
    readonly maxBytes?: number,
  ) {
    super(message);
  }
}

/**
 * Redis answered this one call with an error (WRONGTYPE, OOM, an `ERR` from a script, `ERR value is not an
 * integer`...): Redis is up, the call is wrong or cannot be served. Never treated as an outage (no fail-open).
 * `replyCode` is the first word of the reply (`WRONGTYPE`, `OOM`, `ERR`...).
 */
export class RedisReplyError extends RedisToolkitError {
  static override readonly code: string = 'E_REDIS_REPLY';

  constructor(
    message: string,
    readonly replyCode: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/**
 * The ACL user may not run a command, or touch a key or channel, the toolkit needs (NOPERM). Grant it; see
 * docs/security.md.
 */
export class RedisPermissionError extends RedisReplyError {
  static override readonly code: string = 'E_REDIS_PERMISSION';
}

/** What an UnsupportedRedisVersionError names: the feature that needs the newest Redis, and what the server said. */
export interface UnsupportedRedisVersionDetails {
  /** The feature (`session`, `pub/sub`, `rate limit`...). */
  readonly feature: string;
  /** The command it needs that version for (`PEXPIRETIME`). */
  readonly command: string;
  /** The version it needs, `major.minor` (`7.0`). */
  readonly minimum: string;
  /** The version the server reported: INFO server `redis_version` (a Valkey's: the Redis it is compatible with). */
  readonly reported: string;
  /** The server, as the toolkit names it (its address; a cluster master's). */
  readonly server: string;
}

/**
 * A Redis server is older than a feature running on it needs (e.g. sessions send PEXPIRETIME, Redis 7.0): the start is
 * refused rather than that feature's first call failing with `ERR unknown command` or `ERR syntax error`. The message
 * names every feature the server is too old for; the fields name the one needing the newest version.
 */
export class UnsupportedRedisVersionError extends RedisToolkitError implements UnsupportedRedisVersionDetails {
  static override readonly code: string = 'E_UNSUPPORTED_REDIS_VERSION';
  readonly feature: string;
  readonly command: string;
  readonly minimum: string;
  readonly reported: string;
  readonly server: string;

  constructor(message: string, details: UnsupportedRedisVersionDetails, options?: { cause?: unknown }) {
    super(message, options);
    this.feature = details.feature;
    this.command = details.command;
    this.minimum = details.minimum;
    this.reported = details.reported;
    this.server = details.server;
  }
}
