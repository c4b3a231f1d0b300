import { DEFAULT_KEY_PREFIX } from './common/keys.js';
import { OptionProblems } from './common/option-checks.js';
import { JsonSerializer, SafeSerializer, type Serializer } from './common/serializer.js';
import type { RedisConnectionOptions, RedisNamedConnections } from './connection/connection.options.js';
import {
  checkConnection,
  checkNamedConnections,
  resolveFeatureConnections,
  type ConnectionFeature,
} from './connection/connection.validation.js';
import { resolveCacheOptions, type ResolvedCacheOptions } from './cache/cache.options.js';
import { resolveRateLimitOptions, type ResolvedRateLimitOptions } from './rate-limit/rate-limit.options.js';
import { resolveSessionOptions, type ResolvedSessionOptions } from './session/session.options.js';
import { resolveLockOptions, type ResolvedLockOptions } from './lock/lock.options.js';
import { resolvePubSubOptions, type ResolvedPubSubOptions } from './pubsub/pubsub.options.js';
import {
  resolveNotificationsOptions,
  type ResolvedNotificationsGatewayOptions,
} from './notifications/notifications.options.js';
import { CONNECTION_OPTION_KEYS, TOOLKIT_OPTION_KEYS } from './redis-toolkit.option-keys.js';
import type { RedisToolkitOptions } from './redis-toolkit.options.js';

/** The options after validation, with every default filled in: the one place defaults live. */
export interface ResolvedRedisToolkitOptions {
  connection: RedisConnectionOptions;
  /** `connections` of forRoot (`{}` without it). */
  connections: RedisNamedConnections;
  /** The connection each feature runs on: `default` (= `connection`) or a name from `connections`. */
  featureConnections: Record<ConnectionFeature, string>;
  keyPrefix: string;
  commandTimeout: number;
  connectTimeout: number;
  lazyConnect: boolean;
  maxReconnectDelay: number;
  serializer: Serializer;
  cache: ResolvedCacheOptions;
  rateLimit: ResolvedRateLimitOptions;
  session: ResolvedSessionOptions;
  lock: ResolvedLockOptions;
  pubsub: ResolvedPubSubOptions;
  /** `pubsub.gateway`, resolved for the notifications gateway. */
  notifications: ResolvedNotificationsGatewayOptions | false;
}

/** Validates everything and throws one InvalidOptionsError that lists every wrong option by path. */
export function resolveToolkitOptions(raw: RedisToolkitOptions): ResolvedRedisToolkitOptions {
  const problems = new OptionProblems();
  if (!problems.object('options', raw) || raw === undefined) {
    problems.throwIfAny();
    problems.add('options', 'are required (at least { connection })');
    problems.throwIfAny();
  }
  const o = raw as RedisToolkitOptions;
  problems.unknownKeys('', o, TOOLKIT_OPTION_KEYS);
  checkConnection('connection', o.connection, problems);
  const connections = checkNamedConnections(o.connections, CONNECTION_OPTION_KEYS, problems);
  problems.string('keyPrefix', o.keyPrefix, { allowEmpty: true });
  // A brace in the prefix becomes the hash tag of every key: `{app}:` puts all of them in one cluster slot (one
  // master), and `app{}:` (an empty tag: Redis hashes the whole key) splits a lock from its fence counter (CROSSSLOT).
  if (typeof o.keyPrefix === 'string' && /[{}]/.test(o.keyPrefix))
    problems.add('keyPrefix', 'must not contain `{` or `}`: the toolkit places its own hash tags after the prefix');
  // Both go into ioredis's timers (and the start's wait, bounded at MAX_TIMER_MS): a longer delay fires at once.
  problems.duration('commandTimeout', o.commandTimeout, { timer: true });
  problems.duration('connectTimeout', o.connectTimeout, { timer: true });
  problems.duration('maxReconnectDelay', o.maxReconnectDelay);
  problems.boolean('lazyConnect', o.lazyConnect);
  if (
    o.serializer !== undefined &&
    (typeof o.serializer?.serialize !== 'function' || typeof o.serializer?.deserialize !== 'function')
  ) {
    problems.add('serializer', 'must have serialize(value) and deserialize(raw) functions');
  }
  const resolved: ResolvedRedisToolkitOptions = {
    connection: o.connection,
    connections,
    featureConnections: resolveFeatureConnections(o, connections, problems),
    keyPrefix: o.keyPrefix ?? DEFAULT_KEY_PREFIX,
    commandTimeout: o.commandTimeout ?? 1_000,
    connectTimeout: o.connectTimeout ?? 5_000,
    lazyConnect: o.lazyConnect ?? false,
    maxReconnectDelay: o.maxReconnectDelay ?? 1_000,
    serializer: new SafeSerializer(o.serializer ?? new JsonSerializer()),
    cache: resolveCacheOptions(o.cache, problems),
    rateLimit: resolveRateLimitOptions(o.rateLimit, problems),
    session: resolveSessionOptions(o.session, problems),
    lock: resolveLockOptions(o.lock, problems),
    pubsub: resolvePubSubOptions(o.pubsub, problems),
    notifications: resolveNotificationsOptions(
      o.pubsub !== null && typeof o.pubsub === 'object' ? o.pubsub.gateway : undefined,
      problems,
    ),
  };
  problems.throwIfAny();
  return resolved;
}
