import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import { Logger } from '@nestjs/common';
import { InvalidOptionsError, PubSubService, RedisReplyError } from '../../lib/index.js';
import {
  FEATURES,
  JsonSerializer,
  KeyBuilder,
  PUBSUB_OPTIONS,
  RedisConnection,
  type ResolvedPubSubOptions,
} from '../../lib/advanced.js';
import { DurableStreams } from '../../lib/pubsub/pubsub.durable-streams.js';
import { recordCommands } from '../support/command-recorder.js';
import { closeToolkitApps, createToolkitApp, type ToolkitApp } from '../support/toolkit-app.js';

afterEach(closeToolkitApps);

const uid = (): string => randomBytes(5).toString('hex');

function streamKey(app: ToolkitApp, userId: string): string {
  return app.get(KeyBuilder).tagged(FEATURES.pubsubStream, userId);
}

describe.each(['single', 'cluster'] as const)('pub/sub limits on %s', (target) => {
  it('a fractional durable.ttl is rounded up to whole ms: every user stream notifyUser writes expires', async () => {
    const app = await createToolkitApp({
      target,
      keyPrefix: `pl${uid()}:`,
      pubsub: { durable: { maxLen: 100, ttl: 1500.5 } },
    });
    const pubsub = app.get(PubSubService);
    const user = `u${uid()}`;
    await pubsub.notifyUser(user, { hi: 1 });
    const pttl = await app.get(RedisConnection).client.pttl(streamKey(app, user));
    expect(pttl).toBeGreaterThan(0);
    expect(pttl).toBeLessThanOrEqual(1501);
    expect((await pubsub.replay(user, '0-0')).map((m) => m.data)).toEqual([{ hi: 1 }]);
    expect((app.get(PUBSUB_OPTIONS) as ResolvedPubSubOptions).durable).toEqual({ maxLen: 100, ttl: 1501 });
    expect(pubsub.stats()).toEqual({ unavailable: 0, replyErrors: 0 });
  });

  it('an append whose PEXPIRE Redis refuses inside the MULTI rejects (the XADD alone succeeding is not enough)', async () => {
    const app = await createToolkitApp({ target, keyPrefix: `pl${uid()}:` });
    const connection = app.get(RedisConnection);
    const streams = new DurableStreams(connection, new JsonSerializer(), new Logger('test'));
    const key = streamKey(app, `u${uid()}`);
    // 1.5 ms cannot come from the options any more (rounded up); it is what PEXPIRE refuses
    await expect(streams.append(key, { maxLen: 10, ttl: 1.5 }, '"x"', Date.now())).rejects.toThrow(/not an integer/);
    await connection.client.del(key);
  });
});

describe.each(['single', 'cluster'] as const)('replay limits on %s', (target) => {
  it('replay refuses a limit that is not an integer from 1 to Number.MAX_SAFE_INTEGER, before any Redis call', async () => {
    const app = await createToolkitApp({ target, keyPrefix: `pl${uid()}:`, pubsub: { durable: true } });
    const pubsub = app.get(PubSubService);
    const user = `u${uid()}`;
    await pubsub.notifyUser(user, 1);
    await pubsub.notifyUser(user, 2);
    const client = app.get(RedisConnection).client;
    for (const limit of [1.5, Number.POSITIVE_INFINITY, Number.NaN, 1e20, 2 ** 53, 0, -1, '5' as unknown as number]) {
      const { value, commands } = await recordCommands(client, () =>
        pubsub.replay(user, '0-0', limit).then(
          () => 'resolved',
          (err: unknown) => err,
        ),
      );
      expect(value).toBeInstanceOf(InvalidOptionsError);
      expect((value as Error).message).toMatch(/replay limit must be an integer from 1 to 9007199254740991/);
      expect(commands).toEqual([]);
    }
    expect(pubsub.stats()).toEqual({ unavailable: 0, replyErrors: 0 });
    expect((await pubsub.replay(user, '0-0', 1)).map((m) => m.data)).toEqual([1]);
    expect((await pubsub.replay(user, '0-0', Number.MAX_SAFE_INTEGER)).map((m) => m.data)).toEqual([1, 2]);
  });
});

describe('notifyUser on a fractional ttl, seen from the service', () => {
  it('a failed PEXPIRE is a Redis reply error of notifyUser (counted), not a resolved call', async () => {
    const app = await createToolkitApp({ keyPrefix: `pl${uid()}:`, pubsub: { durable: true } });
    const pubsub = app.get(PubSubService);
    // past the option check (which rounds): a ttl PEXPIRE refuses, to see how notifyUser reports the refusal
    (app.get(PUBSUB_OPTIONS) as { durable: { ttl: number } }).durable.ttl = 1.5;
    const user = `u${uid()}`;
    await expect(pubsub.notifyUser(user, 1)).rejects.toBeInstanceOf(RedisReplyError);
    expect(pubsub.stats()).toEqual({ unavailable: 0, replyErrors: 1 });
    await app.get(RedisConnection).client.del(streamKey(app, user));
  });
});
