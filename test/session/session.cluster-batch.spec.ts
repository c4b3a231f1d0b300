import 'reflect-metadata';
import { randomUUID } from 'node:crypto';
import { Cluster } from 'ioredis';
import { RedisUnavailableError, SessionService } from '../../lib/index.js';
import { RedisConnection } from '../../lib/advanced.js';
import { countSocketWrites, recordCommands } from '../support/command-recorder.js';
import { ownedBy, useDisposableCluster } from '../support/disposable-cluster.js';
import { closeToolkitApps, createToolkitApp, type RedisTarget } from '../support/toolkit-app.js';

afterEach(closeToolkitApps);

async function sessionApp(target: RedisTarget, commandTimeout?: number) {
  const app = await createToolkitApp({
    target,
    keyPrefix: `rtk-scb-${randomUUID().slice(0, 8)}:`,
    session: { cookie: { secret: 'a-test-secret-of-at-least-32-chars!' } },
    ...(commandTimeout && { commandTimeout, maxReconnectDelay: 100 }),
  });
  const cluster = app.get(RedisConnection).client;
  if (!(cluster instanceof Cluster)) throw new Error('expected a cluster client');
  return { sessions: app.get(SessionService), cluster };
}

const sum = (writes: Map<number, number>) => [...writes.values()].reduce((a, b) => a + b, 0);

describe('sessions on a cluster, batched per master', () => {
  it('sends the touching reads of one turn as one pipeline of GETEXs per master; each gets its own session', async () => {
    const { sessions, cluster } = await sessionApp('cluster');
    const created = await Promise.all(Array.from({ length: 30 }, (_, i) => sessions.create(`user-${i}`, { n: i })));
    const ids = created.map((s) => s.id);
    const { value, writes } = await countSocketWrites(cluster, () =>
      recordCommands(cluster, () => Promise.all(ids.map((id) => sessions.get(id)))),
    );
    expect(value.value.map((s) => s?.data.n)).toEqual(ids.map((_, i) => i));
    expect(value.commands.filter((c) => c === 'getex')).toHaveLength(30);
    // alone, each read was its own write (30); batched, one pipeline per master
    expect(sum(writes)).toBe(3);
  });

  it('updates of one turn (compare-and-set per session) are batched per master and none is lost', async () => {
    const { sessions, cluster } = await sessionApp('cluster');
    const created = await Promise.all(Array.from({ length: 16 }, (_, i) => sessions.create(`user-${i}`, { n: i })));
    const { writes } = await countSocketWrites(cluster, () =>
      Promise.all(created.map((s, i) => sessions.update(s.id, { m: i * 10 }))),
    );
    expect(sum(writes)).toBeLessThan(16);
    const read = await Promise.all(created.map((s) => sessions.get(s.id)));
    expect(read.map((s) => [s?.data.n, s?.data.m])).toEqual(created.map((_, i) => [i, i * 10]));
  });
});

describe('sessions when a cluster master dies', () => {
  const cluster = useDisposableCluster();

  it('a turn of reads fails only the sessions of the dead master', async () => {
    const { sessions } = await sessionApp({ cluster: cluster().startupNodes }, 300);
    const victim = cluster().masters[0];
    const created = await Promise.all(Array.from({ length: 24 }, (_, i) => sessions.create(`user-${i}`, { n: i })));
    const onVictim = await ownedBy(
      victim,
      created.map(({ id }) => id),
    );
    expect(onVictim.filter(Boolean).length).toBeGreaterThan(0);
    expect(onVictim.filter(Boolean).length).toBeLessThan(created.length);
    await victim.kill();
    const outcomes = await Promise.allSettled(created.map((s) => sessions.get(s.id)));
    for (const [i, outcome] of outcomes.entries()) {
      if (onVictim[i]) {
        expect(outcome.status).toBe('rejected');
        if (outcome.status === 'rejected') expect(outcome.reason).toBeInstanceOf(RedisUnavailableError);
      } else expect(outcome).toMatchObject({ status: 'fulfilled', value: { data: { n: i } } });
    }
  });
});
