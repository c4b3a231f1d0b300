// The fixture app under Node's permission model with only what the toolkit needs (run.mjs, RTK_PACKAGE_NODE_FLAGS with
// --permission): `--allow-fs-read` of its own dir and modules (and `--allow-net` where Node gates the network, 25+), no
// fs write, no child process, no worker. The redis-server is run.mjs's (its url the first argument): the /testing
// helpers need those grants, the toolkit does not: startRedisServer must refuse here with RedisServerPermissionError
// naming them. Calls one route per feature as main.ts does; with `net-denied` as the second argument (Node started
// without --allow-net, or Deno without it: run.mjs's denoNetDenied) the helpers refuse alike and the start must fail
// with RedisUnavailableError naming --allow-net, with lazyConnect too, not boot half-working; with `helpers-granted`
// (Deno with the narrow grants the helpers' refusal names) startRedisServer starts a server; with `sweep-denied=<a live
// server's dir>` (Deno without --allow-run) sweepStaleServers refuses and the dir stays; with `cluster-net=<a cluster's
// masters>` (Deno granted the first alone) the start stops naming the others (clusterMastersDenied).
import 'reflect-metadata';
import { existsSync } from 'node:fs';
import { type LoggerService, Module } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { RedisToolkitModule, RedisUnavailableError } from 'nestjs-redis-toolkit';
import {
  type RedisServerHandle,
  RedisServerPermissionError,
  startRedisServer,
  sweepStaleServers,
} from 'nestjs-redis-toolkit/testing';
import { AppModule } from './app.module.js';
import { check, runChecks } from './checks.js';
import { createApp } from './platform.js';

async function main(): Promise<void> {
  process.env.REDIS_URL = process.argv[2];
  if (process.argv[3] === 'helpers-granted') {
    // Deno with the narrow grants RedisServerPermissionError names (run.mjs's denoNetDenied): a server starts
    let server: RedisServerHandle | undefined;
    let failure: unknown;
    try {
      server = await startRedisServer();
    } catch (err) {
      failure = err;
    }
    check(
      'permission model, the grants RedisServerPermissionError names: startRedisServer starts a server',
      server !== undefined && server.port > 0,
      server?.url ?? (failure instanceof Error ? `${failure.name}: ${failure.message}` : failure),
    );
    await server?.stop();
    return;
  }
  if (process.argv[3]?.startsWith('sweep-denied=')) {
    // Deno with the state dir writable, no --allow-run (run.mjs's denoNetDenied): a live server's dir must stay
    const live = process.argv[3].slice('sweep-denied='.length);
    let swept: unknown;
    try {
      swept = sweepStaleServers();
    } catch (err) {
      swept = err;
    }
    check(
      "permission model without --allow-run: sweepStaleServers refuses, naming it, and leaves a live server's dir",
      swept instanceof RedisServerPermissionError && swept.message.includes('--allow-run') && existsSync(live),
      swept instanceof Error ? `${swept.name}: ${swept.message}; dir kept: ${existsSync(live)}` : swept,
    );
    return;
  }
  if (process.argv[3]?.startsWith('cluster-net=')) {
    await clusterMastersDenied(JSON.parse(process.argv[3].slice('cluster-net='.length)));
    return;
  }
  if (process.argv[3] === 'net-denied') {
    await expectHelpersRefused();
    for (const lazy of [false, true]) {
      process.env.REDIS_LAZY = lazy ? '1' : '';
      const denied = await createApp(AppModule);
      const failed = await denied.init().then(
        () => undefined,
        (err: unknown) => err,
      );
      const message = failed instanceof Error ? failed.message : String(failed);
      check(
        `permission model without --allow-net${lazy ? ', lazyConnect' : ''}: the start fails with RedisUnavailableError naming --allow-net`,
        failed instanceof RedisUnavailableError && message.includes('--allow-net') && !message.includes('lazyConnect:'),
        failed instanceof Error ? `${failed.name}: ${message}` : failed,
      );
      await denied.close().catch(() => undefined);
    }
    return;
  }
  const app = await createApp(AppModule);
  await expectHelpersRefused();
  await app.listen(0, '127.0.0.1');
  const base = (await app.getUrl()).replace('[::1]', '127.0.0.1');
  const call = async (method: string, path: string, cookie?: string) => {
    const res = await fetch(`${base}${path}`, { method, headers: cookie ? { cookie } : {} });
    const text = await res.text();
    return { status: res.status, headers: res.headers, body: text ? (JSON.parse(text) as unknown) : undefined };
  };
  try {
    const cached = [(await call('GET', '/cache')).body, (await call('GET', '/cache')).body];
    check(
      'permission model: cache loader called once',
      JSON.stringify(cached) === '[{"value":42,"loads":1},{"value":42,"loads":1}]',
      cached,
    );
    const limited = [await call('GET', '/limited'), await call('GET', '/limited'), await call('GET', '/limited')];
    check(
      'permission model: rate limit 200, 200, 429',
      limited.map((r) => r.status).join() === '200,200,429',
      limited.map((r) => r.status),
    );
    const login = await call('POST', '/login');
    const me = await call('GET', '/me', login.headers.get('set-cookie')?.split(';')[0] ?? '');
    check('permission model: session', me.status === 200, [login.status, me.status, me.body]);
    const tokens = [(await call('POST', '/lock')).body, (await call('POST', '/lock')).body].map(
      (b) => (b as { fencingToken?: number } | undefined)?.fencingToken ?? 0,
    );
    check('permission model: lock fencing tokens rise', tokens[0]! > 0 && tokens[1]! > tokens[0]!, tokens);
    const published = (await call('POST', '/publish')).body;
    check(
      'permission model: pub/sub',
      JSON.stringify(published) === JSON.stringify({ received: [{ hello: 'world' }] }),
      published,
    );
    const snapshot = await call('GET', '/_toolkit/snapshot');
    check('permission model: dashboard snapshot', snapshot.status === 200, snapshot.status);
  } finally {
    await app.close();
  }
}

/**
 * startRedisServer refuses with RedisServerPermissionError naming the grants it lacks: Node's (a child process, the
 * state dir with `/*`, the network where Node gates it) or Deno's (--allow-run, the state dir, 127.0.0.1). Under Deno
 * without --allow-net its free-port probe's listen threw uncaught and ended the process, until 2026-12-07.
 */
async function expectHelpersRefused(): Promise<void> {
  const refused = await startRedisServer().then(
    (server) => server.stop(),
    (err: unknown) => err,
  );
  const message = refused instanceof Error ? refused.message : '';
  const underDeno = 'Deno' in globalThis;
  check(
    'permission model: startRedisServer refuses with RedisServerPermissionError naming the grants it lacks',
    refused instanceof RedisServerPermissionError &&
      refused.code === 'E_REDIS_SERVER_PERMISSION' &&
      (underDeno
        ? /--allow-net=127\.0\.0\.1 .*--allow-run .*--allow-write=\S+rtk-test-redis /.test(message)
        : /--allow-child-process .*--allow-fs-write=\S+\*/.test(message)),
    refused instanceof Error ? `${refused.name}: ${message}` : refused,
  );
}

/**
 * Deno granted the first of a cluster's masters alone (run.mjs's denoNetDenied): the start, which knows only its
 * startup node, must stop naming the other masters once it has read the slot table, and with lazyConnect the app starts
 * and logs that error once the slot table is read (its refresh), ready or not (until 2026-12-07: an ACL check's
 * failure naming one master, or "check that the server is running": 6 of 6 failed).
 */
async function clusterMastersDenied(masters: { host: string; port: number }[]): Promise<void> {
  const denied = masters.slice(1).map((m) => `${m.host}:${m.port}`);
  const namesDenied = (message: string) =>
    denied.every((host) => message.includes(host)) &&
    message.includes('its masters') &&
    message.includes('--allow-net');
  for (const lazyConnect of [false, true]) {
    @Module({ imports: [RedisToolkitModule.forRoot({ connection: { cluster: [masters[0]!] }, lazyConnect })] })
    class ClusterModule {}
    const errors: string[] = [];
    const quiet = () => undefined;
    const logger: LoggerService = { log: quiet, warn: quiet, error: (m: unknown) => void errors.push(String(m)) };
    const app = await NestFactory.createApplicationContext(ClusterModule, { logger }).then(
      (started) => started,
      (err: unknown) => err,
    );
    if (!lazyConnect) {
      const message = app instanceof Error ? app.message : String(app);
      check(
        "Deno without the cluster's other masters: the start fails with RedisUnavailableError naming them",
        app instanceof RedisUnavailableError && namesDenied(message),
        app instanceof Error ? `${app.name}: ${message}` : 'started',
      );
      continue;
    }
    const until = Date.now() + 10_000;
    while (!errors.some(namesDenied) && Date.now() < until) await new Promise((r) => setTimeout(r, 100));
    check(
      "Deno without the cluster's other masters, lazyConnect: the error naming them is logged",
      errors.some(namesDenied),
      app instanceof Error ? `${app.name}: ${app.message}` : errors,
    );
    if (!(app instanceof Error)) await (app as { close(): Promise<void> }).close();
  }
}

runChecks(main);
