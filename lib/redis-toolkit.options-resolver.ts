import { DEFAULT_KEY_PREFIX } from './common/keys.js';
import { OptionProblems } from './common/option-checks.js';
import { JsonSerializer, SafeSerializer, type Serializer } from './common/serializer.js';
import type { RedisConnectionOptions, RedisNodeAddress } from './connection/connection.options.js';
import { resolveCacheOptions, type ResolvedCacheOptions } from './cache/cache.options.js';
import { resolveRateLimitOptions, type ResolvedRateLimitOptions } from './rate-limit/rate-limit.options.js';
import { resolveSessionOptions, type ResolvedSessionOptions } from './session/session.options.js';
import { resolveLockOptions, type ResolvedLockOptions } from './lock/lock.options.js';
import { resolvePubSubOptions, type ResolvedPubSubOptions } from './pubsub/pubsub.options.js';
import {
  resolveNotificationsOptions,
  type ResolvedNotificationsGatewayOptions,
} from './notifications/notifications.options.js';
import { TOOLKIT_OPTION_KEYS } from './redis-toolkit.option-keys.js';
import type { RedisToolkitOptions } from './redis-toolkit.options.js';

/** The options after validation, with every default filled in: the one place defaults live. */
export interface ResolvedRedisToolkitOptions {
  connection: RedisConnectionOptions;
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
  checkConnection(o.connection, problems);
  problems.string('keyPrefix', o.keyPrefix, { allowEmpty: true });
  problems.duration('commandTimeout', o.commandTimeout);
  problems.duration('connectTimeout', o.connectTimeout);
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

function checkConnection(connection: unknown, problems: OptionProblems): void {
  if (connection === undefined) {
    problems.add(
      'connection',
      'is required: { url } or { host, port }, { sentinels, name }, { cluster } or { client }',
    );
    return;
  }
  if (!problems.object('connection', connection)) return;
  const c = connection as Record<string, unknown>;
  const kinds = [
    c.url !== undefined || c.host !== undefined || c.port !== undefined ? 'url/host/port' : undefined,
    c.sentinels !== undefined ? 'sentinels' : undefined,
    c.cluster !== undefined ? 'cluster' : undefined,
    c.client !== undefined ? 'client' : undefined,
  ].filter((k): k is string => k !== undefined);
  if (kinds.length === 0) {
    // `{ url: process.env.UNSET }` or `{}` would otherwise connect to 127.0.0.1:6379 without a word.
    problems.add(
      'connection',
      'names no server: give url (it is undefined here), host/port, sentinels, cluster or client',
    );
    return;
  }
  if (kinds.length > 1) {
    problems.add(
      'connection',
      `must give only one of url/host/port, sentinels, cluster or client (got ${kinds.join(' and ')})`,
    );
    return;
  }
  if (c.url !== undefined) {
    if (c.host !== undefined || c.port !== undefined)
      problems.add('connection', 'give either url or host/port, not both');
    checkUrl(c.url, problems);
  }
  problems.string('connection.host', c.host);
  problems.integer('connection.port', c.port, 1, 65_535);
  problems.integer('connection.db', c.db, 0, 15_999);
  problems.string('connection.username', c.username);
  problems.string('connection.password', c.password, { allowEmpty: true });
  if (c.tls !== undefined && typeof c.tls !== 'boolean') problems.object('connection.tls', c.tls);
  if (c.sentinels !== undefined) {
    checkNodes('connection.sentinels', c.sentinels, problems);
    problems.string('connection.name', c.name);
    if (c.name === undefined) problems.add('connection.name', 'is required with sentinels (the master group name)');
  }
  if (c.cluster !== undefined) {
    checkNodes('connection.cluster', c.cluster, problems);
    if (c.db !== undefined) problems.add('connection.db', 'cannot be used with a cluster (it has only db 0)');
  }
  if (c.client !== undefined) {
    const client = c.client as { status?: unknown; duplicate?: unknown } | null;
    if (!client || typeof client.duplicate !== 'function' || typeof client.status !== 'string') {
      problems.add('connection.client', 'must be an ioredis Redis or Cluster instance');
    }
  }
}

function checkUrl(url: unknown, problems: OptionProblems): void {
  if (typeof url !== 'string') {
    problems.string('connection.url', url);
    return;
  }
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    problems.add('connection.url', `is not a valid URL: ${JSON.stringify(url)}`);
    return;
  }
  if (parsed.protocol !== 'redis:' && parsed.protocol !== 'rediss:') {
    problems.add('connection.url', `must start with redis:// or rediss://, got ${parsed.protocol}//`);
  }
  if (parsed.port !== '' && (Number(parsed.port) < 1 || Number(parsed.port) > 65_535)) {
    problems.add('connection.url', `has a port out of range: ${parsed.port}`);
  }
}

function checkNodes(path: string, nodes: unknown, problems: OptionProblems): void {
  if (!Array.isArray(nodes) || nodes.length === 0) {
    problems.add(path, 'must be a non-empty array of { host, port }');
    return;
  }
  nodes.forEach((node: Partial<RedisNodeAddress>, i) => {
    if (!problems.object(`${path}[${i}]`, node)) return;
    problems.string(`${path}[${i}].host`, node.host);
    if (node.port === undefined) problems.add(`${path}[${i}].port`, 'is required');
    problems.integer(`${path}[${i}].port`, node.port, 1, 65_535);
  });
}
