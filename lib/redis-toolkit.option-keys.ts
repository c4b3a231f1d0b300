import type { OptionShape } from './common/option-checks.js';

// The option names RedisToolkitModule accepts, one shape per options object: a key missing here is reported as
// unknown (with the nearest known name), so a new option is added here beside its interface.

const THROTTLE: OptionShape = {
  limit: true,
  ttl: true,
  algorithm: true,
  burst: true,
  blockDuration: true,
  cost: true,
  key: true,
  name: true,
  failOpen: true,
};

export const CONNECTION_OPTION_KEYS: OptionShape = {
  url: true,
  host: true,
  port: true,
  db: true,
  username: true,
  password: true,
  tls: true,
  sentinels: true,
  name: true,
  sentinelUsername: true,
  sentinelPassword: true,
  sentinelTls: true,
  cluster: true,
  clusterOptions: true,
  client: true,
  readOnlyGraceMs: true,
};

/** A quorum lock node: a connection of its own, whose READONLY the lock's quorum handles (no readOnlyGraceMs). */
const QUORUM_NODE_OPTION_KEYS: OptionShape = Object.fromEntries(
  Object.entries(CONNECTION_OPTION_KEYS).filter(([key]) => key !== 'readOnlyGraceMs'),
);

export const CACHE_OPTION_KEYS: OptionShape = {
  connection: true,
  defaultTtl: true,
  staleTtl: true,
  l1: { max: true, ttl: true, maxBytes: true, invalidation: true },
  failOpen: true,
  lockTtl: true,
  lockWait: true,
  loadTimeout: true,
  softTimeout: true,
  grace: true,
  graceBackoff: true,
  beta: true,
  maxValueBytes: true,
};

export const RATE_LIMIT_OPTION_KEYS: OptionShape = {
  connection: true,
  defaults: THROTTLE,
  failOpen: true,
  headers: true,
  trustProxy: true,
  ipv6Subnet: true,
  insurance: { divideLimitBy: true, maxKeys: true },
  warnIntervalMs: true,
  maxSlidingWindowLimit: true,
  skipIf: true,
  ignoreUserAgents: true,
  errorMessage: true,
  allowList: true,
  denyList: true,
  blockCache: { maxKeys: true },
};

export const SESSION_OPTION_KEYS: OptionShape = {
  connection: true,
  ttl: true,
  rolling: true,
  touchAfter: true,
  maxAgeMs: true,
  tombstoneMs: true,
  maxSize: true,
  appendUpdates: true,
  cookie: {
    name: true,
    secret: true,
    httpOnly: true,
    secure: true,
    sameSite: true,
    path: true,
    domain: true,
    maxAge: true,
  },
};

export const LOCK_OPTION_KEYS: OptionShape = {
  connection: true,
  ttl: true,
  retry: { count: true, delay: true, jitter: true },
  maxHoldMs: true,
  onUnsafeEviction: true,
  extensionThreshold: true,
  wakeOnRelease: true,
  // Each node is a connection of its own: `{ host, prot }` must not become host:6379, nor `tsl` plaintext.
  quorum: { nodes: [QUORUM_NODE_OPTION_KEYS], driftFactor: true },
};

export const NOTIFICATIONS_OPTION_KEYS: OptionShape = {
  authenticate: true,
  authorize: true,
  publicChannels: true,
  maxSubscriptionsPerSocket: true,
  maxSocketsPerUser: true,
  maxChannelLength: true,
  subscribeRateLimit: { limit: true, ttl: true },
  rateLimiter: true,
  slowClient: { policy: true, maxBufferedMessages: true, maxBufferedBytes: true },
  maxReplay: true,
  allowedOrigins: true,
};

export const PUBSUB_OPTION_KEYS: OptionShape = {
  connection: true,
  cluster: true,
  durable: { maxLen: true, ttl: true },
  maxMessageBytes: true,
  gateway: NOTIFICATIONS_OPTION_KEYS,
};

export const TOOLKIT_OPTION_KEYS: OptionShape = {
  connection: CONNECTION_OPTION_KEYS,
  // Each entry is checked against CONNECTION_OPTION_KEYS by checkNamedConnections (its names are the user's).
  connections: true,
  keyPrefix: true,
  commandTimeout: true,
  connectTimeout: true,
  lazyConnect: true,
  maxReconnectDelay: true,
  serializer: true,
  cache: CACHE_OPTION_KEYS,
  rateLimit: RATE_LIMIT_OPTION_KEYS,
  session: SESSION_OPTION_KEYS,
  lock: LOCK_OPTION_KEYS,
  pubsub: PUBSUB_OPTION_KEYS,
};
