import { Cluster, Command } from 'ioredis';
import { CLUSTER_SLICE, perNodeSender } from '../common/cluster-batch.js';
import { LuaScript } from '../common/lua-script.js';
import { Rejected, TickBatcher } from '../common/tick-batcher.js';
import type { RedisConnection } from '../connection/redis-connection.js';

/** PUBLISH of several messages in one script call (see publish-many.lua). */
const PUBLISH_MANY = LuaScript.fromFile<(number | string)[]>('rtk_ps_publish_many', 'pubsub/publish-many.lua', 0);
/** Messages per script call when one turn publishes more (see TickBatcher). */
const PUBLISHES_PER_CALL = 32;
/**
 * UTF-8 bytes of messages per script call (counted from above), at least (a larger message goes alone). Redis writes
 * nothing to a subscriber while a script runs: every message of the call is queued at once for each subscriber of its
 * channel, and a subscriber whose queue passes `client-output-buffer-limit pubsub` (hard 32 MB by default) is
 * disconnected. 32 messages of 1 MiB (pubsub.maxMessageBytes' default) in one call were 32 MiB queued at once: Redis
 * closed every subscriber connection of the channel and the messages were lost while each publish resolved with its
 * count.
 */
const MIN_CALL_BYTES = 1_048_576;

/** One publish: the Redis channel (with the prefix) and the enveloped message. */
export type PublishItem = [channel: string, message: string];

/** An upper bound of the UTF-8 bytes of `s` (at most 3 per UTF-16 unit), exact when it matters. */
function bytesAtMost(s: string): number {
  return s.length <= 4_096 ? s.length * 3 : Buffer.byteLength(s);
}

/**
 * `messages` cut into consecutive groups of at most `maxBytes` (a message larger than that is a group of its own), in
 * order: each group is one call.
 */
export function splitByBytes(messages: PublishItem[], maxBytes: number): PublishItem[][] {
  const groups: PublishItem[][] = [];
  let group: PublishItem[] = [];
  let bytes = 0;
  for (const item of messages) {
    const size = bytesAtMost(item[0]) + bytesAtMost(item[1]);
    if (group.length > 0 && bytes + size > maxBytes) {
      groups.push(group);
      group = [];
      bytes = 0;
    }
    group.push(item);
    bytes += size;
  }
  if (group.length > 0) groups.push(group);
  return groups;
}

/**
 * Publishes of one event-loop turn as one script call (single server, and a cluster's classic pub/sub: the script
 * has no keys, so it runs on any node, which relays each message to the whole cluster), at most
 * max(`maxMessageBytes`, 1 MiB) of messages per call; with sharded channels (`sharded`) one pipeline of SPUBLISHes per
 * master (each channel's own slot). Each item resolves to its receiver count, or to the error text of that message
 * alone.
 */
export function createPublishBatcher(
  connection: RedisConnection,
  sharded: boolean,
  maxMessageBytes: number,
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
  const maxCallBytes = Math.max(maxMessageBytes, MIN_CALL_BYTES);
  const call = (items: PublishItem[]): Promise<(number | string)[]> =>
    items.length === 1
      ? connection.client.publish(items[0][0], items[0][1]).then((n) => [n])
      : PUBLISH_MANY.run(connection.client, [], items.flat());
  return new TickBatcher(
    {
      one: async (item) => (await call([item]))[0],
      many: async (messages) => {
        const groups = splitByBytes(messages, maxCallBytes);
        if (groups.length === 1) return call(messages);
        // every group sent now, in order, on the same connection; a failed call fails only its own messages
        const replies = groups.map((group) =>
          call(group).then(
            (results): (number | string | Rejected)[] => results,
            (err: unknown) => group.map(() => new Rejected(err)),
          ),
        );
        return (await Promise.all(replies)).flat();
      },
    },
    PUBLISHES_PER_CALL,
  );
}
