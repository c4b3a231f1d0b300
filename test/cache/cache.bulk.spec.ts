import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import type { Cluster } from 'ioredis';
import { CacheService } from '../../lib/index.js';
import { RedisConnection } from '../../lib/advanced.js';
import { scanKeys } from '../../lib/common/bulk-keys.js';
import { dropPoolConnection } from '../support/disposable-cluster.js';
import { closeToolkitApps, createToolkitApp } from '../support/toolkit-app.js';

afterEach(closeToolkitApps);

/** Every key matching, on every master of a cluster. */
async function keysMatching(client: RedisConnection['client'], match: string): Promise<string[]> {
  const found: string[] = [];
  for await (const page of scanKeys(client, match)) found.push(...page);
  return found;
}

describe.each(['single', 'cluster'] as const)(
  'CacheService has/ttl/mget/mset/clear/getOrSetForever on %s',
  (target) => {
    it('has and ttl see only fresh values; mget/mset keep order; getOrSetForever stores without practical expiry', async () => {
      const app = await createToolkitApp({ target, keyPrefix: `rtk-b${randomBytes(5).toString('hex')}:` });
      const cache = app.get(CacheService);
      await cache.mset<unknown>([
        { key: 'a', value: 1 },
        { key: 'b', value: { n: 2 }, options: { ttl: 30_000 } },
        { key: 'n', value: null },
      ]);
      expect(await cache.mget(['b', 'missing', 'a', 'n'])).toEqual([{ n: 2 }, undefined, 1, null]);
      expect(await cache.has('a')).toBe(true);
      expect(await cache.has('n')).toBe(true);
      expect(await cache.has('missing')).toBe(false);
      const left = await cache.ttl('b');
      expect(left).toBeGreaterThan(0);
      expect(left).toBeLessThanOrEqual(30_000);
      expect(await cache.ttl('missing')).toBeUndefined();

      let loads = 0;
      const loader = () => {
        loads++;
        return 'kept';
      };
      expect(await cache.getOrSetForever('forever', loader)).toBe('kept');
      expect(await cache.getOrSetForever('forever', loader)).toBe('kept');
      expect(loads).toBe(1);
      expect(await cache.ttl('forever')).toBeGreaterThan(90 * 365 * 24 * 3_600_000);
    });

    it('clear removes everything under the cache namespace (entries, tag indexes) and nothing else', async () => {
      const keyPrefix = `rtk-b${randomBytes(5).toString('hex')}:`;
      const app = await createToolkitApp({ target, keyPrefix });
      const cache = app.get(CacheService);
      const client = app.get(RedisConnection).client;
      await client.set(`${keyPrefix}other`, 'x');
      await client.set(`${keyPrefix}cachex`, 'y'); // shares the text, not the namespace
      for (let i = 0; i < 40; i++) await cache.set(`k${i}`, i, { tags: ['t'] });
      expect((await keysMatching(client, `${keyPrefix}cache:*`)).length).toBeGreaterThanOrEqual(41);
      const removed = await cache.clear();
      expect(removed).toBeGreaterThanOrEqual(41);
      expect(await keysMatching(client, `${keyPrefix}cache:*`)).toEqual([]);
      expect(await cache.get('k1')).toBeUndefined();
      expect(await client.get(`${keyPrefix}other`)).toBe('x');
      expect(await client.get(`${keyPrefix}cachex`)).toBe('y');
    });
  },
);

describe('clear on a cluster where ioredis dropped a master from its pool', () => {
  it('clears that master too: the slots are fetched again', async () => {
    const keyPrefix = `rtk-b${randomBytes(5).toString('hex')}:`;
    const app = await createToolkitApp({ target: 'cluster', keyPrefix });
    const cache = app.get(CacheService);
    const client = app.get(RedisConnection).client as Cluster;
    for (let i = 0; i < 60; i++) await cache.set(`k${i}`, i);
    const before = await keysMatching(client, `${keyPrefix}cache:*`);
    expect(before.length).toBe(60);
    // nothing else here sends a command that would fetch the slots again
    await dropPoolConnection(client, Number(client.nodes('master')[1].options.port));
    expect(client.nodes('master')).toHaveLength(2);
    expect(await cache.clear()).toBe(60);
    expect(await keysMatching(client, `${keyPrefix}cache:*`)).toEqual([]);
    expect(client.nodes('master')).toHaveLength(3);
  });
});
