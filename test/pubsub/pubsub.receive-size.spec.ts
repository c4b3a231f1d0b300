import 'reflect-metadata';
import diagnosticsChannel from 'node:diagnostics_channel';
import { randomBytes } from 'node:crypto';
import { PubSubService } from '../../lib/index.js';
import { REDIS_TOOLKIT_CHANNELS, RedisConnection } from '../../lib/advanced.js';
import { recordingLogger } from '../support/recording-logger.js';
import { closeToolkitApps, createToolkitApp } from '../support/toolkit-app.js';
import { waitFor } from '../support/wait.js';

/**
 * A received message longer than pubsub.maxMessageBytes allows (a foreign PUBLISH: our own publish refuses such a
 * payload before sending it) is dropped before its envelope is read or its payload parsed, counted and warned about;
 * a message at the limit is still delivered. Before 2026-12-05 the receiving side had no bound: a 30 MB PUBLISH was
 * parsed whole and handed to every handler.
 */
afterEach(() => closeToolkitApps());

describe.each(['single', 'cluster'] as const)('received messages past pubsub.maxMessageBytes on %s', (target) => {
  it('are dropped unparsed, counted and warned; one at the limit and the next small one are delivered', async () => {
    const drops: unknown[] = [];
    const onDrop = (event: unknown) => void drops.push(event);
    diagnosticsChannel.subscribe(REDIS_TOOLKIT_CHANNELS.pubsubDrop, onDrop);
    try {
      const { warnings, logger } = recordingLogger();
      const keyPrefix = `rs${randomBytes(4).toString('hex')}:`;
      const app = await createToolkitApp({ target, keyPrefix, logger, pubsub: { maxMessageBytes: 1_000 } });
      const pubsub = app.get(PubSubService);
      const received: unknown[] = [];
      await pubsub.subscribe('big', (m) => void received.push(m));
      // at the limit, through our own publish: delivered
      const atLimit = 'a'.repeat(998); // '"' + 998 + '"': 1,000 bytes serialized
      expect(await pubsub.publish('big', atLimit)).toBe(1);
      expect(await waitFor(() => received.length === 1, 5_000)).toBe(true);
      // a foreign PUBLISH of a valid JSON text far past the limit: dropped, never parsed
      const client = app.get(RedisConnection).client;
      const channel = `${keyPrefix}ps:big`;
      const huge = JSON.stringify({ x: 'b'.repeat(200_000) });
      const publishRaw = (message: string) =>
        client.isCluster ? client.spublish(channel, message) : client.publish(channel, message);
      expect(await publishRaw(huge)).toBe(1);
      expect(await publishRaw('{"small":1}')).toBe(1);
      expect(await waitFor(() => received.length === 2, 5_000)).toBe(true);
      expect(received).toEqual([atLimit, { small: 1 }]);
      expect(drops).toEqual([{ feature: 'pubsub', operation: 'drop', outcome: 'dropped', reason: 'too-large' }]);
      const dropped = warnings.filter((w) => w.includes('more than pubsub.maxMessageBytes (1000)'));
      expect(dropped).toEqual([
        `dropped a message of ${huge.length} characters on ${channel}: more than pubsub.maxMessageBytes (1000) allows`,
      ]);
      // 1,001 bytes of ASCII is over the limit in bytes, but within the envelope's allowance in characters: a
      // foreign message has no envelope, so it is read (the bound is the limit plus 64 characters, never less)
      expect(await publishRaw(JSON.stringify('c'.repeat(999)))).toBe(1);
      expect(await waitFor(() => received.length === 3, 5_000)).toBe(true);
      expect(drops).toHaveLength(1);
    } finally {
      diagnosticsChannel.unsubscribe(REDIS_TOOLKIT_CHANNELS.pubsubDrop, onDrop);
    }
  });
});
