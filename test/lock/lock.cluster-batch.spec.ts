import 'reflect-metadata';
import { randomUUID } from 'node:crypto';
import { Cluster } from 'ioredis';
import { LockService, RedisUnavailableError } from '../../lib/index.js';
import { RedisConnection } from '../../lib/advanced.js';
import { countSocketWrites, masterConnectionsReady, recordCommands } from '../support/command-recorder.js';
import { ownedBy, useDisposableCluster } from '../support/disposable-cluster.js';
import { closeToolkitApps, createToolkitApp, type RedisTarget } from '../support/toolkit-app.js';

afterEach(closeToolkitApps);

async function lockApp(
  target: RedisTarget,
  commandTimeout?: number,
  keyPrefix = `rtk-lcb-${randomUUID().slice(0, 8)}:`,
) {
  const app = await createToolkitApp({
    target,
    keyPrefix,
    ...(commandTimeout && { commandTimeout, maxReconnectDelay: 100 }),
  });
  const cluster = app.get(RedisConnection).client;
  if (!(cluster instanceof Cluster)) throw new Error('expected a cluster client');
  return { locks: app.get(LockService), cluster, keyPrefix };
}

const scriptCalls = (commands: string[]) => commands.filter((c) => c === 'evalsha' || c === 'eval').length;
const sum = (writes: Map<number, number>) => [...writes.values()].reduce((a, b) => a + b, 0);

describe('locks on a cluster, batched per master', () => {
  it('sends the acquisitions and the releases of one turn as pipelines per master, one script call per lock', async () => {
    const { locks, cluster, keyPrefix } = await lockApp('cluster');
    await masterConnectionsReady(cluster);
    const resources = Array.from({ length: 24 }, (_, i) => `res-${i}`);
    const acquired = await countSocketWrites(cluster, () =>
      recordCommands(cluster, () => Promise.all(resources.map((r) => locks.tryAcquire(r)))),
    );
    const held = acquired.value.value;
    expect(held.every((l) => l !== null)).toBe(true);
    const tokens = held.map((l) => l?.fencingToken ?? 0);
    expect(scriptCalls(acquired.value.commands)).toBe(24);
    // alone, every acquisition was its own write (24); batched, one pipeline per master per 8 calls
    expect(sum(acquired.writes)).toBeLessThanOrEqual(3 * Math.ceil(24 / 8));
    expect(acquired.writes.size).toBe(3);

    // another service (same keys, its own connections) finds every lock taken
    const other = await lockApp('cluster', undefined, keyPrefix);
    const others = await Promise.all(resources.map((r) => other.locks.tryAcquire(r)));
    expect(others.every((l) => l === null)).toBe(true);

    const released = await countSocketWrites(cluster, () => Promise.all(held.map((l) => l?.release())));
    expect(sum(released.writes)).toBeLessThanOrEqual(3 * Math.ceil(24 / 8));
    const again = await Promise.all(resources.map((r) => other.locks.tryAcquire(r)));
    // each resource's fencing token grew past the one its previous holder got
    expect(again.every((l, i) => l !== null && l.fencingToken > tokens[i])).toBe(true);
    await Promise.all(again.map((l) => l?.release()));
  });
});

describe('a turn of releases and acquisitions on a cluster', () => {
  it('goes out in one socket write per master, as it does in one write on a single server', async () => {
    const { locks, cluster } = await lockApp('cluster');
    await masterConnectionsReady(cluster);
    const resources = (name: string) => Array.from({ length: 24 }, (_, i) => `${name}-${i}`);
    // a first round loads both scripts on every master (a NOSCRIPT reply would send that call again alone)
    const first = await Promise.all(resources('held').map((r) => locks.tryAcquire(r)));
    await Promise.all(first.map((l) => l?.release()));
    const held = await Promise.all(resources('held').map((r) => locks.tryAcquire(r)));
    expect(held.every((l) => l !== null)).toBe(true);
    // one turn: 24 releases and 24 acquisitions, spread over the 3 masters
    const turn = await countSocketWrites(cluster, () =>
      Promise.all([
        Promise.all(held.map((l) => l?.release())),
        Promise.all(resources('next').map((r) => locks.tryAcquire(r))),
      ]),
    );
    const acquired = turn.value[1];
    expect(acquired.every((l) => l !== null)).toBe(true);
    // before: one write for the releases and one for the acquisitions on every master
    expect(turn.writes.size).toBe(3);
    expect([...turn.writes.values()]).toEqual([1, 1, 1]);
    await Promise.all(acquired.map((l) => l?.release()));
  });
});

describe('locks when a cluster master dies', () => {
  const cluster = useDisposableCluster();

  it('a turn of acquisitions fails closed only for the dead master; the others are held', async () => {
    const { locks } = await lockApp({ cluster: cluster().startupNodes }, 300);
    const victim = cluster().masters[0];
    const resources = Array.from({ length: 24 }, (_, i) => `dead-or-alive-${i}`);
    const onVictim = await ownedBy(victim, resources);
    expect(onVictim.filter(Boolean).length).toBeGreaterThan(0);
    expect(onVictim.filter(Boolean).length).toBeLessThan(resources.length);
    const first = await Promise.all(resources.map((r) => locks.tryAcquire(r)));
    await Promise.all(first.map((l) => l?.release()));
    await victim.kill();
    const outcomes = await Promise.allSettled(resources.map((r) => locks.tryAcquire(r)));
    for (const [i, outcome] of outcomes.entries()) {
      if (onVictim[i]) {
        expect(outcome.status).toBe('rejected');
        if (outcome.status === 'rejected') expect(outcome.reason).toBeInstanceOf(RedisUnavailableError);
      } else {
        expect(outcome.status).toBe('fulfilled');
        if (outcome.status === 'fulfilled')
          expect(outcome.value?.fencingToken).toBeGreaterThan(first[i]?.fencingToken ?? Infinity);
      }
    }
  });
});
