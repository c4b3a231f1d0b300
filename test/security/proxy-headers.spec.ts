/**
 * The two proxy set-ups that make the rate limiter a global one without a word: the app behind a proxy with
 * `trustProxy` off (every client is the proxy's address: one counter for everybody), and a trusted proxy that names
 * the client in `Forwarded` or `X-Real-IP`, which the guard does not read, instead of `X-Forwarded-For` (the same).
 * The guard keeps its behaviour (headers a client may forge are never believed) and says so once, in a warning
 * naming the remedy, as express-rate-limit's validations do (ERR_ERL_UNEXPECTED_X_FORWARDED_FOR,
 * ERR_ERL_FORWARDED_HEADER).
 */
import 'reflect-metadata';
import { Controller, Get, UseGuards } from '@nestjs/common';
import { randomBytes } from 'node:crypto';
import request from 'supertest';
import { RateLimitGuard, Throttle, type RateLimitOptions } from '../../lib/index.js';
import { recordingLogger } from '../support/recording-logger.js';
import { PLATFORMS, closeToolkitApps, createToolkitApp, type Platform } from '../support/toolkit-app.js';

afterEach(closeToolkitApps);

@Controller('proxied')
@UseGuards(RateLimitGuard)
class ProxiedController {
  @Get()
  @Throttle({ limit: 2, ttl: 60_000 })
  get(): { ok: true } {
    return { ok: true };
  }
}

async function start(platform: Platform, rateLimit: RateLimitOptions) {
  const log = recordingLogger();
  const app = await createToolkitApp({
    platform,
    http: true,
    keyPrefix: `rtk-px-${randomBytes(4).toString('hex')}:`,
    rateLimit,
    controllers: [ProxiedController],
    logger: log.logger,
  });
  return { http: request(app.app.getHttpServer()), log };
}

const proxyWarnings = (warnings: string[]): string[] => warnings.filter((w) => /^RateLimitGuard: /.test(w));

describe.each(PLATFORMS)('proxy headers the guard does not believe, on %s', (platform) => {
  it('X-Forwarded-For without trustProxy: one warning naming trustProxy; the socket address is still the client', async () => {
    const { http, log } = await start(platform, {});
    await http.get('/proxied').expect(200); // no header: nothing to say
    expect(proxyWarnings(log.warnings)).toEqual([]);
    await http.get('/proxied').set('X-Forwarded-For', '203.0.113.7').expect(200);
    // another forwarded client is the same socket address: the limit of 2 is everybody's
    await http.get('/proxied').set('X-Forwarded-For', '203.0.113.8').expect(429);
    await http.get('/proxied').set('X-Forwarded-For', '203.0.113.9').expect(429);
    const warnings = proxyWarnings(log.warnings);
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toContain('X-Forwarded-For');
    expect(warnings[0]).toContain('rateLimit.trustProxy');
    expect(warnings[0]).toContain('127.0.0.1');
    expect(warnings[0]).not.toContain('203.0.113'); // what the client wrote is not repeated in the log
  });

  it.each([
    ['Forwarded', 'for=203.0.113.7;proto=https'],
    ['X-Real-IP', '203.0.113.7'],
  ])('trustProxy and a trusted proxy sending only %s: one warning naming it', async (header, value) => {
    const { http, log } = await start(platform, { trustProxy: true });
    await http.get('/proxied').set(header, value).expect(200);
    // the guard reads X-Forwarded-For only: every client of that proxy is the proxy
    await http.get('/proxied').set(header, value.replace('.7', '.8')).expect(200);
    await http.get('/proxied').set(header, value.replace('.7', '.9')).expect(429);
    const warnings = proxyWarnings(log.warnings);
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toContain(header);
    expect(warnings[0]).toContain('X-Forwarded-For');
    expect(warnings[0]).toContain('127.0.0.1');
    expect(warnings[0]).not.toContain('203.0.113');
  });

  it('no warning when the proxy is trusted and sends X-Forwarded-For, nor for a hop-count proxy that does', async () => {
    for (const trustProxy of [true, 1] as const) {
      const { http, log } = await start(platform, { trustProxy });
      await http.get('/proxied').set('X-Forwarded-For', '203.0.113.7').set('X-Real-IP', '203.0.113.7').expect(200);
      await http.get('/proxied').set('X-Forwarded-For', '203.0.113.8').set('Forwarded', 'for=203.0.113.8').expect(200);
      await http.get('/proxied').expect(200); // a direct request from the proxy's address (a health check)
      expect(proxyWarnings(log.warnings)).toEqual([]);
    }
  });
});
