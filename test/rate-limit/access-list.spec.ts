import 'reflect-metadata';
import { Controller, Get, UseGuards, type ExecutionContext } from '@nestjs/common';
import { randomUUID } from 'node:crypto';
import type { Server } from 'node:http';
import request from 'supertest';
import { InvalidOptionsError, RateLimitGuard, Throttle, type RateLimitOptions } from '../../lib/index.js';
import type { ThrottledRequest } from '../../lib/advanced.js';
import { PLATFORMS, closeToolkitApps, createToolkitApp, type Platform } from '../support/toolkit-app.js';

afterEach(closeToolkitApps);

@Controller('acl')
@UseGuards(RateLimitGuard)
class AclController {
  @Get()
  @Throttle({ limit: 1, ttl: 60_000 })
  one(): string {
    return 'one';
  }

  @Get('two')
  @Throttle({ limit: 2, ttl: 60_000, name: 'minute' }, { limit: 5, ttl: 3_600_000, name: 'hour' })
  two(): string {
    return 'two';
  }
}

/** Trackers that are user ids: the lists then name users. */
class UserGuard extends RateLimitGuard {
  protected override async getTracker(req: ThrottledRequest, _context: ExecutionContext): Promise<string> {
    return `user:${String(req.headers?.['x-user'])}`;
  }
}

@Controller('users')
@UseGuards(UserGuard)
class UserController {
  @Get()
  @Throttle({ limit: 1, ttl: 60_000 })
  get(): string {
    return 'user';
  }
}

async function start(platform: Platform, rateLimit: RateLimitOptions) {
  const app = await createToolkitApp({
    platform,
    http: true,
    keyPrefix: `rtk-${randomUUID().slice(0, 8)}:`,
    // every test client comes through the loopback proxy: X-Forwarded-For names it
    rateLimit: { trustProxy: true, ...rateLimit },
    controllers: [AclController, UserController],
  });
  return app.app.getHttpServer() as Server;
}

const from = (http: Server, ip: string, path = '/acl') => request(http).get(path).set('X-Forwarded-For', ip);

describe.each(PLATFORMS)('allowList / denyList on %s', (platform) => {
  const lists: RateLimitOptions = {
    allowList: ['203.0.113.0/24', '2001:db8:a11::/48'],
    denyList: ['198.51.100.7', '2001:db8:bad::/48'],
    ignoreUserAgents: [/friendly-bot/],
  };

  it('an allowed address or range is never counted: no headers, never 429', async () => {
    const http = await start(platform, lists);
    for (const ip of ['203.0.113.9', '203.0.113.9', '203.0.113.200', '2001:db8:a11:5::1', '2001:db8:a11:5::1']) {
      const res = await from(http, ip);
      expect([res.status, res.headers.ratelimit]).toEqual([200, undefined]);
    }
    // anyone else: the limit of 1 holds
    expect((await from(http, '192.0.2.1')).status).toBe(200);
    const refused = await from(http, '192.0.2.1');
    expect(refused.status).toBe(429);
    expect(refused.headers['retry-after']).toBeDefined();
  });

  it('a denied address or range gets 403 from the first request, with no Retry-After, whatever its User-Agent', async () => {
    const http = await start(platform, lists);
    for (const ip of ['198.51.100.7', '2001:db8:bad:1::5', '2001:db8:bad:ffff::9']) {
      const res = await from(http, ip).set('User-Agent', 'friendly-bot/1.0');
      expect(res.status).toBe(403);
      expect(res.body).toMatchObject({ statusCode: 403, message: 'Forbidden' });
      expect(res.headers['retry-after']).toBeUndefined();
      expect(res.headers.ratelimit).toBeUndefined();
    }
    // a neighbour of the denied address is limited as usual, and the User-Agent skip still works for others
    expect((await from(http, '198.51.100.8')).status).toBe(200);
    expect((await from(http, '198.51.100.8')).status).toBe(429);
    expect((await from(http, '198.51.100.9').set('User-Agent', 'friendly-bot/1.0')).status).toBe(200);
    expect((await from(http, '198.51.100.9').set('User-Agent', 'friendly-bot/1.0')).status).toBe(200);
  });

  it('a tracker on both lists is denied', async () => {
    const http = await start(platform, { allowList: ['10.1.0.0/16'], denyList: ['10.1.2.3'] });
    expect((await from(http, '10.1.2.3')).status).toBe(403);
    expect((await from(http, '10.1.2.4')).status).toBe(200);
    expect((await from(http, '10.1.2.4')).status).toBe(200);
  });

  it('entries that are not addresses match trackers exactly (a getTracker returning user ids)', async () => {
    const http = await start(platform, { allowList: ['user:admin'], denyList: ['user:mallory'] });
    const as = (user: string) => request(http).get('/users').set('X-User', user);
    expect((await as('admin')).status).toBe(200);
    expect((await as('admin')).status).toBe(200);
    expect((await as('mallory')).status).toBe(403);
    expect((await as('alice')).status).toBe(200);
    expect((await as('alice')).status).toBe(429);
  });
});

describe('allowList, denyList, blockCache and headers at startup', () => {
  it.each([
    [{ allowList: ['10.0.0.0/33'] }, 'rateLimit.allowList[0]'],
    [{ denyList: ['192.0.2.1', '300.1.2.3'] }, 'rateLimit.denyList[1]'],
    [{ denyList: ['2001:db8::/129'] }, 'rateLimit.denyList[0]'],
    [{ allowList: [''] }, 'rateLimit.allowList[0]'],
    [{ allowList: '10.0.0.0/8' as unknown as string[] }, 'rateLimit.allowList'],
    [{ blockCache: { maxKeys: 0 } }, 'rateLimit.blockCache.maxKeys'],
    [{ blockCache: { maxkeys: 10 } as unknown as boolean }, 'rateLimit.blockCache.maxkeys'],
    [{ headers: 'draft-9' as 'draft-7' }, 'rateLimit.headers'],
  ])('%j is refused with InvalidOptionsError naming %s', async (rateLimit, path) => {
    const failed = await createToolkitApp({ rateLimit }).then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(failed).toBeInstanceOf(InvalidOptionsError);
    expect((failed as Error).message).toContain(path);
  });
});

describe.each(PLATFORMS)('rateLimit.headers draft-7 and draft-6 on %s', (platform) => {
  it('draft-7: one combined RateLimit header and RateLimit-Policy, of the tightest policy', async () => {
    const http = await start(platform, { headers: 'draft-7' });
    const first = await from(http, '192.0.2.10', '/acl/two');
    expect(first.status).toBe(200);
    expect(first.headers.ratelimit).toBe('limit=2, remaining=1, reset=60');
    expect(first.headers['ratelimit-policy']).toBe('2;w=60');
    expect(first.headers['ratelimit-limit']).toBeUndefined();
    expect(first.headers['x-ratelimit-limit']).toBeUndefined();
    expect((await from(http, '192.0.2.10', '/acl/two')).headers.ratelimit).toBe('limit=2, remaining=0, reset=60');
    const refused = await from(http, '192.0.2.10', '/acl/two');
    expect(refused.status).toBe(429);
    expect(refused.headers.ratelimit).toBe('limit=2, remaining=0, reset=60');
    expect(Number(refused.headers['retry-after'])).toBeGreaterThan(55);
  });

  it('draft-6: RateLimit-Limit, -Remaining, -Reset and RateLimit-Policy', async () => {
    const http = await start(platform, { headers: 'draft-6' });
    const res = await from(http, '192.0.2.11');
    expect(res.headers['ratelimit-limit']).toBe('1');
    expect(res.headers['ratelimit-remaining']).toBe('0');
    expect(res.headers['ratelimit-reset']).toBe('60');
    expect(res.headers['ratelimit-policy']).toBe('1;w=60');
    expect(res.headers.ratelimit).toBeUndefined();
  });
});
