/**
 * The dashboard from an attacker's and an outsider's side: who reaches it, what its answers let a browser do with them
 * (sniffing, framing, caching), hostile methods and query strings, and a stream whose first event is large.
 */
import 'reflect-metadata';
import diagnosticsChannel from 'node:diagnostics_channel';
import { randomBytes } from 'node:crypto';
import { connect } from 'node:net';
import type { AddressInfo } from 'node:net';
import {
  DashboardService,
  RedisToolkitDashboardModule,
  type RedisToolkitDashboardOptions,
} from '../../lib/dashboard/index.js';
import { CacheService, LockService, PubSubService, RateLimitService } from '../../lib/index.js';
import { REDIS_TOOLKIT_CHANNELS } from '../../lib/advanced.js';
import { startRedisServer } from '../../lib/testing/index.js';
import { OperatorGuard } from '../support/dashboard-guards.js';
import { closeToolkitApps, createToolkitApp, PLATFORMS, type Platform } from '../support/toolkit-app.js';

afterEach(() => closeToolkitApps());

async function dashboardApp(platform: Platform, options: RedisToolkitDashboardOptions, url?: string) {
  const app = await createToolkitApp({
    ...(url !== undefined && { target: { url } }),
    keyPrefix: `rtk-dash-hostile-${randomBytes(4).toString('hex')}:`,
    imports: [RedisToolkitDashboardModule.register({ intervalMs: 60_000, ...options })],
    http: true,
    platform,
  });
  const { port } = app.app.getHttpServer().address() as AddressInfo;
  return { app, url: `http://127.0.0.1:${port}`, dashboard: app.get(DashboardService) };
}

/** Reads an event stream, keeping all it got (`text`) and whether it ended. */
function streamOf(res: Response) {
  const reader = res.body!.getReader();
  const decoder = new TextDecoder();
  const state = { text: '', ended: false, cancel: () => reader.cancel().catch(() => undefined), until };
  /** Reads until `done(text)`, its end or `ms`. */
  async function until(done: (text: string) => boolean, ms = 10_000): Promise<void> {
    const deadline = Date.now() + ms;
    while (!done(state.text) && !state.ended && Date.now() < deadline) {
      const next = await Promise.race([
        reader.read().catch(() => ({ done: true as const, value: undefined })),
        new Promise<undefined>((r) => setTimeout(() => r(undefined), Math.max(1, deadline - Date.now())).unref()),
      ]);
      if (next === undefined) break;
      if (next.done) state.ended = true;
      else state.text += decoder.decode(next.value, { stream: true });
    }
  }
  return state;
}

/** The data of each complete event of `type` in an SSE text. */
const eventsOf = (text: string, type: string): string[] =>
  text
    .split('\n\n')
    .slice(0, -1)
    .filter((block) => block.split('\n').includes(`event: ${type}`))
    .map((block) =>
      block
        .split('\n')
        .filter((l) => l.startsWith('data: '))
        .map((l) => l.slice(6))
        .join('\n'),
    );

describe.each(PLATFORMS)('on %s', (platform) => {
  // The snapshot is the stream's first event and may be larger than the 256 KB a page that does not read may leave
  // unsent: that limit must not drop a page that reads.
  it('a first event (the snapshot) larger than the unsent limit: the page gets it whole and stays connected', async () => {
    // One instance, `history` 1,000 (about 17 minutes at 1 s), after 1,000 intervals: the snapshot is its 1,000
    // frames and 1,000 sums, several hundred KB, over the 256 KB a page that does not read may leave unsent.
    const { url, dashboard } = await dashboardApp(platform, { unsafeNoAuth: true, history: 1_000 });
    for (let i = 0; i < 1_000; i++) await dashboard.tick();
    const size = JSON.stringify(dashboard.snapshot()).length;
    expect(size).toBeGreaterThan(256 * 1024);
    const res = await fetch(`${url}/_toolkit/events`);
    expect(res.status).toBe(200);
    const stream = streamOf(res);
    await stream.until((t) => eventsOf(t, 'snapshot').length > 0);
    expect(stream.ended).toBe(false);
    const snapshots = eventsOf(stream.text, 'snapshot');
    expect(snapshots.length).toBe(1);
    const snap = JSON.parse(snapshots[0]) as { instances: Record<string, unknown[]>; sum: unknown[] };
    expect([snap.instances[dashboard.instanceId].length, snap.sum.length]).toEqual([1_000, 1_000]);
    // and it goes on: the next interval's sum comes on the same stream
    await Promise.all([
      stream.until((t) => eventsOf(t, 'sum').length > 0),
      (async () => {
        await new Promise((r) => setTimeout(r, 50));
        await dashboard.tick();
      })(),
    ]);
    expect([stream.ended, eventsOf(stream.text, 'sum').length]).toEqual([false, 1]);
    await stream.cancel();
  });

  const ROUTES = ['/ops/dash', '/ops/dash/dashboard.js', '/ops/dash/snapshot', '/ops/dash/events'];
  const operator = { 'x-operator': 'yes' };

  it('no method changes anything: only GET (and HEAD, behind the same guard) is routed', async () => {
    const { url } = await dashboardApp(platform, { guard: OperatorGuard, path: '/ops/dash' });
    const seen: string[] = [];
    for (const route of ROUTES) {
      // HEAD is answered by the GET route on both platforms: the guard decides it too
      seen.push(`HEAD ${route} ${(await fetch(url + route, { method: 'HEAD' })).status}`);
      for (const method of ['POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']) {
        const res = await fetch(url + route, { method, headers: operator });
        await res.body?.cancel();
        seen.push(`${method} ${route} ${res.status}`);
      }
    }
    expect(seen.filter((line) => !/ (403|404)$/.test(line))).toEqual([]);
    expect(seen.filter((line) => line.startsWith('HEAD')).map((line) => line.split(' ')[2])).toEqual(
      ROUTES.map(() => '403'),
    );
  });

  it('hostile query strings and headers: the page is the same bytes, nothing of the request in it', async () => {
    const { url } = await dashboardApp(platform, { guard: OperatorGuard, path: '/ops/dash' });
    const plain = await (await fetch(`${url}/ops/dash`, { headers: operator })).text();
    const evil = '"><script>alert(1)</script><img src=x onerror=alert(2)>';
    const variants = [
      `${url}/ops/dash?q=${encodeURIComponent(evil)}`,
      `${url}/ops/dash?${'a'.repeat(6_000)}`,
      `${url}/ops/dash?x=/y/`,
      `${url}/ops/dash?%00%ff%2e%2e%2f`,
    ];
    const headers = {
      ...operator,
      'x-forwarded-prefix': evil,
      'x-forwarded-host': 'evil.example',
      'x-original-url': '/evil/',
      referer: evil,
    };
    const pages = [];
    for (const v of variants) {
      const res = await fetch(v, { headers });
      pages.push([res.status, (await res.text()) === plain]);
    }
    expect(pages).toEqual(variants.map(() => [200, true]));
    expect(plain).not.toContain('alert');
  });

  it('what a browser may do with each answer: no sniffing, no framing of the page, nothing cached', async () => {
    const { url } = await dashboardApp(platform, { guard: OperatorGuard, path: '/ops/dash' });
    const seen: Record<string, [string | null, string | null]> = {};
    for (const route of ROUTES.slice(0, 3)) {
      const res = await fetch(url + route, { headers: operator });
      await res.text();
      seen[route] = [res.headers.get('x-content-type-options'), res.headers.get('cache-control')];
    }
    // before: the JSON snapshot (tag and policy names an app may take from requests) went without nosniff
    expect(seen).toEqual(Object.fromEntries(ROUTES.slice(0, 3).map((r) => [r, ['nosniff', 'no-store']])));
    const page = await fetch(`${url}/ops/dash`, { headers: operator });
    expect(page.headers.get('content-security-policy')).toContain("frame-ancestors 'none'");
    const abort = new AbortController();
    const events = await fetch(`${url}/ops/dash/events`, { headers: operator, signal: abort.signal });
    expect([events.headers.get('content-type'), events.headers.get('cache-control')]).toEqual([
      'text/event-stream',
      'private, no-cache, no-store, must-revalidate, max-age=0, no-transform',
    ]);
    abort.abort();
  });

  it('shows no connection url, password, key, session or lock resource, only counts and names the app chose', async () => {
    const password = `pw-${randomBytes(6).toString('hex')}`;
    const server = await startRedisServer({ password });
    try {
      const { app, url, dashboard } = await dashboardApp(platform, { unsafeNoAuth: true }, server.url);
      const secretish = `alice-${randomBytes(4).toString('hex')}`;
      await app.get(CacheService).set(`user:${secretish}:profile`, { email: `${secretish}@example.com` });
      await app.get(RateLimitService).consume(`login:${secretish}`, { limit: 5, ttl: 60_000 });
      await (await app.get(LockService).acquire(`invoice:${secretish}`, { ttl: 5_000 })).release();
      await app.get(PubSubService).publish(`private:${secretish}`, { hello: secretish });
      await dashboard.tick();
      await dashboard.tick();
      const res = await fetch(`${url}/_toolkit/events`);
      const stream = streamOf(res);
      await stream.until((t) => eventsOf(t, 'snapshot').length > 0);
      await stream.cancel();
      const shown = [
        JSON.stringify(dashboard.snapshot()),
        await (await fetch(`${url}/_toolkit/snapshot`)).text(),
        stream.text,
        await (await fetch(`${url}/_toolkit`)).text(),
      ].join('\n');
      expect(shown).toContain('"rateLimit":{"default":[1,0]}'); // the decision is counted, under its policy name
      for (const secret of [password, secretish, `127.0.0.1:${server.port}`])
        expect([secret, shown.includes(secret)]).toEqual([secret, false]);
    } finally {
      await closeToolkitApps();
      await server.stop();
    }
  });

  it('a page that stops reading is dropped once 256 KB wait unsent, and its place is free again', async () => {
    const { url, dashboard } = await dashboardApp(platform, { unsafeNoAuth: true });
    const viewers = () => (dashboard as unknown as { viewers: Map<unknown, unknown> }).viewers.size;
    const { port } = new URL(url);
    // a client that sends its request and never reads (a tab frozen, a client gone without a FIN)
    const socket = connect({ host: '127.0.0.1', port: Number(port) });
    socket.pause();
    socket.write(`GET /_toolkit/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n`);
    try {
      for (let i = 0; i < 200 && viewers() === 0; i++) await new Promise((r) => setTimeout(r, 10));
      expect(viewers()).toBe(1);
      // frames of 50 policies with 200-character names: about 13 KB each, a frame and a sum per interval
      const decision = diagnosticsChannel.channel(REDIS_TOOLKIT_CHANNELS.rateLimitDecision);
      const policies = Array.from({ length: 50 }, (_, i) => `${String(i).padStart(3, '0')}${'p'.repeat(197)}`);
      let ticks = 0;
      // loopback socket buffers take some MB first; then at most 256 KB may wait
      while (viewers() > 0 && ticks < 3_000) {
        decision.publish({ feature: 'ratelimit', operation: 'decision', outcome: 'allowed', policies });
        await dashboard.tick();
        ticks++;
      }
      expect([viewers(), ticks < 3_000]).toEqual([0, true]);
    } finally {
      socket.destroy();
    }
  });
});
