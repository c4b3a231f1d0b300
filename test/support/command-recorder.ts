import type { Redis } from 'ioredis';
import type { RedisClient } from '../../lib/common/lua-script.js';

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
    connection.sendCommand = ((cmd: { name: string; args: unknown[] }) => {
      calls.push({ name: cmd.name, args: cmd.args.map(String) });
      return send(cmd as Parameters<typeof send>[0]);
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
