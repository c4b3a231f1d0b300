import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REDIS_CLIENT, RedisToolkitHealth } from '../../lib/index.js';
import type { RedisClient } from '../../lib/common/lua-script.js';
import { getFreePort, startRedisServer, type RedisServerHandle } from '../support/redis-server.js';
import { probePing } from '../support/resp.js';
import { closeToolkitApps, createToolkitApp } from '../support/toolkit-app.js';
import { waitFor } from '../support/wait.js';

describe('Sentinel connection', () => {
  let master: RedisServerHandle;
  let sentinel: ChildProcess;
  let sentinelPort: number;
  let dir: string;

  beforeAll(async () => {
    master = await startRedisServer();
    sentinelPort = await getFreePort();
    dir = mkdtempSync(join(tmpdir(), 'rtk-sentinel-'));
    const conf = join(dir, 'sentinel.conf');
    writeFileSync(
      conf,
      [
        `port ${sentinelPort}`,
        'bind 127.0.0.1',
        `dir ${dir}`,
        `sentinel monitor toolkit 127.0.0.1 ${master.port} 1`,
        'sentinel down-after-milliseconds toolkit 2000',
      ].join('\n') + '\n',
    );
    sentinel = spawn('redis-server', [conf, '--sentinel'], { stdio: 'ignore' });
    expect(await waitFor(async () => (await probePing(sentinelPort)) === 'pong', 10_000)).toBe(true);
  });

  afterAll(async () => {
    await closeToolkitApps();
    sentinel.kill('SIGKILL');
    await master.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('finds the master through the sentinel and uses it', async () => {
    const { get } = await createToolkitApp({
      target: { sentinels: [{ host: '127.0.0.1', port: sentinelPort }], name: 'toolkit' },
    });
    const client = get<RedisClient>(REDIS_CLIENT);
    await client.set('rtk:sentinel:k', 'v');
    expect(await client.get('rtk:sentinel:k')).toBe('v');
    const health = await get(RedisToolkitHealth).check();
    expect(health).toMatchObject({ status: 'up', role: 'master' });
  });

  it('fails fast with the sentinel address when the master group is unknown', async () => {
    await expect(
      createToolkitApp({
        target: { sentinels: [{ host: '127.0.0.1', port: sentinelPort }], name: 'nope' },
        connectTimeout: 500,
        commandTimeout: 300,
      }),
    ).rejects.toThrow(new RegExp(`sentinel master "nope" via 127\\.0\\.0\\.1:${sentinelPort}`));
  });
});
