import 'reflect-metadata';
import { Controller, Get, Headers, Post, UseGuards, type ExecutionContext } from '@nestjs/common';
import { APP_GUARD } from '@nestjs/core';
import { randomUUID } from 'node:crypto';
import type { Server } from 'node:http';
import request from 'supertest';
import { RateLimitGuard, RateLimitService, SkipThrottle, Throttle, type RateLimitOptions } from '../../lib/index.js';
import {
  PLATFORMS,
  closeToolkitApps,
  createToolkitApp,
  type Platform,
  type RedisTarget,
  PLATFORMS_AND_TARGETS,
} from '../support/toolkit-app.js';

afterEach(closeToolkitApps);

const userOf = (ctx: ExecutionContext): string =>
  String(ctx.switchToHttp().getRequest<{ headers: Record<string, string> }>().headers['x-user-id']);

@Controller('limited')
@UseGuards(RateLimitGuard)
@Throttle({ limit: 3, ttl: 60_000 })
class LimitedController {
  @Get()
  get(): { ok: boolean } {
    return { ok: true };
  }

  @Get('two')
  @Throttle(
    { limit: 2, ttl: 1_000, name: 'second', algorithm: 'fixed-window' },
    { limit: 5, ttl: 60_000, name: 'minute' },
  )
  two(): string {
    return 'two';
  }

  @Get('free')
  @SkipThrottle()
  free(): string {
    return 'free';
  }

  @Get('user')
  @Throttle({ limit: 2, ttl: 60_000, key: userOf, name: 'user' })
  user(@Headers('x-user-id') id: string): string {
    return id;
  }

  @Get('dynamic')
  @Throttle({
    limit: (ctx) =>
      ctx.switchToHttp().getRequest<{ headers: Record<string, string> }>().headers['x-plan'] === 'pro' ? 4 : 1,
    ttl: 60_000,
  })
  dynamic(): string {
    return 'dynamic';
  }

  @Post('bulk')
  @Throttle({ limit: 10, ttl: 60_000, cost: 4, algorithm: 'token-bucket' })
  bulk(): string {
    return 'bulk';
  }
}

@Controller('skipped')
@UseGuards(RateLimitGuard)
@SkipThrottle()
class SkippedController {
  @Get()
  free(): string {
    return 'free';
  }

  @Get('on')
  @SkipThrottle(false)
  @Throttle({ limit: 1, ttl: 60_000 })
  on(): string {
    return 'on';
  }
}

@Controller('global')
class GlobalController {
  @Get()
  get(): string {
    return 'global';
  }
}

/** A guard of its own with one counter shared by every route of the controller (a custom generateKey). */
class SharedCounterGuard extends RateLimitGuard {
  protected override generateKey(_context: ExecutionContext, _tracker: string, name: string): string {
    return `shared:${name}`;
  }
}

@Controller('shared')
@UseGuards(SharedCounterGuard)
@Throttle({ limit: 3, ttl: 60_000 })
class SharedCounterController {
  @Get('a')
  a(): string {
    return 'a';
  }

  @Get('b')
  b(): string {
    return 'b';
  }

  @Get('c')
  c(): string {
    return 'c';
  }
}

/** Every test gets its own key prefix, so counters of earlier tests or runs never leak in. */
async function start(platform: Platform, target: RedisTarget, rateLimit: RateLimitOptions = {}, appGuard = false) {
  const app = await createToolkitApp({
    target,
    platform,
    http: true,
    keyPrefix: `rtk-${randomUUID().slice(0, 8)}:`,
    rateLimit,
    controllers: [LimitedController, SkippedController, GlobalController, SharedCounterController],
    providers: appGuard ? [{ provide: APP_GUARD, useClass: RateLimitGuard }] : [],
  });
  return { http: app.app.getHttpServer() as Server, app };
}

describe.each(PLATFORMS_AND_TARGETS)('RateLimitGuard over HTTP on %s, %s', (platform, target) => {
  it('answers with RateLimit headers, then 429 with Retry-After and a JSON body', async () => {
    const { http } = await start(platform, target);
    for (let i = 0; i < 3; i++) {
      const res = await request(http).get('/limited').expect(200);
      expect(res.headers['ratelimit-policy']).toBe('"default";q=3;w=60');
      expect(res.headers['ratelimit']).toBe(`"default";r=${2 - i};t=60`);
      expect(res.headers['x-ratelimit-limit']).toBeUndefined();
    }
    const denied = await request(http).get('/limited').expect(429);
    expect(denied.body).toEqual({ statusCode: 429, message: 'Too Many Requests', retryAfterMs: expect.any(Number) });
    expect(denied.body.retryAfterMs).toBeGreaterThan(55_000);
    expect(denied.body.retryAfterMs).toBeLessThanOrEqual(60_000);
    expect(denied.headers['retry-after']).toBe(String(Math.ceil(denied.body.retryAfterMs / 1000)));
    expect(denied.headers['ratelimit']).toBe('"default";r=0;t=60');
    expect(denied.headers['content-type']).toMatch(/json/);
  });

  it('checks several policies all or nothing: a refused request charges none of them', async () => {
    const { http } = await start(platform, target);
    await request(http).get('/limited/two').expect(200);
    const second = await request(http).get('/limited/two').expect(200);
    expect(second.headers['ratelimit-policy']).toBe('"second";q=2;w=1, "minute";q=5;w=60');
    expect(second.headers['ratelimit']).toMatch(/^"second";r=0;t=1, "minute";r=3;t=60$/);
    for (let i = 0; i < 3; i++) {
      const denied = await request(http).get('/limited/two').expect(429);
      expect(denied.headers['ratelimit']).toMatch(/"minute";r=3;/); // not charged by the refused calls
      expect(denied.body.retryAfterMs).toBeLessThanOrEqual(1_000);
    }
  });
});

describe.each(PLATFORMS)('RateLimitGuard over HTTP on %s', (platform) => {
  it('skips with @SkipThrottle on a handler or a class, and @SkipThrottle(false) turns it back on', async () => {
    const { http } = await start(platform, 'single');
    for (let i = 0; i < 6; i++) {
      const res = await request(http).get('/limited/free').expect(200);
      expect(res.headers['ratelimit']).toBeUndefined();
      await request(http).get('/skipped').expect(200);
    }
    await request(http).get('/skipped/on').expect(200);
    await request(http).get('/skipped/on').expect(429);
  });

  it('works as APP_GUARD with rateLimit.defaults, and legacy headers on request', async () => {
    const { http } = await start(
      platform,
      'single',
      { defaults: { limit: 2, ttl: 10_000, algorithm: 'fixed-window' }, headers: 'both' },
      true,
    );
    const ok = await request(http).get('/global').expect(200);
    expect(ok.headers['x-ratelimit-limit']).toBe('2');
    expect(ok.headers['x-ratelimit-remaining']).toBe('1');
    expect(ok.headers['x-ratelimit-reset']).toBe('10');
    expect(ok.headers['ratelimit-policy']).toBe('"default";q=2;w=10');
    await request(http).get('/global').expect(200);
    const denied = await request(http).get('/global').expect(429);
    expect(denied.headers['x-ratelimit-remaining']).toBe('0');
  });

  it('charges a request once when the guard is both APP_GUARD and on the controller', async () => {
    const { http } = await start(platform, 'single', {}, true);
    const first = await request(http).get('/limited').expect(200);
    expect(first.headers['ratelimit']).toBe('"default";r=2;t=60');
    await request(http).get('/limited').expect(200);
    await request(http).get('/limited').expect(200);
    await request(http).get('/limited').expect(429);
  });

  it('with APP_GUARD and a controller guard on another counter, charges both counters once each', async () => {
    const { http, app } = await start(platform, 'single', {}, true);
    const statuses: number[] = [];
    for (const route of ['a', 'b', 'c'])
      for (let i = 0; i < 3; i++) statuses.push((await request(http).get(`/shared/${route}`)).status);
    // the shared counter (limit 3) admits exactly 3 of the 9; before, the second guard was skipped: 9 of 9
    expect(statuses).toEqual([200, 200, 200, 429, 429, 429, 429, 429, 429]);
    const policy = { limit: 3, ttl: 60_000 };
    const peek = (scope: string) =>
      app.get(RateLimitService).peekAll([{ key: '127.0.0.1', scope, policy }], { failOpen: false });
    // both guards' counters were charged for /shared/a, once per request each
    expect((await peek('shared:default')).results[0].remaining).toBe(0);
    expect((await peek('SharedCounterController.a:default')).results[0].remaining).toBe(0);
    expect((await peek('SharedCounterController.c:default')).results[0].remaining).toBe(0);
  });

  it('sends no headers with headers: false', async () => {
    const { http } = await start(platform, 'single', { headers: false });
    const res = await request(http).get('/limited').expect(200);
    expect(res.headers['ratelimit']).toBeUndefined();
    expect(res.headers['x-ratelimit-limit']).toBeUndefined();
  });

  it('ignores X-Forwarded-For without trustProxy (spoofing gives no fresh quota)', async () => {
    const { http } = await start(platform, 'single');
    for (let i = 0; i < 3; i++)
      await request(http).get('/limited').set('X-Forwarded-For', `198.51.100.${i}`).expect(200);
    await request(http).get('/limited').set('X-Forwarded-For', '198.51.100.99').expect(429);
    await request(http).get('/limited').expect(429);
  });

  it('with trustProxy uses the right-most untrusted hop, so a spoofed left-most entry changes nothing', async () => {
    const { http } = await start(platform, 'single', { trustProxy: true });
    // 127.0.0.1 (the test client) is a trusted proxy: the client is the right-most address before it
    for (let i = 0; i < 3; i++)
      await request(http).get('/limited').set('X-Forwarded-For', `6.6.6.${i}, 203.0.113.7`).expect(200);
    await request(http).get('/limited').set('X-Forwarded-For', '1.2.3.4, 203.0.113.7').expect(429);
    // another real client behind the same proxy has its own quota
    await request(http).get('/limited').set('X-Forwarded-For', '203.0.113.8').expect(200);
    // private hops added by our own proxies are skipped too
    await request(http).get('/limited').set('X-Forwarded-For', '203.0.113.7, 10.0.0.3').expect(429);
  });

  it('counts an IPv4 client the same in every IPv6 form, and two NAT64 clients apart (not one /64)', async () => {
    const { http } = await start(platform, 'single', { trustProxy: true });
    // one client, 198.51.100.7, seen through three fronts: limit 3 in all
    for (const form of ['198.51.100.7', '::ffff:c633:6407', '64:ff9b::c633:6407'])
      await request(http).get('/limited').set('X-Forwarded-For', form).expect(200);
    await request(http).get('/limited').set('X-Forwarded-For', '64:ff9b::198.51.100.7').expect(429);
    // other IPv4 clients behind the same NAT64 or hex-mapped front keep their own quota
    for (let i = 0; i < 3; i++) {
      await request(http).get('/limited').set('X-Forwarded-For', '64:ff9b::c633:6408').expect(200);
      await request(http).get('/limited').set('X-Forwarded-For', '::ffff:c633:6409').expect(200);
    }
    await request(http).get('/limited').set('X-Forwarded-For', '198.51.100.8').expect(429);
  });

  it('limits per user with key: (ctx) => string, hostile ids included', async () => {
    const { http } = await start(platform, 'single');
    const hostile = `*{}[?]${'{'.repeat(4_000)}`;
    for (const id of ['alice', 'bob', hostile]) {
      await request(http).get('/limited/user').set('x-user-id', id).expect(200);
      await request(http).get('/limited/user').set('x-user-id', id).expect(200);
      await request(http).get('/limited/user').set('x-user-id', id).expect(429);
    }
  });

  it('resolves option values per request', async () => {
    const { http } = await start(platform, 'single');
    await request(http).get('/limited/dynamic').expect(200);
    await request(http).get('/limited/dynamic').expect(429);
    const pro = await request(http).get('/limited/dynamic').set('x-plan', 'pro').expect(200);
    expect(pro.headers['ratelimit']).toBe('"default";r=2;t=60');
  });

  it('charges `cost` per request', async () => {
    const { http } = await start(platform, 'single');
    const first = await request(http).post('/limited/bulk').expect(201);
    expect(first.headers['ratelimit']).toMatch(/^"default";r=6;t=/);
    await request(http).post('/limited/bulk').expect(201);
    await request(http).post('/limited/bulk').expect(429);
  });

  it('admits exactly the limit under 150 concurrent HTTP requests', async () => {
    const { app } = await start(platform, 'single', { defaults: { limit: 40, ttl: 60_000 } }, true);
    const address = (app.app.getHttpServer() as Server).address() as { port: number };
    const statuses = await Promise.all(
      Array.from({ length: 150 }, () => fetch(`http://127.0.0.1:${address.port}/global`).then((r) => r.status)),
    );
    expect(statuses.filter((s) => s === 200)).toHaveLength(40);
    expect(statuses.filter((s) => s === 429)).toHaveLength(110);
    expect(app.get(RateLimitService).stats()).toMatchObject({ allowed: 40, denied: 110, failedOpen: 0 });
  });
});
