/**
 * Under an evicting maxmemory-policy Redis may evict a tag index while its entries stay (an index is touched only on
 * writes, entries on every hit: LRU picks indexes first), and invalidateTags then misses those entries until their
 * TTL without a word. The first use of tags (a tagged write or an invalidateTags) reads the policy of every master
 * once (INFO memory) and warns when it evicts.
 */
import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import { jest } from '@jest/globals';
import { Redis } from 'ioredis';
import { RedisConnection } from '../../lib/advanced.js';
import { CacheService } from '../../lib/index.js';
import { recordCommands } from '../support/command-recorder.js';
import { useDisposableCluster } from '../support/disposable-cluster.js';
import { setEvictionPolicy } from '../support/eviction-policy.js';
import { usePrivateRedis } from '../support/private-servers.js';
import { recordingLogger } from '../support/recording-logger.js';
import { closeToolkitApps, createToolkitApp, type RedisTarget } from '../support/toolkit-app.js';
import { sleep, waitFor } from '../support/wait.js';

afterEach(closeToolkitApps);

/** The cache's warnings about tag indexes (the lock's start-up check warns about the same policy on its own). */
const tagWarnings = (warnings: string[]): string[] => warnings.filter((w) => /tag index/.test(w));

async function boot(target: RedisTarget) {
  const log = recordingLogger();
  const app = await createToolkitApp({
    target,
    keyPrefix: `rtk-e${randomBytes(4).toString('hex')}:`,
    logger: log.logger,
  });
  return { log, cache: app.get(CacheService), client: app.get(RedisConnection).client };
}

/** Two tagged writes and an invalidateTags; the INFO commands the cache's connection sent meanwhile and just after. */
async function useTags(cache: CacheService, client: RedisConnection['client']): Promise<number> {
  const { commands } = await recordCommands(client, async () => {
    await cache.set('a', 1, { tags: ['t'] });
    await cache.getOrSet('b', async () => 2, { tags: ['t', 'u'] });
    expect(await cache.invalidateTags('t')).toBe(2);
    await sleep(300);
  });
  return commands.filter((c) => c === 'info').length;
}

describe('cache on a single server that may evict tag indexes', () => {
  const redis = usePrivateRedis();
  const configure = (maxmemory: string, policy: string) => setEvictionPolicy(redis.server.port, maxmemory, policy);

  it.each(['allkeys-lru', 'volatile-lru'])('%s with maxmemory 100mb: one warning naming the policy', async (policy) => {
    await configure('100mb', policy);
    const { log, cache, client } = await boot({ url: redis.server.url });
    expect(await useTags(cache, client)).toBe(1);
    expect(await waitFor(() => tagWarnings(log.warnings).length > 0, 2_000)).toBe(true);
    await cache.set('c', 3, { tags: ['t'] });
    await cache.invalidateTags('u');
    await sleep(200);
    const warnings = tagWarnings(log.warnings);
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toContain(`maxmemory-policy ${policy}`);
    expect(warnings[0]).toContain(`127.0.0.1:${redis.server.port}`);
    expect(warnings[0]).toContain('invalidateTags');
    expect(warnings[0]).toContain('noeviction');
    expect(log.errors).toEqual([]);
  });

  it.each([
    ['100mb', 'noeviction'],
    ['0', 'allkeys-lru'],
  ])('maxmemory %s, %s: no warning (the check ran once)', async (maxmemory, policy) => {
    await configure(maxmemory, policy);
    const { log, cache, client } = await boot({ url: redis.server.url });
    expect(await useTags(cache, client)).toBe(1);
    expect(tagWarnings(log.warnings)).toEqual([]);
    expect(log.warnings.filter((w) => /cache.*INFO/.test(w))).toEqual([]);
  });

  it('untagged writes only: no INFO sent and no warning; the first tagged write then checks', async () => {
    await configure('100mb', 'allkeys-lru');
    const { log, cache, client } = await boot({ url: redis.server.url });
    const { commands } = await recordCommands(client, async () => {
      await cache.set('a', 1);
      await cache.getOrSet('b', async () => 2);
      await cache.mset([{ key: 'c', value: 3 }]);
      await cache.get('a');
      await sleep(300);
    });
    expect(commands).not.toContain('info');
    expect(tagWarnings(log.warnings)).toEqual([]);
    // the same cache's first tagged write warns (the test above could see one)
    await cache.mset([{ key: 'd', value: 4, options: { tags: ['t'] } }]);
    expect(await waitFor(() => tagWarnings(log.warnings).length === 1, 2_000)).toBe(true);
  });

  it('a check that fails (INFO refused) does not fail the write: one warning naming INFO, once', async () => {
    await configure('100mb', 'allkeys-lru');
    const { log, cache, client } = await boot({ url: redis.server.url });
    const info = jest.spyOn(client as Redis, 'info').mockRejectedValue(new Error('NOPERM no INFO for you'));
    try {
      await cache.set('a', 1, { tags: ['t'] });
      await cache.set('b', 2, { tags: ['t'] });
      expect(await cache.invalidateTags('t')).toBe(2);
      expect(await waitFor(() => log.warnings.some((w) => /INFO/.test(w)), 2_000)).toBe(true);
      await sleep(200);
      const failed = log.warnings.filter((w) => /INFO/.test(w));
      expect(failed).toHaveLength(1);
      expect(failed[0]).toContain('NOPERM no INFO for you');
      expect(failed[0]).toContain('tag index');
      expect(info).toHaveBeenCalledTimes(1);
    } finally {
      info.mockRestore();
    }
  });

  it('the first invalidateTags checks too (an instance that only invalidates)', async () => {
    await configure('100mb', 'allkeys-lru');
    const { log, cache, client } = await boot({ url: redis.server.url });
    const { commands } = await recordCommands(client, async () => {
      await cache.invalidateTags('t');
      await sleep(300);
    });
    expect(commands.filter((c) => c === 'info')).toHaveLength(1);
    expect(await waitFor(() => tagWarnings(log.warnings).length === 1, 2_000)).toBe(true);
  });
});

describe('cache on a cluster with one master that may evict', () => {
  const cluster = useDisposableCluster();

  it('one warning naming that master only', async () => {
    const [first, victim, third] = cluster().masters;
    await setEvictionPolicy(victim.port, '100mb', 'allkeys-lru');
    try {
      const { log, cache, client } = await boot({ cluster: cluster().startupNodes });
      expect(await useTags(cache, client)).toBe(3); // once per master
      expect(await waitFor(() => tagWarnings(log.warnings).length > 0, 2_000)).toBe(true);
      await cache.set('c', 3, { tags: ['t'] });
      await sleep(200);
      const warnings = tagWarnings(log.warnings);
      expect(warnings).toHaveLength(1);
      expect(warnings[0]).toContain(`127.0.0.1:${victim.port}`);
      expect(warnings[0]).toContain('maxmemory-policy allkeys-lru');
      expect(warnings[0]).not.toContain(`:${first.port}`);
      expect(warnings[0]).not.toContain(`:${third.port}`);
    } finally {
      await setEvictionPolicy(victim.port, '0', 'noeviction');
    }
  });
});
