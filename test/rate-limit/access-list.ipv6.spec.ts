/**
 * The guard tracks an IPv6 client by its `ipv6Subnet` network (`2001:db8:0:0::/64`), and the allow and deny lists are
 * matched against that tracker's first address: an IPv6 entry narrower than the grouping matched, without a word,
 * none of the clients it names (`2001:db8::bad` in a deny list, `::1` in an allow list) or their whole network
 * (`2001:db8::/96`). It is refused at start, naming the network to list.
 */
import 'reflect-metadata';
import { Controller, Get, UseGuards, type Type } from '@nestjs/common';
import { randomUUID } from 'node:crypto';
import type { Server } from 'node:http';
import request from 'supertest';
import { InvalidOptionsError, RateLimitGuard, Throttle, type RateLimitOptions } from '../../lib/index.js';
import { errorOf } from '../support/errors.js';
import { PLATFORMS, closeToolkitApps, createToolkitApp, type Platform } from '../support/toolkit-app.js';

afterEach(closeToolkitApps);

@Controller('v6')
@UseGuards(RateLimitGuard)
class V6Controller {
  @Get()
  @Throttle({ limit: 5, ttl: 60_000 })
  get(): string {
    return 'ok';
  }
}

@Controller('v6-policy')
@UseGuards(RateLimitGuard)
class V6PolicyController {
  @Get()
  @Throttle({ name: 'login', limit: 5, ttl: 60_000, denyList: ['2001:db8::bad'] })
  login(): string {
    return 'ok';
  }
}

async function start(platform: Platform, rateLimit: RateLimitOptions, controllers: Type<unknown>[]) {
  const app = await createToolkitApp({
    platform,
    http: true,
    keyPrefix: `rtk-${randomUUID().slice(0, 8)}:`,
    // the test client comes through the loopback proxy: X-Forwarded-For names it
    rateLimit: { trustProxy: true, ...rateLimit },
    controllers,
  });
  return app.app.getHttpServer() as Server;
}

const from = (http: Server, ip: string, path = '/v6') => request(http).get(path).set('X-Forwarded-For', ip);

describe.each(PLATFORMS)('IPv6 entries of the allow and deny lists on %s', (platform) => {
  it('a module list entry narrower than ipv6Subnet fails the start, naming it and its /64', async () => {
    const err = await errorOf(() => start(platform, { denyList: ['198.51.100.7', '2001:db8::bad'] }, [V6Controller]));
    expect(err).toBeInstanceOf(InvalidOptionsError);
    const message = (err as Error).message;
    expect(message).toContain('rateLimit.denyList[1]');
    expect(message).toContain('2001:db8::bad');
    expect(message).toContain('2001:db8:0:0::/64');
    expect(message).toContain('ipv6Subnet');
    expect(message).not.toContain('denyList[0]');

    const allow = await errorOf(() =>
      start(platform, { allowList: ['127.0.0.1', '::1', '2001:db8::/96'] }, [V6Controller]),
    );
    expect(allow).toBeInstanceOf(InvalidOptionsError);
    expect((allow as Error).message).toContain('rateLimit.allowList[1]');
    expect((allow as Error).message).toContain('rateLimit.allowList[2]');
    expect((allow as Error).message).not.toContain('allowList[0]');
  });

  it('a @Throttle list entry narrower than ipv6Subnet fails the start, naming the handler', async () => {
    const err = await errorOf(() => start(platform, {}, [V6PolicyController]));
    expect(err).toBeInstanceOf(InvalidOptionsError);
    expect((err as Error).message).toContain('V6PolicyController.login: @Throttle policy 1 ("login").denyList[0]');
    expect((err as Error).message).toContain('2001:db8:0:0::/64');
  });

  it('with ipv6Subnet: 128 single addresses are trackers and match; a /64 entry matches its clients by default', async () => {
    const exact = await start(platform, { ipv6Subnet: 128, denyList: ['2001:db8::bad'] }, [V6PolicyController]);
    expect((await from(exact, '2001:db8::bad', '/v6-policy')).status).toBe(403);
    expect((await from(exact, '2001:db8::bad:1', '/v6-policy')).status).toBe(200);

    const grouped = await start(platform, { denyList: ['2001:db8:0:0::/64', '::ffff:198.51.100.7'] }, [V6Controller]);
    expect((await from(grouped, '2001:db8::bad')).status).toBe(403);
    expect((await from(grouped, '2001:db8::1:2')).status).toBe(403);
    // an IPv4-mapped entry is the IPv4 client it names (trackers unwrap it), not narrower than a /64
    expect((await from(grouped, '198.51.100.7')).status).toBe(403);
    expect((await from(grouped, '2001:db8:1::1')).status).toBe(200);
  });
});
