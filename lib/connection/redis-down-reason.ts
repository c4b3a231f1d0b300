import { RedisToolkitError } from '../common/errors.js';
import { replyCodeOf } from '../common/failure-policy.js';

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
  // still `ready`: the socket closed and ioredis has not handled it yet
  const state =
    status === 'ready'
      ? 'connection lost'
      : status === 'wait'
        ? 'not connected yet (lazyConnect)'
        : status === 'end'
          ? 'closed'
          : status;
  const cause = connection.lastError() ?? (refused ? undefined : message);
  return `not connected to ${where} (${state})${cause === undefined ? '' : `; last error: ${cause}`}`;
}

/**
 * A transport failure of a call on `connection` (a driver error that is no error reply) with downReason's message, the
 * driver error as its cause, for the failure policy to type; error replies and the toolkit's own errors unchanged.
 */
export function explainedFailure(connection: DownConnection, err: unknown): unknown {
  if (err instanceof RedisToolkitError || replyCodeOf(err) !== undefined) return err;
  return new Error(downReason(connection, err), { cause: err });
}
