import { type Cluster, Redis, ReplyError } from 'ioredis';
import type { NodeAddress } from '../common/cluster-masters.js';

/** ioredis's message for a command on a closed connection, or a connect that closed: says nothing about why. */
const CONNECTION_CLOSED = 'Connection is closed.';
/** ioredis's message for a command that outlived its commandTimeout. */
const COMMAND_TIMED_OUT = 'Command timed out';

/**
 * The toolkit's bound on a node connection at start (a `{ client }` Cluster's own timeouts can be far longer): each
 * of connectTimeout and commandTimeout is the shorter of the cluster's and this one; `signal`: the caller gave up (its
 * deadline, the abort reason saying so): the connection is dropped and what waits on it fails at once, naming the node.
 */
export interface NodeBound {
  connectTimeout?: number;
  commandTimeout?: number;
  signal?: AbortSignal;
}

const shorter = (a: number | undefined, b: number | undefined): number | undefined =>
  a === undefined || a <= 0 ? b : b === undefined ? a : Math.min(a, b);

const reasonOf = (signal: AbortSignal): string =>
  signal.reason instanceof Error ? signal.reason.message : String(signal.reason);

/**
 * Runs `use` on a short-lived connection of its own to one node, with the cluster's credentials, TLS and timeouts
 * (`bound` shortens them), and closes it: for the start-up ACL check, which asks again after a timeout. Not on
 * ioredis's pool connection to that node: the toolkit drops a pool connection whose command timed out, but its status
 * says ready until the socket's close is handled, so the ACL check asked again on the pool failed on the closing
 * connection ("Connection is closed", CI 2026-12-01); each attempt here gets a new connection. (mastersOf, in
 * cluster-masters.ts, is enough where nothing is asked again: it only has to find a master that ioredis dropped from
 * its pool.) A failure of the connection (not an error reply) is rethrown naming the node, with the connection's own
 * error rather than "Connection is closed" (`Command timed out`; `bound`'s signal aborted: its reason).
 */
export async function onNodeConnection<T>(
  client: Cluster,
  node: NodeAddress,
  use: (connection: Redis) => Promise<T>,
  bound: NodeBound = {},
): Promise<T> {
  const { signal } = bound;
  if (signal?.aborted) throw new Error(`node ${node.host}:${node.port}: ${reasonOf(signal)}`);
  const own = client.options.redisOptions ?? {};
  const connection = new Redis({
    ...own,
    commandTimeout: shorter(own.commandTimeout, bound.commandTimeout),
    connectTimeout: shorter(own.connectTimeout, bound.connectTimeout),
    host: node.host,
    port: node.port,
    lazyConnect: true,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
  });
  // Its socket too: a node that answers nothing (paused) never closes its side, and ioredis would wait its
  // disconnectTimeout (the cluster's, 2 s by default) before it destroys the socket.
  const drop = () => {
    if (connection.status === 'end') return;
    connection.disconnect();
    connection.stream?.destroy();
  };
  // Kept: without retries, connect() and the commands of a lost connection only say "Connection is closed."
  let lastError: Error | undefined;
  connection.on('error', (err: Error) => {
    lastError = err;
    // Its ready check's INFO timed out: ioredis closes the connection, and connect() rejected only once the socket
    // closed, 2 s later on a paused node (each attempt of the ACL check took commandTimeout + 2 s)
    if (err.message === COMMAND_TIMED_OUT) drop();
  });
  signal?.addEventListener('abort', drop, { once: true });
  try {
    await connection.connect();
    return await use(connection);
  } catch (err) {
    // An error reply is the node's answer (checkPermissions reads it); anything else is the connection's failure:
    // name the node and what happened to its connection.
    if (err instanceof ReplyError) throw err;
    let why = (err as Error).message === CONNECTION_CLOSED && lastError ? lastError.message : (err as Error).message;
    if (signal?.aborted) why = reasonOf(signal);
    throw new Error(`node ${node.host}:${node.port}: ${why}`, { cause: err });
  } finally {
    signal?.removeEventListener('abort', drop);
    // Not once it ended (its connect failed): ioredis would arm a 2 s timer that only a later close clears, and that
    // close already happened (it held the process 2 s after a failed start: connection-leaks.spec.ts). Its socket
    // too, as for an abort: a node that gave no answer in time may never close its side.
    drop();
  }
}
