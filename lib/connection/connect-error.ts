import type { Cluster } from 'ioredis';
import {
  RedisPermissionError,
  RedisReplyError,
  type RedisToolkitError,
  RedisUnavailableError,
} from '../common/errors.js';
import {
  deniedDenoHosts,
  enforcedPermissions,
  isPermissionRefusal,
  networkGated,
} from '../common/runtime-permissions.js';
import { slotMasters } from '../common/cluster-masters.js';
import { hostPort } from './redis-client.factory.js';
import { ServerRefusal } from './server-closes.js';

/** What ioredis and the start send before anything else, and why (for a server that does not know one). */
const CONNECT_COMMANDS: Record<string, string> = {
  info: "ioredis's ready check sends it on every connect, and health reads it",
  ping: 'the start and health send it',
};

/**
 * The typed error of a failed connect: the server's own answer says more than "check that it is running". `tls`: the
 * connection uses TLS, so a failure of the transport may be a server without TLS on that port.
 */
export function connectError(err: unknown, description: string, tls = false): RedisToolkitError {
  // It refused the connection and said why (maxclients): waiting, or starting lazily, would not help.
  if (err instanceof ServerRefusal) {
    return new RedisUnavailableError(`Cannot connect to Redis at ${description}: ${err.message}.`, { cause: err });
  }
  const message = (err as Error).message.replace(/\.$/, '');
  const code = /^[A-Z]+\b/.exec(message)?.[0];
  if (code === 'NOPERM') {
    const command = /'([^']+)' command/.exec(message)?.[1] ?? 'ping';
    return new RedisPermissionError(
      `Cannot connect to Redis at ${description}: the ACL user may not run ${command.toUpperCase()} (${message}); ` +
        `${CONNECT_COMMANDS[command] ?? 'ioredis sends it while connecting'}. Grant +${command} ` +
        '(docs/security.md has the complete line).',
      'NOPERM',
      { cause: err },
    );
  }
  // The server is up and refused the credentials: waiting, or starting lazily, would not help.
  if (code === 'WRONGPASS' || code === 'NOAUTH' || /invalid (username-)?password/i.test(message)) {
    return new RedisUnavailableError(
      `Cannot connect to Redis at ${description}: ${message}. Check the username and password (in the url, ` +
        'redis://user:password@host:port, or username / password beside host and port): the server refused them, ' +
        'or wants them and none were given.',
      { cause: err },
    );
  }
  const unknown = /unknown command '([^']+)'/i.exec(message)?.[1]?.toLowerCase();
  if (unknown !== undefined) {
    const command = unknown.toUpperCase();
    return new RedisReplyError(
      `Cannot connect to Redis at ${description}: the server does not know ${command} (${message}): it is renamed ` +
        `or disabled with rename-command in its configuration. The toolkit needs ${command} by that name ` +
        `(${CONNECT_COMMANDS[unknown] ?? 'ioredis sends it while connecting'}): remove that rename-command line.`,
      'ERR',
      { cause: err },
    );
  }
  // Node's permission model refused the socket (refuseDeniedNetwork stops the start before this; a feature's own
  // connection may still get here): the server may be up, so the remedy is the flag, not the server.
  if ((err as { code?: unknown }).code === 'ERR_ACCESS_DENIED' || /\bERR_ACCESS_DENIED\b/.test(message)) {
    return netDenied(description, message, err);
  }
  // Deno refused the socket: a host the start could not know (a Sentinel's master, a cluster's other masters)
  if (isPermissionRefusal(err) || /\bRequires net access to /.test(message)) {
    return new RedisUnavailableError(
      `Cannot connect to Redis at ${description}: ${message} (Deno's permissions: add the host to --allow-net, ` +
        'or --allow-net alone; lazyConnect would not help).',
      { cause: err },
    );
  }
  // A plain-text server never completes the TLS handshake: the connect timed out, with nothing that says why.
  const tlsHint = tls
    ? ' The connection uses TLS (rediss:// or tls): check that the server takes TLS on that port (its tls-port), ' +
      'or use redis:// for a server without TLS.'
    : '';
  return new RedisUnavailableError(
    `Cannot connect to Redis at ${description}: ${message}. ` +
      `Check that the server is running and reachable, or set lazyConnect: true to start without it.${tlsHint}`,
    { cause: err },
  );
}

/**
 * Node's permission model gates the network from Node 25 (`--allow-net`): started with `--permission` without it, no
 * socket opens in this process, so no connection ever comes up, lazily or not. Deno's does the same for each
 * `host:port` not granted (`--allow-net[=host:port]`). Throws at start, naming the flag, rather than failing the
 * connect as if the server were down, or (lazyConnect) starting an app whose every call fails as an outage (on Deno
 * until 2026-12-07). Node 22 and 24 have no network permission (has('net') is false there all the same): nothing to
 * refuse. `hosts`: the `host:port`s the connection opens first (endpointsOf), which Deno grants one by one.
 */
export function refuseDeniedNetwork(description: string, hosts: readonly string[] = []): void {
  const denied = deniedNetworkError(description, hosts);
  if (denied !== undefined) throw denied;
}

/** refuseDeniedNetwork's error, or undefined where the network is allowed. */
function deniedNetworkError(description: string, hosts: readonly string[]): RedisUnavailableError | undefined {
  const denied = deniedDenoHosts(hosts);
  if (denied.length > 0)
    return new RedisUnavailableError(
      `Cannot connect to Redis at ${description}: Deno's permissions deny network access to ${denied.join(', ')}. ` +
        `Add --allow-net to deno run, or ${denied.join(',')} to the hosts its --allow-net= lists (Deno opens no ` +
        'socket to a host it was not granted; lazyConnect would not help).',
    );
  const permission = enforcedPermissions();
  if (permission === undefined || !networkGated()) return undefined;
  if (!permission.has('net'))
    return netDenied(description, 'Node was started with --permission and without --allow-net');
  return undefined;
}

/**
 * Under Deno, each master a cluster's slot table names must be a host:port Deno grants: the error naming those it
 * does not (undefined when all are). The start can check only the startup nodes: with one of them granted alone,
 * until 2026-12-07 the start failed after a version warning and three ACL checks ("Redis ACL permission check failed:
 * node …: Requires net access …", one master), or on the cluster's ready check with "check that the server is
 * running", and a lazy start logged the ACL check's error.
 */
export function deniedMastersError(cluster: Cluster, description: string): RedisUnavailableError | undefined {
  const masters = slotMasters(cluster).map((m) => hostPort(m.host, m.port));
  return deniedNetworkError(`${description} (its masters, as CLUSTER SLOTS names them)`, masters);
}

/**
 * lazyConnect on a cluster: a ready check that goes to a master Deno does not grant never completes, so no `ready`
 * comes (where the permission check reports deniedMastersError) and every call failed as "not connected", without a
 * word of the cause (seen in CI, 2026-12-07). The slot table is read at each refresh: `log` gets the error once per
 * set of denied masters.
 */
export function reportDeniedMasters(cluster: Cluster, description: string, log: (message: string) => void): void {
  let said: string | undefined;
  cluster.on('refresh', () => {
    const denied = deniedMastersError(cluster, description);
    if (denied === undefined || denied.message === said) return;
    said = denied.message;
    log(denied.message);
  });
}

function netDenied(description: string, detail: string, cause?: unknown): RedisUnavailableError {
  return new RedisUnavailableError(
    `Cannot connect to Redis at ${description}: Node's permission model denies network access (${detail}). ` +
      'Add --allow-net to the flags Node starts with (with --permission, Node 25+ opens no socket without it; ' +
      'lazyConnect would not help).',
    cause === undefined ? undefined : { cause },
  );
}
