import 'reflect-metadata';
import { Body, Controller, HttpCode, Post, UnauthorizedException, UseGuards } from '@nestjs/common';
import { randomUUID } from 'node:crypto';
import request from 'supertest';
import { RateLimitGuard, RateLimitService, Throttle } from '../../lib/index.js';
import { closeToolkitApps, createToolkitApp, PLATFORMS } from '../support/toolkit-app.js';
import { sleep } from '../support/wait.js';

@Controller()
@UseGuards(RateLimitGuard)
class LoginController {
  @Post('login')
  @HttpCode(200)
  @Throttle({ limit: 3, ttl: 60_000, skipSuccessfulRequests: true })
  login(@Body() body: { password?: string }): { ok: true } {
    if (body.password !== 'right') throw new UnauthorizedException();
    return { ok: true };
  }

  @Post('upload')
  @HttpCode(200)
  @Throttle({ limit: 2, ttl: 60_000, skipFailedRequests: true })
  upload(@Body() body: { fail?: boolean }): { ok: true } {
    if (body.fail) throw new UnauthorizedException();
    return { ok: true };
  }
}

afterEach(() => closeToolkitApps());

describe.each(PLATFORMS)('skipSuccessfulRequests / skipFailedRequests over HTTP (%s)', (platform) => {
  it('a failed login is charged, a successful one refunded; skipFailedRequests the other way round', async () => {
    const app = await createToolkitApp({
      platform,
      http: true,
      keyPrefix: `rtk-${randomUUID().slice(0, 8)}:`,
      controllers: [LoginController],
    });
    const server = app.app.getHttpServer();
    const login = async (password: string) => {
      const r = await request(server).post('/login').send({ password });
      await sleep(50); // the refund is sent when the response finishes
      return r.status;
    };
    const statuses: number[] = [];
    for (let i = 0; i < 6; i++) statuses.push(await login('right'));
    expect(statuses).toEqual([200, 200, 200, 200, 200, 200]); // 6 successes against a limit of 3: all refunded
    const failures: number[] = [];
    for (let i = 0; i < 4; i++) failures.push(await login('wrong'));
    expect(failures).toEqual([401, 401, 401, 429]); // 3 failures charged, the 4th attempt refused
    expect(await login('right')).toBe(429); // locked out now, even with the right password

    const upload = async (fail: boolean) => {
      const r = await request(server).post('/upload').send({ fail });
      await sleep(50);
      return r.status;
    };
    const uploads: number[] = [];
    for (const fail of [true, true, true, false, false, false]) uploads.push(await upload(fail));
    expect(uploads).toEqual([401, 401, 401, 200, 200, 429]);
    expect(app.get(RateLimitService).stats()).toMatchObject({ denied: 3 });
  });
});

describe.each(['single', 'cluster'] as const)('reward / penalty on %s', (target) => {
  it.each(['sliding-window', 'fixed-window', 'token-bucket'] as const)(
    '%s: reward gives units back, penalty takes them',
    async (algorithm) => {
      const rl = (await createToolkitApp({ target, keyPrefix: `rtk-${randomUUID().slice(0, 8)}:` })).get(
        RateLimitService,
      );
      const key = randomUUID();
      const policy = { limit: 5, ttl: 60_000, algorithm };
      for (let i = 0; i < 5; i++) expect((await rl.consume(key, policy)).allowed).toBe(true);
      expect((await rl.consume(key, policy)).allowed).toBe(false);
      expect(await rl.reward(key, 2, policy)).toBe(2);
      const after = [await rl.consume(key, policy), await rl.consume(key, policy), await rl.consume(key, policy)];
      expect(after.map((r) => r.allowed)).toEqual([true, true, false]);
      const fresh = randomUUID();
      expect(await rl.penalty(fresh, 4, policy)).toBe(1);
      expect((await rl.consume(fresh, policy)).allowed).toBe(true);
      expect((await rl.consume(fresh, policy)).allowed).toBe(false);
    },
  );
});
