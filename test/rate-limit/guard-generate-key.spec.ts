/**
 * What a generateKey override gives (arguments-everywhere-2.hostile holds the same through its HostileHooksGuard):
 * a scope that is not a string is refused by the guard itself, naming the hook and the policy, before the scope is
 * hashed (where 42, an object or an array were a bare TypeError of node:crypto, naming neither); undefined is the
 * unscoped counter, as for the service. Never let through.
 */
import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import type { Server } from 'node:http';
import { Controller, Get, Injectable, UseGuards } from '@nestjs/common';
import request from 'supertest';
import { RateLimitGuard, Throttle } from '../../lib/index.js';
import { recordingLogger } from '../support/recording-logger.js';
import { bootLoggedHttpApp } from '../support/rate-limit-http.js';
import { closeToolkitApps, PLATFORMS } from '../support/toolkit-app.js';

const given: { scope: unknown; tracker: string } = { scope: 's', tracker: 't' };

@Injectable()
class ScopeHookGuard extends RateLimitGuard {
  protected override async getTracker(): Promise<string> {
    return given.tracker;
  }
  protected override generateKey(): string {
    return given.scope as string;
  }
}

@Controller('gk')
class ScopedController {
  @Get()
  @UseGuards(ScopeHookGuard)
  @Throttle({ name: 'per-user', limit: 2, ttl: 60_000 })
  route(): string {
    return 'ok';
  }
}

afterAll(() => closeToolkitApps());

describe.each(PLATFORMS)('a generateKey override on %s', (platform) => {
  let http: Server;
  let log: ReturnType<typeof recordingLogger>;
  beforeAll(async () => {
    ({ log, http } = await bootLoggedHttpApp(platform, 'gk', {
      controllers: [ScopedController],
      providers: [ScopeHookGuard],
    }));
  });

  it.each([
    ['42', 42, '42'],
    ['an object', { a: 1 }, '{"a":1}'],
    ['an array', ['a'], 'an array'],
    ['null', null, 'null'],
    ['true', true, 'true'],
  ])('giving %s: a 500 whose log names the hook, the policy and the value; never a TypeError', async (_l, v, shown) => {
    given.tracker = `gk-${platform}-${randomBytes(3).toString('hex')}`;
    given.scope = v;
    const before = log.errors.length;
    const codes = [];
    for (let i = 0; i < 3; i++) codes.push((await request(http).get('/gk').timeout(3_000)).status);
    expect(codes).toEqual([500, 500, 500]);
    const logged = log.errors.slice(before).join('\n');
    expect(logged).toContain(
      `ScopeHookGuard.generateKey for rate-limit policy "per-user": scope must be a string, got ${shown}`,
    );
    expect(logged).not.toMatch(/argument must be of type/);
  });

  it('then a string scope for the same tracker: limited exactly (the refused calls charged nothing)', async () => {
    given.tracker = `gk-after-${platform}-${randomBytes(3).toString('hex')}`;
    given.scope = 42;
    for (let i = 0; i < 3; i++) await request(http).get('/gk').timeout(3_000);
    given.scope = 'scope';
    const codes = [];
    for (let i = 0; i < 3; i++) codes.push((await request(http).get('/gk').timeout(3_000)).status);
    expect(codes).toEqual([200, 200, 429]);
  });

  it('giving undefined: the unscoped counter, limited exactly', async () => {
    given.tracker = `gk-undef-${platform}-${randomBytes(3).toString('hex')}`;
    given.scope = undefined;
    const codes = [];
    for (let i = 0; i < 3; i++) codes.push((await request(http).get('/gk').timeout(3_000)).status);
    expect(codes).toEqual([200, 200, 429]);
  });
});
