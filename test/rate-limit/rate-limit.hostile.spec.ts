// An adversarial review of rate limiting (lib/rate-limit/, docs/rate-limit.md) as tests: exactness under concurrency
// from two instances, all-or-nothing decisions in a shared tick, the block cache (0 Redis commands until the block's
// end, other instances' reward/reset/block), refunds (a client abort, a handler throwing mid-stream, a refund crossing
// the window rollover), hostile keys and option values, and failures (a paused Redis, WRONGTYPE, ACL, OOM, eviction,
// SCRIPT FLUSH), on a single server and a cluster, over Express and Fastify. Real redis-server only.
import 'reflect-metadata';
import {
  Controller,
  type ExecutionContext,
  Get,
  Headers,
  HttpCode,
  Res,
  UnauthorizedException,
  UseGuards,
} from '@nestjs/common';
import { randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { request as httpRequest, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Redis } from 'ioredis';
import { ApolloDriver, type ApolloDriverConfig } from '@nestjs/apollo';
import { APP_GUARD } from '@nestjs/core';
import { GraphQLModule, Query, Resolver } from '@nestjs/graphql';
import { MercuriusDriver, type MercuriusDriverConfig } from '@nestjs/mercurius';
import {
  InvalidOptionsError,
  REDIS_CLIENT,
  RateLimitGuard,
  RateLimitService,
  RedisPermissionError,
  RedisReplyError,
  RedisUnavailableError,
  Throttle,
  type RateLimitPolicy,
  type RateLimitResult,
} from '../../lib/index.js';
import { MAX_DURATION_MS } from '../../lib/common/option-checks.js';
import { commandCalls, sumCalls } from '../support/commandstats.js';
import { ownedBy, useDisposableCluster } from '../support/disposable-cluster.js';
import { underOom } from '../support/out-of-memory.js';
import type { GraphqlReply } from '../support/rate-limit-http.js';
import { trackForCleanup, usePrivateRedis } from '../support/private-servers.js';
import { recordingLogger } from '../support/recording-logger.js';
import { within } from '../support/timing.js';
import {
  closeToolkitApps,
  createToolkitApp,
  PLATFORMS,
  type Platform,
  type RedisTarget,
} from '../support/toolkit-app.js';
import { sleep, waitFor } from '../support/wait.js';

afterEach(closeToolkitApps);

const ALGORITHMS = ['fixed-window', 'sliding-window', 'token-bucket'] as const;
type Algorithm = (typeof ALGORITHMS)[number];

const prefix = (): string => `rtk-rlh-${randomUUID().slice(0, 8)}:`;

async function service(target: RedisTarget, keyPrefix = prefix(), blockCache = false, commandTimeout?: number) {
  const app = await createToolkitApp({
    target,
    keyPrefix,
    rateLimit: { blockCache, warnIntervalMs: 60_000 },
    ...(commandTimeout && { commandTimeout, maxReconnectDelay: 100 }),
  });
  return { app, rl: app.get(RateLimitService), client: app.get<Redis>(REDIS_CLIENT) };
}

/** Script calls (EVALSHA + EVAL) since the server started, from INFO commandstats. */
async function scriptCalls(client: Redis): Promise<number> {
  return sumCalls(await commandCalls(client), ['evalsha', 'eval']);
}

/** Every command since the server started but INFO, from INFO commandstats. */
async function allCalls(client: Redis): Promise<number> {
  return sumCalls(await commandCalls(client), (c) => c !== 'info');
}

/** The whole limit of a policy: a window's limit; for the bucket a refill so slow none comes during the test. */
const exactPolicy = (algorithm: Algorithm, limit: number): RateLimitPolicy =>
  algorithm === 'token-bucket' ? { limit, ttl: 3_600_000, algorithm } : { limit, ttl: 60_000, algorithm };

// --- HTTP fixtures ---------------------------------------------------------------------------------------------------

const userOf = (ctx: { switchToHttp(): { getRequest<T>(): T } }): string =>
  String(ctx.switchToHttp().getRequest<{ headers: Record<string, string> }>().headers['x-user-id']);

/** How many of the slow handlers (slowSuccess, slowFailure) have finished: the refund cases wait on it. */
let slowHandlersDone = 0;
/** How many requests reached the goneFirst handler (its guard is then done): the refund case waits on it. */
let goneFirstDone = 0;

/**
 * userOf, once the client has gone: the guard charges after the response's 'close' (a client that aborts while the
 * guard waits for Redis on a busy box, made certain here).
 */
async function userOnceGone(ctx: ExecutionContext): Promise<string> {
  const res = ctx.switchToHttp().getResponse<{ raw?: ServerResponse } & ServerResponse>();
  const raw = res.raw ?? res;
  if (!raw.destroyed) await once(raw, 'close');
  return userOf(ctx);
}

/** Requests that wait, named by their x-hold header, until the test releases them. */
const gates = new Map<string, () => void>();
const held = (name: string | undefined): Promise<void> =>
  name ? new Promise<void>((resolve) => gates.set(name, resolve)) : Promise.resolve();

const ROLLOVER_TTL = 1_000;

/** The roll routes' handler: held until its gate opens (x-hold), then a success with x-ok, else a failure (401). */
async function heldAnswer(hold: string | undefined, ok: string | undefined): Promise<string> {
  await held(hold);
  if (!ok) throw new UnauthorizedException();
  return 'ok';
}

@Controller('h')
@UseGuards(RateLimitGuard)
class HostileController {
  // skipSuccessfulRequests: a failure (401, no x-ok) is charged, a success refunded
  @Get('roll/fixed')
  @Throttle({ limit: 2, ttl: ROLLOVER_TTL, algorithm: 'fixed-window', skipSuccessfulRequests: true, key: userOf })
  rollFixed(@Headers('x-hold') hold?: string, @Headers('x-ok') ok?: string): Promise<string> {
    return heldAnswer(hold, ok);
  }

  @Get('roll/sliding')
  @Throttle({ limit: 2, ttl: ROLLOVER_TTL, algorithm: 'sliding-window', skipSuccessfulRequests: true, key: userOf })
  rollSliding(@Headers('x-hold') hold?: string, @Headers('x-ok') ok?: string): Promise<string> {
    return heldAnswer(hold, ok);
  }

  @Get('roll/bucket')
  @Throttle({ limit: 2, ttl: ROLLOVER_TTL, algorithm: 'token-bucket', skipSuccessfulRequests: true, key: userOf })
  rollBucket(@Headers('x-hold') hold?: string, @Headers('x-ok') ok?: string): Promise<string> {
    return heldAnswer(hold, ok);
  }

  @Get('slow-success')
  @HttpCode(200)
  @Throttle({ limit: 5, ttl: 60_000, skipSuccessfulRequests: true, key: userOf })
  async slowSuccess(): Promise<string> {
    await sleep(300);
    slowHandlersDone++;
    return 'late';
  }

  @Get('slow-failure')
  @Throttle({ limit: 5, ttl: 60_000, skipFailedRequests: true, key: userOf })
  async slowFailure(): Promise<string> {
    await sleep(300);
    slowHandlersDone++;
    return 'late';
  }

  @Get('gone-first')
  @Throttle({ limit: 5, ttl: 60_000, skipFailedRequests: true, key: userOnceGone })
  goneFirst(): string {
    goneFirstDone++;
    return 'late';
  }

  /** Streams a part of a 200, then throws (what Nest's exception filter does then is the platform's). */
  @Get('stream')
  @Throttle({ limit: 5, ttl: 60_000, skipSuccessfulRequests: true, key: userOf })
  async stream(@Res() res: { raw?: NodeJS.WritableStream & { writeHead(s: number): void } }): Promise<void> {
    const raw = (res.raw ?? res) as NodeJS.WritableStream & { writeHead(s: number, h: object): void };
    raw.writeHead(200, { 'content-type': 'text/plain' });
    raw.write('part of the body');
    await sleep(20);
    throw new Error('failed while streaming');
  }

  @Get('plain')
  @Throttle({ limit: 5, ttl: 60_000, key: userOf })
  plain(): string {
    return 'ok';
  }

  @Get('nan')
  @Throttle({ limit: () => Number.NaN, ttl: 60_000, key: userOf })
  nan(): string {
    return 'ok';
  }

  @Get('fraction')
  @Throttle({ limit: 5, ttl: 60_000, cost: () => 0.5, key: userOf })
  fraction(): string {
    return 'ok';
  }

  @Get('multi')
  @Throttle(
    { name: 'wide', limit: 10, ttl: 60_000, key: userOf },
    { name: 'narrow', limit: 1, ttl: 60_000, key: userOf },
  )
  multi(): string {
    return 'ok';
  }
}

async function httpApp(platform: Platform, target: RedisTarget = 'single', blockCache = false) {
  const app = await createToolkitApp({
    platform,
    target,
    http: true,
    keyPrefix: prefix(),
    rateLimit: { blockCache, warnIntervalMs: 60_000 },
    controllers: [HostileController],
  });
  const { port } = (app.app.getHttpServer() as Server).address() as AddressInfo;
  const get = async (path: string, user: string, headers: Record<string, string> = {}) => {
    const res = await fetch(`http://127.0.0.1:${port}${path}`, { headers: { 'x-user-id': user, ...headers } });
    return { status: res.status, body: await res.text(), headers: res.headers };
  };
  return { app, port, get, rl: app.get(RateLimitService), client: app.get<Redis>(REDIS_CLIENT) };
}

// --- exactness under concurrency -------------------------------------------------------------------------------------

describe.each(['single', 'cluster'] as const)('exactness under concurrency on %s', (target) => {
  it.each(ALGORITHMS)(
    '%s: 1,000 concurrent consumes of one key, limit 100, from two instances: exactly 100',
    async (algorithm) => {
      const keyPrefix = prefix();
      // the second instance with the block cache: its local refusals must not change the count
      // (1,000 calls at once on a busy CI box can pass the default 1 s; a timed-out decision fails open: no fault here)
      const [a, b] = await Promise.all([
        service(target, keyPrefix, false, 10_000),
        service(target, keyPrefix, true, 10_000),
      ]);
      const key = `hot:${randomUUID()}`;
      const policy = exactPolicy(algorithm, 100);
      const results = await Promise.all(
        Array.from({ length: 1_000 }, (_, i) => (i % 2 === 0 ? a.rl : b.rl).consume(key, policy)),
      );
      expect(results.filter((r) => r.allowed)).toHaveLength(100);
      expect(results.filter((r) => r.degraded !== undefined)).toHaveLength(0);
      // the admitted saw every remaining count from 99 down to 0 exactly once
      const remaining = results.filter((r) => r.allowed).map((r) => r.remaining);
      expect(remaining.sort((x, y) => x - y)).toEqual(Array.from({ length: 100 }, (_, i) => i));
      expect((await a.rl.peek(key, policy)).remaining).toBe(0);
      expect(a.rl.stats().allowed + b.rl.stats().allowed).toBe(100);
      expect(a.rl.stats().denied + b.rl.stats().denied).toBe(900);
    },
  );

  it('a two-policy decision refused by one policy charges neither, in a tick shared with other keys', async () => {
    const { rl } = await service(target);
    const key = `multi:${randomUUID()}`;
    const wide: RateLimitPolicy = { limit: 10, ttl: 60_000, algorithm: 'fixed-window' };
    const narrow: RateLimitPolicy = { limit: 1, ttl: 60_000, algorithm: 'sliding-window' };
    const bucket: RateLimitPolicy = { limit: 5, ttl: 3_600_000, algorithm: 'token-bucket' };
    const checks = [
      { key, policy: wide, name: 'wide' },
      { key, policy: bucket, name: 'bucket' },
      { key, policy: narrow, name: 'narrow' },
    ];
    const noise = Array.from({ length: 40 }, (_, i) => `noise-${i}-${randomUUID()}`);
    const results = await Promise.all([
      ...Array.from({ length: 5 }, () => rl.consumeAll(checks)),
      ...noise.map((k, i) => rl.consume(k, exactPolicy(ALGORITHMS[i % 3], 3))),
    ]);
    const decisions = results.slice(0, 5) as Awaited<ReturnType<typeof rl.consumeAll>>[];
    expect(decisions.map((d) => d.allowed)).toEqual([true, false, false, false, false]);
    expect(decisions.slice(1).map((d) => d.results.map((r) => [r.name, r.allowed, r.remaining]))).toEqual(
      Array(4).fill([
        ['wide', true, 9],
        ['bucket', true, 4],
        ['narrow', false, 0],
      ]),
    );
    expect((await rl.peek(key, wide)).remaining).toBe(9);
    expect((await rl.peek(key, bucket)).remaining).toBe(4);
    expect((results.slice(5) as RateLimitResult[]).every((r) => r.allowed && r.remaining === 2)).toBe(true);
  });
});

// --- the block cache -------------------------------------------------------------------------------------------------

describe('the block cache on a private server', () => {
  const redis = usePrivateRedis();

  it('blockDuration: 0 Redis commands until the block key expires, then Redis decides', async () => {
    const target = { url: redis.server.url };
    const { rl, client } = await service(target, prefix(), true);
    const key = randomUUID();
    const policy: RateLimitPolicy = { limit: 1, ttl: 300, algorithm: 'fixed-window', blockDuration: 700 };
    expect((await rl.consume(key, policy)).allowed).toBe(true);
    const refused = await rl.consume(key, policy);
    const blockKey = `${rl.redisKey(key, '1/300', 'fixed-window')}:b`;
    const pttl = await client.pttl(blockKey);
    const refusedAt = performance.now();
    expect(refused).toMatchObject({ allowed: false, remaining: 0 });
    expect(refused.retryAfterMs).toBe(700);
    expect(pttl).toBeGreaterThan(600);
    // hammer until the block key is gone: every answer before then is local (no script call)
    const local: RateLimitResult[] = [];
    let firstConsulted: number | undefined;
    let admittedAt: number | undefined;
    while (admittedAt === undefined && performance.now() - refusedAt < 1_500) {
      const before = await scriptCalls(client);
      const r = await rl.consume(key, policy);
      const consulted = (await scriptCalls(client)) > before;
      if (!consulted) local.push(r);
      else firstConsulted ??= performance.now() - refusedAt;
      if (r.allowed) {
        admittedAt = performance.now() - refusedAt;
        // admitted only by Redis, once its block key has expired
        expect(consulted).toBe(true);
        expect(await client.exists(blockKey)).toBe(0);
      }
      await sleep(5);
    }
    expect(local.length).toBeGreaterThan(20);
    expect(local.every((r) => !r.allowed && r.retryAfterMs >= 1 && r.retryAfterMs <= 700)).toBe(true);
    // Redis was first asked again at the block's end (the cache's deadline is when the call was sent + 699 ms)
    expect(firstConsulted).toBeGreaterThanOrEqual(pttl - 30);
    expect(firstConsulted).toBeLessThan(pttl + 100);
    expect(admittedAt).toBeLessThan(pttl + 150);
    expect(rl.stats().deniedLocally).toBe(local.length);
  });

  it("another instance's reward/reset unseen until the cached refusal ends; its block is seen", async () => {
    const target = { url: redis.server.url };
    const keyPrefix = prefix();
    const [cached, other] = await Promise.all([service(target, keyPrefix, true), service(target, keyPrefix)]);
    const policy: RateLimitPolicy = { limit: 2, ttl: 600, algorithm: 'fixed-window' };
    // reward and reset by the other instance: Redis would admit, this process still refuses (docs: "not seen")
    for (const op of ['reward', 'reset'] as const) {
      const key = randomUUID();
      for (let i = 0; i < 2; i++) await cached.rl.consume(key, policy);
      expect((await cached.rl.consume(key, policy)).allowed).toBe(false);
      if (op === 'reward') expect(await other.rl.reward(key, 1, policy)).toBe(1);
      else expect(await other.rl.reset(key, policy)).toBe(1);
      expect((await other.rl.peek(key, policy)).allowed).toBe(true);
      expect((await cached.rl.consume(key, policy)).allowed).toBe(false);
      expect(cached.rl.stats().deniedLocally).toBeGreaterThan(0);
    }
    // a block by the other instance outlasting the cached refusal: once that ends this process asks Redis, refused
    const key = randomUUID();
    for (let i = 0; i < 2; i++) await cached.rl.consume(key, policy);
    const first = await cached.rl.consume(key, policy);
    expect(first.allowed).toBe(false);
    await other.rl.block(key, 5_000, policy);
    await sleep(first.retryAfterMs + 50);
    const before = await scriptCalls(cached.client);
    const after = await cached.rl.consume(key, policy);
    expect(await scriptCalls(cached.client)).toBeGreaterThan(before);
    expect(after.allowed).toBe(false);
    expect(after.retryAfterMs).toBeGreaterThan(4_000);
    expect(after.retryAfterMs).toBeLessThanOrEqual(5_000);
  });
});

// --- refunds ---------------------------------------------------------------------------------------------------------

/** A GET the client abandons after `abortAfterMs` (the socket destroyed). */
function abandonedGet(port: number, path: string, user: string, abortAfterMs: number): Promise<void> {
  return new Promise((resolve) => {
    const req = httpRequest({ host: '127.0.0.1', port, path, headers: { 'x-user-id': user } });
    req.on('error', () => resolve());
    req.end();
    setTimeout(() => {
      req.destroy();
      resolve();
    }, abortAfterMs);
  });
}

describe.each(PLATFORMS)('refunds over HTTP (%s)', (platform) => {
  it('a client abort is a failure: skipFailedRequests refunds it, skipSuccessfulRequests keeps it', async () => {
    const { port, rl } = await httpApp(platform);
    const user = randomUUID();
    const doneBefore = slowHandlersDone;
    await Promise.all([
      abandonedGet(port, '/h/slow-success', user, 50),
      abandonedGet(port, '/h/slow-failure', user, 50),
    ]);
    // the handlers finish (300 ms) after the abort: what they leave is read after both did, not after a fixed sleep
    expect(await waitFor(() => slowHandlersDone >= doneBefore + 2, 10_000)).toBe(true);
    const peekOf = async (handler: string) =>
      (
        await rl.peekAll([
          { key: user, policy: { limit: 5, ttl: 60_000 }, scope: `HostileController.${handler}:default` },
        ])
      ).results[0].remaining;
    // charged: an aborted request did not succeed; refunded at the close, not charged again when the handler ended
    const settled = async () => (await peekOf('slowSuccess')) === 4 && (await peekOf('slowFailure')) === 5;
    await waitFor(settled, 5_000);
    expect([await peekOf('slowSuccess'), await peekOf('slowFailure')]).toEqual([4, 5]);
  });

  it('a client gone before the charge was made (skipFailedRequests): refunded all the same', async () => {
    const { port, rl } = await httpApp(platform);
    const user = randomUUID();
    const doneBefore = goneFirstDone;
    await abandonedGet(port, '/h/gone-first', user, 50);
    expect(await waitFor(() => goneFirstDone > doneBefore, 10_000)).toBe(true);
    const remaining = async () =>
      (
        await rl.peekAll([
          { key: user, policy: { limit: 5, ttl: 60_000 }, scope: 'HostileController.goneFirst:default' },
        ])
      ).results[0].remaining;
    // charged after the 'close' it missed: without the refund, 4 for the whole minute
    await waitFor(async () => (await remaining()) === 5, 3_000);
    expect(await remaining()).toBe(5);
  });

  it('a handler throwing after streaming part of a 200 (skipSuccessfulRequests): the status decides', async () => {
    const { port, rl } = await httpApp(platform);
    const user = randomUUID();
    const status = await new Promise<number>((resolve) => {
      const req = httpRequest({ host: '127.0.0.1', port, path: '/h/stream', headers: { 'x-user-id': user } }, (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
        res.on('error', () => resolve(res.statusCode ?? 0));
        res.on('aborted', () => resolve(res.statusCode ?? 0));
      });
      req.on('error', () => resolve(-1));
      req.end();
    });
    expect(status).toBe(200); // the status line was already sent
    await sleep(100);
    const left = (
      await rl.peekAll([
        {
          key: user,
          policy: { limit: 5, ttl: 60_000 },
          scope: 'HostileController.stream:default',
        },
      ])
    ).results[0].remaining;
    // Observed on both platforms: Nest ends a response whose headers were sent (the client sees a complete 200 with a
    // truncated body), 'finish' fires with 200 and the charge is refunded as a success: a failure that comes after
    // the status line is not charged (the documented rule, `status < 400`; express-rate-limit's default too).
    expect(left).toBe(5);
  });

  // A skipSuccessfulRequests / skipFailedRequests refund sent after the window the request was charged in had passed
  // was taken from the next window's charges (reward.lua gives `points` back from whatever the counter holds now;
  // refundOnFinish, now in rate-limit.guard-charges.ts, sent it whenever the response finished; now only within the
  // charge's resetMs, and a fixed window's reward.lua leaves a later window as it is). Here the held request A is
  // charged in window 1 and answers (a success, refunded) after it; B and C fail in window 2 (charged, the limit of 2
  // reached); A's refund frees one of their units, and D is admitted: 3 charged requests admitted in one window of
  // limit 2. Fixed window (its count), sliding window (ZPOPMAX takes C's member), token bucket (the TAT moved back a
  // token's time).
  it.each(ALGORITHMS.map((a) => [a]))(
    '%s: a refund that arrives after the window rollover is not taken from the next window (limit 2 holds)',
    async (algorithm) => {
      const { get } = await httpApp(platform);
      const route = `/h/roll/${algorithm.split('-')[0] === 'token' ? 'bucket' : algorithm.split('-')[0]}`;
      const user = randomUUID();
      const gate = `${user}:a`;
      const a = get(route, user, { 'x-hold': gate, 'x-ok': '1' });
      expect(await waitFor(() => gates.has(gate), 2_000)).toBe(true); // A is charged and held
      await sleep(ROLLOVER_TTL + 150); // window 1 has passed (a bucket is full again)
      const b = await get(route, user);
      const c = await get(route, user);
      expect([b.status, c.status]).toEqual([401, 401]); // charged: window 2 is full
      gates.get(gate)?.();
      expect((await a).status).toBe(200);
      await sleep(50); // A's refund is sent when its response finishes
      const d = await get(route, user);
      expect(d.status).toBe(429);
    },
  );
});

describe('refunds never leave a negative count', () => {
  it.each(ALGORITHMS)(
    '%s: a reward of an expired counter writes nothing; consumes then count from the full limit',
    async (algorithm) => {
      const { rl, client } = await service('single');
      const key = randomUUID();
      const policy: RateLimitPolicy = { limit: 3, ttl: 200, algorithm };
      expect((await rl.consume(key, policy)).allowed).toBe(true);
      await sleep(450);
      expect(await rl.reward(key, 2, policy)).toBe(3);
      const counter = rl.redisKey(key, '3/200', algorithm);
      if (algorithm === 'fixed-window') expect(await client.get(counter)).toBeNull();
      const after = [];
      for (let i = 0; i < 4; i++) after.push(await rl.consume(key, policy));
      expect(after.map((r) => [r.allowed, r.remaining])).toEqual([
        [true, 2],
        [true, 1],
        [true, 0],
        [false, 0],
      ]);
    },
  );
});

// --- hostile keys and options ----------------------------------------------------------------------------------------

const HOSTILE_KEYS = [
  '{',
  '}',
  '{}',
  '{a}b',
  ':',
  '::b',
  'a\nb',
  '\r\n',
  '*',
  '?[a]',
  'x'.repeat(10_240),
  '\uD800',
  '\uDC00',
  '\uFFFD',
  '\uD800\uDC00',
  '__proto__',
  'constructor',
  'hasOwnProperty',
  ' ',
  '\0',
];

describe.each(['single', 'cluster'] as const)('hostile keys on %s', (target) => {
  it('each hostile key is its own counter, limited exactly, with and without the block cache', async () => {
    for (const blockCache of [false, true]) {
      const { rl } = await service(target, prefix(), blockCache);
      const policy: RateLimitPolicy = { limit: 2, ttl: 60_000, algorithm: 'fixed-window' };
      const results = await Promise.all(HOSTILE_KEYS.flatMap((k) => [0, 1, 2].map(() => rl.consume(k, policy))));
      for (let i = 0; i < HOSTILE_KEYS.length; i++) {
        expect([HOSTILE_KEYS[i].slice(0, 8), results.slice(i * 3, i * 3 + 3).map((r) => r.allowed)]).toEqual([
          HOSTILE_KEYS[i].slice(0, 8),
          [true, true, false],
        ]);
      }
      // a second round is refused everywhere (the lone surrogates and U+FFFD are distinct counters: each was fresh)
      const again = await Promise.all(HOSTILE_KEYS.map((k) => rl.consume(k, policy)));
      expect(again.every((r) => !r.allowed)).toBe(true);
      expect(await rl.reset('__proto__')).toBe(1);
      expect((await rl.consume('__proto__', policy)).allowed).toBe(true);
      expect(Object.prototype).not.toHaveProperty('allowed');
    }
  });
});

describe('hostile option values', () => {
  const redis = usePrivateRedis();

  const BAD_POLICIES: [string, Record<string, unknown>][] = [
    ['limit 0', { limit: 0, ttl: 1_000 }],
    ['limit -1', { limit: -1, ttl: 1_000 }],
    ['limit NaN', { limit: Number.NaN, ttl: 1_000 }],
    ['limit Infinity', { limit: Number.POSITIVE_INFINITY, ttl: 1_000 }],
    ['limit 1.5', { limit: 1.5, ttl: 1_000 }],
    ['limit 2^53', { limit: 2 ** 53, ttl: 1_000, algorithm: 'fixed-window' }],
    ['limit "5"', { limit: '5', ttl: 1_000 }],
    ['ttl 0', { limit: 1, ttl: 0 }],
    ['ttl NaN', { limit: 1, ttl: Number.NaN }],
    ['ttl Infinity', { limit: 1, ttl: Number.POSITIVE_INFINITY }],
    ['ttl past 100 years', { limit: 1, ttl: MAX_DURATION_MS + 1 }],
    ['ttl 1e300', { limit: 1, ttl: 1e300 }],
    ['ttl 1.5', { limit: 1, ttl: 1.5 }],
    ['cost 0.5', { limit: 5, ttl: 1_000, cost: 0.5 }],
    ['cost -1', { limit: 5, ttl: 1_000, cost: -1 }],
    ['cost NaN', { limit: 5, ttl: 1_000, cost: Number.NaN }],
    ['cost Infinity', { limit: 5, ttl: 1_000, cost: Number.POSITIVE_INFINITY }],
    ['cost over the limit', { limit: 5, ttl: 1_000, cost: 6, algorithm: 'fixed-window' }],
    ['burst 0', { limit: 5, ttl: 1_000, burst: 0, algorithm: 'token-bucket' }],
    ['burst NaN', { limit: 5, ttl: 1_000, burst: Number.NaN, algorithm: 'token-bucket' }],
    ['blockDuration -1', { limit: 5, ttl: 1_000, blockDuration: -1 }],
    ['blockDuration NaN', { limit: 5, ttl: 1_000, blockDuration: Number.NaN }],
    ['blockDuration Infinity', { limit: 5, ttl: 1_000, blockDuration: Number.POSITIVE_INFINITY }],
    ['algorithm leaky-bucket', { limit: 5, ttl: 1_000, algorithm: 'leaky-bucket' }],
    ['algorithm __proto__', { limit: 5, ttl: 1_000, algorithm: '__proto__' }],
    ['a __proto__ key', JSON.parse('{"limit":5,"ttl":1000,"__proto__":{"limit":0}}') as Record<string, unknown>],
  ];

  it('every call refuses them with InvalidOptionsError before any Redis command', async () => {
    const { rl, client } = await service({ url: redis.server.url });
    await rl.consume('warm', { limit: 1, ttl: 1_000 }); // the eviction check's INFO is sent once, at the first decision
    await sleep(50);
    const before = await allCalls(client);
    for (const [label, bad] of BAD_POLICIES) {
      const policy = bad as unknown as RateLimitPolicy;
      const calls: [string, () => Promise<unknown>][] = [
        ['consume', () => rl.consume('k', policy)],
        ['peek', () => rl.peek('k', policy)],
        [
          'consumeAll',
          () =>
            rl.consumeAll([
              { key: 'k', policy },
              { key: 'k', policy: { limit: 1, ttl: 1_000 }, name: 'b' },
            ]),
        ],
        ['reward', () => rl.reward('k', 1, policy)],
        ['penalty', () => rl.penalty('k', 1, policy)],
        ['block', () => rl.block('k', 1_000, policy)],
      ];
      for (const [what, call] of calls) {
        const err = await call().then(
          () => undefined,
          (e: unknown) => e,
        );
        expect([label, what, err instanceof InvalidOptionsError]).toEqual([label, what, true]);
      }
    }
    const good: RateLimitPolicy = { limit: 5, ttl: 1_000 };
    for (const points of [0, -1, 0.5, Number.NaN, Number.POSITIVE_INFINITY, 2 ** 53]) {
      await expect(rl.reward('k', points, good)).rejects.toBeInstanceOf(InvalidOptionsError);
      await expect(rl.penalty('k', points, good)).rejects.toBeInstanceOf(InvalidOptionsError);
    }
    for (const ms of [0, -1, 0.5, Number.NaN, Number.POSITIVE_INFINITY]) {
      await expect(rl.block('k', ms, good)).rejects.toBeInstanceOf(InvalidOptionsError);
    }
    for (const key of ['', undefined, null, 5, {}] as unknown as string[]) {
      await expect(rl.consume(key, good)).rejects.toThrow(/rate limit key/);
    }
    expect(await allCalls(client)).toBe(before);
    expect(rl.stats()).toMatchObject({ allowed: 1, denied: 0, failedOpen: 0, replyErrors: 0 });
  });

  it('@Throttle refuses them when it decorates', () => {
    for (const [label, bad] of BAD_POLICIES.filter(([l]) => !l.startsWith('a __proto__'))) {
      let err: unknown;
      try {
        Throttle(bad as never);
      } catch (e) {
        err = e;
      }
      expect([label, err instanceof InvalidOptionsError]).toEqual([label, true]);
    }
  });

  it.each(ALGORITHMS)('%s: a ttl of 100 years works (2 admitted, then refused for the window)', async (algorithm) => {
    const { rl } = await service({ url: redis.server.url });
    const key = randomUUID();
    const policy: RateLimitPolicy = { limit: 2, ttl: MAX_DURATION_MS, algorithm };
    const r = [await rl.consume(key, policy), await rl.consume(key, policy), await rl.consume(key, policy)];
    expect(r.map((x) => x.allowed)).toEqual([true, true, false]);
    const expected = algorithm === 'token-bucket' ? MAX_DURATION_MS / 2 : MAX_DURATION_MS;
    expect(r[2].retryAfterMs).toBeGreaterThan(expected - 60_000);
    expect(r[2].retryAfterMs).toBeLessThanOrEqual(expected);
  });

  it.each(PLATFORMS)(
    '%s: a @Throttle value resolved per request to NaN or 0.5: 500, nothing charged, never admitted',
    async (platform) => {
      const { get, client } = await httpApp(platform, { url: redis.server.url });
      const user = randomUUID();
      const before = await scriptCalls(client);
      for (const path of ['/h/nan', '/h/fraction']) {
        const res = await get(path, user);
        expect([path, res.status]).toEqual([path, 500]);
        expect(res.body).not.toBe('ok');
      }
      expect(await scriptCalls(client)).toBe(before);
    },
  );
});

// --- failures --------------------------------------------------------------------------------------------------------

describe('failures on a private server', () => {
  const redis = usePrivateRedis();

  it('Redis paused: every decision fails open within commandTimeout, counted, logged once', async () => {
    const { logger, warnings } = recordingLogger();
    const app = await createToolkitApp({
      target: { url: redis.server.url },
      keyPrefix: prefix(),
      commandTimeout: 300,
      maxReconnectDelay: 100,
      logger,
      rateLimit: { warnIntervalMs: 60_000 },
    });
    const rl = app.get(RateLimitService);
    const policy: RateLimitPolicy = { limit: 1, ttl: 60_000, algorithm: 'fixed-window' };
    expect((await rl.consume('p', policy)).allowed).toBe(true);
    expect((await rl.consume('p', policy)).allowed).toBe(false);
    redis.server.pause();
    try {
      const started = Date.now();
      const results = await Promise.all(Array.from({ length: 20 }, (_, i) => rl.consume(`p${i % 2 ? '' : i}`, policy)));
      expect(Date.now() - started).toBeLessThan(within(300));
      expect(results.every((r) => r.allowed && r.degraded === 'fail-open')).toBe(true);
      await expect(rl.consume('p', policy, { failOpen: false })).rejects.toBeInstanceOf(RedisUnavailableError);
    } finally {
      redis.server.resume();
    }
    expect(rl.stats()).toMatchObject({ allowed: 1, denied: 1, failedOpen: 20, failedClosed: 1, replyErrors: 0 });
    expect(warnings.filter((w) => w.includes('rate limiting'))).toHaveLength(1);
    // after the pause the count is Redis's again: the key stays refused
    expect(await waitFor(async () => (await rl.consume('p', policy)).degraded === undefined, 3_000)).toBe(true);
    expect((await rl.consume('p', policy)).allowed).toBe(false);
  });

  it.each(PLATFORMS)(
    '%s: a key of another type at the counter: 500, never 200, counted as a reply error',
    async (platform) => {
      const { get, rl, client } = await httpApp(platform, { url: redis.server.url });
      const user = randomUUID();
      const counter = rl.redisKey(user, 'HostileController.plain:default', 'sliding-window');
      await client.hset(counter, 'x', '1');
      const statuses = [];
      for (let i = 0; i < 3; i++) statuses.push((await get('/h/plain', user)).status);
      expect(statuses).toEqual([500, 500, 500]);
      expect(rl.stats()).toMatchObject({ allowed: 0, failedOpen: 0, replyErrors: 3 });
      expect(await client.type(counter)).toBe('hash');
      // a two-policy route over a foreign counter: the other policy is not charged
      const wide = rl.redisKey(user, 'HostileController.multi:wide', 'sliding-window');
      await client.set(rl.redisKey(user, 'HostileController.multi:narrow', 'sliding-window'), 'text');
      expect((await get('/h/multi', user)).status).toBe(500);
      expect(await client.exists(wide)).toBe(0);
    },
  );

  it('OOM under noeviction: fixed window and bucket consumes that write fail; every refusal answers', async () => {
    const { rl } = await service({ url: redis.server.url });
    const full = randomUUID();
    for (const algorithm of ALGORITHMS) expect((await rl.consume(full, exactPolicy(algorithm, 1))).allowed).toBe(true);
    await underOom(redis.server.port, async () => {
      const outcomes: unknown[] = [];
      for (const algorithm of ['fixed-window', 'token-bucket'] as const) {
        const fresh = randomUUID();
        for (let i = 0; i < 2; i++) {
          outcomes.push(
            await rl.consume(fresh, exactPolicy(algorithm, 5)).then(
              (r) => [algorithm, r.allowed, r.degraded ?? null],
              (e: unknown) => [algorithm, e instanceof RedisReplyError, /\bOOM\b/.test(String((e as Error).message))],
            ),
          );
        }
      }
      expect(outcomes).toEqual([
        ['fixed-window', true, true],
        ['fixed-window', true, true],
        ['token-bucket', true, true],
        ['token-bucket', true, true],
      ]);
      for (const algorithm of ALGORITHMS) {
        const refused = await rl.consume(full, exactPolicy(algorithm, 1));
        expect([algorithm, refused.allowed, refused.degraded ?? null]).toEqual([algorithm, false, null]);
      }
      expect(rl.stats()).toMatchObject({ allowed: 3, denied: 3, failedOpen: 0, replyErrors: 4 });
    });
  });

  // docs/rate-limit.md (Guarantees) said an OOM reply fails the call with RedisReplyError, with no exception: the
  // sliding window's consume is admitted and written under OOM. consume-sliding-window.lua's first write is
  // ZREMRANGEBYSCORE (not a deny-oom command), after which Redis lets a script run deny-oom writes (ZADD) past
  // maxmemory; kept on purpose (consume.lua's comment, test/conformance/failure.conformance.spec.ts): the log stays
  // exact. The docs now say so; this pins the behaviour they describe.
  it('OOM under noeviction: a sliding-window consume is still decided and stored, exactly', async () => {
    const { rl } = await service({ url: redis.server.url });
    await underOom(redis.server.port, async () => {
      const key = randomUUID();
      const answers = [];
      for (let i = 0; i < 6; i++) answers.push(await rl.consume(key, exactPolicy('sliding-window', 5)));
      expect(answers.map((a) => [a.allowed, a.remaining])).toEqual([
        [true, 4],
        [true, 3],
        [true, 2],
        [true, 1],
        [true, 0],
        [false, 0],
      ]);
    });
  });

  it('an evicting Redis (allkeys-random): warned at the first decision; an evicted counter starts over', async () => {
    const { logger, warnings } = recordingLogger();
    const admin = trackForCleanup(new Redis(redis.server.port, '127.0.0.1'));
    await admin.flushall();
    await admin.config('SET', 'maxmemory-policy', 'allkeys-random');
    const used = Number(/used_memory:(\d+)/.exec(await admin.info('memory'))?.[1]);
    await admin.config('SET', 'maxmemory', String(used + 2 * 1024 * 1024));
    try {
      const app = await createToolkitApp({ target: { url: redis.server.url }, keyPrefix: prefix(), logger });
      const rl = app.get(RateLimitService);
      const key = randomUUID();
      const policy: RateLimitPolicy = { limit: 2, ttl: 60_000, algorithm: 'fixed-window' };
      expect((await rl.consume(key, policy)).allowed).toBe(true);
      expect((await rl.consume(key, policy)).allowed).toBe(true);
      expect((await rl.consume(key, policy)).allowed).toBe(false);
      expect(await waitFor(() => warnings.some((w) => /evict/i.test(w)), 2_000)).toBe(true);
      const counter = rl.redisKey(key, '2/60000', 'fixed-window');
      const filler = 'y'.repeat(64 * 1024);
      let n = 0;
      while ((await admin.exists(counter)) === 1 && n < 2_000) await admin.set(`fill:${n++}`, filler);
      expect(await admin.exists(counter)).toBe(0);
      // evicted mid-window: the limit counts again from zero, with no error anywhere (the warning said so)
      const again = await rl.consume(key, policy);
      expect([again.allowed, again.remaining, again.degraded]).toEqual([true, 1, undefined]);
      expect(rl.stats()).toMatchObject({ failedOpen: 0, replyErrors: 0 });
    } finally {
      await admin.config('SET', 'maxmemory', '0');
      await admin.config('SET', 'maxmemory-policy', 'noeviction');
      await admin.flushall();
    }
  });

  it.each(ALGORITHMS)(
    '%s: SCRIPT FLUSH between ticks: 300 concurrent consumes of limit 50 admit exactly 50',
    async (algorithm) => {
      // 300 calls at once on a busy CI box can pass the default 1 s (a decision that times out fails open)
      const { rl, client } = await service({ url: redis.server.url }, prefix(), false, 10_000);
      const key = randomUUID();
      const policy = exactPolicy(algorithm, 50);
      expect((await rl.consume(randomUUID(), policy)).allowed).toBe(true); // the script is loaded
      await client.script('FLUSH');
      const results = await Promise.all(Array.from({ length: 300 }, () => rl.consume(key, policy)));
      expect(results.filter((r) => r.allowed)).toHaveLength(50);
      expect(results.every((r) => r.degraded === undefined)).toBe(true);
      await client.script('FLUSH');
      const d = await rl.consumeAll([
        { key, policy, name: 'a' },
        { key, policy: { ...policy, limit: 60 }, name: 'b' },
      ]);
      expect([d.allowed, d.results.map((r) => r.allowed)]).toEqual([false, [false, true]]);
    },
  );
});

describe('ACL: EVALSHA and EVAL revoked at run time', () => {
  const redis = usePrivateRedis({ aclUser: { name: 'app', password: 'app-secret-pw' } });

  it('each algorithm: a RedisPermissionError, never a fail-open, also with failOpen: true', async () => {
    const { rl } = await service({ url: redis.server.url });
    const admin = trackForCleanup(new Redis(redis.server.port, '127.0.0.1', { username: 'default' }));
    for (const algorithm of ALGORITHMS) expect((await rl.consume('k', exactPolicy(algorithm, 5))).allowed).toBe(true);
    await admin.call('acl', 'setuser', 'app', '-evalsha', '-eval');
    try {
      for (const algorithm of ALGORITHMS) {
        const p = exactPolicy(algorithm, 5);
        await expect(rl.consume('k', p)).rejects.toBeInstanceOf(RedisPermissionError);
        await expect(rl.consume('k', p, { failOpen: true })).rejects.toBeInstanceOf(RedisPermissionError);
        await expect(rl.reward('k', 1, p)).rejects.toBeInstanceOf(RedisPermissionError);
      }
      const both = rl.consumeAll([
        { key: 'k', policy: exactPolicy('fixed-window', 5), name: 'a' },
        { key: 'k', policy: exactPolicy('token-bucket', 5), name: 'b' },
      ]);
      await expect(both).rejects.toBeInstanceOf(RedisPermissionError);
      expect(rl.stats()).toMatchObject({ allowed: 3, failedOpen: 0, failedClosed: 0, replyErrors: 10 });
    } finally {
      await admin.call('acl', 'setuser', 'app', '+evalsha', '+eval');
    }
    expect((await rl.consume('k', exactPolicy('fixed-window', 5))).remaining).toBe(3);
  });
});

// --- a cluster: a tick over several masters --------------------------------------------------------------------------

describe('a tick of decisions over every master of a private cluster', () => {
  const cluster = useDisposableCluster();

  it('a paused master: only its keys fail open (counted); the others are decided exactly', async () => {
    const { rl } = await service({ cluster: cluster().startupNodes }, prefix(), false, 300);
    const policy: RateLimitPolicy = { limit: 2, ttl: 60_000, algorithm: 'fixed-window' };
    const victim = cluster().masters[1];
    const keys = Array.from({ length: 30 }, (_, i) => `m-${i}`);
    const onVictim = await ownedBy(
      victim,
      keys.map((k) => rl.redisKey(k, '2/60000', 'fixed-window')),
    );
    const victims = onVictim.filter(Boolean).length;
    expect(victims).toBeGreaterThan(0);
    expect(victims).toBeLessThan(keys.length);
    await Promise.all(keys.map((k) => rl.consume(k, policy)));
    victim.pause();
    let second: RateLimitResult[];
    try {
      const started = Date.now();
      second = await Promise.all(keys.map((k) => rl.consume(k, policy)));
      expect(Date.now() - started).toBeLessThan(within(300));
    } finally {
      victim.resume();
    }
    for (const [i, r] of second.entries()) {
      if (onVictim[i]) expect(r).toMatchObject({ allowed: true, degraded: 'fail-open' });
      else expect([r.allowed, r.remaining, r.degraded]).toEqual([true, 0, undefined]);
    }
    expect(rl.stats()).toMatchObject({ allowed: 30 + 30 - victims, failedOpen: victims, replyErrors: 0 });
    const others = await Promise.all(keys.filter((_, i) => !onVictim[i]).map((k) => rl.consume(k, policy)));
    expect(others.every((r) => !r.allowed && r.degraded === undefined)).toBe(true);
  });

  it('SCRIPT FLUSH on every master between ticks: exact counts and all-or-nothing decisions', async () => {
    const { rl } = await service({ cluster: cluster().startupNodes });
    const policy = exactPolicy('sliding-window', 3);
    await rl.consume('warm', policy);
    for (const m of cluster().masters) {
      const c = trackForCleanup(new Redis(m.port, '127.0.0.1'));
      await c.script('FLUSH');
    }
    const keys = Array.from({ length: 12 }, (_, i) => `f-${i}`);
    const results = await Promise.all(keys.flatMap((k) => Array.from({ length: 5 }, () => rl.consume(k, policy))));
    for (let i = 0; i < keys.length; i++) {
      expect(results.slice(i * 5, i * 5 + 5).map((r) => r.allowed)).toEqual([true, true, true, false, false]);
    }
    const d = await Promise.all(
      keys.map((k) =>
        rl.consumeAll([
          { key: k, policy: exactPolicy('fixed-window', 10), name: 'wide' },
          { key: k, policy, name: 'narrow' },
        ]),
      ),
    );
    expect(d.every((x) => !x.allowed && x.results[0].remaining === 10)).toBe(true);
  });
});

// --- GraphQL: one request, several executions of a limited resolver --------------------------------------------------

let expensiveRuns = 0;

@Resolver()
class ExpensiveResolver {
  @Query(() => String)
  @Throttle({ limit: 2, ttl: 60_000 })
  expensive(): string {
    expensiveRuns++;
    return 'done';
  }
}

describe.each([
  ['express', 'Apollo'],
  ['fastify', 'Mercurius'],
] as const)('GraphQL aliases of a limited resolver (%s, %s)', (platform, _driver) => {
  // The guard's unchargedChecks (chargedCounters, now in rate-limit.guard-charges.ts) marked a counter charged per
  // request object before the decision and skipped it for every later guard run with the same request. In GraphQL every
  // field of a query is its own guard run on the same `req`, so an aliased query ran a resolver limited to 2 per minute
  // as often as it named it, for one charge; and once the counter was exhausted, the first alias was refused but every
  // other alias still ran (`{ a: expensive b: expensive }` after 2 queries: a refused, b 'done'). A charge now covers
  // one resolution (its `info`).
  /** An app with ExpensiveResolver under a global RateLimitGuard; its `ask(query)` posts one GraphQL query. */
  const graphqlApp = async () => {
    const app = await createToolkitApp({
      platform,
      http: true,
      keyPrefix: prefix(),
      imports: [
        platform === 'express'
          ? GraphQLModule.forRoot<ApolloDriverConfig>({ driver: ApolloDriver, autoSchemaFile: true })
          : GraphQLModule.forRoot<MercuriusDriverConfig>({ driver: MercuriusDriver, autoSchemaFile: true }),
      ],
      providers: [ExpensiveResolver, { provide: APP_GUARD, useClass: RateLimitGuard }],
    });
    const { port } = (app.app.getHttpServer() as Server).address() as AddressInfo;
    return async (query: string): Promise<GraphqlReply> => {
      const res = await fetch(`http://127.0.0.1:${port}/graphql`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ query }),
      });
      return (await res.json()) as GraphqlReply;
    };
  };

  it('after the limit is used up, no alias of the resolver runs', async () => {
    const ask = await graphqlApp();
    for (let i = 0; i < 2; i++) expect((await ask('{ expensive }')).data?.expensive).toBe('done');
    expensiveRuns = 0;
    const reply = await ask('{ a: expensive b: expensive c: expensive }');
    expect(reply.data ?? null).toBeNull();
    expect(reply.errors?.map((e) => e.message)).toContain('Too Many Requests');
    expect(expensiveRuns).toBe(0);
  });

  it('one query with 5 aliases runs the resolver at most its limit (2) times', async () => {
    const ask = await graphqlApp();
    expensiveRuns = 0;
    await ask('{ a: expensive b: expensive c: expensive d: expensive e: expensive }');
    expect(expensiveRuns).toBeLessThanOrEqual(2);
  });
});
