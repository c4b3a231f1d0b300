import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import { Cluster } from 'ioredis';
import { CacheService } from '../../lib/index.js';
import { RedisConnection } from '../../lib/advanced.js';
import { hashSlot } from '../../lib/common/bulk-keys.js';
import { getBatcher } from '../../lib/common/get-batcher.js';
import { countSocketWrites, masterConnectionsReady, recordCommands } from '../support/command-recorder.js';
import { ownedBy, useDisposableCluster } from '../support/disposable-cluster.js';
import { rawCommand } from '../support/resp.js';
import { closeToolkitApps, createToolkitApp, type RedisTarget } from '../support/toolkit-app.js';

afterEach(closeToolkitApps);

const rand = () => randomBytes(5).toString('hex');

async function cacheApp(target: RedisTarget, commandTimeout?: number) {
  const keyPrefix = `rtk-cb${rand()}:`;
  const app = await createToolkitApp({ target, keyPrefix, ...(commandTimeout && { commandTimeout }) });
  const cluster = app.get(RedisConnection).client;
  if (!(cluster instanceof Cluster)) throw new Error('expected a cluster client');
  return { cache: app.get(CacheService), cluster, keyPrefix };
}

/** The port of the master that owns `key`'s slot. */
async function ownerPort(port: number, key: string): Promise<number> {
  const slots = (await rawCommand(port, ['CLUSTER', 'SLOTS'])) as [number, number, [string, number]][];
  const slot = hashSlot(key);
  const range = slots.find(([from, to]) => slot >= from && slot <= to);
  if (!range) throw new Error(`no master owns slot ${slot}`);
  return range[2][1];
}

describe('cache reads on a cluster, batched per master', () => {
  it('computes the slot Redis computes (hash tags, non-ASCII keys)', async () => {
    const { cluster } = await cacheApp('cluster');
    const node = cluster.nodes('master')[0];
    for (const key of ['a', 'rtk:cache:x', 'rtk:rl:{abc}:d:f', '{}x', 'x{}', 'a{b}{c}', 'héllo', '日本{語}x', rand()]) {
      expect(hashSlot(key)).toBe(await node.call('CLUSTER', 'KEYSLOT', key));
    }
  });

  it('sends the reads of one turn as one socket write per master; each caller gets its own key, in order', async () => {
    const { cache, cluster, keyPrefix } = await cacheApp('cluster');
    const keys = Array.from({ length: 60 }, (_, i) => `item-${i}`);
    for (const [i, key] of keys.entries()) await cache.set(key, { i });
    const owners = new Set(
      await Promise.all(
        keys.map((k) => ownerPort(cluster.nodes('master')[0].options.port ?? 0, `${keyPrefix}cache:${k}`)),
      ),
    );
    expect(owners.size).toBe(3);
    // one missing key among them: a miss stays a miss
    const { value, writes } = await countSocketWrites(cluster, () =>
      recordCommands(cluster, () => Promise.all([...keys, 'missing'].map((k) => cache.get<{ i: number }>(k)))),
    );
    expect(value.value).toEqual([...keys.map((_, i) => ({ i })), undefined]);
    expect(value.commands.filter((c) => c === 'get')).toHaveLength(61);
    // unbatched, every GET was its own write (61); batched, one pipeline per master
    expect([...writes.values()].reduce((a, b) => a + b, 0)).toBe(3);
    expect(writes.size).toBe(3);
  });

  it('reads its own write and shares a key read twice in one turn', async () => {
    const { cache, cluster } = await cacheApp('cluster');
    await Promise.all(Array.from({ length: 20 }, (_, i) => cache.set(`w-${i}`, i)));
    const { value, commands } = await recordCommands(cluster, () =>
      Promise.all([...Array.from({ length: 20 }, (_, i) => cache.get(`w-${i}`)), cache.get('w-3')]),
    );
    expect(value).toEqual([...Array.from({ length: 20 }, (_, i) => i), 3]);
    expect(commands.filter((c) => c === 'get')).toHaveLength(20);
  });
});

describe('a turn of commands for one master (sendCorked)', () => {
  it('a command whose send throws fails alone: the others of the same master still get their values', async () => {
    const { cluster, keyPrefix } = await cacheApp('cluster');
    const master = cluster.nodes('master')[0];
    const port = master.options.port ?? 0;
    // three keys that this master owns
    const keys: string[] = [];
    for (let i = 0; keys.length < 3; i++) {
      const key = `${keyPrefix}sc-${i}`;
      if ((await ownerPort(port, key)) === port) keys.push(key);
    }
    for (const [i, key] of keys.entries()) await cluster.set(key, `v${i}`);
    await masterConnectionsReady(cluster);
    const batcher = getBatcher(cluster, 32);
    const send = master.sendCommand;
    master.sendCommand = function (this: typeof master, ...args: Parameters<typeof send>) {
      if (args[0].args[0] === keys[1]) throw new Error('refused to send');
      return send.apply(this, args);
    } as typeof send;
    try {
      const outcomes = await Promise.allSettled(keys.map((k) => batcher.add(k)));
      expect(outcomes.map((o) => (o.status === 'fulfilled' ? o.value : (o.reason as Error).message))).toEqual([
        'v0',
        'refused to send',
        'v2',
      ]);
    } finally {
      master.sendCommand = send;
    }
  });
});

describe('cache reads when a cluster master dies', () => {
  const cluster = useDisposableCluster();

  it('a turn of reads fails only the reads of the dead master; the others get their values', async () => {
    const { cache, keyPrefix } = await cacheApp({ cluster: cluster().startupNodes }, 300);
    const keys = Array.from({ length: 30 }, (_, i) => `d-${i}`);
    for (const [i, key] of keys.entries()) await cache.set(key, i);
    const victim = cluster().masters[0];
    const onVictim = await ownedBy(
      victim,
      keys.map((k) => `${keyPrefix}cache:${k}`),
    );
    const dead = onVictim.filter(Boolean).length;
    expect(dead).toBeGreaterThan(0);
    expect(dead).toBeLessThan(keys.length);
    await victim.kill();
    const before = cache.stats().errors;
    const values = await Promise.all(keys.map((k) => cache.get<number>(k)));
    expect(values).toEqual(keys.map((_, i) => (onVictim[i] ? undefined : i)));
    expect(cache.stats().errors - before).toBe(dead);
  });
});
