import 'reflect-metadata';
import { randomUUID } from 'node:crypto';
import { Cluster } from 'ioredis';
import { RateLimitService, type RateLimitPolicy } from '../../lib/index.js';
import { RedisConnection } from '../../lib/advanced.js';
import { countSocketWrites, masterConnectionsReady, recordCommands } from '../support/command-recorder.js';
import { ownedBy, useDisposableCluster } from '../support/disposable-cluster.js';
import { closeToolkitApps, createToolkitApp, type RedisTarget } from '../support/toolkit-app.js';

afterEach(closeToolkitApps);

async function rateLimitApp(target: RedisTarget, commandTimeout?: number) {
  const app = await createToolkitApp({
    target,
    keyPrefix: `rtk-rlcb-${randomUUID().slice(0, 8)}:`,
    ...(commandTimeout && { commandTimeout, maxReconnectDelay: 100 }),
  });
  const cluster = app.get(RedisConnection).client;
  if (!(cluster instanceof Cluster)) throw new Error('expected a cluster client');
  return { rl: app.get(RateLimitService), cluster };
}

const fixed = (limit: number): RateLimitPolicy => ({ limit, ttl: 60_000, algorithm: 'fixed-window' });

describe('rate-limit decisions on a cluster, batched per master', () => {
  it('sends a turn of decisions as one pipeline per master; decisions on one counter keep their order', async () => {
    const { rl, cluster } = await rateLimitApp('cluster');
    await masterConnectionsReady(cluster);
    const others = Array.from({ length: 25 }, (_, i) => `client-${i}`);
    const { value, writes } = await countSocketWrites(cluster, () =>
      recordCommands(cluster, () =>
        Promise.all([
          ...Array.from({ length: 5 }, () => rl.consume('same', fixed(3))),
          ...others.map((k) => rl.consume(k, fixed(3))),
        ]),
      ),
    );
    const same = value.value.slice(0, 5);
    expect(same.map((r) => r.allowed)).toEqual([true, true, true, false, false]);
    expect(same.map((r) => r.remaining)).toEqual([2, 1, 0, 0, 0]);
    expect(value.value.slice(5).every((r) => r.allowed && r.remaining === 2)).toBe(true);
    // one script call per decision, each on its own slot
    expect(value.commands.filter((c) => c === 'evalsha' || c === 'eval')).toHaveLength(30);
    // unbatched every decision was its own write (30); batched, at most one pipeline per master per 16 decisions
    const total = [...writes.values()].reduce((a, b) => a + b, 0);
    expect(total).toBeLessThanOrEqual(3 * Math.ceil(30 / 16));
    expect(writes.size).toBe(3);
  });

  it('keeps each multi-policy decision all-or-nothing inside a batch', async () => {
    const { rl } = await rateLimitApp('cluster');
    const checks = [
      { key: 'both', policy: fixed(10), name: 'wide' },
      { key: 'both', policy: fixed(1), name: 'narrow' },
    ];
    const results = await Promise.all([
      ...Array.from({ length: 3 }, () => rl.consumeAll(checks)),
      ...Array.from({ length: 20 }, (_, i) => rl.consume(`noise-${i}`, fixed(5))),
    ]);
    const decisions = results.slice(0, 3) as Awaited<ReturnType<typeof rl.consumeAll>>[];
    expect(decisions.map((d) => d.allowed)).toEqual([true, false, false]);
    // the refused ones charged neither counter: the wide one stays at 9 left
    expect(decisions.map((d) => d.results[0].remaining)).toEqual([9, 9, 9]);
    expect((await rl.peek('both', fixed(10))).remaining).toBe(9);
  });
});

describe('rate-limit decisions when a cluster master dies', () => {
  const cluster = useDisposableCluster();

  it('a turn of decisions fails open only for the dead master; the others keep their counts', async () => {
    const { rl } = await rateLimitApp({ cluster: cluster().startupNodes }, 300);
    const policy = fixed(2);
    const victim = cluster().masters[0];
    const keys = Array.from({ length: 30 }, (_, i) => `c-${i}`);
    const onVictim = await ownedBy(
      victim,
      keys.map((k) => rl.redisKey(k, '2/60000', 'fixed-window')),
    );
    expect(onVictim.filter(Boolean).length).toBeGreaterThan(0);
    expect(onVictim.filter(Boolean).length).toBeLessThan(keys.length);
    await Promise.all(keys.map((k) => rl.consume(k, policy))); // one each while all are up
    await victim.kill();
    const second = await Promise.all(keys.map((k) => rl.consume(k, policy)));
    for (const [i, r] of second.entries()) {
      if (onVictim[i]) expect(r).toMatchObject({ allowed: true, degraded: 'fail-open' });
      else {
        expect(r.degraded).toBeUndefined();
        expect(r).toMatchObject({ allowed: true, remaining: 0 });
      }
    }
    const third = await Promise.all(keys.map((k, i) => (onVictim[i] ? undefined : rl.consume(k, policy))));
    expect(third.filter((r) => r !== undefined).every((r) => !r.allowed)).toBe(true);
  });
});
