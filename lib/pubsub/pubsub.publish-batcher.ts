import { Cluster, Command } from 'ioredis';
import { CLUSTER_SLICE, perNodeSender } from '../common/cluster-batch.js';
import { LuaScript } from '../common/lua-script.js';
import { TickBatcher } from '../common/tick-batcher.js';
import type { RedisConnection } from '../connection/redis-connection.js';

/** PUBLISH of several messages in one script call (see publish-many.lua). */
const PUBLISH_MANY = LuaScript.fromFile<(number | string)[]>(
  'rtk_ps_publish_many',
  new URL('./publish-many.lua', import.meta.url),
  0,
);
/** Messages per script call when one turn publishes more (see TickBatcher). */
const PUBLISHES_PER_CALL = 32;

/** One publish: the Redis channel (with the prefix) and the enveloped message. */
export type PublishItem = [channel: string, message: string];

/**
 * Publishes of one event-loop turn as one script call (single server, and a cluster's classic pub/sub: the script
 * has no keys, so it runs on any node, which relays each message to the whole cluster); with sharded channels
 * (`sharded`) one pipeline of SPUBLISHes per master (each channel's own slot). Each item resolves to its receiver
 * count, or to the error text of that message alone.
 */
export function createPublishBatcher(
  connection: RedisConnection,
  sharded: boolean,
): TickBatcher<PublishItem, number | string> {
  const client = connection.client;
  if (sharded && client instanceof Cluster) {
    // SPUBLISH goes to its channel's slot: the publishes of a turn as one pipeline per master
    return new TickBatcher(
      perNodeSender<PublishItem, number | string>(client, {
        keyOf: ([channel]) => channel,
        command: ([channel, message]) => new Command('spublish', [channel, message]),
        reply: (raw) => Number(raw),
        one: async ([channel, message]) => Number(await client.spublish(channel, message)),
      }),
      PUBLISHES_PER_CALL * CLUSTER_SLICE,
    );
  }
  return new TickBatcher(
    {
      one: ([channel, message]) => connection.client.publish(channel, message),
      many: (messages) => PUBLISH_MANY.run(connection.client, [], messages.flat()),
    },
    PUBLISHES_PER_CALL,
  );
}
