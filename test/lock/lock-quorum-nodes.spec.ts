/**
 * What the lock service checks of each `lock.quorum.nodes` server at start, as the main connection checks its own
 * server (checkServer): a replica, or a db the server does not have, stops the start with InvalidOptionsError naming
 * the node. Before, such a node connected without a word and failed at first use (READONLY on every acquisition, or
 * the locks went to its db 0).
 */
import 'reflect-metadata';
import { Redis } from 'ioredis';
import { InvalidOptionsError, LockService } from '../../lib/index.js';
import { othersConnected } from '../support/clients.js';
import { trackForCleanup } from '../support/private-servers.js';
import type { RedisServerHandle } from '../support/redis-server.js';
import { lockKey } from '../support/lock-modes.js';
import { startMisfitServers } from '../support/misfit-servers.js';
import { sharedServers } from '../support/shared-servers.js';
import { closeToolkitApps, createToolkitApp } from '../support/toolkit-app.js';
import { waitFor } from '../support/wait.js';

afterEach(closeToolkitApps);

const failure = (p: Promise<unknown>): Promise<unknown> =>
  p.then(
    () => undefined,
    (err: unknown) => err,
  );

/** Two shared quorum servers and `third`: a majority that answers, whatever `third` is. */
const nodesWith = (third: { url: string }) => [
  ...sharedServers()
    .quorum.slice(0, 2)
    .map((q) => ({ url: q.url })),
  third,
];

describe('lock.quorum.nodes checked at start like the connection', () => {
  let master: RedisServerHandle;
  let replica: RedisServerHandle;
  let fewDbs: RedisServerHandle;
  beforeAll(async () => {
    ({ master, replica, fewDbs } = await startMisfitServers());
  });

  it('a node that is a replica stops the start, naming it and its master', async () => {
    const err = await failure(createToolkitApp({ lock: { quorum: { nodes: nodesWith({ url: replica.url }) } } }));
    expect(err).toBeInstanceOf(InvalidOptionsError);
    const message = (err as Error).message;
    expect(message).toContain(`lock quorum node redis://127.0.0.1:${replica.port}`);
    expect(message).toContain(`replica of 127.0.0.1:${master.port}`);
    // the failed start closed its connections: nothing keeps reconnecting to the node
    expect(await waitFor(async () => (await othersConnected(replica.port)) === 0, 5_000)).toBe(true);
  });

  it('a node url whose db the server does not have stops the start, naming the node, the db and the limit', async () => {
    const err = await failure(createToolkitApp({ lock: { quorum: { nodes: nodesWith({ url: `${fewDbs.url}/9` }) } } }));
    expect(err).toBeInstanceOf(InvalidOptionsError);
    const message = (err as Error).message;
    expect(message).toContain('db 9');
    expect(message).toContain(`lock quorum node redis://127.0.0.1:${fewDbs.port}`);
    expect(message).toMatch(/has 4 databases \(0 to 3/);
  });

  it('a password in the node url is masked in the message', async () => {
    const err = await failure(
      createToolkitApp({
        lock: { quorum: { nodes: nodesWith({ url: `redis://:s3cret-pass@127.0.0.1:${replica.port}` }) } },
      }),
    );
    expect(err).toBeInstanceOf(InvalidOptionsError);
    expect((err as Error).message).toContain(`127.0.0.1:${replica.port}`);
    expect((err as Error).message).not.toContain('s3cret-pass');
  });

  it('a master node with a db it has (3 of 4) starts, and its locks land in that db', async () => {
    const { get } = await createToolkitApp({ lock: { quorum: { nodes: nodesWith({ url: `${fewDbs.url}/3` }) } } });
    const lock = await get(LockService).acquire(`db3-${Date.now()}`, { ttl: 5_000 });
    const admin = trackForCleanup(new Redis({ port: fewDbs.port, host: '127.0.0.1', db: 3 }));
    expect(await admin.get(lockKey(lock.resource))).toBe(lock.token);
    await lock.release();
  });
});
