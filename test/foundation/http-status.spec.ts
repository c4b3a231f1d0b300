import 'reflect-metadata';
import { randomUUID } from 'node:crypto';
import { Controller, Get, Post, Req, Res, UseGuards } from '@nestjs/common';
import request from 'supertest';
import {
  CacheService,
  type CookieResponse,
  CurrentSession,
  LockService,
  RateLimitService,
  RedisToolkitError,
  SessionGuard,
  type SessionRequest,
  SessionService,
} from '../../lib/index.js';
import { signCookieValue } from '../../lib/advanced.js';
import { usePrivateRedis } from '../support/private-servers.js';
import { closeToolkitApps, createToolkitApp, PLATFORMS } from '../support/toolkit-app.js';

/**
 * A toolkit error thrown from a route handler is answered with the HTTP status it stands for, through Nest's default
 * exception filter (the "http-errors" shape: `status`, `statusCode`, `expose`), with the status's standard text: a
 * session destroyed while its request ran was a 500, so was a busy lock, a refused rate limit, a loader past its hard
 * timeout and Redis down.
 */
afterEach(closeToolkitApps);

const SECRET = 'http-status-secret-of-at-least-32-characters';
const held = { resource: '' };

@Controller()
class StatusController {
  constructor(
    private readonly sessions: SessionService,
    private readonly locks: LockService,
    private readonly rateLimit: RateLimitService,
    private readonly cache: CacheService,
  ) {}

  @Post('login')
  async login(@Req() req: SessionRequest, @Res({ passthrough: true }) res: CookieResponse) {
    const session = await this.sessions.create('alice');
    this.sessions.writeCookie(res, session, req);
    return { id: session.id };
  }

  /** A logout in another tab, between the guard and the handler's write: the race, made certain. */
  @Get('raced')
  @UseGuards(SessionGuard)
  async raced(@CurrentSession('id') id: string) {
    await this.sessions.destroy(id);
    return this.sessions.update(id, { seen: true });
  }

  @Get('busy')
  async busy() {
    const lock = await this.locks.acquire(held.resource, { waitMs: 0 });
    await lock.release();
    return 'acquired';
  }

  @Get('limited')
  async limited() {
    await this.rateLimit.consumeOrThrow(`status:${held.resource}`, { limit: 1, ttl: 60_000 });
    return 'allowed';
  }

  @Get('hung')
  hung() {
    return this.cache.getOrSet(`hung:${randomUUID()}`, () => new Promise<string>(() => undefined), {
      hardTimeout: 50,
    });
  }

  @Get('down')
  down() {
    return this.sessions.get('x'.repeat(43));
  }
}

describe.each(PLATFORMS)('toolkit errors thrown from a route handler on %s', (platform) => {
  const redis = usePrivateRedis();

  it('are answered with the status each stands for and its standard text, never the message', async () => {
    const app = await createToolkitApp({
      target: { url: redis.server.url },
      http: true,
      platform,
      keyPrefix: `rtk-status-${randomUUID().slice(0, 8)}:`,
      session: { cookie: { secret: SECRET } },
      controllers: [StatusController],
    });
    const http = request(app.app.getHttpServer());
    held.resource = `busy:${randomUUID()}`;
    const lock = await app.get(LockService).acquire(held.resource, { ttl: 60_000 });

    const login = await http.post('/login').expect(201);
    const cookie = `rtk.sid=${encodeURIComponent(signCookieValue(login.body.id, SECRET))}`;
    const raced = await http.get('/raced').set('Cookie', cookie);
    expect([raced.status, raced.body]).toEqual([401, { statusCode: 401, message: 'Unauthorized' }]);

    const busy = await http.get('/busy');
    expect([busy.status, busy.body]).toEqual([409, { statusCode: 409, message: 'Conflict' }]);
    await lock.release();
    expect((await http.get('/busy')).status).toBe(200);

    expect((await http.get('/limited')).status).toBe(200);
    const limited = await http.get('/limited');
    expect([limited.status, limited.body]).toEqual([429, { statusCode: 429, message: 'Too Many Requests' }]);

    const hung = await http.get('/hung');
    expect([hung.status, hung.body]).toEqual([504, { statusCode: 504, message: 'Gateway Timeout' }]);

    await redis.server.stop();
    const down = await http.get('/down');
    // the message names Redis's address: only logged, never sent
    expect([down.status, down.body]).toEqual([503, { statusCode: 503, message: 'Service Unavailable' }]);
    await redis.server.restart();
  });

  it('a toolkit error without an HTTP meaning carries no status: a 500, as before', () => {
    const plain = new RedisToolkitError('x');
    expect(['status' in plain, 'statusCode' in plain, 'expose' in plain]).toEqual([false, false, false]);
  });
});
