import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import { PubSubService, RedisUnavailableError } from '../../lib/index.js';
import { type MessageMeta, RedisConnection } from '../../lib/advanced.js';
import { countSocketWrites, recordCommands } from '../support/command-recorder.js';
import { ownedBy, useDisposableCluster } from '../support/disposable-cluster.js';
import { closeToolkitApps, createToolkitApp } from '../support/toolkit-app.js';
import { waitFor } from '../support/wait.js';

afterEach(closeToolkitApps);

const uid = (): string => randomBytes(5).toString('hex');
const sum = (writes: Map<number, number>) => [...writes.values()].reduce((a, b) => a + b, 0);

describe.each(['sharded', 'classic'] as const)('publishes on a cluster (%s), batched', (mode) => {
  it('sends the publishes of one turn batched (per master when sharded); every message arrives, in order per channel', async () => {
    const keyPrefix = `psb${uid()}:`;
    const extra = { pubsub: { cluster: mode } };
    const publisherApp = await createToolkitApp({ target: 'cluster', keyPrefix, ...extra });
    const subscriberApp = await createToolkitApp({ target: 'cluster', keyPrefix, ...extra });
    const publisher = publisherApp.get(PubSubService);
    const subscriber = subscriberApp.get(PubSubService);
    // 30 publishes: one slice (a second classic script call could run on another node, and order across nodes is not kept)
    const channels = Array.from({ length: 10 }, (_, i) => `ch-${i}`);
    const got = new Map<string, number[]>(channels.map((c) => [c, []]));
    for (const channel of channels)
      await subscriber.subscribe(
        channel,
        (payload: unknown, ch: string, _meta: MessageMeta) => void got.get(ch)?.push((payload as { n: number }).n),
      );
    const client = publisherApp.get(RedisConnection).client;
    await publisher.publish('warm-up', 0); // opens the connections the publishes use
    const { value, writes } = await countSocketWrites(client, () =>
      recordCommands(client, () =>
        Promise.all(channels.flatMap((channel) => [0, 1, 2].map((n) => publisher.publish(channel, { n })))),
      ),
    );
    // sharded: the channel's shard counts its one subscriber; classic: the receivers on the node that ran the script
    if (mode === 'sharded') expect(value.value).toEqual(channels.flatMap(() => [1, 1, 1]));
    else expect(value.value.every((n) => n === 0 || n === 1)).toBe(true);
    // alone, each of the 30 publishes was its own write; batched, one write per master (sharded) or one script call
    expect(sum(writes)).toBeLessThanOrEqual(mode === 'sharded' ? 3 : 1);
    // sharded: 30 SPUBLISHes in per-master pipelines; classic: PUBLISHes inside one script call, none on its own
    expect(value.commands.filter((c) => c === 'spublish' || c === 'publish')).toHaveLength(mode === 'sharded' ? 30 : 0);
    expect(await waitFor(() => [...got.values()].every((ns) => ns.length === 3), 3_000)).toBe(true);
    for (const ns of got.values()) expect(ns).toEqual([0, 1, 2]);
  });
});

describe('sharded publishes when a cluster master dies', () => {
  const cluster = useDisposableCluster();

  it('a turn of publishes fails only those on the dead master; the others are counted', async () => {
    const keyPrefix = `psb${uid()}:`;
    const app = await createToolkitApp({ keyPrefix, target: { cluster: cluster().startupNodes }, commandTimeout: 300 });
    const publisher = app.get(PubSubService);
    expect(publisher.isSharded).toBe(true);
    const channels = Array.from({ length: 12 }, (_, i) => `dead-${i}`);
    for (const channel of channels) await publisher.publish(channel, 0); // every master's connection ready
    const victim = cluster().masters[0];
    const onVictim = await ownedBy(
      victim,
      channels.map((c) => `${keyPrefix}ps:${c}`),
    );
    expect(onVictim.filter(Boolean).length).toBeGreaterThan(0);
    expect(onVictim.filter(Boolean).length).toBeLessThan(channels.length);
    await victim.kill();
    const settled = await Promise.allSettled(
      channels.flatMap((c) => [publisher.publish(c, 1), publisher.publish(c, 2)]),
    );
    expect(settled.map((r) => r.status)).toEqual(
      onVictim.flatMap((dead) => (dead ? ['rejected', 'rejected'] : ['fulfilled', 'fulfilled'])),
    );
    for (const r of settled) {
      if (r.status === 'fulfilled') expect(r.value).toBe(0);
      else expect(r.reason).toBeInstanceOf(RedisUnavailableError);
    }
  });
});
