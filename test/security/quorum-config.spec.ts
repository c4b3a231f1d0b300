/**
 * Hostile configuration of lock quorum nodes (issue 17, second pass): a node that names no server, a node that is not
 * one server, and one server listed twice. Each must stop the start with a typed error naming the node.
 */
import 'reflect-metadata';
import { InvalidOptionsError, LockNotAcquiredError, LockService } from '../../lib/index.js';
import { startQuorumServers } from '../support/quorum.js';
import type { RedisServerHandle } from '../support/redis-server.js';
import { closeToolkitApps, createToolkitApp } from '../support/toolkit-app.js';

const failure = (p: Promise<unknown>): Promise<unknown> =>
  p.then(
    () => undefined,
    (err: unknown) => err,
  );

describe('lock.quorum.nodes: hostile configuration', () => {
  let servers: RedisServerHandle[] = [];

  beforeAll(async () => {
    servers = await startQuorumServers(2);
  });

  afterAll(async () => {
    await closeToolkitApps();
    await Promise.all(servers.map((s) => s.stop()));
  });

  afterEach(closeToolkitApps);

  // Before the fix `{ url: process.env.UNSET }` connected that node to 127.0.0.1:6379 without a word.
  it.each([
    ['a url that is undefined', { url: undefined }],
    ['an empty object', {}],
    ['a sentinel group', { sentinels: [{ host: '127.0.0.1', port: 26379 }], name: 'm' }],
    ['a port out of range', { host: '127.0.0.1', port: 70_000 }],
  ])('a node given as %s is refused with InvalidOptionsError naming it', async (_, node) => {
    const error = await failure(
      createToolkitApp({
        lock: { quorum: { nodes: [{ url: servers[0].url }, node as { url?: string }, { url: servers[1].url }] } },
        connectTimeout: 500,
      }),
    );
    expect(error).toBeInstanceOf(InvalidOptionsError);
    expect((error as Error).message).toContain('lock.quorum.nodes[1]');
  });

  // Before the fix the app started; one server then held two of three votes. With the other server down, every
  // acquisition answered "busy" (the duplicate connection refuses the key its twin set) though no one held the lock.
  it('one server listed twice (127.0.0.1 and localhost) is refused: it would cast two votes', async () => {
    const [a, b] = servers;
    const nodes = [{ url: a.url }, { url: `redis://localhost:${a.port}` }, { url: b.url }];
    const error = await failure(createToolkitApp({ lock: { quorum: { nodes } }, connectTimeout: 1_000 }));
    expect(error).toBeInstanceOf(InvalidOptionsError);
    expect((error as Error).message).toMatch(/distinct Redis servers.*same run_id/);
    expect((error as Error).message).toContain(`localhost:${a.port}`);
  });

  it('distinct servers start and lock (two of two answering)', async () => {
    const nodes = servers.map((s) => ({ url: s.url }));
    const { get } = await createToolkitApp({ lock: { quorum: { nodes } } });
    const lock = get(LockService);
    const resource = `distinct-${Date.now()}`;
    const held = await lock.acquire(resource, { ttl: 5_000 });
    await expect(lock.acquire(resource, { ttl: 5_000, waitMs: 0 })).rejects.toBeInstanceOf(LockNotAcquiredError);
    await held.release();
  });
});
