/**
 * READONLY that lasts. A demoted master answers every write with READONLY; failover-replies.spec.ts checks that this
 * follows each feature's failure policy (rate limits fail open, the cache skips writes), which is right for the
 * seconds of a failover. When it lasts (an operator ran REPLICAOF on the server the app points at, or a DNS name moved
 * and the client never reconnected) rate limits let every request through for as long as it lasts. Now READONLY is
 * an outage only for `readOnlyGraceMs` after the first of a streak; after that it is RedisReplyError (READONLY): the
 * call fails closed, one ERROR per interval names the replica, health says degraded. A master again ends the streak.
 * The connection also reconnects on READONLY (at most once per 5 s), so an endpoint that now leads to the new master
 * is followed.
 */
import 'reflect-metadata';
import { Controller, Get, UseGuards } from '@nestjs/common';
import { connect, createServer, type AddressInfo, type Server as NetServer, type Socket } from 'node:net';
import type { Server } from 'node:http';
import type { Redis } from 'ioredis';
import {
  CacheService,
  REDIS_CLIENT,
  RateLimitGuard,
  RateLimitService,
  RedisReplyError,
  RedisToolkitHealth,
  RedisUnavailableError,
  Throttle,
  type RedisToolkitOptions,
} from '../../lib/index.js';
import { resolveToolkitOptions } from '../../lib/redis-toolkit.options-resolver.js';
import { trackForCleanup, usePrivateRedis } from '../support/private-servers.js';
import { rawCommand } from '../support/resp.js';
import { closeToolkitApps, createToolkitApp, type ToolkitApp } from '../support/toolkit-app.js';
import { sleep, waitFor } from '../support/wait.js';
import { recordingLogger } from '../support/recording-logger.js';

const GRACE_MS = 1_500;
const POLICY = { limit: 1, ttl: 60_000 };

@Controller('rl')
@UseGuards(RateLimitGuard)
class LimitedController {
  @Get()
  @Throttle(POLICY)
  get(): string {
    return 'ok';
  }
}

const failure = (p: Promise<unknown>): Promise<unknown> =>
  p.then(
    () => undefined,
    (err: unknown) => err,
  );

const synced = (port: number) =>
  waitFor(
    async () => String(await rawCommand(port, ['INFO', 'replication'])).includes('master_link_status:up'),
    10_000,
  );

/** A TCP forwarder whose target can move, like a DNS name or a load balancer after a failover. */
async function movableEndpoint(port: number): Promise<{ port: number; target: { port: number }; accepted: number }> {
  const state = { port: 0, target: { port }, accepted: 0 };
  const sockets = new Set<Socket>();
  const server: NetServer = createServer((client) => {
    state.accepted++;
    const upstream = connect({ host: '127.0.0.1', port: state.target.port });
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('error', () => undefined);
      s.on('close', () => {
        sockets.delete(s);
        client.destroy();
        upstream.destroy();
      });
    }
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  state.port = (server.address() as AddressInfo).port;
  trackForCleanup({
    stop: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  });
  return state;
}

describe('READONLY that lasts past readOnlyGraceMs', () => {
  // No 5 s wait before each sync (the default delay of a diskless sync): the tests demote a server more than once.
  const upstream = usePrivateRedis({ args: ['--repl-diskless-sync-delay', '0'] });
  const server = usePrivateRedis();
  const other = usePrivateRedis();

  afterEach(async () => {
    await closeToolkitApps();
    for (const port of [server.server.port, other.server.port]) await rawCommand(port, ['REPLICAOF', 'NO', 'ONE']);
  });

  const demote = async (port: number) => {
    await rawCommand(port, ['REPLICAOF', '127.0.0.1', String(upstream.server.port)]);
    expect(await synced(port)).toBe(true);
  };
  const ready = (app: ToolkitApp) => waitFor(() => app.get<Redis>(REDIS_CLIENT).status === 'ready', 5_000);

  it('fails open within the grace, then refuses with RedisReplyError (READONLY), health degraded; recovers as master', async () => {
    const { errors, logger } = recordingLogger();
    const app = await createToolkitApp({
      target: { url: server.server.url, readOnlyGraceMs: GRACE_MS },
      http: true,
      logger,
      rateLimit: { warnIntervalMs: 60_000 },
      controllers: [LimitedController],
    });
    const { port } = (app.app.getHttpServer() as Server).address() as { port: number };
    const hit = async () => (await fetch(`http://127.0.0.1:${port}/rl`)).status;
    const rl = app.get(RateLimitService);
    const cache = app.get(CacheService);
    const health = app.get(RedisToolkitHealth);
    let loads = 0;
    const loader = (value: string) => async () => {
      loads++;
      return value;
    };

    await demote(server.server.port);
    const demotedAt = Date.now();
    // Within the grace: a failover in progress, each feature's failure policy (fail open, counted).
    const first = await hit();
    // the grace runs from the first READONLY the toolkit saw, during that first request: on a busy machine well after
    // the demotion (a run of 2026-12-05 slept GRACE_MS + 100 from demotedAt and was still within it: 200 200)
    const seenBy = Date.now();
    expect([first, await hit(), await hit()]).toEqual([200, 200, 200]);
    expect(rl.stats()).toMatchObject({ failedOpen: 3, replyErrors: 0 });
    expect(await ready(app)).toBe(true);
    expect(await cache.getOrSet('a', loader('A'))).toBe('A');
    expect(cache.stats().errors).toBe(1);
    expect((await health.check()).status).toBe('degraded');
    expect(Date.now() - demotedAt).toBeLessThan(GRACE_MS);
    const replicaErrors = () => errors.filter((m) => m.includes('is a replica, not the master'));
    expect(replicaErrors()).toEqual([]);

    // Past the grace: a reply error, under every feature; never a fail-open.
    await sleep(GRACE_MS + 100 - (Date.now() - seenBy));
    expect(await ready(app)).toBe(true);
    // before: 200 200 (fail open for as long as the server stays a replica)
    expect([await hit(), await hit()]).toEqual([500, 500]);
    expect(rl.stats()).toMatchObject({ failedOpen: 3, replyErrors: 2, allowed: 0 });
    const refused = await failure(rl.consume('direct', POLICY));
    expect(refused).toBeInstanceOf(RedisReplyError);
    expect(refused).not.toBeInstanceOf(RedisUnavailableError);
    expect((refused as RedisReplyError).replyCode).toBe('READONLY');
    expect((refused as Error).message).toMatch(/readOnlyGraceMs/);
    expect(rl.stats()).toMatchObject({ failedOpen: 3, replyErrors: 3 });
    // the cache: a reply error on a miss is the caller's (as OOM is), counted; the loader did not run
    const cached = await failure(cache.getOrSet('b', loader('B')));
    expect(cached).toBeInstanceOf(RedisReplyError);
    expect((cached as RedisReplyError).replyCode).toBe('READONLY');
    expect(cache.stats().errors).toBe(2);
    expect(loads).toBe(1);
    const degraded = await health.check();
    expect(degraded.status).toBe('degraded');
    expect(degraded.reason).toMatch(/READONLY for \d+ ms.*readOnlyGraceMs/);
    // one ERROR for the connection (per 10 s), naming the replica and the remedy
    const said = replicaErrors();
    expect(said).toHaveLength(1);
    expect(said[0]).toMatch(/READONLY for \d+ ms.*Point the connection at the master/);

    // Promoted again: the streak ends, decisions and caching are back.
    await rawCommand(server.server.port, ['REPLICAOF', 'NO', 'ONE']);
    expect(await waitFor(async () => (await health.check()).status === 'up', 5_000)).toBe(true);
    expect([await hit(), await hit()]).toEqual([200, 429]);
    expect(rl.stats()).toMatchObject({ allowed: 1, denied: 1, failedOpen: 3, replyErrors: 3 });
    expect(await cache.getOrSet('b', loader('B'))).toBe('B');
    expect(await cache.getOrSet('b', loader('B2'))).toBe('B');
    expect(loads).toBe(2);

    // A new demotion is a new streak: its grace starts again (fail open, not a reply error).
    await demote(server.server.port);
    expect(await ready(app)).toBe(true);
    expect(await hit()).toBe(200);
    expect(rl.stats()).toMatchObject({ failedOpen: 4, replyErrors: 3 });
  });

  it('reconnects on READONLY at most once per 5 s, and follows an endpoint that now leads to the master', async () => {
    const endpoint = await movableEndpoint(server.server.port);
    const app = await createToolkitApp({
      target: { url: `redis://127.0.0.1:${endpoint.port}`, readOnlyGraceMs: 60_000 },
      rateLimit: { warnIntervalMs: 60_000 },
    });
    const client = app.get<Redis>(REDIS_CLIENT);
    let readies = 0;
    client.on('ready', () => readies++);
    const rl = app.get(RateLimitService);
    const accepted = endpoint.accepted;

    await demote(server.server.port);
    // 2 s of READONLY traffic: one reconnect (to the same replica), not one per reply
    const until = Date.now() + 2_000;
    let calls = 0;
    while (Date.now() < until) {
      await Promise.all([1, 2, 3, 4].map((i) => rl.consume(`k${i}`, POLICY)));
      calls += 4;
      await sleep(20);
    }
    expect(calls).toBeGreaterThan(100);
    expect(readies).toBe(1);
    expect(endpoint.accepted - accepted).toBe(1);
    expect(rl.stats().failedOpen).toBe(calls);

    // The endpoint moves to a master (DNS after a failover): the next reconnect (5 s after the first) finds it.
    endpoint.target.port = other.server.port;
    const decided = await waitFor(async () => {
      const r = await rl.consume(`moved-${Date.now()}`, POLICY);
      return r.degraded === undefined && r.allowed;
    }, 6_000);
    expect(decided).toBe(true);
    expect(readies).toBe(2);
    expect((await app.get(RedisToolkitHealth).check()).status).toBe('up');
  });

  it('readOnlyGraceMs: checked (a duration, not on a cluster nor a quorum node), misspellings named', () => {
    const problems = (options: Partial<RedisToolkitOptions>): string => {
      try {
        resolveToolkitOptions({ connection: { url: 'redis://127.0.0.1:1' }, ...options } as RedisToolkitOptions);
        return '';
      } catch (err) {
        return (err as Error).message;
      }
    };
    expect(problems({ connection: { url: 'redis://h:1', readOnlyGraceMs: 0 } })).toBe('');
    expect(problems({ connection: { sentinels: [{ host: 'h', port: 1 }], name: 'm', readOnlyGraceMs: 5 } })).toBe('');
    const client = {
      status: 'wait',
      duplicate: () => undefined,
      options: { commandTimeout: 1_000 },
    } as unknown as Redis;
    expect(problems({ connection: { client, readOnlyGraceMs: 5 } })).toBe('');
    expect(problems({ connection: { url: 'redis://h:1', readOnlyGraceMs: -1 } })).toMatch(
      /connection\.readOnlyGraceMs must be a non-negative number of milliseconds/,
    );
    expect(
      problems({ connection: { url: 'redis://h:1', readOnlyGraceMS: 5 } as RedisToolkitOptions['connection'] }),
    ).toMatch(/did you mean connection\.readOnlyGraceMs/);
    expect(problems({ connection: { cluster: [{ host: 'h', port: 1 }], readOnlyGraceMs: 5 } as never })).toMatch(
      /connection\.readOnlyGraceMs .*cluster/,
    );
    expect(problems({ lock: { quorum: { nodes: [{ url: 'redis://h:1', readOnlyGraceMs: 5 } as never] } } })).toMatch(
      /lock\.quorum\.nodes\[0\]\.readOnlyGraceMs/,
    );
  });
});
