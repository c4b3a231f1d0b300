import type { Cluster, Redis } from 'ioredis';
import type { RedisClient } from '../../lib/common/lua-script.js';
import { waitFor } from './wait.js';

/**
 * Runs `fn` and returns what it resolved with and the names of the commands `client` sent meanwhile (every master's
 * connection of a cluster), in order: how tests count round trips without MONITOR.
 */
export async function recordCommands<T>(
  client: RedisClient,
  fn: () => Promise<T>,
): Promise<{ value: T; commands: string[] }> {
  const { value, calls } = await recordCommandCalls(client, fn);
  return { value, commands: calls.map((c) => c.name) };
}

/** recordCommands with each command's arguments (as strings). */
export async function recordCommandCalls<T>(
  client: RedisClient,
  fn: () => Promise<T>,
): Promise<{ value: T; calls: { name: string; args: string[] }[] }> {
  const connections: Redis[] = 'nodes' in client ? client.nodes('master') : [client];
  const calls: { name: string; args: string[] }[] = [];
  const restores = connections.map((connection) => {
    const send = connection.sendCommand.bind(connection);
    // every argument passed on: a pipeline gives its own stream, which must reach ioredis to stay one write
    connection.sendCommand = ((cmd: { name: string; args: unknown[] }, ...rest: unknown[]) => {
      calls.push({ name: cmd.name, args: cmd.args.map(String) });
      return send(cmd as Parameters<typeof send>[0], ...(rest as []));
    }) as typeof connection.sendCommand;
    return () => {
      connection.sendCommand = send;
    };
  });
  try {
    return { value: await fn(), calls };
  } finally {
    for (const restore of restores) restore();
  }
}

/**
 * Runs `fn` and counts the socket writes to each master of `client` meanwhile (by port): a pipeline or a batched
 * command is one write, a command sent alone one write each. How tests see that calls were batched per node. Counted
 * where the socket hands data to the OS (`_write` for one chunk, `_writev` for several): the commands written while
 * the socket is corked go out as one writev, however many `write` calls made them.
 */
export async function countSocketWrites<T>(
  client: RedisClient,
  fn: () => Promise<T>,
): Promise<{ value: T; writes: Map<number, number> }> {
  const connections: Redis[] = 'nodes' in client ? client.nodes('master') : [client];
  const writes = new Map<number, number>();
  const restores = connections.flatMap((connection) => {
    const socket = (connection as unknown as { stream: Record<'_write' | '_writev', (...args: unknown[]) => void> })
      .stream;
    const port = connection.options.port ?? 0;
    return (['_write', '_writev'] as const).map((method) => {
      const own = Object.hasOwn(socket, method);
      const original = socket[method];
      socket[method] = (...args: unknown[]) => {
        writes.set(port, (writes.get(port) ?? 0) + 1);
        return original.apply(socket, args);
      };
      return () => {
        if (own) socket[method] = original;
        else delete (socket as Partial<typeof socket>)[method];
      };
    });
  });
  try {
    return { value: await fn(), writes };
  } finally {
    for (const restore of restores) restore();
  }
}

/**
 * Waits until every master's own connection of a cluster client is ready (ioredis opens one at the node's first
 * command and runs its ready check): until then a turn's calls for that master go alone through the cluster client,
 * so a test counting socket writes right after start-up counted them one by one on a loaded machine.
 */
export async function masterConnectionsReady(cluster: Cluster, timeoutMs = 10_000): Promise<void> {
  for (const node of cluster.nodes('master')) if (node.status === 'wait') node.connect().catch(() => undefined);
  const ready = await waitFor(() => cluster.nodes('master').every((node) => node.status === 'ready'), timeoutMs);
  if (!ready) throw new Error('a cluster master connection did not become ready');
}
