/**
 * The sample's GET /metrics (OTel Prometheus exporter fed by RedisToolkitInstrumentation) and GET /health/ready
 * (@nestjs/terminus with RedisToolkitHealthIndicator), on Express and on Fastify.
 */
import 'reflect-metadata';
import type { INestApplication } from '@nestjs/common';
import { randomBytes } from 'node:crypto';
import request from 'supertest';
import { createSampleApp, samplePlatform } from '../../sample/bootstrap.js';
import { sharedServers } from '../support/shared-servers.js';
import { PLATFORMS } from '../support/toolkit-app.js';

let app: INestApplication | undefined;
const saved = { REDIS_URL: process.env.REDIS_URL, REDIS_KEY_PREFIX: process.env.REDIS_KEY_PREFIX };

afterEach(async () => {
  await app?.close();
  app = undefined;
  for (const [name, value] of Object.entries(saved)) {
    if (value === undefined) delete process.env[name];
    else process.env[name] = value;
  }
});

/** `name{labels} value` lines of the exposition, as name → [labels, value][]. */
function samples(text: string): Map<string, [string, number][]> {
  const out = new Map<string, [string, number][]>();
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? ([^ ]+)/.exec(line);
    if (!m) continue;
    out.set(m[1], [...(out.get(m[1]) ?? []), [m[2] ?? '', Number(m[3])]]);
  }
  return out;
}

describe.each(PLATFORMS)('the sample on %s: /metrics and /health/ready', (platform) => {
  it('after traffic, /metrics has the toolkit metrics with their labels; /health/ready is up', async () => {
    process.env.REDIS_URL = sharedServers().single.url;
    process.env.REDIS_KEY_PREFIX = `rtk-so${randomBytes(4).toString('hex')}:`;
    app = await createSampleApp(samplePlatform(platform), { logger: ['error'] });
    await app.init();
    if (platform === 'fastify') await app.getHttpAdapter().getInstance().ready();
    const http = request(app.getHttpServer());
    await http.get('/products/1').expect(200);
    await http.get('/products/1').expect(200);
    const login = await http.post('/auth/login').send({ username: 'alice' }).expect(200);
    const cookie = (login.headers['set-cookie'] as unknown as string[]).map((c) => c.split(';')[0]).join('; ');
    await http.post('/auth/logout').set('Cookie', cookie).expect(200);

    const scrape = await http.get('/metrics').expect(200);
    expect(scrape.headers['content-type']).toMatch(/^text\/plain; version=0\.0\.4/);
    const m = samples(scrape.text);
    const hits = m.get('rtk_cache_requests_total') ?? [];
    expect(hits.find(([l]) => l.includes('outcome="miss"'))?.[1]).toBeGreaterThanOrEqual(1);
    expect(hits.find(([l]) => l.includes('outcome="hit"'))?.[1]).toBeGreaterThanOrEqual(1);
    expect(m.get('rtk_cache_load_duration_count')?.[0][1]).toBeGreaterThanOrEqual(1);
    const decisions = m.get('rtk_ratelimit_decisions_total') ?? [];
    expect(decisions.some(([l, v]) => /policy="[^"]+"/.test(l) && l.includes('outcome="allowed"') && v >= 1)).toBe(
      true,
    );
    expect(m.get('rtk_sessions_active')?.[0][1]).toBe(0); // one login, one logout
    expect(m.get('rtk_pubsub_messages_total')?.some(([l]) => l.includes('direction="out"'))).toBe(true);
    expect(m.get('rtk_redis_command_duration_count')?.length).toBeGreaterThanOrEqual(1);
    // durations are in seconds, with second-scale buckets (not the SDK's default 0 … 10000)
    expect(m.get('rtk_redis_command_duration_bucket')?.some(([l]) => l.includes('le="0.005"'))).toBe(true);

    const ready = await http.get('/health/ready').expect(200);
    expect(ready.body).toMatchObject({
      status: 'ok',
      info: { redis: { status: 'up', connections: { default: { status: 'up' } } } },
    });
  });
});
