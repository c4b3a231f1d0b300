/**
 * The sample app as `npm start` builds it (sample/bootstrap.ts, which sample/main.ts calls with PLATFORM), on
 * Express and on Fastify: login → /me → logout (the old cookie then gets 401), the cache's X-Cache header, the
 * notifications gateway (socket.io on the platform's server) with the session cookie, and a wrong PLATFORM.
 */
import 'reflect-metadata';
import type { INestApplication } from '@nestjs/common';
import { randomBytes } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import request from 'supertest';
import { createSampleApp, samplePlatform } from '../../sample/bootstrap.js';
import { closeClients, connectClient } from '../support/pubsub-gateway.js';
import { sharedServers } from '../support/shared-servers.js';
import { PLATFORMS } from '../support/toolkit-app.js';
import { waitFor } from '../support/wait.js';

let app: INestApplication | undefined;
const saved = { REDIS_URL: process.env.REDIS_URL, REDIS_KEY_PREFIX: process.env.REDIS_KEY_PREFIX };

afterEach(async () => {
  closeClients();
  await app?.close();
  app = undefined;
  for (const [name, value] of Object.entries(saved)) {
    if (value === undefined) delete process.env[name];
    else process.env[name] = value;
  }
});

function sessionPair(setCookie: unknown): string {
  const list = Array.isArray(setCookie) ? (setCookie as string[]) : [];
  const found = list.find((c) => c.startsWith('rtk.sid='));
  if (!found) throw new Error(`no session cookie in ${JSON.stringify(setCookie)}`);
  return found.split(';')[0];
}

describe.each(PLATFORMS)('the sample on %s', (platform) => {
  async function boot(): Promise<{ http: ReturnType<typeof request>; url: string }> {
    process.env.REDIS_URL = sharedServers().single.url;
    process.env.REDIS_KEY_PREFIX = `rtk-sp${randomBytes(4).toString('hex')}:`;
    app = await createSampleApp(samplePlatform(platform), { logger: ['error'] });
    await app.listen(0, '127.0.0.1');
    const { port } = app.getHttpServer().address() as AddressInfo;
    return { http: request(app.getHttpServer()), url: `http://127.0.0.1:${port}` };
  }

  it('login → /me → logout; the old cookie then gets 401; a second login drops the first session', async () => {
    const { http } = await boot();
    expect(app?.getHttpAdapter().getType()).toBe(platform);
    const login = await http.post('/auth/login').send({ username: 'alice' }).expect(200);
    const pair = sessionPair(login.headers['set-cookie']);
    expect((await http.get('/me').set('Cookie', pair).expect(200)).body.userId).toBe('alice');
    expect((await http.post('/auth/logout').set('Cookie', pair).expect(200)).body).toEqual({ loggedOut: true });
    await http.get('/me').set('Cookie', pair).expect(401);

    const first = sessionPair(
      (await http.post('/auth/login').send({ username: 'bob' }).expect(200)).headers['set-cookie'],
    );
    const second = sessionPair(
      (await http.post('/auth/login').set('Cookie', first).send({ username: 'bob' }).expect(200)).headers['set-cookie'],
    );
    expect(second).not.toBe(first);
    await http.get('/me').set('Cookie', first).expect(401);
    await http.get('/me').set('Cookie', second).expect(200);
  });

  it('login rate limit counts only failed logins: successes are refunded, the 6th failure is refused', async () => {
    const { http } = await boot();
    const statuses: number[] = [];
    for (let i = 0; i < 7; i++) {
      statuses.push((await http.post('/auth/login').send({ username: `user${i}` })).status);
      await new Promise((r) => setTimeout(r, 50)); // the refund is sent when the response finishes
    }
    for (let i = 0; i < 6; i++) statuses.push((await http.post('/auth/login').send({ username: '' })).status);
    expect(statuses).toEqual([200, 200, 200, 200, 200, 200, 200, 400, 400, 400, 400, 400, 429]);
  });

  it('serves /products with X-Cache and rate-limit headers, and the page', async () => {
    const { http } = await boot();
    const miss = await http.get('/products').expect(200);
    expect(miss.headers['x-cache']).toBe('MISS');
    expect(miss.headers['ratelimit-policy']).toBe('"default";q=100;w=60');
    expect((await http.get('/products').expect(200)).headers['x-cache']).toBe('HIT');
    expect((await http.get('/').expect(200)).headers['content-type']).toMatch(/^text\/html/);
  });

  it('the notifications gateway runs on the same server and authenticates with the session cookie', async () => {
    const { http, url } = await boot();
    const pair = sessionPair(
      (await http.post('/auth/login').send({ username: 'carol' }).expect(200)).headers['set-cookie'],
    );
    const client = await connectClient(url, {}, '/notifications', { cookie: pair });
    expect(await client.subscribe('user:carol')).toEqual({ ok: true });
    const sent = await http.post('/notifications/send').set('Cookie', pair).send({ to: 'carol', text: 'hi' });
    expect(sent.status).toBe(202);
    expect(await waitFor(() => client.got.length === 1, 5_000)).toBe(true);
    expect(client.got[0]).toMatchObject({ channel: 'user:carol', data: { from: 'carol', text: 'hi' } });
  });
});

describe('PLATFORM', () => {
  it('defaults to express and refuses anything but express or fastify, naming both', () => {
    expect(samplePlatform(undefined)).toBe('express');
    expect(samplePlatform('')).toBe('express');
    expect(samplePlatform('fastify')).toBe('fastify');
    expect(() => samplePlatform('koa')).toThrow('PLATFORM must be "express" or "fastify", got "koa"');
  });
});
