import type { ConnectionOptions as TlsConnectionOptions } from 'node:tls';
import type { Cluster, ClusterOptions, Redis } from 'ioredis';

export interface RedisNodeAddress {
  host: string;
  port: number;
}

interface RedisAuthOptions {
  /** ACL user name (Redis 6+). */
  username?: string;
  password?: string;
  /** `true` for TLS with the system CAs, or node's tls options (ca, cert, key, servername, ...). */
  tls?: boolean | TlsConnectionOptions;
}

/** How long READONLY replies may last before they count as a misconfigured connection (not for a cluster). */
export interface ReadOnlyGraceOption {
  /**
   * For this long (ms) after the first READONLY of a streak (the server was demoted to a replica) each feature
   * follows its failure policy, as during a failover; after it a READONLY fails the call with RedisReplyError
   * (READONLY), an ERROR is logged every 10 s and health says degraded, until the server is a master again.
   * Default 30000; 0: never fail open on READONLY. docs/connections.md.
   */
  readOnlyGraceMs?: number;
}

/** One server: a `redis://` / `rediss://` url, or host and port (defaults 127.0.0.1:6379). */
export interface RedisStandaloneConnection extends RedisAuthOptions, ReadOnlyGraceOption {
  /**
   * `redis[s]://[user[:password]@]host[:port][/db]`: a host is required (a unix socket needs `{ client }`), the path
   * is empty or a db index, user name and password are percent-encoded, and only `family` is read from the query. A
   * `db`, `username` or `password` given beside it must not differ from what the url sets.
   */
  url?: string;
  host?: string;
  port?: number;
  db?: number;
}

export interface RedisSentinelConnection extends RedisAuthOptions, ReadOnlyGraceOption {
  sentinels: RedisNodeAddress[];
  /** The master group name the sentinels monitor. */
  name: string;
  sentinelUsername?: string;
  sentinelPassword?: string;
  /** TLS to the sentinels themselves (`true` for the system CAs); `tls` is for the master they name. */
  sentinelTls?: boolean | TlsConnectionOptions;
  db?: number;
}

export interface RedisClusterConnection extends RedisAuthOptions {
  cluster: RedisNodeAddress[];
  clusterOptions?: ClusterOptions;
}

/**
 * A client you created (e.g. `new Redis({ path })` for a unix socket), used as it is: no other option goes beside it.
 * The toolkit never quits it; connections it derives (subscriber) are its own.
 */
export interface RedisExistingClientConnection extends ReadOnlyGraceOption {
  client: Redis | Cluster;
}

export type RedisConnectionOptions =
  | RedisStandaloneConnection
  | RedisSentinelConnection
  | RedisClusterConnection
  | RedisExistingClientConnection;

/** The name of `connection` among the named connections of forRoot. */
export const DEFAULT_CONNECTION_NAME = 'default';

/**
 * `connections` of forRoot: more servers by name (`{ sessions: { url }, volatile: { url } }`), each given like
 * `connection`. A feature runs on one of them with its own `connection` option (`session: { connection: 'sessions' }`);
 * the others stay on `connection`. Only the connections some feature names are opened.
 */
export type RedisNamedConnections = Record<string, RedisConnectionOptions>;

/** The option every feature slice of forRoot takes: the name of the connection it runs on. */
export interface FeatureConnectionOption {
  /** A name from `connections` of forRoot; default: `connection`. */
  connection?: string;
}

/** Injection token of ResolvedConnectionOptions. */
export const CONNECTION_OPTIONS = Symbol('CONNECTION_OPTIONS');

/** What RedisConnection needs: the target and the timing options of forRoot, defaults filled in. */
export interface ResolvedConnectionOptions {
  connection: RedisConnectionOptions;
  /** Its name in forRoot (`default` for `connection`): in errors and health. */
  name?: string;
  commandTimeout: number;
  connectTimeout: number;
  lazyConnect: boolean;
  maxReconnectDelay: number;
}
