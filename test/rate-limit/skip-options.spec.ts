import 'reflect-metadata';
import { Controller, Get, UseGuards } from '@nestjs/common';
import { randomUUID } from 'node:crypto';
import request from 'supertest';
import { InvalidOptionsError, RateLimitGuard, SkipThrottle, Throttle } from '../../lib/index.js';
import { PingController } from '../support/rate-limit-http.js';
import { closeToolkitApps, createToolkitApp, PLATFORMS } from '../support/toolkit-app.js';

afterEach(() => closeToolkitApps());

describe.each(PLATFORMS)('skipIf, ignoreUserAgents, errorMessage (%s)', (platform) => {
  it('skips what skipIf or ignoreUserAgents name, uncounted; refuses the rest with the configured message', async () => {
    const app = await createToolkitApp({
      platform,
      http: true,
      keyPrefix: `rtk-${randomUUID().slice(0, 8)}:`,
      controllers: [PingController],
      rateLimit: {
        skipIf: (ctx) =>
          ctx.switchToHttp().getRequest<{ headers: Record<string, string> }>().headers['x-internal'] === '1',
        ignoreUserAgents: [/googlebot/i],
        errorMessage: (_ctx, retryAfterMs) => `slow down (${retryAfterMs > 0 ? 'retry later' : 'now'})`,
      },
    });
    const server = app.app.getHttpServer();
    const statuses: number[] = [];
    for (let i = 0; i < 3; i++) statuses.push((await request(server).get('/ping').set('x-internal', '1')).status);
    for (let i = 0; i < 3; i++)
      statuses.push((await request(server).get('/ping').set('user-agent', 'Googlebot/2.1')).status);
    statuses.push((await request(server).get('/ping')).status); // the first counted request: nothing was charged before
    const refused = await request(server).get('/ping');
    statuses.push(refused.status);
    expect(statuses).toEqual([200, 200, 200, 200, 200, 200, 200, 429]);
    expect(refused.body.message).toBe('slow down (retry later)');
  });
});

describe.each(PLATFORMS)('ignoreUserAgents with a global or sticky pattern (%s)', (platform) => {
  it('skips every request it matches: /bot/g keeps no lastIndex from one request to the next', async () => {
    const app = await createToolkitApp({
      platform,
      http: true,
      keyPrefix: `rtk-${randomUUID().slice(0, 8)}:`,
      controllers: [PingController],
      rateLimit: { ignoreUserAgents: [/bot/gi, /^crawler/y] },
    });
    const server = app.app.getHttpServer();
    const statuses: number[] = [];
    for (const agent of ['Googlebot/2.1', 'Bingbot', 'crawler/1', 'crawler/2', 'Googlebot/2.1', 'crawler/3'])
      statuses.push((await request(server).get('/ping').set('user-agent', agent)).status);
    // before: every other match was counted (RegExp#test of a g/y pattern starts at its lastIndex), so 429s
    expect(statuses).toEqual([200, 200, 200, 200, 200, 200]);
    expect((await request(server).get('/ping').set('user-agent', 'curl')).status).toBe(200);
    expect((await request(server).get('/ping').set('user-agent', 'curl')).status).toBe(429);
  });
});

it('refuses a misspelled skipIf / ignoreUserAgents / errorMessage at startup', async () => {
  await expect(
    createToolkitApp({ rateLimit: { ignoreUserAgents: ['googlebot'] as unknown as RegExp[] } }),
  ).rejects.toThrow(InvalidOptionsError);
  await expect(createToolkitApp({ rateLimit: { errorMessage: 42 as unknown as string } })).rejects.toThrow(
    /rateLimit.errorMessage/,
  );
});

@Controller()
@UseGuards(RateLimitGuard)
@Throttle({ name: 'short', limit: 1, ttl: 60_000 }, { name: 'long', limit: 2, ttl: 60_000 })
class NamedController {
  @Get('a')
  @SkipThrottle({ short: true })
  a(): string {
    return 'a';
  }
}

it('@SkipThrottle({ short: true }) skips only the policy named short', async () => {
  const app = await createToolkitApp({
    http: true,
    keyPrefix: `rtk-${randomUUID().slice(0, 8)}:`,
    controllers: [NamedController],
  });
  const statuses: number[] = [];
  for (let i = 0; i < 3; i++) statuses.push((await request(app.app.getHttpServer()).get('/a')).status);
  expect(statuses).toEqual([200, 200, 429]); // short (1) skipped, long (2) applies
});
