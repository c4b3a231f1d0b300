import type { ConnectionOptions as TlsConnectionOptions } from 'node:tls';
import {
  Cluster,
  Command as IoredisCommand,
  Redis,
  type ClusterOptions,
  type Command,
  type RedisOptions,
} from 'ioredis';
import type { RedisClient } from '../common/lua-script.js';
import { afterPoll, firedLate } from '../common/timeout.js';
import { commandTimedOut, isCommandTimeout, noteMigrationReplies, redirectionsWithin } from './cluster-redirections.js';
import type {
  RedisClusterConnection,
  RedisConnectionOptions,
  RedisSentinelConnection,
  RedisStandaloneConnection,
} from './connection.options.js';

export interface ClientTuning {
  commandTimeout: number;
  connectTimeout: number;
  maxReconnectDelay: number;
}

/** Exponential backoff from 50 ms, capped, with ±20 % jitter so many app instances do not reconnect in lockstep. */
export function reconnectDelay(attempt: number, cap: number): number {
  const base = Math.min(cap, 50 * 2 ** Math.min(attempt, 16));
  return Math.round(base * (0.8 + Math.random() * 0.4));
}

/**
 * While (re)connecting, a command fails at once instead of waiting in a queue: a request that touches Redis twice
 * (rate limit, then cache) must not wait commandTimeout for each when Redis is away; each feature's failure policy
 * answers immediately instead. A cluster keeps ioredis' queues (its ready check and its lazily opened node
 * connections go through them); there the toolkit's own timer bounds each queued command by commandTimeout.
 */
const FAIL_FAST: RedisOptions = { enableOfflineQueue: false };

function baseOptions(tuning: ClientTuning): RedisOptions {
  return {
    // We connect ourselves in onModuleInit, so a bad address fails bootstrap with a clear message.
    lazyConnect: true,
    // Every command, queued or sent, is rejected after this: no call can hang on a paused or unreachable server.
    commandTimeout: tuning.commandTimeout,
    connectTimeout: tuning.connectTimeout,
    retryStrategy: (attempt: number) => reconnectDelay(attempt, tuning.maxReconnectDelay),
    // Queued commands are bounded by commandTimeout; per-request retries on reconnect would replay non-idempotent
    // scripts (a rate-limit charge) whose outcome is unknown, so none.
    maxRetriesPerRequest: 0,
    // A command that was sent when the connection dropped may have run; resending it could apply it twice.
    autoResendUnfulfilledCommands: false,
    enableReadyCheck: true,
    // ioredis keeps a (ref'd) timer this long after disconnect() when the socket already closed: 2 s by default,
    // which holds a closing process open and shows up as an open handle in tests.
    disconnectTimeout: 200,
  };
}

/** ioredis's Command with the field its own `setTimeout` arms once and every settlement clears (`_clearTimers`). */
interface TimedCommand {
  _commandTimeoutTimer?: NodeJS.Timeout;
}

/**
 * The toolkit's per-command timer in place of ioredis's (which `Command#setTimeout` skips once this field is set, and
 * which the command's settlement clears, as for its own): no more allocation per command than ioredis's. ioredis's
 * verdict ran in the timers phase, so after the event loop was blocked past commandTimeout it rejected a command whose
 * reply was already waiting in the socket (Node reads sockets in the poll phase, after the due timers). This one
 * defers the verdict to the check phase of that turn (afterPoll: setImmediate), after the poll phase has read the
 * socket: a command still pending then is rejected as ioredis did (`Command timed out`, through `command.reject`; on a
 * cluster, naming the slot migration it waited on: commandTimedOut).
 */
function armCommandTimeout(command: Command, ms: number, armedAt = performance.now() | 0): void {
  (command as unknown as TimedCommand)._commandTimeoutTimer = setTimeout(() => {
    if (!command.isSettled) afterPoll(() => timeOut(command, ms, armedAt));
  }, ms);
}

/** armedAt for a timer armed again: it is not armed a third time. */
const REARMED = -1;

/**
 * A command still pending after the poll phase: rejected, unless the timer fired late by more than a quarter of its
 * delay (the event loop was blocked): then the request itself may have been written only after the stall (the
 * toolkit corks a connection while it sends a turn's batch), so the command gets `ms` once more.
 */
function timeOut(command: Command, ms: number, armedAt: number): void {
  if (command.isSettled) return;
  const late = (((performance.now() | 0) - armedAt) | 0) - ms;
  if (armedAt !== REARMED && firedLate(late, ms)) {
    armCommandTimeout(command, ms, REARMED);
    return;
  }
  command.reject(commandTimedOut(command));
}

const armed = (command: Command): boolean => (command as unknown as TimedCommand)._commandTimeoutTimer !== undefined;

/**
 * ioredis leaves a command that hit commandTimeout in its reply queue. If its request never reached Redis (a lost
 * packet, a half-dead route), its reply never comes and every later reply is matched to the command before it:
 * forever, and in a burst to the wrong caller (one user's session handed to another). So a timeout on a ready
 * connection drops that connection; every command in flight is rejected and the reconnect starts a clean reply stream.
 * A cluster gets the same guard on each node connection it opens.
 *
 * Each command sent on the connection gets the toolkit's timer for the connection's `commandTimeout`
 * (armCommandTimeout: a reply read right after a stall is in time), unless one was armed before it came here (a
 * cluster's, for a command it queued; another node's, before a redirect). The handler also observes the promises of
 * the commands ioredis sends on its own (the SELECT and the re-sent SUBSCRIBE after a reconnect: pubsub.refusals.ts).
 */
export function resetOnCommandTimeout<T extends RedisClient>(client: T): T {
  if (client instanceof Cluster) {
    client.on('+node', (node: Redis) => resetOnCommandTimeout(node));
    return client;
  }
  const redis = client as Redis;
  const send = redis.sendCommand.bind(redis);
  /** The last command written here was ASKING, whose flag holds for the next command on the connection. */
  let asking = false;
  redis.sendCommand = ((command: Command, stream?: Parameters<Redis['sendCommand']>[1]) => {
    // a command whose caller was already answered (timed out) is not written again: see takeAskingFlag
    if (command.isSettled && stream === undefined) {
      if (asking) takeAskingFlag(send);
      asking = false;
      return command.promise;
    }
    asking = command.name === 'asking';
    // A command of a pipeline that already timed out before reaching this connection is written (the pipeline's
    // replies stay in order) but says nothing about this connection; only a timeout while the command is here does.
    if (!command.isSettled) {
      const ms = redis.options.commandTimeout;
      if (typeof ms === 'number' && !armed(command)) armCommandTimeout(command, ms);
      command.promise.catch((err: unknown) => {
        if (isCommandTimeout(err) && redis.status === 'ready') {
          if (awaitsReply(redis, command)) redis.disconnect(true);
        }
      });
    }
    return send(command, stream);
  }) as Redis['sendCommand'];
  return client;
}

/**
 * A command already settled (its caller was told, by the toolkit's commandTimeout) is not written: ioredis sends one
 * again after a redirection it scheduled before the timeout (TRYAGAIN while its slot migrates: retryDelayOnTryAgain
 * later, on another node), or from a queue. Written, it ran once the slot settled, after its caller had been told it
 * failed: a lock held by no one until its ttl, a rate-limit charge the caller saw fail open, a session update answered
 * 503 (test/faults/cluster-reshard.spec.ts). A cluster sends ASKING before a command to an importing node: that flag
 * would apply to the next command on the connection instead, so a PING takes it.
 */
function takeAskingFlag(send: Redis['sendCommand']): void {
  const ping = new IoredisCommand('ping', []);
  ping.promise.catch(() => undefined);
  send(ping);
}

/** ioredis's queue of the commands written on a connection and not answered yet (a reply shifts its entry first). */
interface ReplyQueue {
  commandQueue: { length: number; peekAt(index: number): { command: Command } | undefined };
}

/** How many commands written on `redis` await their replies (0 for an ioredis whose queue is not this shape). */
export function repliesAwaited(redis: Redis): number {
  const length = (redis as unknown as Partial<ReplyQueue>).commandQueue?.length;
  return typeof length === 'number' ? length : 0;
}

/**
 * Whether `command` timed out still waiting for its reply on `redis`: only then is the reply stream in doubt. On a
 * cluster a command is answered by one node and then waits elsewhere (TRYAGAIN while its slot migrates: the cluster
 * asks again after retryDelayOnTryAgain; MOVED or ASK: another node): its timeout said nothing of the connections
 * that answered it, and dropping them (until 2026-12-06) failed every call in flight on those masters with it
 * (test/foundation/connections-guarantees.hostile.spec.ts).
 */
function awaitsReply(redis: Redis, command: Command): boolean {
  const queue = (redis as unknown as Partial<ReplyQueue>).commandQueue;
  // an ioredis whose queue is not this shape: dropped as before (the reply stream may be in doubt)
  if (typeof queue?.peekAt !== 'function' || typeof queue.length !== 'number') return true;
  for (let i = 0; i < queue.length; i++) if (queue.peekAt(i)?.command === command) return true;
  return false;
}

const tlsOptions = (tls: RedisStandaloneConnection['tls']): TlsConnectionOptions | undefined =>
  tls === undefined || tls === false ? undefined : tls === true ? {} : tls;

function authOptions(c: {
  username?: string;
  password?: string;
  tls?: RedisStandaloneConnection['tls'];
}): RedisOptions {
  const tls = tlsOptions(c.tls);
  return {
    ...(c.username !== undefined && { username: c.username }),
    ...(c.password !== undefined && { password: c.password }),
    ...(tls && { tls }),
  };
}

/**
 * ioredis turns TLS on only for a url spelled exactly `rediss://`: `REDISS://` or `Rediss://` parse as a url all the
 * same and connect in plaintext, password included. The scheme is case-insensitive (RFC 3986), so any spelling of
 * rediss means TLS here.
 */
function isRedissUrl(url: string | undefined): boolean {
  return url !== undefined && /^rediss:\/\//i.test(url);
}

export function createStandaloneClient(c: RedisStandaloneConnection, tuning: ClientTuning): Redis {
  const options: RedisOptions = {
    ...baseOptions(tuning),
    ...FAIL_FAST,
    ...authOptions(c),
    ...(isRedissUrl(c.url) && { tls: tlsOptions(c.tls) ?? {} }),
    ...(c.host !== undefined && { host: c.host }),
    ...(c.port !== undefined && { port: c.port }),
    ...(c.db !== undefined && { db: c.db }),
  };
  return resetOnCommandTimeout(c.url !== undefined ? new Redis(c.url, options) : new Redis(options));
}

function createSentinelClient(c: RedisSentinelConnection, tuning: ClientTuning): Redis {
  const client = new Redis({
    ...baseOptions(tuning),
    ...FAIL_FAST,
    ...authOptions(c),
    sentinels: c.sentinels,
    name: c.name,
    ...(c.sentinelUsername !== undefined && { sentinelUsername: c.sentinelUsername }),
    ...(c.sentinelPassword !== undefined && { sentinelPassword: c.sentinelPassword }),
    // Without this flag ioredis connects to the master a sentinel names in plaintext even when `tls` is given.
    ...(tlsOptions(c.tls) && { enableTLSForSentinelMode: true }),
    ...(tlsOptions(c.sentinelTls) && { sentinelTLS: tlsOptions(c.sentinelTls) }),
    ...(c.db !== undefined && { db: c.db }),
  });
  return resetOnCommandTimeout(client);
}

function createClusterClient(c: RedisClusterConnection, tuning: ClientTuning): Cluster {
  const { redisOptions, ...rest }: ClusterOptions = c.clusterOptions ?? {};
  const cluster = new Cluster(c.cluster, {
    lazyConnect: true,
    clusterRetryStrategy: (attempt: number) => reconnectDelay(attempt, tuning.maxReconnectDelay),
    enableReadyCheck: true,
    // A command that failed with "Connection is closed" may have run; ioredis would resend it after a failover
    // delay, charging a rate limit or running a script twice. Redirects (MOVED/ASK/TRYAGAIN) are still followed:
    // those commands did not run.
    retryDelayOnFailover: 0,
    maxRedirections: redirectionsWithin(tuning.commandTimeout, rest.retryDelayOnTryAgain),
    ...rest,
    redisOptions: { ...baseOptions(tuning), ...authOptions(c), ...redisOptions, lazyConnect: false },
  });
  enforceCommandTimeout(cluster, tuning.commandTimeout);
  return resetOnCommandTimeout(cluster);
}

/**
 * ioredis applies `commandTimeout` only once a command reaches a node; a command queued while the cluster itself is
 * down or failing over would wait forever. A command the cluster did not hand to a node connection at once (whose
 * own guard armed the timer: resetOnCommandTimeout) gets the toolkit's timer here, so every call is bounded. Each
 * command's TRYAGAIN and ASK replies are kept (noteMigrationReplies), for the message of its timeout.
 */
function enforceCommandTimeout(cluster: Cluster, ms: number): void {
  const send = cluster.sendCommand.bind(cluster);
  cluster.sendCommand = (command: Parameters<Cluster['sendCommand']>[0], ...rest: unknown[]) => {
    const result = send(command, ...(rest as []));
    if (!command.isSettled) {
      if (!armed(command)) armCommandTimeout(command, ms);
      // after send: the cluster's own reject (which follows redirections) is in place to be wrapped
      noteMigrationReplies(cluster, command);
    }
    return result;
  };
}

/**
 * A cluster's subscriber connections (ioredis's own, not `+node` connections) would arm ioredis's timer: the toolkit's
 * is armed when the ready cluster hands the command on; one it queues meanwhile is armed when it is sent from the
 * queue (as ioredis did: not bounded while queued at the cluster).
 */
export function timeSubscriberCommands(cluster: Cluster): Cluster {
  const ms = cluster.options.redisOptions?.commandTimeout;
  if (typeof ms !== 'number') return cluster;
  const send = cluster.sendCommand.bind(cluster);
  cluster.sendCommand = (command: Parameters<Cluster['sendCommand']>[0], ...rest: unknown[]) => {
    if (cluster.status === 'ready' && !command.isSettled && !armed(command)) armCommandTimeout(command, ms);
    return send(command, ...(rest as []));
  };
  return cluster;
}

/** Creates the client the options describe; `null` for `{ client }`, which the caller uses as it is. */
export function createClientFromOptions(c: RedisConnectionOptions, tuning: ClientTuning): RedisClient | null {
  if ('client' in c) return null;
  if ('cluster' in c) return createClusterClient(c, tuning);
  if ('sentinels' in c) return createSentinelClient(c, tuning);
  return createStandaloneClient(c, tuning);
}

/**
 * The TLS options of `c` that switch certificate verification off (`rejectUnauthorized: false`): then anyone on the
 * network path can pose as Redis and read the password and every value. Said at start, never silently.
 */
function unverifiedTls(c: RedisConnectionOptions): string[] {
  if ('client' in c) return [];
  const off = (tls: unknown): boolean =>
    typeof tls === 'object' && tls !== null && (tls as TlsConnectionOptions).rejectUnauthorized === false;
  const found: string[] = [];
  if (off(c.tls)) found.push('tls');
  if ('sentinels' in c && off(c.sentinelTls)) found.push('sentinelTls');
  if ('cluster' in c && off(c.clusterOptions?.redisOptions?.tls)) found.push('clusterOptions.redisOptions.tls');
  return found;
}

/** The warning for a connection whose TLS verification is off (unverifiedTls), or undefined. */
export function unverifiedTlsWarning(connection: RedisConnectionOptions, where: string): string | undefined {
  const off = unverifiedTls(connection);
  if (off.length === 0) return undefined;
  return (
    `TLS certificate verification is off for ${where} (${off.map((o) => `${o}.rejectUnauthorized`).join(', ')}: ` +
    'false): anyone on the network path can pose as Redis and read the password and data. Give the CA instead ' +
    '(tls: { ca }).'
  );
}

/**
 * The `host:port`s a connection opens first: its server, a cluster's startup nodes, the sentinels (what Deno grants
 * one by one: refuseDeniedNetwork). None for a client of the user's, which is connected by then or not ours to open.
 */
export function endpointsOf(c: RedisConnectionOptions): string[] {
  if ('client' in c) return [];
  if ('cluster' in c) return c.cluster.map((n) => hostPort(n.host, n.port));
  if ('sentinels' in c) return c.sentinels.map((n) => hostPort(n.host, n.port));
  if (c.url !== undefined) {
    const u = new URL(c.url);
    return [`${u.hostname}:${u.port || 6379}`]; // an IPv6 hostname keeps its brackets in a URL
  }
  return [hostPort(c.host ?? '127.0.0.1', c.port ?? 6379)];
}

/** `host:port`, an IPv6 host in brackets (as Deno's permissions name it). */
export const hostPort = (host: string, port: number): string => `${host.includes(':') ? `[${host}]` : host}:${port}`;

/** `redis://host:port`, `cluster(host:port, ...)` or `sentinel(name)` without credentials: safe to log. */
export function describeConnection(c: RedisConnectionOptions): string {
  if ('client' in c) return 'the client given in connection.client';
  if ('cluster' in c) return `cluster(${c.cluster.map((n) => `${n.host}:${n.port}`).join(', ')})`;
  if ('sentinels' in c)
    return `sentinel master "${c.name}" via ${c.sentinels.map((n) => `${n.host}:${n.port}`).join(', ')}`;
  if (c.url !== undefined) {
    const u = new URL(c.url);
    return `${u.protocol}//${u.hostname}:${u.port || 6379}${u.pathname.length > 1 ? u.pathname : ''}`;
  }
  return `redis://${c.host ?? '127.0.0.1'}:${c.port ?? 6379}`;
}
