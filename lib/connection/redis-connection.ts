import { Inject, Injectable, Logger, type OnApplicationShutdown, type OnModuleInit } from '@nestjs/common';
import { Cluster, Redis, type RedisOptions } from 'ioredis';
import { mastersOf } from '../common/cluster-masters.js';
import { RedisPermissionError, type RedisToolkitError, RedisUnavailableError } from '../common/errors.js';
import { replyCodeOf } from '../common/failure-policy.js';
import type { RedisClient } from '../common/lua-script.js';
import { MAX_TIMER_MS, withTimeout } from '../common/timeout.js';
import { connectError, deniedMastersError, refuseDeniedNetwork, reportDeniedMasters } from './connect-error.js';
import { DEFAULT_READONLY_GRACE_MS, type ReadOnlyStreak, readOnlyStreakOf } from './readonly-streak.js';
import { clusterReadyDenied } from './redis-permissions.cluster.js';
import { explainedFailure, IOREDIS_REFUSALS } from './redis-down-reason.js';
import { checkServer } from './redis-info.js';
import { fewRedirectionsWarning } from './cluster-redirections.js';
import { ConnectionErrors } from './connection-errors.js';
import { closeClient, connectAndPing } from './client-lifecycle.js';
import { tracedCommandsWarning } from './traced-commands-check.js';
import {
  CONNECTION_OPTIONS,
  DEFAULT_CONNECTION_NAME,
  type ReadOnlyGraceOption,
  type RedisConnectionOptions,
  type RedisStandaloneConnection,
  type ResolvedConnectionOptions,
} from './connection.options.js';
import {
  createClientFromOptions,
  createStandaloneClient,
  describeConnection,
  endpointsOf,
  reconnectDelay,
  resetOnCommandTimeout,
  timeSubscriberCommands,
  unverifiedTlsWarning,
  type ClientTuning,
} from './redis-client.factory.js';
import { refuseFakedNextTick, setImmediate } from '../common/real-timers.js';

/**
 * Owns the toolkit's Redis connections: the main client, the dedicated subscriber connection pub/sub needs, and any
 * extra standalone clients (quorum lock nodes). Connects at bootstrap and quits every connection it created on
 * shutdown; a client passed in by the user stays the user's.
 */
@Injectable()
export class RedisConnection implements OnModuleInit, OnApplicationShutdown {
  readonly client: RedisClient;
  readonly description: string;
  /** Its name in forRoot: `default` for `connection`, else the key in `connections`. */
  readonly name: string;
  private readonly owned = new Set<RedisClient>();
  /** The connections created besides the main one, by role (for health: connectionStates). */
  private readonly roles = new Map<RedisClient, string>();
  private readonly tuning: ClientTuning;
  private readonly logger = new Logger('RedisToolkit');
  /** Nest may call the hooks once per provider that hands out this connection: connect once, quit once. */
  private starting: Promise<void> | undefined;
  private closing: Promise<unknown> = Promise.resolve();
  /** Set when app.close() quits the connections: an error of theirs from then on is part of the close. */
  private quitting = false;
  /** Warnings found while building clients, logged at start. */
  private readonly pendingWarnings: string[] = [];
  /** `verifyServer`'s check of the server behind the main client (its INFO server): once, shared by every caller. */
  private serverVerified: Promise<Record<string, string> | undefined> | undefined;
  /** The main client's READONLY replies (readOnlyGraceMs); none on a cluster. */
  private readonly readOnly: ReadOnlyStreak | undefined;
  /** Its connections' errors, closes and refusals, what the warnings and health say of them: connection-errors.ts. */
  private readonly errors = new ConnectionErrors(this.logger, {
    description: () => this.description,
    which: () => this.which,
    lazyConnect: () => this.options.lazyConnect,
    probeMs: () => Math.min(this.options.commandTimeout, 1_000),
    quitting: () => this.quitting,
    owns: (client) => this.owned.has(client),
    roleOf: (client) => this.roles.get(client),
  });

  constructor(@Inject(CONNECTION_OPTIONS) private readonly options: ResolvedConnectionOptions) {
    this.tuning = {
      commandTimeout: options.commandTimeout,
      connectTimeout: options.connectTimeout,
      maxReconnectDelay: options.maxReconnectDelay,
    };
    this.name = options.name ?? DEFAULT_CONNECTION_NAME;
    const where = describeConnection(options.connection);
    this.description = this.name === DEFAULT_CONNECTION_NAME ? where : `${where} (connection "${this.name}")`;
    this.warnUnverifiedTls(options.connection, this.description);
    this.warnAtStart(fewRedirectionsWarning(options.connection, options.commandTimeout, this.description));
    const created = createClientFromOptions(options.connection, this.tuning);
    this.client = created ? this.own(created, 'main') : (options.connection as { client: RedisClient }).client;
    // A `{ client }` of the user's: the keepalive PINGs it when idle, once Redis closed an idle connection (close()
    // takes every listener off it at shutdown).
    if (created === null) this.errors.closes.watch(this.client);
    this.readOnly = readOnlyStreakOf(this.client, {
      graceMs: (options.connection as ReadOnlyGraceOption).readOnlyGraceMs ?? DEFAULT_READONLY_GRACE_MS,
      where: this.description,
      logger: this.logger,
      commandTimeout: options.commandTimeout,
      owned: created !== null,
    });
  }

  /** FailureConnection: a READONLY reply; why it fails the call once it outlasted readOnlyGraceMs (readonly-streak). */
  noteReadOnly(): string | undefined {
    return this.readOnly?.seen();
  }

  /** The last connection error of a client it created (default: the main one), for health; none for a `{ client }`. */
  lastError(client: RedisClient = this.client): string | undefined {
    return this.errors.last.get(client)?.message;
  }

  /**
   * A call's transport failure while this connection is not up (ioredis's "Connection is closed.", a status such as
   * `end`), in the toolkit's words (downReason: the address, the state, the last connection error); anything else
   * unchanged. The failure policy types what this returns.
   */
  explain(err: unknown): unknown {
    if (this.status === 'ready' && !(err instanceof Error && IOREDIS_REFUSALS.test(err.message))) return err;
    return explainedFailure(this, err);
  }

  /** For health: why writes have been refused past readOnlyGraceMs, while they are. */
  readOnlyLasting(): string | undefined {
    return this.readOnly?.lasting();
  }

  /** No command waits longer than this (ms): `commandTimeout` of forRoot. */
  get commandTimeout(): number {
    return this.options.commandTimeout;
  }

  /** A connection's handshake waits no longer than this (ms): `connectTimeout` of forRoot. */
  get connectTimeout(): number {
    return this.options.connectTimeout;
  }

  /**
   * What a start may spend on this connection (ms): connectTimeout + commandTimeout of forRoot (each at most
   * MAX_TIMER_MS, validated; their sum may not be: a longer timer would fire after 1 ms).
   */
  get startBudget(): number {
    return Math.min(this.options.connectTimeout + this.options.commandTimeout, MAX_TIMER_MS);
  }

  /** `lazyConnect` of forRoot: connect on first use rather than at start. */
  get lazyConnect(): boolean {
    return this.options.lazyConnect;
  }

  get isCluster(): boolean {
    return this.client instanceof Cluster;
  }

  /** `ready` once connected; `wait` before the first command of a lazy client; `reconnecting` while Redis is away. */
  get status(): string {
    // After shutdown a `{ client }` the user gave stays open (it is theirs) but this app is closed: its calls fail as
    // on a closed connection of its own (they went on to Redis until 2026-12-05; connection-leaks.spec.ts).
    return this.quitting && this.client.status === 'ready' ? 'end' : this.client.status;
  }

  /** ConnectionErrors.failsStart: a refusal at start of a connection `client`'s feature cannot start without. */
  failsStart(client: Redis): Promise<boolean> {
    return this.errors.failsStart(client);
  }

  /** Every feature has started: the refusal failsStart kept (RedisConnections fails the start with it). */
  endStart(): RedisToolkitError | undefined {
    return this.errors.endStart();
  }

  /** Opens a lazy client that was never opened (status `wait`), retrying in the background; no-op otherwise. */
  connectInBackground(): void {
    if (this.client.status === 'wait') this.client.connect().catch(() => undefined);
  }

  onModuleInit(): Promise<void> {
    this.warnAtStart(tracedCommandsWarning(this.client)); // ioredis traced with its default serializer
    this.flushWarnings();
    // A failed start closes what it made: Nest runs this hook before RedisConnections' (which closes every
    // connection when one fails) and calls no later one, so a `{ client }` the user gave kept the READONLY streak's
    // 'ready' listener of each failed boot (connection-leaks.spec.ts).
    this.starting ??= this.start().catch(async (err: unknown) => {
      await this.onApplicationShutdown();
      throw err;
    });
    return this.starting;
  }

  /**
   * Quits every connection this instance created (a client given as `{ client }` stays open: it is the user's), once
   * the calls already made are on their way: the features batch the calls of one event-loop turn and send them on
   * setImmediate (TickBatcher), and app.close() reaches this hook within that turn, so QUIT went first and the calls
   * made with or just before app.close() failed (a cached value read as a miss, a rate limit failing open, a lock
   * refused). One turn later they are written, QUIT follows them on each socket, and Redis answers them first.
   */
  async onApplicationShutdown(): Promise<void> {
    await new Promise<void>((resolve) => setImmediate(resolve));
    this.readOnly?.close();
    this.errors.close(); // the warning's pending count now (nothing is warned quitting), the keepalive off
    this.quitting = true;
    const clients = [...this.owned];
    this.owned.clear();
    this.roles.clear();
    this.closing = Promise.all([this.closing, ...clients.map((c) => closeClient(c))]);
    await this.closing;
  }

  private async start(): Promise<void> {
    refuseDeniedNetwork(this.description, endpointsOf(this.options.connection));
    if (!this.options.lazyConnect) {
      await this.connect(this.client, this.description);
    } else if (this.client.status === 'wait') {
      const client = this.client;
      if (client instanceof Cluster && this.owned.has(client))
        reportDeniedMasters(client, this.description, (m) => this.logger.error(m));
      // Start connecting in the background (retrying with backoff) so the client is ready as soon as Redis is;
      // until then commands fail at once and each feature's failure policy answers.
      this.client.connect().catch(() => undefined);
    }
  }

  /**
   * A new connection to the same server(s), for SUBSCRIBE (a subscribed connection cannot run other commands).
   * Created lazily: it connects on its first command. Quit on shutdown. `sharded` (a cluster only): ioredis keeps one
   * SSUBSCRIBE connection per master and moves channels when slots move.
   */
  createSubscriber(options: { sharded?: boolean } = {}): RedisClient {
    const client = this.client;
    // SUBSCRIBE may wait for this connection to come up (bounded by commandTimeout): it changes no data, and the
    // first subscription is what makes a lazy subscriber connect at all.
    const duplicate =
      client instanceof Cluster
        ? timeSubscriberCommands(
            client.duplicate(undefined, { enableOfflineQueue: true, shardedSubscribers: options.sharded === true }),
          )
        : client.duplicate({ enableOfflineQueue: true });
    return this.own(resetOnCommandTimeout(duplicate), options.sharded ? 'sharded subscriber' : 'subscriber');
  }

  /**
   * A new connection to the server of `node` (the main client, or one master of a cluster) with `overrides` (e.g.
   * RESP2 for the `__redis__:invalidate` channel of the cache's L1 tracking). Quit on shutdown, or by `release`.
   */
  createNodeConnection(node: Redis, role: string, overrides: Partial<RedisOptions> = {}): Redis {
    // A cluster's node connections never reconnect (the cluster replaces them): this one must, like the main client.
    const retryStrategy = (attempt: number) => reconnectDelay(attempt, this.tuning.maxReconnectDelay);
    const duplicate = node.duplicate({ enableOfflineQueue: true, retryStrategy, ...overrides });
    return this.own(resetOnCommandTimeout(duplicate), role);
  }

  /** Quits a connection made by `createNodeConnection` before shutdown (its master left the cluster). */
  async release(client: Redis): Promise<void> {
    this.owned.delete(client);
    this.roles.delete(client);
    this.errors.closes.unwatch(client);
    await closeClient(client);
  }

  /** A client for another, independent server (quorum lock nodes), tuned like the main one and quit on shutdown. */
  createStandaloneClient(connection: RedisStandaloneConnection): Redis {
    this.warnUnverifiedTls(connection, describeConnection(connection));
    return this.own(createStandaloneClient(connection, this.tuning), describeConnection(connection));
  }

  private warnUnverifiedTls(connection: RedisConnectionOptions, where: string): void {
    this.warnAtStart(unverifiedTlsWarning(connection, where));
  }

  private warnAtStart(warning: string | undefined): void {
    if (warning === undefined) return;
    // Said at start (onModuleInit), when the application's logger is in place; at once for a client created later.
    this.pendingWarnings.push(warning);
    if (this.starting) this.flushWarnings();
  }

  private flushWarnings(): void {
    for (const warning of this.pendingWarnings.splice(0)) this.logger.warn(warning);
  }

  /**
   * Each connection the toolkit uses, with ioredis's status (`ready`, `connecting`, `reconnecting`, `wait` for a lazy
   * one not yet needed, `end`): the main one (also when it is the user's client), then those created since, under
   * their role (`subscriber`, a quorum node's address), with the client (health PINGs them: a paused server's stays).
   */
  connectionStates(): { name: string; status: string; client: RedisClient }[] {
    const created = [...this.roles].map(([client, name]) => ({ name, status: client.status, client }));
    return [{ name: 'main', status: this.client.status, client: this.client }, ...created];
  }

  /** The connection to every master (one for a single server): cluster-masters.ts. */
  masters(): Promise<Redis[]> {
    return mastersOf(this.client);
  }

  /**
   * Connects a lazy client now, failing within connectTimeout + commandTimeout with the address and cause. For the
   * main client it then checks the server it reached (`verifyServer`).
   */
  async connect(client: RedisClient, description = this.description): Promise<void> {
    refuseFakedNextTick(description);
    const deadline = Date.now() + this.startBudget;
    try {
      await this.waitUntilReady(client);
    } catch (err) {
      // a cluster's ready check sent to a master Deno does not grant (the slot table is read by then)
      const unreachable = client instanceof Cluster ? deniedMastersError(client, description) : undefined;
      // Asked within what is left of the start's budget, and at least commandTimeout: a cluster whose ready check is
      // refused retries with no error event, so the wait ended only with the budget and nothing would be left.
      const within = Math.max(deadline - Date.now(), this.options.commandTimeout);
      const denied =
        client instanceof Cluster && unreachable === undefined
          ? await clusterReadyDenied(client, { ...this.tuning, within })
          : undefined;
      // Stop retrying in the background: the app is not going to start.
      if (this.owned.has(client)) client.disconnect();
      if (unreachable !== undefined) throw unreachable;
      if (denied !== undefined) {
        throw new RedisPermissionError(`Cannot connect to Redis at ${description}: ${denied}.`, 'NOPERM');
      }
      const tls = client instanceof Cluster ? client.options.redisOptions?.tls : client.options.tls;
      throw connectError(err, description, tls !== undefined);
    }
    if (client === this.client) await this.verifyServer();
  }

  /**
   * Once the main client is connected: refuses a server every feature would fail on, which ioredis connects to
   * without a word. A replica (INFO replication `role:slave`) answers each write with READONLY: the cache would skip
   * every write and rate limits would fail open on every call, while PING and health said up. A `db` the server does
   * not have (`databases` in redis.conf): ioredis's SELECT fails with only an error event, and the app ran on db 0.
   * InvalidOptionsError: the connection names the wrong server or db. Not for a cluster, whose client routes to the
   * masters itself (and has only db 0). Runs once (a transport failure is no verdict: asked again on the next call).
   * Resolves with the server's INFO server (undefined when refused, and for a cluster): the version check reads it.
   *
   * A cluster: deniedMastersError (Deno), at each `ready` (the masters may have moved).
   */
  verifyServer(): Promise<Record<string, string> | undefined> {
    const client = this.client;
    if (client instanceof Cluster) {
      const unreachable = deniedMastersError(client, this.description);
      return unreachable === undefined ? Promise.resolve(undefined) : Promise.reject(unreachable);
    }
    const where =
      'client' in this.options.connection
        ? `${this.description} (${client.options.host ?? '127.0.0.1'}:${client.options.port ?? 6379})`
        : this.description;
    this.serverVerified ??= checkServer(client, where, this.options.commandTimeout).catch((err: unknown) => {
      if (err instanceof RedisUnavailableError) this.serverVerified = undefined;
      throw err;
    });
    return this.serverVerified;
  }

  /**
   * Connects a lazy client (or waits for a connecting one) and PINGs it, within connectTimeout + commandTimeout.
   * Rejects with PING's error reply, else what the server said refusing the connection (ServerRefusal: maxclients;
   * asked within commandTimeout more, at most 1 s), else the last connection error when there is one ("Connection is
   * closed" alone does not say why) and, unlike `connect`, leaves the client retrying in the background.
   */
  async waitUntilReady(client: RedisClient): Promise<void> {
    if (client.status === 'ready') return;
    const limit = this.startBudget;
    const deadline = Date.now() + limit;
    // Aborted once the wait is over, in time or not: takes waitForReady's listeners off the client.
    const over = new AbortController();
    try {
      await withTimeout(
        connectAndPing(client, deadline, over.signal, () => this.errors.last.get(client)),
        limit,
        `no answer within ${limit} ms`,
      );
    } catch (err) {
      // The server's own answer to PING (NOPERM, an unknown command) is the reason, whatever happened before.
      if (replyCodeOf(err) !== undefined) throw err;
      const last = this.errors.last.get(client);
      const refusal = await this.errors.refusals.behind(client, last, err);
      throw refusal ?? (last ? new Error(last.message, { cause: err }) : err);
    } finally {
      over.abort(new Error('the wait is over'));
    }
  }

  /** ` (connection "name")` for a named connection, else nothing: in warnings. */
  private get which(): string {
    return this.name === DEFAULT_CONNECTION_NAME ? '' : ` (connection "${this.name}")`;
  }

  private own<T extends RedisClient>(client: T, role: string): T {
    this.owned.add(client);
    if (client !== this.client) this.roles.set(client, role);
    this.errors.listen(client, role);
    return client;
  }
}
