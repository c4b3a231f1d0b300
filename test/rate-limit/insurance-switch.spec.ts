import 'reflect-metadata';
import { Controller, Headers, HttpCode, Post, UnauthorizedException, UseGuards } from '@nestjs/common';
import { randomUUID } from 'node:crypto';
import type { Server } from 'node:http';
import request from 'supertest';
import {
  RateLimitGuard,
  RateLimitService,
  RedisUnavailableError,
  Throttle,
  type RateLimitPolicy,
  type RateLimitResult,
} from '../../lib/index.js';
import { userFromHeader } from '../support/rate-limit-http.js';
import { closeToolkitApps, PLATFORMS, type ToolkitApp } from '../support/toolkit-app.js';
import { waitFor } from '../support/wait.js';
import { bootInsured, insured, privateRedis, type PrivateRedis } from './insurance-harness.js';

// The switch to the insurance limiter and back (docs/rate-limit.md, Failure policy, "Insurance around an outage"):
// - insurance starts each counter from what this process last learned from Redis for it (the remaining and reset of
//   its last charging decision), bounded by maxKeys: a client at its limit in Redis is refused, not given a fresh
//   share, the moment Redis goes down. Until 2026-12-06 every counter started empty at the switch;
// - a consume that timed out on a paused server (SIGSTOP) is decided by insurance and its script runs in Redis once
//   the server resumes (measured: Redis's counter holds it). Insurance's charge of it stands in for Redis's until
//   Redis answers for that counter again, and Redis's answer, which holds it, then replaces insurance's view: it is
//   never counted twice, and the window's admissions stay within the limit across a pause and a later outage. Until
//   2026-12-06 insurance kept only its own charges: a client admitted 5 times under a limit of 4;
// - penalty() in an outage, with insurance on, charges insurance's window of that counter (as reward with degraded
//   'insurance' gives back to it), resolves with the units left of its share, is logged and counted in
//   stats().insurance; without insurance it fails with RedisUnavailableError, as before. Until 2026-12-06 it failed
//   with insurance on too: a penalised failed login was lost exactly while Redis was down.

afterAll(closeToolkitApps);

/** One result, one line: admitted or refused, units left of its limit, who decided. */
const say = (r: Pick<RateLimitResult, 'allowed' | 'remaining' | 'limit' | 'degraded'>): string =>
  `${r.allowed ? 'admitted' : 'refused'} ${r.remaining}/${r.limit} ${r.degraded ?? 'redis'}`;
const settled = (p: Promise<number>): Promise<number | string> => p.catch((err: Error) => err.name);

describe.each(['single', 'cluster'] as const)('insurance at the switch (%s)', (target) => {
  let redis: PrivateRedis;
  let apps: { insured: ToolkitApp; small: ToolkitApp; bare: ToolkitApp };
  let rl: RateLimitService;
  let cut = false;
  beforeAll(async () => {
    redis = await privateRedis(target);
    const [a, b, c] = await Promise.all([
      bootInsured(redis, { insurance: true }),
      bootInsured(redis, { insurance: { maxKeys: 2 } }),
      bootInsured(redis, {}),
    ]);
    apps = { insured: a, small: b, bare: c };
    rl = a.get(RateLimitService);
  }, 120_000);
  afterAll(() => redis?.stop());

  /** Waits until Redis decides for `key` (on a cluster its master's connection may come back after the others'). */
  const redisDecides = async (key: string, policy: RateLimitPolicy) => {
    // a peek: nothing charged, nothing learned
    const probe = async () => (await rl.peek(key, policy)).degraded;
    expect(await waitFor(async () => (await probe()) === undefined, 20_000)).toBe(true);
  };
  /** Every node killed (once for the describe); resolves once each insured app decides by insurance. */
  const killed = async () => {
    if (!cut) await redis.cut();
    cut = true;
    await insured(apps.insured);
    await insured(apps.small);
  };

  it('a paused server: the timed-out consumes run in Redis when it resumes, and no unit is counted twice', async () => {
    const policy: RateLimitPolicy = { limit: 4, ttl: 60_000, algorithm: 'fixed-window' };
    const key = randomUUID();
    const lines = [say(await rl.consume(key, policy))];
    redis.pause();
    try {
      // two consumes in flight when the server stops: both time out, insurance decides them
      lines.push(...(await Promise.all([rl.consume(key, policy), rl.consume(key, policy)])).map(say));
    } finally {
      redis.resume();
    }
    await redisDecides(key, policy);
    // measured: the two scripts ran once the server resumed (Redis's counter holds 1 + 2); a peek learns nothing
    lines.push(`redis after the pause: ${say(await rl.peek(key, policy))}`);
    redis.pause();
    try {
      // a second pause in the same window: insurance counts from what Redis said plus its own charges, once each
      lines.push(say(await rl.consume(key, policy)), say(await rl.consume(key, policy)));
    } finally {
      redis.resume();
    }
    await redisDecides(key, policy);
    expect(lines).toEqual([
      'admitted 3/4 redis',
      'admitted 2/4 insurance',
      'admitted 1/4 insurance',
      'redis after the pause: admitted 1/4 redis',
      'admitted 0/4 insurance',
      'refused 0/4 insurance',
    ]);
  }, 60_000);

  it('a client at its limit in Redis is refused once Redis is down, not given a fresh share (bounded by maxKeys)', async () => {
    const fixed: RateLimitPolicy = { limit: 3, ttl: 60_000, algorithm: 'fixed-window' };
    const sliding: RateLimitPolicy = { limit: 2, ttl: 60_000, algorithm: 'sliding-window' };
    const bucket: RateLimitPolicy = { limit: 2, ttl: 60_000, algorithm: 'token-bucket' };
    const [spent, half, slid, drained] = [randomUUID(), randomUUID(), randomUUID(), randomUUID()];
    for (let i = 0; i < 4; i++) await rl.consume(spent, fixed); // the 4th refused by Redis
    await rl.consume(half, fixed);
    for (let i = 0; i < 2; i++) await rl.consume(slid, sliding);
    for (let i = 0; i < 2; i++) await rl.consume(drained, bucket);
    // maxKeys 2: three clients at their limit, the least recently decided one is not remembered
    const small = apps.small.get(RateLimitService);
    const one: RateLimitPolicy = { limit: 1, ttl: 60_000, algorithm: 'fixed-window' };
    const three = [randomUUID(), randomUUID(), randomUUID()];
    for (const k of three) await small.consume(k, one);
    await killed();
    const lines = [
      `spent: ${say(await rl.consume(spent, fixed))}`,
      `half: ${say(await rl.consume(half, fixed))}`,
      `half: ${say(await rl.consume(half, fixed))}`,
      `half: ${say(await rl.consume(half, fixed))}`,
      `sliding: ${say(await rl.consume(slid, sliding))}`,
      `bucket: ${say(await rl.consume(drained, bucket))}`,
    ];
    // the most recently learned first: a charge of the forgotten one stores it, and pushes out the least recent
    for (const i of [2, 1, 0]) lines.push(`maxKeys ${i}: ${say(await small.consume(three[i], one))}`);
    expect(lines).toEqual([
      'spent: refused 0/3 insurance',
      'half: admitted 1/3 insurance',
      'half: admitted 0/3 insurance',
      'half: refused 0/3 insurance',
      'sliding: refused 0/2 insurance',
      'bucket: refused 0/2 insurance',
      'maxKeys 2: refused 0/1 insurance',
      'maxKeys 1: refused 0/1 insurance',
      'maxKeys 0: admitted 0/1 insurance',
    ]);
    // the wait is what is left of Redis's window, not a fresh one
    const again = await rl.consume(spent, fixed);
    expect(again.retryAfterMs).toBeGreaterThan(30_000);
    expect(again.retryAfterMs).toBeLessThanOrEqual(60_000);
  }, 60_000);

  it("penalty() in an outage charges insurance's window: units left of its share, counted; without insurance: typed", async () => {
    await killed();
    const before = rl.stats().insurance;
    const seen: string[] = [];
    for (const algorithm of ['fixed-window', 'sliding-window', 'token-bucket'] as const) {
      const policy: RateLimitPolicy = { limit: 3, ttl: 60_000, algorithm };
      const key = randomUUID();
      const left = await settled(rl.penalty(key, 2, policy));
      const after = [await rl.consume(key, policy), await rl.consume(key, policy)];
      seen.push(`${algorithm}: penalty ${left}, then ${after.map(say).join(', ')}`);
    }
    const login: RateLimitPolicy = { limit: 3, ttl: 60_000, algorithm: 'fixed-window' };
    const key = randomUUID();
    seen.push(`over the share: ${await settled(rl.penalty(key, 5, login))}, ${say(await rl.consume(key, login))}`);
    // given back as reward gives back a charge insurance made
    const given = randomUUID();
    const charged = await settled(rl.penalty(given, 3, login));
    const back = await settled(rl.reward(given, 1, login, undefined, { degraded: 'insurance' }));
    seen.push(`penalty ${charged}, reward: ${back}, then ${say(await rl.consume(given, login))}`);
    const bare = apps.bare.get(RateLimitService);
    seen.push(`no insurance: ${await settled(bare.penalty(randomUUID(), 1, login))}`);
    expect(seen).toEqual([
      'fixed-window: penalty 1, then admitted 0/3 insurance, refused 0/3 insurance',
      'sliding-window: penalty 1, then admitted 0/3 insurance, refused 0/3 insurance',
      'token-bucket: penalty 1, then admitted 0/3 insurance, refused 0/3 insurance',
      'over the share: 0, refused 0/3 insurance',
      'penalty 0, reward: 1, then admitted 0/3 insurance',
      `no insurance: ${RedisUnavailableError.name}`,
    ]);
    // 3 × (a penalty, 2 consumes), a penalty and a consume, a penalty and a consume: each counted once
    expect(rl.stats().insurance - before).toBe(13);
  }, 60_000);
});

const LOGIN: RateLimitPolicy = { limit: 3, ttl: 60_000, algorithm: 'fixed-window' };

@Controller('isw')
class SwitchController {
  constructor(private readonly rl: RateLimitService) {}

  /** 2 a minute per user. */
  @Post('ping')
  @HttpCode(200)
  @UseGuards(RateLimitGuard)
  @Throttle({ name: 'ping', limit: 2, ttl: 60_000, algorithm: 'fixed-window', key: userFromHeader })
  ping(): string {
    return 'ok';
  }

  /** The brute-force setup of rate-limiter-flexible: an attempt consumes 1, a failed one is penalised 2 more. */
  @Post('login')
  @HttpCode(200)
  async login(@Headers('x-user-id') user: string, @Headers('x-password') password?: string): Promise<string> {
    await this.rl.consumeOrThrow(user, LOGIN);
    if (password === 'right') return 'ok';
    await this.rl.penalty(user, 2, LOGIN);
    throw new UnauthorizedException();
  }
}

describe.each(PLATFORMS)('insurance at the switch over HTTP on %s (single server)', (platform) => {
  let redis: PrivateRedis;
  let http: Server;
  let app: ToolkitApp;
  beforeAll(async () => {
    redis = await privateRedis('single');
    app = await bootInsured(
      redis,
      { insurance: true, headers: 'legacy' },
      { platform, controllers: [SwitchController] },
    );
    http = app.app.getHttpServer() as Server;
  }, 120_000);
  afterAll(() => redis?.stop());

  const post = (path: string, headers: Record<string, string>) => request(http).post(`/isw/${path}`).set(headers);
  const line = (res: request.Response) =>
    `${res.status} ${res.headers['x-ratelimit-remaining'] ?? '-'} ${res.headers['retry-after'] ?? '-'}`;

  it("a user at its limit in Redis is refused once Redis is down; a failed login's penalty counts in the outage", async () => {
    const user = randomUUID();
    const lines = [line(await post('ping', { 'X-User-Id': user })), line(await post('ping', { 'X-User-Id': user }))];
    await redis.cut();
    await insured(app);
    const refused = await post('ping', { 'X-User-Id': user });
    lines.push(line(refused));
    expect(Number(refused.headers['retry-after'])).toBeGreaterThan(30);
    expect(Number(refused.headers['retry-after'])).toBeLessThanOrEqual(60);
    const attacker = randomUUID();
    for (const password of ['wrong', 'right']) {
      const res = await post('login', { 'X-User-Id': attacker, 'X-Password': password });
      lines.push(String(res.status));
    }
    expect(lines.map((l) => l.replace(/ \d+$/, ' n'))).toEqual(['200 1 -', '200 0 -', '429 0 n', '401', '429']);
  }, 60_000);
});
