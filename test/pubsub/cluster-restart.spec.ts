import 'reflect-metadata';
import { PubSubService } from '../../lib/index.js';
import { trackForCleanup } from '../support/private-servers.js';
import { startRedisCluster } from '../support/redis-cluster.js';
import { closeToolkitApps, createToolkitApp } from '../support/toolkit-app.js';
import { sleep, waitFor } from '../support/wait.js';

afterEach(closeToolkitApps);
// After a node restart ioredis' sharded subscriber group schedules a slots refresh (a timer of at most 2 s that quit()
// does not clear); let it run out so jest exits cleanly.
afterAll(() => sleep(2_500));

/** Sharded pub/sub on a private cluster: a master restarted → SSUBSCRIBE on its shard is restored, no call needed. */
it('sharded subscriptions come back after a master restarts', async () => {
  const cluster = trackForCleanup(await startRedisCluster({ masters: 3 }));
  const opts = {
    target: { cluster: cluster.startupNodes },
    keyPrefix: 'cr:',
    commandTimeout: 500,
    maxReconnectDelay: 200,
  } as const;
  const a = await createToolkitApp(opts);
  const b = await createToolkitApp(opts);
  const sub = a.get(PubSubService);
  const pub = b.get(PubSubService);
  expect(sub.isSharded).toBe(true);
  const got = new Map<string, unknown[]>();
  const channels = Array.from({ length: 12 }, (_, i) => `c${i}`);
  for (const ch of channels) await sub.subscribe(ch, (p) => void got.set(ch, [...(got.get(ch) ?? []), p]));
  for (const ch of channels) await pub.publish(ch, 'before');
  expect(await waitFor(() => channels.every((ch) => got.get(ch)?.length === 1), 5_000)).toBe(true);

  const victim = cluster.masters[0];
  await victim.kill();
  await sleep(300);
  await victim.restart();
  const resumed = await waitFor(async () => {
    await Promise.all(channels.map((ch) => pub.publish(ch, 'after').catch(() => 0)));
    return channels.every((ch) => got.get(ch)?.includes('after'));
  }, 20_000);
  expect(channels.filter((ch) => !got.get(ch)?.includes('after'))).toEqual([]);
  expect(resumed).toBe(true);
}, 60_000);
