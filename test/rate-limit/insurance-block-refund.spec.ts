import 'reflect-metadata';
import {
  Controller,
  type ExecutionContext,
  Headers,
  HttpCode,
  Post,
  UnauthorizedException,
  UseGuards,
} from '@nestjs/common';
import { randomUUID } from 'node:crypto';
import type { Server } from 'node:http';
import request, { type Response } from 'supertest';
import {
  InvalidOptionsError,
  RateLimitGuard,
  RateLimitService,
  RedisUnavailableError,
  Throttle,
  type RateLimitPolicy,
  type RateLimitResult,
} from '../../lib/index.js';
import type { RewardOptions } from '../../lib/advanced.js';
import { masterPortOf } from '../support/cluster-outage.js';
import { trackForCleanup } from '../support/private-servers.js';
import { userFromHeader } from '../support/rate-limit-http.js';
import { startRedisCluster, type RedisClusterHandle } from '../support/redis-cluster.js';
import { startRedisServer } from '../support/redis-server.js';
import { rawCommand } from '../support/resp.js';
import {
  closeToolkitApps,
  createToolkitApp,
  PLATFORMS,
  PLATFORMS_AND_TARGETS,
  type ToolkitAppOptions,
} from '../support/toolkit-app.js';
import { bootToolkitApp } from '../support/toolkit-boot.js';
import { sleep, waitFor } from '../support/wait.js';
import { bootInsured, insured, privateRedis, type PrivateRedis } from './insurance-harness.js';

// The insurance limiter (Redis unreachable) and the login brute-force setup (docs/rate-limit.md, Failure policy,
// "Insurance around an outage"; blockDuration; skipSuccessfulRequests / skipFailedRequests, reward):
// - a policy's blockDuration is applied to insurance's window as Redis applies it: a consume the counter refuses by its
//   own count blocks it in this process for blockDuration from that refusal; consumes and peeks are refused until then
//   (retryAfterMs and the headers say the block's time left, remaining 0), the block outlives the window, a peek or a
//   refusal during the block sets none, in a decision only the policy that refused is blocked; reset lifts it;
//   block(key, ms) needs Redis (RedisUnavailableError in the outage, as before). Until 2026-12-06 insurance applied no
//   blockDuration: a login policy of 1 per 60 s blocked for 300 s admitted 1 per 60 s per process.
// - a charge insurance made is given back to insurance's window (reward's `degraded: 'insurance'`, which the guard's
//   refunds pass), never to Redis, which never saw it (also once Redis is back); on a cluster each counter of a
//   decision is given back where it was charged. Until 2026-12-06 the guard gave back no charge of a degraded decision
//   (a successful login admitted by insurance stayed charged: fewer attempts for honest users), and reward() in an
//   outage failed.

afterAll(closeToolkitApps);

const LOGIN: RateLimitPolicy = { limit: 1, ttl: 60_000, algorithm: 'fixed-window', blockDuration: 300_000 };
const ALGORITHMS = ['fixed-window', 'sliding-window', 'token-bucket'] as const;
const INSURED: RewardOptions = { degraded: 'insurance' };

/** What to wait for, by retryAfterMs: the 300 s block of LOGIN, a 60 s window, or nothing. */
const wait = (ms: number): string => {
  if (ms === 0) return 'no wait';
  if (ms > 290_000 && ms <= 300_000) return 'the block';
  if (ms <= 60_000) return 'the window';
  return `${ms} ms`;
};
/** A result, one line: admitted or refused, units left of its limit, who decided, what to wait for. */
const say = (r: Pick<RateLimitResult, 'allowed' | 'remaining' | 'limit' | 'retryAfterMs' | 'degraded'>): string =>
  `${r.allowed ? 'admitted' : 'refused'} ${r.remaining}/${r.limit} ${r.degraded ?? 'redis'}, ${wait(r.retryAfterMs)}`;
/** A reward's answer, or the name of its error. */
const settled = (p: Promise<number>): Promise<number | string> => p.catch((err: Error) => err.name);

describe.each(['single', 'cluster'] as const)('insurance during an outage, RateLimitService (%s)', (target) => {
  let redis: PrivateRedis;
  let rl: RateLimitService;
  beforeAll(async () => {
    redis = await privateRedis(target);
    const app = await bootInsured(redis, { insurance: true });
    rl = app.get(RateLimitService);
    await redis.cut();
    await insured(app);
  }, 120_000);
  afterAll(() => redis?.stop());

  it('blockDuration: a consume refused by the count blocks the counter for blockDuration; peeks and consumes wait', async () => {
    const key = randomUUID();
    const answers = [
      await rl.consume(key, LOGIN),
      await rl.consume(key, LOGIN),
      await rl.peek(key, LOGIN),
      await rl.consume(key, LOGIN),
    ];
    expect(answers.map(say)).toEqual([
      'admitted 0/1 insurance, no wait',
      'refused 0/1 insurance, the block',
      'refused 0/1 insurance, the block',
      'refused 0/1 insurance, the block',
    ]);
    // the reset is not before the block's end; a refusal during the block does not extend it
    for (const r of answers.slice(1)) expect(r.resetMs).toBeGreaterThanOrEqual(r.retryAfterMs);
    expect(answers[3].retryAfterMs).toBeLessThanOrEqual(answers[1].retryAfterMs);
  });

  it('blockDuration, each algorithm: the block outlives the window; once it ends a fresh window admits', async () => {
    const policies = ALGORITHMS.map((algorithm) => ({ limit: 1, ttl: 1_000, algorithm, blockDuration: 2_500 }));
    const keys = policies.map(() => randomUUID());
    const round = async () => Promise.all(policies.map((p, i) => rl.consume(keys[i], p)));
    const shown = (rs: RateLimitResult[], label: string) =>
      rs.map((r, i) => `${label} ${policies[i].algorithm}: ${r.allowed ? 'admitted' : 'refused'} ${r.remaining}`);
    expect((await round()).every((r) => r.allowed)).toBe(true);
    const refused = await round();
    await sleep(1_300); // every window has ended (a bucket's: its span, 1 s), the block has not
    const blocked = await round();
    await sleep(1_500); // 2.8 s after the refusal: the block has ended
    const after = await round();
    expect([...shown(refused, 'refused'), ...shown(blocked, 'window over'), ...shown(after, 'block over')]).toEqual([
      'refused fixed-window: refused 0',
      'refused sliding-window: refused 0',
      'refused token-bucket: refused 0',
      'window over fixed-window: refused 0',
      'window over sliding-window: refused 0',
      'window over token-bucket: refused 0',
      'block over fixed-window: admitted 0',
      'block over sliding-window: admitted 0',
      'block over token-bucket: admitted 0',
    ]);
    for (const r of refused) expect(r.retryAfterMs).toBeGreaterThan(2_000);
    for (const r of blocked) {
      expect(r.retryAfterMs).toBeGreaterThan(0);
      expect(r.retryAfterMs).toBeLessThanOrEqual(1_250); // the block's time left, not a fresh ttl
      expect(r.resetMs).toBeGreaterThanOrEqual(r.retryAfterMs);
    }
  });

  it('blockDuration in a decision of two: only the policy that refused is blocked; a peek of a full counter blocks none', async () => {
    const key = randomUUID();
    const tight: RateLimitPolicy = { limit: 1, ttl: 60_000, algorithm: 'fixed-window', blockDuration: 300_000 };
    const wide: RateLimitPolicy = { limit: 5, ttl: 60_000, algorithm: 'fixed-window', blockDuration: 300_000 };
    const checks = [
      { key, policy: tight, name: 'tight' },
      { key, policy: wide, name: 'wide' },
    ];
    expect((await rl.consumeAll(checks)).allowed).toBe(true);
    const peeked = await rl.peekAll(checks);
    const refused = await rl.consumeAll(checks);
    const wideAlone = await rl.consume(key, wide);
    const tightAlone = await rl.peek(key, tight);
    const line = (d: { allowed: boolean; results: RateLimitResult[] }, label: string) =>
      `${label}: ${d.allowed}; ${d.results.map((r) => say({ ...r, degraded: 'insurance' })).join('; ')}`;
    expect([
      line(peeked, 'peekAll'),
      line(refused, 'consumeAll'),
      `wide alone: ${say(wideAlone)}`,
      `tight alone: ${say(tightAlone)}`,
    ]).toEqual([
      'peekAll: false; refused 0/1 insurance, the window; admitted 4/5 insurance, no wait',
      'consumeAll: false; refused 0/1 insurance, the block; admitted 4/5 insurance, no wait',
      'wide alone: admitted 3/5 insurance, no wait',
      'tight alone: refused 0/1 insurance, the block',
    ]);
  });

  it('reset(key, policy) lifts the block (the reset itself throws RedisUnavailableError); block() needs Redis', async () => {
    const key = randomUUID();
    await rl.consume(key, LOGIN);
    expect(say(await rl.consume(key, LOGIN))).toBe('refused 0/1 insurance, the block');
    await expect(rl.reset(key, LOGIN)).rejects.toBeInstanceOf(RedisUnavailableError);
    expect(say(await rl.consume(key, LOGIN))).toBe('admitted 0/1 insurance, no wait');
    // block(key, ms) is a Redis write: in the outage it fails, typed, and insurance does not block the counter
    const other = randomUUID();
    const blocking = rl.block(other, 300_000, LOGIN);
    await expect(blocking).rejects.toBeInstanceOf(RedisUnavailableError);
    await expect(blocking).rejects.toMatchObject({ code: 'E_REDIS_UNAVAILABLE' });
    expect(say(await rl.consume(other, LOGIN))).toBe('admitted 0/1 insurance, no wait');
  });

  it("reward({ degraded: 'insurance' }) gives a charge insurance made back to its window, each algorithm", async () => {
    const seen: string[] = [];
    for (const algorithm of ALGORITHMS) {
      const policy: RateLimitPolicy = { limit: 2, ttl: 60_000, algorithm };
      const key = randomUUID();
      const spent = [await rl.consume(key, policy), await rl.consume(key, policy), await rl.consume(key, policy)];
      const left = await settled(rl.reward(key, 1, policy, undefined, INSURED));
      const after = [await rl.consume(key, policy), await rl.consume(key, policy)];
      seen.push(`${algorithm}: ${spent.map((r) => r.allowed)} | reward: ${left} | ${after.map((r) => r.allowed)}`);
    }
    expect(seen).toEqual([
      'fixed-window: true,true,false | reward: 1 | true,false',
      'sliding-window: true,true,false | reward: 1 | true,false',
      'token-bucket: true,true,false | reward: 1 | true,false',
    ]);
  });

  it("reward({ degraded: 'insurance', windowEndsAt }) gives nothing back once a later window has opened", async () => {
    const policy: RateLimitPolicy = { limit: 1, ttl: 1_000, algorithm: 'fixed-window' };
    const [key, other] = [randomUUID(), randomUUID()];
    const before = performance.now();
    const charged = await rl.consume(key, policy);
    await rl.consume(other, policy);
    const windowEndsAt = before + charged.resetMs;
    // within the charge's window: given back
    const within = await settled(rl.reward(other, 1, policy, undefined, { ...INSURED, windowEndsAt }));
    await sleep(1_100);
    const later = await rl.consume(key, policy); // a later window, charged
    const gone = await settled(rl.reward(key, 1, policy, undefined, { ...INSURED, windowEndsAt }));
    const next = await rl.consume(key, policy);
    expect([charged.allowed, within, later.allowed, gone, next.allowed]).toEqual([true, 1, true, 0, false]);
  });

  it("reward({ degraded: 'fail-open' }): nothing was charged, nothing given back (the capacity); none sent to Redis", async () => {
    const policy: RateLimitPolicy = { limit: 3, ttl: 60_000 };
    const key = randomUUID();
    await rl.consume(key, policy);
    const answer = await settled(rl.reward(key, 1, policy, undefined, { degraded: 'fail-open' }));
    expect([answer, (await rl.peek(key, policy)).remaining]).toEqual([3, 2]);
  });

  it('a reward without degraded is a refund of a Redis charge: in the outage it fails, RedisUnavailableError', async () => {
    const key = randomUUID();
    const policy: RateLimitPolicy = { limit: 2, ttl: 60_000 };
    await rl.consume(key, policy);
    await expect(rl.reward(key, 1, policy)).rejects.toBeInstanceOf(RedisUnavailableError);
    expect((await rl.peek(key, policy)).remaining).toBe(1); // insurance's charge stays
  });
});

describe('reward options checked', () => {
  it("degraded: 'insurance' with insurance off, or a value not a degraded: InvalidOptionsError before any Redis call", async () => {
    const rl = (await createToolkitApp({ keyPrefix: `rtk-${randomUUID().slice(0, 8)}:` })).get(RateLimitService);
    const policy: RateLimitPolicy = { limit: 2, ttl: 60_000 };
    const off = rl.reward(randomUUID(), 1, policy, undefined, INSURED);
    await expect(off).rejects.toBeInstanceOf(InvalidOptionsError);
    await expect(off).rejects.toThrow(/rateLimit\.insurance is off/);
    const wrong = rl.reward(randomUUID(), 1, policy, undefined, { degraded: 'redis' } as unknown as RewardOptions);
    await expect(wrong).rejects.toThrow("rate limit reward options: degraded must be 'fail-open' or 'insurance'");
  });
});

describe('a charge insurance made, Redis back (single server)', () => {
  it('is given back to insurance, never to Redis: the charge Redis made since stays', async () => {
    const server = trackForCleanup(await startRedisServer());
    const app = await bootToolkitApp({
      target: { url: server.url },
      commandTimeout: 300,
      maxReconnectDelay: 100,
      keyPrefix: `rtk-${randomUUID().slice(0, 8)}:`,
      rateLimit: { warnIntervalMs: 60_000, insurance: true },
    });
    const rl = app.get(RateLimitService);
    const policy: RateLimitPolicy = { limit: 2, ttl: 60_000, algorithm: 'fixed-window' };
    const key = randomUUID();
    const decider = async () => (await rl.peek(randomUUID(), policy)).degraded ?? 'redis';
    await server.kill();
    expect(await waitFor(async () => (await decider()) === 'insurance', 15_000)).toBe(true);
    const before = performance.now();
    const insuredCharge = await rl.consume(key, policy);
    await server.restart();
    expect(await waitFor(async () => (await decider()) === 'redis', 15_000)).toBe(true);
    const redisCharge = await rl.consume(key, policy);
    const windowEndsAt = before + insuredCharge.resetMs;
    const left = await settled(rl.reward(key, 1, policy, undefined, { ...INSURED, windowEndsAt }));
    const redisView = await rl.peek(key, policy);
    expect([say(insuredCharge), say(redisCharge), left, say(redisView)]).toEqual([
      'admitted 1/2 insurance, no wait',
      'admitted 1/2 redis, no wait',
      2, // insurance's share, its one charge given back
      'admitted 1/2 redis, no wait', // Redis's charge kept
    ]);
    await server.stop();
  });
});

/** A key from a request header. */
const header = (name: string) => (ctx: ExecutionContext) =>
  String(ctx.switchToHttp().getRequest<{ headers: Record<string, string> }>().headers[name]);

@Controller('ibr')
@UseGuards(RateLimitGuard)
class LoginController {
  /** The login brute-force setup: 2 failed attempts a minute per user, then 5 minutes blocked. */
  @Post('login')
  @HttpCode(200)
  @Throttle({
    name: 'login',
    limit: 2,
    ttl: 60_000,
    algorithm: 'fixed-window',
    blockDuration: 300_000,
    skipSuccessfulRequests: true,
    key: userFromHeader,
  })
  login(@Headers('x-password') password?: string): string {
    if (password !== 'right') throw new UnauthorizedException();
    return 'ok';
  }

  @Post('upload')
  @HttpCode(200)
  @Throttle({ name: 'upload', limit: 2, ttl: 60_000, skipFailedRequests: true, key: userFromHeader })
  upload(@Headers('x-fail') fail?: string): string {
    if (fail) throw new UnauthorizedException();
    return 'ok';
  }

  /** One counter per user and one per `X-Ip`, both refunded on success. */
  @Post('pair-login')
  @HttpCode(200)
  @Throttle(
    { name: 'user', limit: 2, ttl: 60_000, skipSuccessfulRequests: true, key: userFromHeader },
    { name: 'ip', limit: 2, ttl: 60_000, skipSuccessfulRequests: true, key: header('x-ip') },
  )
  pairLogin(): string {
    return 'ok';
  }
}

/** A response's status and rate-limit headers, one line. */
function seen(res: Response): string {
  const names = ['retry-after', 'x-ratelimit-limit', 'x-ratelimit-remaining', 'x-ratelimit-reset', 'ratelimit'];
  const h = res.headers as Record<string, string | undefined>;
  return [res.status, ...names.filter((n) => h[n] !== undefined).map((n) => `${n}: ${h[n]}`)].join(' | ');
}

describe.each(PLATFORMS_AND_TARGETS)('insurance over HTTP on %s, %s: blockDuration and refunds', (platform, target) => {
  let redis: PrivateRedis;
  let http: Server;
  beforeAll(async () => {
    redis = await privateRedis(target);
    const app = await bootInsured(
      redis,
      { insurance: true, headers: 'both' },
      { platform, controllers: [LoginController] },
    );
    http = app.app.getHttpServer() as Server;
    await redis.cut();
    await insured(app);
  }, 120_000);
  afterAll(() => redis?.stop());

  const post = async (path: string, headers: Record<string, string>) => {
    const req = request(http).post(`/ibr/${path}`);
    for (const [name, value] of Object.entries(headers)) req.set(name, value);
    const res = await req;
    await sleep(50); // a refund is given when the response finishes
    return res;
  };

  it('skipSuccessfulRequests: successful logins insurance admitted are refunded to its window', async () => {
    const user = randomUUID();
    const statuses: number[] = [];
    for (let i = 0; i < 5; i++)
      statuses.push((await post('login', { 'X-User-Id': user, 'X-Password': 'right' })).status);
    expect(statuses).toEqual([200, 200, 200, 200, 200]);
  });

  it('failed logins are charged, then the user is blocked for blockDuration: Retry-After and the headers say 300 s', async () => {
    const user = randomUUID();
    const attempt = (password: string) => post('login', { 'X-User-Id': user, 'X-Password': password });
    const lines = [seen(await attempt('right')), seen(await attempt('wrong')), seen(await attempt('wrong'))];
    lines.push(seen(await attempt('wrong')), seen(await attempt('right')));
    expect(lines).toEqual([
      '200 | x-ratelimit-limit: 2 | x-ratelimit-remaining: 1 | x-ratelimit-reset: 60 | ratelimit: "login";r=1;t=60',
      '401 | x-ratelimit-limit: 2 | x-ratelimit-remaining: 1 | x-ratelimit-reset: 60 | ratelimit: "login";r=1;t=60',
      '401 | x-ratelimit-limit: 2 | x-ratelimit-remaining: 0 | x-ratelimit-reset: 60 | ratelimit: "login";r=0;t=60',
      '429 | retry-after: 300 | x-ratelimit-limit: 2 | x-ratelimit-remaining: 0 | x-ratelimit-reset: 300 | ' +
        'ratelimit: "login";r=0;t=300',
      // locked out, even with the right password
      '429 | retry-after: 300 | x-ratelimit-limit: 2 | x-ratelimit-remaining: 0 | x-ratelimit-reset: 300 | ' +
        'ratelimit: "login";r=0;t=300',
    ]);
  });

  it('skipFailedRequests: failed uploads insurance admitted are refunded, successful ones charged', async () => {
    const user = randomUUID();
    const statuses: number[] = [];
    for (const fail of [true, true, true, false, false, false]) {
      const res = await post('upload', { 'X-User-Id': user, ...(fail && { 'X-Fail': '1' }) });
      statuses.push(res.status);
    }
    expect(statuses).toEqual([401, 401, 401, 200, 200, 429]);
  });
});

describe('a cluster with one master dead: each charge of a decision given back where it was made', () => {
  let cluster: RedisClusterHandle;
  beforeAll(async () => {
    cluster = trackForCleanup(await startRedisCluster());
    // the live masters keep serving their slots while one is dead (by default the cluster is down once it is failed)
    for (const node of cluster.nodes)
      await rawCommand(node.port, ['CONFIG', 'SET', 'cluster-require-full-coverage', 'no']);
  }, 120_000);
  afterAll(() => cluster?.stop());
  afterEach(async () => {
    await closeToolkitApps();
    const victim = cluster.masters[0];
    if (!victim.isRunning()) {
      await victim.restart();
      await rawCommand(victim.port, ['CONFIG', 'SET', 'cluster-require-full-coverage', 'no']);
      const ok = async () => {
        const infos = await Promise.all(cluster.masters.map((m) => rawCommand(m.port, ['CLUSTER', 'INFO'])));
        return infos.every((info) => /cluster_state:ok/.test(String(info)));
      };
      expect(await waitFor(ok, 15_000)).toBe(true);
    }
  });

  /** An app with insurance on the cluster; `pick(onVictim)` gives a fresh key whose counters are on the victim or not. */
  async function boot(extra: Pick<ToolkitAppOptions, 'http' | 'platform' | 'controllers'> = {}) {
    const app = await bootToolkitApp({
      target: { cluster: cluster.startupNodes },
      commandTimeout: 300,
      connectTimeout: 20_000,
      maxReconnectDelay: 100,
      keyPrefix: `rtk-${randomUUID().slice(0, 8)}:`,
      rateLimit: { warnIntervalMs: 60_000, insurance: true },
      ...extra,
    });
    const rl = app.get(RateLimitService);
    const portOf = await masterPortOf(cluster, rl);
    const victim = cluster.masters[0];
    const pick = (onVictim: boolean) => {
      for (;;) {
        const key = randomUUID();
        if ((portOf(key) === victim.port) === onVictim) return key;
      }
    };
    return { app, rl, victim, pick };
  }

  it.each(PLATFORMS)(
    'over HTTP on %s: a login whose user counter insurance charged (dead master) and IP counter Redis charged',
    async (platform) => {
      const { app, rl, victim, pick } = await boot({ http: true, platform, controllers: [LoginController] });
      const [user, ip] = [pick(true), pick(false)];
      await victim.kill();
      const probe: RateLimitPolicy = { limit: 1, ttl: 1_000 };
      const insuredNow = async () => (await rl.peek(pick(true), probe)).degraded === 'insurance';
      expect(await waitFor(insuredNow, 15_000)).toBe(true);
      const http = app.app.getHttpServer() as Server;
      const statuses: number[] = [];
      for (let i = 0; i < 4; i++) {
        statuses.push((await request(http).post('/ibr/pair-login').set({ 'X-User-Id': user, 'X-Ip': ip })).status);
        await sleep(50); // a refund is given when the response finishes
      }
      // limit 2 each: every login refunded, the user counter's to insurance, the IP counter's to Redis
      expect(statuses).toEqual([200, 200, 200, 200]);
    },
  );

  it("RateLimitService: a consumeAll's results say which counters insurance decided; each refund goes there", async () => {
    const { rl, victim, pick } = await boot();
    const policy: RateLimitPolicy = { limit: 2, ttl: 60_000, algorithm: 'fixed-window' };
    const [dead, live] = [pick(true), pick(false)];
    await victim.kill();
    const insuredNow = async () => (await rl.peek(pick(true), policy)).degraded === 'insurance';
    expect(await waitFor(insuredNow, 15_000)).toBe(true);
    const checks = [
      { key: dead, policy, name: 'dead' },
      { key: live, policy, name: 'live' },
    ];
    const first = await rl.consumeAll(checks);
    const second = await rl.consumeAll(checks);
    expect(
      [first, second].map((d) => `${d.allowed} ${d.degraded} ${d.results.map((r) => r.degraded ?? 'redis')}`),
    ).toEqual(['true insurance insurance,redis', 'true insurance insurance,redis']);
    // each counter's charge given back where it was made: both admit again
    for (const r of second.results) {
      const key = r.name === 'dead' ? dead : live;
      await rl.reward(key, 1, policy, undefined, r.degraded ? { degraded: r.degraded } : {});
    }
    expect((await rl.consumeAll(checks)).allowed).toBe(true);
  });
});
