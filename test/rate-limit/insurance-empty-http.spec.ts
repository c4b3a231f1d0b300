import 'reflect-metadata';
import type { ExecutionContext } from '@nestjs/common';
import { Controller, Post, UseGuards } from '@nestjs/common';
import { randomUUID } from 'node:crypto';
import type { Server } from 'node:http';
import request, { type Response } from 'supertest';
import { RateLimitGuard, Throttle } from '../../lib/index.js';
import { userFromHeader } from '../support/rate-limit-http.js';
import { closeToolkitApps, PLATFORMS_AND_TARGETS } from '../support/toolkit-app.js';
import { sleep } from '../support/wait.js';
import {
  InsuredRoutes,
  insured,
  privateRedis,
  type PrivateRedis,
  bootPerHeaderMode,
  HEADER_MODES,
  type HeaderMode,
} from './insurance-harness.js';

// Over HTTP, in every header style, a counter the insurance limiter (Redis unreachable) holds nothing of gets the
// headers Redis gives it (divideLimitBy 1, so the share is the capacity): a request of cost 0 and a counter beside a
// refusal say reset 0 where Redis does, and a request of cost 0 opens no window. Before 2026-12-03 they said the
// insurance window's span (60 s; a bucket of burst 8 limit 2: 240 s), and a request of cost 0 opened a window, so the
// next request's reset said it ended that much sooner (59 for one 1.1 s later).

afterAll(closeToolkitApps);

/** A second key: the request's `X-Other-Id` header. */
const otherFromHeader = (ctx: ExecutionContext): string =>
  String(ctx.switchToHttp().getRequest<{ headers: Record<string, string> }>().headers['x-other-id']);

@Controller('insurance-empty')
@UseGuards(RateLimitGuard)
class InsuranceEmptyController extends InsuredRoutes {
  /** One counter per user (1 a minute) and a bucket per `X-Other-Id`: a new other beside a spent user is refused. */
  @Post('pair')
  @Throttle(
    { name: 'tight', limit: 1, ttl: 60_000, algorithm: 'fixed-window', key: userFromHeader },
    { name: 'fresh', limit: 2, ttl: 60_000, algorithm: 'token-bucket', burst: 8, key: otherFromHeader },
  )
  pair(): string {
    return 'ok';
  }
}

/** A response's status and rate-limit headers, one line. */
function seen(res: Response): string {
  const names = ['ratelimit-policy', 'ratelimit', 'ratelimit-limit', 'ratelimit-remaining', 'ratelimit-reset'];
  names.push('x-ratelimit-limit', 'x-ratelimit-remaining', 'x-ratelimit-reset', 'retry-after');
  const h = res.headers as Record<string, string | undefined>;
  return [res.status, ...names.filter((n) => h[n] !== undefined).map((n) => `${n}: ${h[n]}`)].join(' | ');
}

describe.each(PLATFORMS_AND_TARGETS)('insurance, empty counters over HTTP on %s, %s', (platform, target) => {
  let redis: PrivateRedis;
  const apps = new Map<HeaderMode, Server>();
  let redisSeen: string[];
  let redisAfter: string[];

  const post = (mode: HeaderMode, path: string, headers: Record<string, string>) => {
    const req = request(apps.get(mode) as Server).post(`/insurance-empty/${path}`);
    for (const [name, value] of Object.entries(headers)) req.set(name, value);
    return req;
  };

  /** Per style: requests of cost 0 of fresh counters, and a new bucket beside a spent counter (a 429). */
  const scenario = async (mode: HeaderMode): Promise<string[]> => {
    const out: string[] = [];
    for (const path of ['fixed', 'sliding', 'bucket'])
      out.push(`${mode} ${path} cost 0: ${seen(await post(mode, path, { 'X-User-Id': randomUUID(), 'X-Cost': '0' }))}`);
    const user = randomUUID();
    const first = await post(mode, 'pair', { 'X-User-Id': user, 'X-Other-Id': randomUUID() });
    const second = await post(mode, 'pair', { 'X-User-Id': user, 'X-Other-Id': randomUUID() });
    out.push(`${mode} pair: ${first.status}, then ${seen(second)}`);
    return out;
  };

  /** Per style: a request of cost 0, then 1.1 s later one of cost 1, of the same counter; that one's headers. */
  const afterCostZero = async (mode: HeaderMode): Promise<string[]> => {
    const users = ['fixed', 'sliding'].map(() => randomUUID());
    for (const [i, path] of ['fixed', 'sliding'].entries())
      await post(mode, path, { 'X-User-Id': users[i], 'X-Cost': '0' });
    await sleep(1_100);
    const out: string[] = [];
    for (const [i, path] of ['fixed', 'sliding'].entries())
      out.push(
        `${mode} ${path} after cost 0: ${seen(await post(mode, path, { 'X-User-Id': users[i], 'X-Cost': '1' }))}`,
      );
    return out;
  };

  beforeAll(async () => {
    redis = await privateRedis(target);
    const { booted, servers } = await bootPerHeaderMode(redis, 1, platform, InsuranceEmptyController);
    for (const [mode, server] of servers) apps.set(mode, server);
    redisSeen = (await Promise.all(HEADER_MODES.map(scenario))).flat();
    redisAfter = (await Promise.all(HEADER_MODES.map(afterCostZero))).flat();
    await redis.cut();
    await Promise.all(booted.map(insured));
  }, 60_000);
  afterAll(async () => {
    await closeToolkitApps();
    await redis.stop();
  });

  it('a request of cost 0 opens no window: the next, 1.1 s later, gets a whole one (reset 60), as from Redis', async () => {
    const insuredAfter = (await Promise.all(HEADER_MODES.map(afterCostZero))).flat();
    expect(insuredAfter).toEqual(redisAfter);
    expect(redisAfter.find((s) => s.startsWith('legacy fixed'))).toBe(
      'legacy fixed after cost 0: 201 | x-ratelimit-limit: 5 | x-ratelimit-remaining: 4 | x-ratelimit-reset: 60',
    );
  });

  it('every style gives a counter that holds nothing the headers Redis gives it', async () => {
    const insuredSeen = (await Promise.all(HEADER_MODES.map(scenario))).flat();
    expect(insuredSeen).toEqual(redisSeen);
    // what Redis said: e.g. draft's '"b";r=8;t=0' for the bucket, '"fresh";r=8;t=0' beside the refusal
    expect(redisSeen.find((s) => s.startsWith('draft bucket'))).toBe(
      'draft bucket cost 0: 201 | ratelimit-policy: "b";q=8;w=60 | ratelimit: "b";r=8;t=0',
    );
    expect(redisSeen.find((s) => s.startsWith('draft pair'))).toBe(
      'draft pair: 201, then 429 | ratelimit-policy: "tight";q=1;w=60, "fresh";q=8;w=60 | ' +
        'ratelimit: "tight";r=0;t=60, "fresh";r=8;t=0 | retry-after: 60',
    );
  });
});
