import type { Logger } from '@nestjs/common';
import type { Serializer } from '../common/serializer.js';
import type { RedisConnection } from '../connection/redis-connection.js';
import type { ResolvedPubSubOptions } from './pubsub.options.js';
import type { ReplayedMessage } from './pubsub.types.js';

type StreamEntry = [id: string, fields: string[]];

/**
 * The durable side of notifyUser: each user's messages in a capped stream (XADD MAXLEN ~) that expires when the user
 * gets none for `durable.ttl`, read back by replay. Errors are the caller's to classify (its failure policy).
 */
export class DurableStreams {
  constructor(
    private readonly connection: RedisConnection,
    private readonly serializer: Serializer,
    private readonly logger: Logger,
  ) {}

  /**
   * Appends one message and refreshes the stream's expiry in one transaction; resolves with its stream id. Rejects
   * with the first error reply of the transaction: a refused PEXPIRE (the XADD before it is applied, MULTI does not
   * roll back) would otherwise leave a stream that never expires behind a call that succeeded.
   */
  async append(
    key: string,
    durable: Exclude<ResolvedPubSubOptions['durable'], false>,
    serialized: string,
    ts: number,
  ): Promise<string> {
    const results = await this.connection.client
      .multi()
      .xadd(key, 'MAXLEN', '~', durable.maxLen, '*', 'd', serialized, 'ts', String(ts))
      .pexpire(key, durable.ttl)
      .exec();
    if (!results) throw new Error('transaction aborted');
    for (const [err] of results) if (err) throw err;
    return String(results[0][1]);
  }

  /**
   * The entries after `afterId` (exclusive), oldest first, at most `limit`: the first ones, or the last with `newest`
   * (XREVRANGE from the end, reversed). One key, so one node on a cluster (the key's hash tag is the user id).
   */
  async read(key: string, afterId: string, limit: number, newest = false): Promise<StreamEntry[]> {
    const client = this.connection.client;
    if (!newest) return (await client.xrange(key, `(${afterId}`, '+', 'COUNT', limit)) as StreamEntry[];
    return ((await client.xrevrange(key, '+', `(${afterId}`, 'COUNT', limit)) as StreamEntry[]).reverse();
  }

  /**
   * The entries as messages of `channel`; one that cannot be deserialized, or has no payload field `d` (a foreign
   * XADD), is skipped with a warning.
   */
  decode<T>(channel: string, entries: StreamEntry[]): ReplayedMessage<T>[] {
    const out: ReplayedMessage<T>[] = [];
    for (const [id, fields] of entries) {
      const f = fieldMap(fields);
      if (f.d === undefined) {
        // not written by notifyUser (its entries always hold `d`): skipped, never silently
        this.logger.warn(
          `skipped durable message ${id} of ${channel} that could not be read: it has no payload field (d)`,
        );
        continue;
      }
      try {
        out.push({ channel, data: this.serializer.deserialize<T>(f.d), id, ts: Number(f.ts) || 0 });
      } catch (err) {
        this.logger.warn(
          `skipped durable message ${id} of ${channel} that could not be read: ${(err as Error).message}`,
        );
      }
    }
    return out;
  }
}

function fieldMap(fields: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (let i = 0; i + 1 < fields.length; i += 2) out[fields[i]] = fields[i + 1];
  return out;
}
