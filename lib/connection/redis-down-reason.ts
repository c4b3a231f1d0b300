import { RedisToolkitError } from '../common/errors.js';
import { notConnected, replyCodeOf } from '../common/failure-policy.js';

/** What a down reason is made of (a RedisConnection). */
export interface DownConnection {
  /** Its address, no credentials (`redis://host:port`, `cluster(host:port,...)`). */
  readonly description: string;
  /** ioredis's status: `ready`, `wait`, `connecting`, `reconnecting`, `end`... */
  readonly status: string;
  /** The last connection error of its client, when there was one. */
  lastError(): string | undefined;
}

/** ioredis's answers to a command on a connection that is not up: they say neither where nor why. */
export const IOREDIS_REFUSALS =
  /enableOfflineQueue|Stream isn't writeable|Connection is closed|max retries per request/;

/**
 * Why a call on `connection` failed, in the toolkit's words (health's `error`, pub/sub's RedisUnavailableError): its
 * address (no credentials) and, when the client is not connected, its state and the last connection error, rather
 * than ioredis's text for a command it refused ("Stream isn't writeable and enableOfflineQueue options is false",
 * "Connection is closed."): `not connected to Redis at redis://10.0.0.5:6379 (reconnecting); last error: connect
 * ECONNREFUSED 10.0.0.5:6379`. A failure on a connected client (a timeout) is `Redis at <address>: <message>`.
 */
export function downReason(connection: DownConnection, err: unknown): string {
  const message = err instanceof Error ? err.message : String(err);
  const where = `Redis at ${connection.description}`;
  const status = connection.status;
  const refused = IOREDIS_REFUSALS.test(message);
  if (status === 'ready' && !refused) return `${where}: ${message}`;
  const cause = connection.lastError() ?? (refused ? undefined : message);
  return notConnected(where, status, cause);
}

/**
 * A transport failure of a call on `connection` (a driver error that is no error reply) with downReason's message, the
 * driver error as its cause, for the failure policy to type; error replies and the toolkit's own errors unchanged.
 */
export function explainedFailure(connection: DownConnection, err: unknown): unknown {
  if (err instanceof RedisToolkitError || replyCodeOf(err) !== undefined || explained.has(err as object)) return err;
  const failure = new Error(downReason(connection, err), { cause: err });
  explained.add(failure);
  return failure;
}

/** Errors explainedFailure made: explained once (a caller may explain before the failure policy does). */
const explained = new WeakSet<object>();
