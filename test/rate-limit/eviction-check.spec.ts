/**
 * Under an evicting maxmemory-policy Redis may evict a rate-limit counter (every counter has a TTL, so `volatile-*`
 * too; `volatile-ttl` picks the keys nearest their expiry, which counters usually are): that client's limit starts
 * over, and a `blockDuration` block ends, without an error. The first decision of a RateLimitService reads the policy
 * of every master once (INFO memory, as the cache does for tags) and warns when it evicts.
 */
import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import { jest } from '@jest/globals';
import { Redis } from 'ioredis';
import { RedisConnection } from '../../lib/advanced.js';
import { RateLimitService } from '../../lib/index.js';
import { recordCommands } from '../support/command-recorder.js';
import { useDisposableCluster } from '../support/disposable-cluster.js';
import { setEvictionPolicy } from '../support/eviction-policy.js';
import { usePrivateRedis } from '../support/private-servers.js';
import { recordingLogger } from '../support/recording-logger.js';
import { closeToolkitApps, createToolkitApp, type RedisTarget } from '../support/toolkit-app.js';
import { sleep, waitFor } from '../support/wait.js';

afterEach(closeToolkitApps);

/** The rate limiter's warnings about eviction (the lock's start-up check warns about the same policy on its own). */
const evictionWarnings = (warnings: string[]): string[] => warnings.filter((w) => /^rate limiting: .*evict/.test(w));

const policy = { limit: 3, ttl: 60_000 };

async function bootOn(target: RedisTarget) {
  const log = recordingLogger();
  const app = await createToolkitApp({
    target,
    keyPrefix: `rtk-e${randomBytes(4).toString('hex')}:`,
    logger: log.logger,
  });
  return { log, rateLimit: app.get(RateLimitService), client: app.get(RedisConnection).client };
}

/** A consume, a peek and a consumeAll; the INFO commands sent meanwhile and just after. */
async function decide(rateLimit: RateLimitService, client: RedisConnection['client']): Promise<number> {
  const { commands } = await recordCommands(client, async () => {
    expect((await rateLimit.consume('a', policy)).allowed).toBe(true);
    expect((await rateLimit.peek('a', policy)).remaining).toBe(2);
    expect((await rateLimit.consumeAll([{ key: 'b', policy }])).allowed).toBe(true);
    await sleep(300);
  });
  return commands.filter((c) => c === 'info').length;
}

describe('rate limiting on a server that may evict its counters', () => {
  const redis = usePrivateRedis();
  const configure = (maxmemory: string, maxmemoryPolicy: string) =>
    setEvictionPolicy(redis.server.port, maxmemory, maxmemoryPolicy);

  const boot = () => bootOn({ url: redis.server.url });

  it.each(['allkeys-lru', 'volatile-ttl'])('%s with maxmemory 100mb: one warning naming the policy', async (p) => {
    await configure('100mb', p);
    const { log, rateLimit, client } = await boot();
    expect(evictionWarnings(log.warnings)).toEqual([]); // nothing at start: only a process that limits asks
    expect(await decide(rateLimit, client)).toBe(1);
    expect(await waitFor(() => evictionWarnings(log.warnings).length > 0, 2_000)).toBe(true);
    await rateLimit.consume('c', policy);
    await sleep(200);
    const warnings = evictionWarnings(log.warnings);
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toContain(`maxmemory-policy ${p}`);
    expect(warnings[0]).toContain(`127.0.0.1:${redis.server.port}`);
    expect(warnings[0]).toContain('noeviction');
    expect(log.errors).toEqual([]);
  });

  it.each([
    ['100mb', 'noeviction'],
    ['0', 'allkeys-lru'],
  ])('maxmemory %s, %s: no warning (the check ran once)', async (maxmemory, p) => {
    await configure(maxmemory, p);
    const { log, rateLimit, client } = await boot();
    expect(await decide(rateLimit, client)).toBe(1);
    expect(log.warnings.filter((w) => /^rate limiting/.test(w))).toEqual([]);
  });

  it('a check that fails (INFO refused) does not fail the decision: one warning naming INFO, once', async () => {
    await configure('100mb', 'allkeys-lru');
    const { log, rateLimit, client } = await boot();
    const info = jest.spyOn(client as Redis, 'info').mockRejectedValue(new Error('NOPERM no INFO for you'));
    try {
      expect((await rateLimit.consume('a', policy)).allowed).toBe(true);
      expect((await rateLimit.consume('a', policy)).remaining).toBe(1);
      expect(await waitFor(() => log.warnings.some((w) => /^rate limiting: .*INFO/.test(w)), 2_000)).toBe(true);
      await sleep(200);
      const failed = log.warnings.filter((w) => /^rate limiting: .*INFO/.test(w));
      expect(failed).toHaveLength(1);
      expect(failed[0]).toContain('NOPERM no INFO for you');
      expect(info).toHaveBeenCalledTimes(1);
    } finally {
      info.mockRestore();
    }
  });
});

describe('rate limiting on a cluster with one master that may evict', () => {
  const cluster = useDisposableCluster();

  it('one warning naming that master only', async () => {
    const [first, victim, third] = cluster().masters;
    await setEvictionPolicy(victim.port, '100mb', 'volatile-lru');
    try {
      const { log, rateLimit, client } = await bootOn({ cluster: cluster().startupNodes });
      expect(await decide(rateLimit, client)).toBe(3); // once per master
      expect(await waitFor(() => evictionWarnings(log.warnings).length > 0, 2_000)).toBe(true);
      await rateLimit.consume('c', policy);
      await sleep(200);
      const warnings = evictionWarnings(log.warnings);
      expect(warnings).toHaveLength(1);
      expect(warnings[0]).toContain(`127.0.0.1:${victim.port}`);
      expect(warnings[0]).toContain('maxmemory-policy volatile-lru');
      expect(warnings[0]).not.toContain(`:${first.port}`);
      expect(warnings[0]).not.toContain(`:${third.port}`);
    } finally {
      await setEvictionPolicy(victim.port, '0', 'noeviction');
    }
  });
});
