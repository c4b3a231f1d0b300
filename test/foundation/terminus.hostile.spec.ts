/**
 * The terminus indicator as an outsider reads it (a health endpoint is often public, or scraped by a system that logs
 * it): with credentials in every url and a server, then a quorum node, paused, the report says which address is
 * silent and never a user name or password; and it answers within commandTimeout.
 */
import 'reflect-metadata';
import { type RedisServerHandle, startRedisServer } from '../../lib/testing/index.js';
import { createTerminusApp } from '../support/terminus-app.js';
import { closeToolkitApps } from '../support/toolkit-app.js';

const servers: RedisServerHandle[] = [];
afterEach(async () => {
  await closeToolkitApps();
  for (const s of servers) if (s.isRunning()) s.resume();
  await Promise.all(servers.splice(0).map((s) => s.stop()));
});

it('credentials in every url never show in the report, whatever is paused; down within commandTimeout', async () => {
  const secrets = ['main-user', 'main-pass-7c1', 'node-user', 'node-pass-9e2'];
  const main = await startRedisServer({ aclUser: { name: secrets[0], password: secrets[1] } });
  servers.push(main);
  for (let i = 0; i < 3; i++)
    servers.push(await startRedisServer({ aclUser: { name: secrets[2], password: secrets[3] } }));
  const nodes = servers.slice(1);
  const { check } = await createTerminusApp({
    target: { url: main.url },
    commandTimeout: 500,
    lock: { quorum: { nodes: nodes.map((n) => ({ url: n.url })) }, retry: { count: 0 } },
  });
  const texts: string[] = [];
  const up = await check();
  texts.push(JSON.stringify(up));
  expect(up.status).toBe('ok');

  nodes[0].pause();
  const degraded = await check();
  texts.push(JSON.stringify(degraded));
  expect(degraded.status).toBe('degraded');
  expect(JSON.stringify(degraded)).toContain(`127.0.0.1:${nodes[0].port} connection does not answer`);

  main.pause();
  const started = performance.now();
  const down = await check();
  const elapsed = performance.now() - started;
  texts.push(JSON.stringify(down));
  expect(down.status).toBe('error');
  expect(JSON.stringify(down)).toContain(`127.0.0.1:${main.port}`);
  // PING, INFO and the quorum nodes' PINGs at once, each bounded by commandTimeout (500 ms): not one after another
  expect(elapsed).toBeLessThan(1_000);
  const all = texts.join('\n');
  expect(secrets.filter((s) => all.includes(s))).toEqual([]);
});
