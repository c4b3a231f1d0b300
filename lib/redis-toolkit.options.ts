import type { Serializer } from './common/serializer.js';
import type { RedisConnectionOptions } from './connection/connection.options.js';
import type { CacheOptions } from './cache/cache.options.js';
import type { RateLimitOptions } from './rate-limit/rate-limit.options.js';
import type { SessionOptions } from './session/session.options.js';
import type { LockOptions } from './lock/lock.options.js';
import type { PubSubOptions } from './pubsub/pubsub.options.js';

export interface RedisToolkitOptions {
  connection: RedisConnectionOptions;
  /** Every key the toolkit writes starts with this. Default `rtk:`. */
  keyPrefix?: string;
  /** No Redis command waits longer than this (ms). Default 1000. */
  commandTimeout?: number;
  /** How long connecting may take at start (ms). Default 5000. */
  connectTimeout?: number;
  /** `true`: do not connect (or fail) at start; connect on first use. Default false: fail fast at bootstrap. */
  lazyConnect?: boolean;
  /** Longest pause between reconnect attempts (ms). Default 1000, so a restarted Redis is back in use within ~1.2 s. */
  maxReconnectDelay?: number;
  /** Default: JSON with Date support. */
  serializer?: Serializer;
  cache?: CacheOptions;
  rateLimit?: RateLimitOptions;
  session?: SessionOptions;
  lock?: LockOptions;
  pubsub?: PubSubOptions;
}
