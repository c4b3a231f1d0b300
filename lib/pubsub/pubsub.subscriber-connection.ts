import type { Redis } from 'ioredis';
import { RedisUnavailableError } from '../common/errors.js';
import { replyCodeOf } from '../common/failure-policy.js';
import type { RedisClient } from '../common/lua-script.js';
import { refuseFakedNextTick } from '../common/real-timers.js';
import type { RedisConnection } from '../connection/redis-connection.js';

/**
 * Waits for the pub/sub subscriber connection (connecting it when it never was) within connectTimeout +
 * commandTimeout, else rejects with RedisUnavailableError naming the address and the last connection error: ioredis
 * would fail the SUBSCRIBE with "Reached the max retries per request limit (which is 0)", which says neither. The
 * connection keeps reconnecting in the background.
 */
export async function subscriberReady(connection: RedisConnection, subscriber: RedisClient): Promise<void> {
  if (subscriber.status === 'ready') return;
  refuseFakedNextTick(`${connection.description} (the pub/sub subscriber connection)`);
  try {
    await connection.waitUntilReady(subscriber);
  } catch (err) {
    if (replyCodeOf(err) !== undefined) throw err;
    const where = `${connection.description} (the pub/sub subscriber connection)`;
    throw new RedisUnavailableError(`Cannot connect to Redis at ${where}: ${(err as Error).message}`, { cause: err });
  }
}

/**
 * A cluster's sharded subscriber, connected up front: SSUBSCRIBE needs the slot map and ioredis's group of subscriber
 * connections, which one that failed to start never builds. On failure it is closed and forgotten by the connection
 * (`connect` stops its reconnect loop): the next subscribe, or attempt of a pending one, creates a new subscriber.
 */
export async function connectShardedSubscriber(connection: RedisConnection, subscriber: RedisClient): Promise<void> {
  try {
    await connection.connect(subscriber, `${connection.description} (the pub/sub sharded subscriber)`);
  } catch (err) {
    // release takes any client it created (typed for the node connections it hands out)
    await connection.release(subscriber as Redis);
    throw err;
  }
}

/**
 * The pub/sub subscriber connection (RedisConnection owns it: it logs its errors and quits it on shutdown), each
 * message handed to `deliver` with its Redis channel and, from a pattern subscription, the Redis pattern. A cluster's
 * sharded one is connected up front (connectShardedSubscriber).
 */
export async function openSubscriber(
  connection: RedisConnection,
  sharded: boolean,
  deliver: (redisChannel: string, message: string, redisPattern?: string) => void,
): Promise<RedisClient> {
  const subscriber = connection.createSubscriber({ sharded });
  const onMessage = (channel: string, message: string) => deliver(channel, message);
  subscriber.on('message', onMessage);
  if (sharded) {
    subscriber.on('smessage', onMessage);
    await connectShardedSubscriber(connection, subscriber);
  }
  subscriber.on('pmessage', (pattern: string, channel: string, message: string) => deliver(channel, message, pattern));
  return subscriber;
}
