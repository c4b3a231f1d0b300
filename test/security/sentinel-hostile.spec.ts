/**
 * Sentinel under hostile configuration (issue 17, second pass): sentinels that require a password, and a sentinel that
 * names a replica as the master (a stale or hostile sentinel). Each must stop the start with RedisUnavailableError
 * naming the cause, never write to the wrong server, and never print the password.
 */
import 'reflect-metadata';
import { REDIS_CLIENT, RedisUnavailableError } from '../../lib/index.js';
import type { RedisClient } from '../../lib/common/lua-script.js';
import { startRedisServer, type RedisServerHandle } from '../support/redis-server.js';
import { rawCommand } from '../support/resp.js';
import { startSentinel, type SentinelHandle } from '../support/sentinel.js';
import { closeToolkitApps, createToolkitApp } from '../support/toolkit-app.js';
import { waitFor } from '../support/wait.js';

const SENTINEL_PASSWORD = 'sentinel-secret-4711';

const failure = (p: Promise<unknown>): Promise<unknown> =>
  p.then(
    () => undefined,
    (err: unknown) => err,
  );

describe('Sentinel: hostile configuration', () => {
  let master: RedisServerHandle;
  let replica: RedisServerHandle;
  let guarded: SentinelHandle;
  let lying: SentinelHandle;

  beforeAll(async () => {
    master = await startRedisServer();
    replica = await startRedisServer({ args: ['--replicaof', '127.0.0.1', String(master.port)] });
    guarded = await startSentinel({
      name: 'guarded',
      master: { host: '127.0.0.1', port: master.port },
      extra: [`requirepass ${SENTINEL_PASSWORD}`],
    });
    // Names the replica as the master of "lying".
    lying = await startSentinel({ name: 'lying', master: { host: '127.0.0.1', port: replica.port } });
  }, 60_000);

  afterAll(async () => {
    await closeToolkitApps();
    await guarded?.stop();
    await lying?.stop();
    await replica?.stop();
    await master?.stop();
  });

  afterEach(closeToolkitApps);

  const guardedTarget = (sentinelPassword?: string) => ({
    sentinels: [{ host: '127.0.0.1', port: guarded.port }],
    name: 'guarded',
    ...(sentinelPassword !== undefined && { sentinelPassword }),
  });

  it('sentinelPassword reaches a sentinel with requirepass', async () => {
    const { get } = await createToolkitApp({ target: guardedTarget(SENTINEL_PASSWORD) });
    expect(await get<RedisClient>(REDIS_CLIENT).ping()).toBe('PONG');
  });

  it.each([
    ['missing', undefined, /NOAUTH/],
    ['wrong', 'not-the-password', /WRONGPASS|invalid username-password/],
  ])('a %s sentinelPassword stops the start with RedisUnavailableError naming the cause', async (_, pw, cause) => {
    const error = await failure(
      createToolkitApp({ target: guardedTarget(pw), connectTimeout: 1_000, commandTimeout: 300 }),
    );
    expect(error).toBeInstanceOf(RedisUnavailableError);
    const text = `${(error as Error).message} ${String((error as Error).cause ?? '')}`;
    expect(text).toMatch(new RegExp(`sentinel master "guarded" via 127\\.0\\.0\\.1:${guarded.port}`));
    expect(text).toMatch(cause);
    expect(text).not.toContain(SENTINEL_PASSWORD);
    expect(text).not.toContain('not-the-password');
  });

  it('a sentinel that names a replica as the master: the start fails, nothing is written to the replica', async () => {
    expect(
      await waitFor(
        async () => String(await rawCommand(replica.port, ['INFO', 'replication'])).includes('master_link_status:up'),
        10_000,
      ),
    ).toBe(true);
    const error = await failure(
      createToolkitApp({
        target: { sentinels: [{ host: '127.0.0.1', port: lying.port }], name: 'lying' },
        connectTimeout: 1_000,
        commandTimeout: 300,
      }),
    );
    expect(error).toBeInstanceOf(RedisUnavailableError);
    expect(await rawCommand(replica.port, ['DBSIZE'])).toBe(0);
  });
});
