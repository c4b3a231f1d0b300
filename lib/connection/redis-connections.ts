import type { OnApplicationBootstrap, OnApplicationShutdown, OnModuleInit } from '@nestjs/common';
import { InvalidOptionsError } from '../common/errors.js';
import {
  DEFAULT_CONNECTION_NAME,
  type RedisNamedConnections,
  type ResolvedConnectionOptions,
} from './connection.options.js';
import { CONNECTION_FEATURES, type ConnectionFeature } from './connection.validation.js';
import { RedisConnection } from './redis-connection.js';

/**
 * Injection tokens of the RedisConnection each feature runs on (`cache: { connection: 'volatile' }` of forRoot);
 * a feature's services inject theirs instead of RedisConnection (which is the default connection).
 */
export const FEATURE_CONNECTION: Readonly<Record<ConnectionFeature, symbol>> = Object.freeze({
  cache: Symbol('RedisToolkit:cache connection'),
  rateLimit: Symbol('RedisToolkit:rateLimit connection'),
  session: Symbol('RedisToolkit:session connection'),
  lock: Symbol('RedisToolkit:lock connection'),
  pubsub: Symbol('RedisToolkit:pubsub connection'),
});

export interface RedisConnectionsOptions {
  /** `connections` of forRoot. */
  connections: RedisNamedConnections;
  /** The connection each feature runs on. */
  featureConnections: Record<ConnectionFeature, string>;
  /** The timing options of forRoot, shared by every connection. */
  timing: Omit<ResolvedConnectionOptions, 'connection' | 'name'>;
}

/**
 * The toolkit's connections by name: `default` (`connection` of forRoot) and each entry of `connections`, every one
 * opened at start like the default (fail fast, or in the background with `lazyConnect`): a configured server that is
 * down stops the start rather than the first request that needs it. Every connection it opened is quit on shutdown
 * (a `{ client }` given by the user is left open); a startup failure of one closes all, so nothing keeps retrying or
 * holds the process open.
 */
export class RedisConnections implements OnModuleInit, OnApplicationBootstrap, OnApplicationShutdown {
  private readonly opened = new Map<string, RedisConnection>();

  constructor(
    defaultConnection: RedisConnection,
    private readonly options: RedisConnectionsOptions,
  ) {
    this.opened.set(DEFAULT_CONNECTION_NAME, defaultConnection);
    for (const [name, connection] of Object.entries(options.connections)) {
      this.opened.set(name, new RedisConnection({ ...options.timing, connection, name }));
    }
  }

  /** Every configured name: `default` and the keys of `connections`. */
  get names(): string[] {
    return [...this.opened.keys()];
  }

  /** Every connection by name, `default` first. */
  entries(): [string, RedisConnection][] {
    return [...this.opened];
  }

  /** The connection `feature` runs on. */
  forFeature(feature: ConnectionFeature): RedisConnection {
    return this.get(this.options.featureConnections[feature]);
  }

  /** The features that run on the connection named `name`. */
  featuresOn(name: string): ConnectionFeature[] {
    return CONNECTION_FEATURES.filter((f) => this.options.featureConnections[f] === name);
  }

  /** The connection named `name`: `default` or a key of `connections`. */
  get(name: string): RedisConnection {
    const connection = this.opened.get(name);
    if (connection) return connection;
    const known = this.names.map((n) => JSON.stringify(n)).join(', ');
    throw new InvalidOptionsError(`Unknown Redis connection ${JSON.stringify(name)}: known are ${known}`);
  }

  async onModuleInit(): Promise<void> {
    const results = await Promise.allSettled([...this.opened.values()].map((c) => c.onModuleInit()));
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (!failed) return;
    // The app is not going to start: close every connection, so nothing keeps retrying (or the process alive).
    await this.onApplicationShutdown();
    throw failed.reason;
  }

  /**
   * Once every feature has started: a connection a feature could not start without, refused by the server at start
   * (the cache L1's tracking connection past maxclients: RedisConnection.failsStart), fails the start here, every
   * connection closed, as a refused main connection fails it above (until 2026-12-06 the app started, its L1 empty
   * and retried every 2 s).
   */
  async onApplicationBootstrap(): Promise<void> {
    const refused = [...this.opened.values()].map((c) => c.endStart()).find((e) => e !== undefined);
    if (refused === undefined) return;
    await this.onApplicationShutdown();
    throw refused;
  }

  async onApplicationShutdown(): Promise<void> {
    await Promise.all([...this.opened.values()].map((c) => c.onApplicationShutdown()));
  }
}
