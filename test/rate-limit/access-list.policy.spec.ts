import 'reflect-metadata';
import { Controller, Get, UseGuards } from '@nestjs/common';
import { randomUUID } from 'node:crypto';
import type { Server } from 'node:http';
import request from 'supertest';
import { InvalidOptionsError, RateLimitGuard, SkipThrottle, Throttle, type RateLimitOptions } from '../../lib/index.js';
import { PLATFORMS, closeToolkitApps, createToolkitApp, type Platform } from '../support/toolkit-app.js';

afterEach(closeToolkitApps);

/** Per-policy lists: `burst` lets the partner range through uncounted, `hour` refuses the abusive range. */
@Controller('pacl')
@UseGuards(RateLimitGuard)
class PolicyAclController {
  @Get('login')
  @Throttle(
    { name: 'burst', limit: 1, ttl: 60_000, allowList: ['203.0.113.0/24', '2001:db8:a11::/48'] },
    { name: 'hour', limit: 3, ttl: 3_600_000, denyList: ['198.51.100.0/24', '2001:db8:bad::/48'] },
  )
  login(): string {
    return 'login';
  }

  @Get('both')
  @Throttle({ name: 'only', limit: 1, ttl: 60_000, allowList: ['10.9.0.0/16'] })
  both(): string {
    return 'both';
  }

  @Get('skip-hour')
  @SkipThrottle({ hour: true })
  @Throttle(
    { name: 'burst', limit: 1, ttl: 60_000 },
    { name: 'hour', limit: 3, ttl: 3_600_000, denyList: ['198.51.100.0/24'] },
  )
  skipHour(): string {
    return 'skip-hour';
  }

  @Get('open')
  @Throttle({ limit: 1, ttl: 60_000 })
  open(): string {
    return 'open';
  }
}

async function start(platform: Platform, rateLimit: RateLimitOptions = {}) {
  const app = await createToolkitApp({
    platform,
    http: true,
    keyPrefix: `rtk-${randomUUID().slice(0, 8)}:`,
    // every test client comes through the loopback proxy: X-Forwarded-For names it
    rateLimit: { trustProxy: true, ignoreUserAgents: [/friendly-bot/], ...rateLimit },
    controllers: [PolicyAclController],
  });
  return app.app.getHttpServer() as Server;
}

const from = (http: Server, ip: string, path: string) => request(http).get(path).set('X-Forwarded-For', ip);

describe.each(PLATFORMS)('allowList / denyList of one policy on %s', (platform) => {
  it("a policy's allowList skips that policy only: the others still count, and other routes are not affected", async () => {
    const http = await start(platform);
    for (const ip of ['203.0.113.9', '2001:db8:a11:5::1']) {
      const statuses: number[] = [];
      for (let i = 0; i < 4; i++) {
        const res = await from(http, ip, '/pacl/login');
        statuses.push(res.status);
        // only `hour` is counted and reported
        if (res.status === 200) expect(res.headers['ratelimit-policy']).toBe('"hour";q=3;w=3600');
      }
      expect(statuses).toEqual([200, 200, 200, 429]);
    }
    // anyone else: `burst` (1 per minute) holds
    expect([
      (await from(http, '192.0.2.1', '/pacl/login')).status,
      (await from(http, '192.0.2.1', '/pacl/login')).status,
    ]).toEqual([200, 429]);
    // the same address on a route whose policy has no allow list is limited as usual
    expect([
      (await from(http, '203.0.113.9', '/pacl/open')).status,
      (await from(http, '203.0.113.9', '/pacl/open')).status,
    ]).toEqual([200, 429]);
    // a route whose every policy allows the tracker: not counted at all, no headers
    for (let i = 0; i < 3; i++) {
      const res = await from(http, '10.9.1.1', '/pacl/both');
      expect([res.status, res.headers['ratelimit-policy']]).toEqual([200, undefined]);
    }
  });

  it("a policy's denyList refuses with 403 on its routes only, whatever the User-Agent or the module allowList", async () => {
    const http = await start(platform, { allowList: ['198.51.100.7'] });
    for (const ip of ['198.51.100.7', '198.51.100.200', '2001:db8:bad:1::5']) {
      const res = await from(http, ip, '/pacl/login').set('User-Agent', 'friendly-bot/1.0');
      expect([res.status, res.body.message, res.headers['retry-after'], res.headers.ratelimit]).toEqual([
        403,
        'Forbidden',
        undefined,
        undefined,
      ]);
    }
    // routes without that policy: the module allowList lets 198.51.100.7 through uncounted; its neighbour is limited
    for (let i = 0; i < 3; i++) expect((await from(http, '198.51.100.7', '/pacl/open')).status).toBe(200);
    expect([
      (await from(http, '198.51.100.8', '/pacl/open')).status,
      (await from(http, '198.51.100.8', '/pacl/open')).status,
    ]).toEqual([200, 429]);
    // a policy skipped by @SkipThrottle({ hour: true }) does not refuse either
    expect((await from(http, '198.51.100.9', '/pacl/skip-hour')).status).toBe(200);
  });

  it('the module-wide lists still apply to routes with per-policy lists', async () => {
    const http = await start(platform, { allowList: ['192.0.2.77'], denyList: ['192.0.2.66'] });
    expect((await from(http, '192.0.2.66', '/pacl/login')).status).toBe(403);
    for (let i = 0; i < 5; i++) {
      const res = await from(http, '192.0.2.77', '/pacl/login');
      expect([res.status, res.headers['ratelimit-policy']]).toEqual([200, undefined]);
    }
  });
});

describe('per-policy allowList / denyList are checked when @Throttle runs', () => {
  it.each([
    [
      [{ limit: 1, ttl: 1_000, name: 'login', allowList: ['10.0.0.0/33'] }],
      '@Throttle policy 1 ("login").allowList[0]',
    ],
    [
      [
        { limit: 1, ttl: 1_000 },
        { limit: 5, ttl: 60_000, name: 'hour', denyList: ['192.0.2.1', '300.1.2.3'] },
      ],
      '@Throttle policy 2 ("hour").denyList[1]',
    ],
    [[{ limit: 1, ttl: 1_000, denyList: ['2001:db8::/129'] }], '@Throttle policy 1.denyList[0]'],
    [[{ limit: 1, ttl: 1_000, allowList: '10.0.0.0/8' as unknown as string[] }], '@Throttle policy 1.allowList'],
    [[{ limit: 1, ttl: 1_000, allowList: [''] }], '@Throttle policy 1.allowList[0]'],
  ])('%j is refused with InvalidOptionsError naming %s', (policies, path) => {
    let failed: unknown;
    try {
      Throttle(...policies);
    } catch (err) {
      failed = err;
    }
    expect(failed).toBeInstanceOf(InvalidOptionsError);
    expect((failed as Error).message).toContain(path);
  });
});
