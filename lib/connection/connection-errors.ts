// What a RedisConnection knows of its connections' failures: each one's last error (health, the words of the calls
// that fail meanwhile), the throttled warning, what the server's closes and refusals say (server-closes.ts), and a
// refusal at start that fails the start (failsStart).
import type { Logger } from '@nestjs/common';
import { Cluster, Redis } from 'ioredis';
import type { RedisToolkitError } from '../common/errors.js';
import type { RedisClient } from '../common/lua-script.js';
import { ThrottledWarning } from '../common/throttled-logger.js';
import { connectError } from './connect-error.js';
import { closedAtOnce, ServerCloses, ServerRefusal, ServerRefusals } from './server-closes.js';

/** ioredis' message for a command on a closed connection: says nothing about why it closed. */
const CONNECTION_CLOSED = 'Connection is closed.';

/** What ConnectionErrors asks of its RedisConnection. */
export interface ConnectionErrorsHost {
  /** The connection's address and name, as messages show it. */
  description(): string;
  /** ` (connection "name")` for a named connection, else nothing. */
  which(): string;
  /** `lazyConnect` of forRoot: nothing fails the start. */
  lazyConnect(): boolean;
  /** How long a refusal probe waits for the server's line (ms). */
  probeMs(): number;
  /** app.close() is quitting the connections: an error of theirs is part of the close. */
  quitting(): boolean;
  /** A client the connection created (not a `{ client }` of the user's, nor a cluster's node connection). */
  owns(client: RedisClient): boolean;
  /** A created client's role (`subscriber`, `L1 tracking 10.0.0.5:6379`); undefined for the main client. */
  roleOf(client: RedisClient): string | undefined;
}

export class ConnectionErrors {
  /** The last connection-level error per client: "Connection is closed" alone does not say why. */
  readonly last = new WeakMap<RedisClient, Error>();
  private readonly warning: ThrottledWarning;
  /**
   * What the server's closes say (redis.conf timeout: a keepalive; calls in flight; refusals). Of a cluster's node
   * connections and a `{ client }` of the user's only the keepalive: their errors are not ours to say.
   */
  readonly closes: ServerCloses;
  /** What the server said refusing a client's connection (maxclients). */
  readonly refusals: ServerRefusals;
  /** Set once every feature has started (endStart): a refusal is the feature's to retry from then on. */
  private startOver = false;
  /** What failsStart found: the start fails with it (endStart). */
  private startRefused: RedisToolkitError | undefined;

  constructor(
    logger: Logger,
    private readonly host: ConnectionErrorsHost,
  ) {
    this.warning = new ThrottledWarning(logger, undefined, () => 'Redis connection errors');
    this.closes = new ServerCloses(
      {
        closed: (client, why, callsFailed) => {
          if (!host.owns(client)) return;
          this.last.set(client, why);
          if (callsFailed) this.warning.warn(`Redis ${this.named(client)} connection: ${why.message}`);
        },
        refused: (client) => void (host.owns(client) && this.refusals.name(client)),
        keepingAlive: (message) => logger.warn(`Redis at ${host.description()} ${message}`),
      },
      () => host.quitting(),
    );
    this.refusals = new ServerRefusals({
      quitting: () => host.quitting(),
      probeMs: () => host.probeMs(),
      refused: (client, refusal) => {
        this.last.set(client, refusal);
        this.warning.warn(`Redis ${this.named(client)} connection error: ${refusal.message}`);
      },
    });
  }

  /**
   * A client the connection created (`role`: `main`, `subscriber`...): its errors are kept and warned of (without a
   * listener ioredis prints every one; one throttled line per interval is enough), its closes watched.
   */
  listen(client: RedisClient, role: string): void {
    this.closes.watch(client);
    if (client instanceof Redis) client.on('ready', () => this.refusals.ready(client));
    client.on('error', (error: Error) => {
      const quitting = this.host.quitting();
      const err = client instanceof Redis && !quitting ? this.refusals.why(client, error) : error;
      // A cluster reports "Failed to refresh slots cache" (why: the node error kept below), or its last node's error.
      const nodeError = (err as { lastNodeError?: { message?: unknown } }).lastNodeError;
      const why = typeof nodeError?.message === 'string' ? nodeError.message : undefined;
      if (why === undefined) this.last.set(client, err);
      else if (why !== CONNECTION_CLOSED || !this.last.has(client))
        this.last.set(client, new Error(`${err.message} (${why})`));
      // Quitting, a reset is no outage: Redis resets a connection whose QUIT it read with a command after it (a call
      // made as the app closed), and so may a proxy; the calls that fail say so themselves.
      if (quitting) return;
      const line = `Redis ${role} connection error${this.host.which()}: ${err.message}`;
      // Closed before it was ready, with no word in ioredis's error (write EPIPE): what the server said (maxclients)
      // is warned instead, asked on a connection of its own; this line only when it said nothing. Until 2026-12-06
      // the EPIPE line came first and the refusal's fell in its throttle's interval, unsaid.
      if (client instanceof Redis && client.status !== 'ready' && !(err instanceof ServerRefusal) && closedAtOnce(err))
        void this.refusals.name(client).then((refusal) => {
          if (refusal === undefined && !this.host.quitting()) this.warning.warn(line);
        });
      else this.warning.warn(line);
    });
    // A cluster node's own error (a refused certificate, WRONGPASS) says why no startup node is available.
    if (client instanceof Cluster)
      client.on('node error', (err: Error, node: string) => {
        if (err.message !== CONNECTION_CLOSED) this.last.set(client, new Error(`node ${node}: ${err.message}`));
      });
  }

  /**
   * A connection a feature cannot start without (the cache L1's tracking connection) failed at start: when the
   * server refused it (maxclients: what it said, ServerRefusals.name), the start fails with that once
   * every feature has started (endStart: RedisConnections.onApplicationBootstrap) and this resolves true, so the
   * feature stops instead of retrying every few seconds. False after the start (the feature retries; the warning names
   * the refusal), with lazyConnect, and for any other cause.
   */
  async failsStart(client: Redis): Promise<boolean> {
    if (this.host.lazyConnect() || this.startOver) return false;
    // Asked whatever ioredis said (write EPIPE, a reset, only that the command was not sent): the server's line says
    const last = this.last.get(client);
    const refusal = last instanceof ServerRefusal ? last : await this.refusals.name(client);
    if (refusal === undefined || this.startOver) return false;
    const which = `${this.host.description()} (its ${this.host.roleOf(client) ?? 'main'} connection)`;
    this.startRefused ??= connectError(refusal, which);
    return true;
  }

  /** Every feature has started: the refusal failsStart kept, which fails the start. */
  endStart(): RedisToolkitError | undefined {
    this.startOver = true;
    return this.startRefused;
  }

  /** At shutdown: the warning's pending count now (no timer outlives the app), every listener of the closes off. */
  close(): void {
    this.warning.close();
    this.closes.close();
  }

  /** A client's role and connection name, in warnings: `subscriber (connection "sessions")`. */
  private named(client: RedisClient): string {
    return `${this.host.roleOf(client) ?? 'main'}${this.host.which()}`;
  }
}
