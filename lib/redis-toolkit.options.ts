import type { Serializer } from './common/serializer.js';
import type {
  FeatureConnectionOption,
  RedisConnectionOptions,
  RedisNamedConnections,
} from './connection/connection.options.js';
import type { CacheOptions } from './cache/cache.options.js';
import type { RateLimitOptions } from './rate-limit/rate-limit.options.js';
import type { SessionOptions } from './session/session.options.js';
import type { LockOptions } from './lock/lock.options.js';
import type { PubSubOptions } from './pubsub/pubsub.options.js';

export interface RedisToolkitOptions {
  /** The default connection: every feature without a `connection` name of its own runs on it. */
  connection: RedisConnectionOptions;
  /**
   * More connections by name, each given like `connection` (e.g. `{ sessions: { url }, volatile: { url } }`); a
   * feature picks one with its `connection` option. Only the ones some feature names are opened.
   */
  connections?: RedisNamedConnections;
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
  cache?: CacheOptions & FeatureConnectionOption;
  rateLimit?: RateLimitOptions & FeatureConnectionOption;
  session?: SessionOptions & FeatureConnectionOption;
  lock?: LockOptions & FeatureConnectionOption;
  /** Pub/sub and everything on it (the notifications gateway, session revocations) use its connection. */
  pubsub?: PubSubOptions & FeatureConnectionOption;
}
