import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { Redis } from 'ioredis';
import { PubSubService, RateLimitService } from '../../lib/index.js';
import { type DashboardFrame, DashboardService, RedisToolkitDashboardModule } from '../../lib/dashboard/index.js';
import { MAX_INSTANCES } from '../../lib/dashboard/dashboard.aggregator.js';
import { readDashboardFrame, sumFrames } from '../../lib/dashboard/dashboard.frame.js';
import { DASHBOARD_CHANNEL } from '../../lib/dashboard/dashboard.service.js';
import { chromiumAvailable, launchChromium } from '../support/chromium.js';
import { trackForCleanup } from '../support/private-servers.js';
import { recordingLogger } from '../support/recording-logger.js';
import { type RedisServerHandle, startRedisServer } from '../support/redis-server.js';
import { closeToolkitApps, createToolkitApp, type ToolkitAppOptions } from '../support/toolkit-app.js';
import { sleep, waitFor } from '../support/wait.js';
import { quietFrame } from '../support/dashboard-frames.js';

/**
 * What an operator must see on the dashboard during an outage, and what a mixed-version deploy sends it: rate-limit
 * decisions that Redis could not make (failed open, or decided by the in-process insurance limiter) are counted as
 * such, not as plain allowed ones; a frame of an older release (without that count) or of a newer one (with a field
 * this release does not know) is still kept and summed; and every frame left out of the sums is logged. One private
 * server, paused by the tests.
 */
const hasChromium = chromiumAvailable();
const COMMAND_TIMEOUT = 300;

let server: RedisServerHandle;
beforeAll(async () => {
  server = trackForCleanup(await startRedisServer());
});
afterEach(async () => {
  await closeToolkitApps();
  server.resume();
});

async function dashboardApp(extra: Omit<ToolkitAppOptions, 'logger'> = {}) {
  const rec = recordingLogger();
  const app = await createToolkitApp({
    target: { url: server.url },
    keyPrefix: `rtk-dash-degraded-${randomBytes(3).toString('hex')}:`,
    commandTimeout: COMMAND_TIMEOUT,
    maxReconnectDelay: 100,
    logger: rec.logger,
    imports: [RedisToolkitDashboardModule.register({ unsafeNoAuth: true, intervalMs: 60_000 })],
    ...extra,
  });
  return { app, dashboard: app.get(DashboardService), ...rec };
}

/** Waits until at least `ms` remain before the wall-clock minute, where the app's own one-minute timer ticks. */
async function clearOfTheMinuteTick(ms: number): Promise<void> {
  const left = 60_000 - (Date.now() % 60_000);
  if (left < ms) await sleep(left + 100);
}

const api = (key: string, limit = 5) => [{ key, name: 'api', policy: { limit, ttl: 60_000 } }];

/** The sums of this instance's history, added up: what the page's policies table shows for the last minute. */
function totals(dashboard: DashboardService) {
  const rateLimit: Record<string, number[]> = {};
  const degraded: Record<string, number[]> = {};
  for (const s of dashboard.snapshot().sum) {
    for (const [into, from] of [
      [rateLimit, s.rateLimit],
      [degraded, s.rateLimitDegraded ?? {}],
    ] as const) {
      for (const [name, [a, b]] of Object.entries(from)) {
        const t = (into[name] ??= [0, 0]);
        t[0] += a;
        t[1] += b;
      }
    }
  }
  return { rateLimit, degraded };
}

describe('rate-limit decisions Redis could not make', () => {
  it('failed open: counted in the frame and the sum as failed open, beside the plain counts', async () => {
    await clearOfTheMinuteTick(15_000);
    const { app, dashboard } = await dashboardApp();
    const rl = app.get(RateLimitService);
    await dashboard.tick();
    for (let i = 0; i < 2; i++) expect((await rl.consumeAll(api('client'))).allowed).toBe(true);
    server.pause();
    const failed = await Promise.all(Array.from({ length: 3 }, (_, i) => rl.consumeAll(api(`client-${i}`))));
    server.resume();
    expect(failed.map((d) => [d.allowed, d.degraded])).toEqual(Array(3).fill([true, 'fail-open']));
    const frame = await dashboard.tick();
    expect(frame.rateLimit).toEqual({ api: [5, 0] });
    expect(frame.rateLimitDegraded).toEqual({ api: [3, 0] });
    // as another instance reads it off the channel
    expect(readDashboardFrame(JSON.parse(JSON.stringify(frame)))?.rateLimitDegraded).toEqual({ api: [3, 0] });
    // the frame is summed at the latest at the second tick after it was made
    await dashboard.tick();
    await dashboard.tick();
    expect(totals(dashboard)).toEqual({ rateLimit: { api: [5, 0] }, degraded: { api: [3, 0] } });
  });

  it('decided by the insurance limiter: counted as such (allowed and refused alike)', async () => {
    await clearOfTheMinuteTick(15_000);
    const { app, dashboard } = await dashboardApp({ rateLimit: { insurance: true } });
    const rl = app.get(RateLimitService);
    await dashboard.tick();
    await rl.consumeAll([{ key: 'warm', name: 'warm', policy: { limit: 5, ttl: 60_000 } }]);
    server.pause();
    const decided = [];
    for (let i = 0; i < 3; i++) decided.push(await rl.consumeAll(api('client', 2)));
    server.resume();
    expect(decided.map((d) => [d.allowed, d.degraded])).toEqual([
      [true, 'insurance'],
      [true, 'insurance'],
      [false, 'insurance'],
    ]);
    const frame = await dashboard.tick();
    expect(frame.rateLimit).toEqual({ warm: [1, 0], api: [2, 1] });
    expect(frame.rateLimitDegraded).toEqual({ api: [0, 3] });
  });
});

describe('frames of other releases (a mixed-version deploy)', () => {
  /** A frame as another instance makes it, every count 0 (as this release makes it, or an older one: `degraded`). */
  function frameOf(instance: string, at: number, degraded?: DashboardFrame['rateLimitDegraded']): DashboardFrame {
    return quietFrame(instance, at, { rateLimit: { api: [4, 1] }, ...(degraded && { rateLimitDegraded: degraded }) });
  }

  it('an older frame (no degraded count) and a newer one (a field unknown here) are kept, summed, rebuilt', async () => {
    const { dashboard, app } = await dashboardApp();
    const pubsub = app.get(PubSubService);
    await dashboard.tick();
    const at = Date.now() - 40_000; // due in the next sum
    const newer = { ...frameOf('newer#0000a2', at, { api: [2, 0] }), queues: { waiting: 3 } };
    const inner = frameOf('newer-inner#0000a3', at, { api: [1, 1] });
    await pubsub.publish(DASHBOARD_CHANNEL, frameOf('older#0000a1', at));
    await pubsub.publish(DASHBOARD_CHANNEL, newer);
    await pubsub.publish(DASHBOARD_CHANNEL, { ...inner, cache: { ...inner.cache, evictions: 9 } });
    const ids = ['older#0000a1', 'newer#0000a2', 'newer-inner#0000a3'];
    expect(await waitFor(() => ids.every((id) => id in dashboard.snapshot().instances), 10_000)).toBe(true);
    const kept = dashboard.snapshot().instances;
    expect(kept['older#0000a1'][0].rateLimitDegraded).toBeUndefined();
    expect(kept['newer#0000a2'][0]).toEqual(frameOf('newer#0000a2', at, { api: [2, 0] }));
    expect(kept['newer-inner#0000a3'][0].cache).toEqual(inner.cache);
    await dashboard.tick();
    const sum = dashboard.snapshot().sum.at(-1) as DashboardFrame;
    expect(sum.instances).toBe(3);
    expect(sum.rateLimit).toEqual({ api: [12, 3] });
    expect(sum.rateLimitDegraded).toEqual({ api: [3, 1] });
  });

  it('the degraded count is checked like the others (pure)', () => {
    const at = Date.now();
    const ok = frameOf('ok#0000b1', at, { api: [1, 2] });
    expect(readDashboardFrame(ok)).toEqual(ok);
    expect(readDashboardFrame(frameOf('old#0000b2', at))).toEqual(frameOf('old#0000b2', at));
    const bad = [
      { ...ok, rateLimitDegraded: null },
      { ...ok, rateLimitDegraded: { api: 3 } },
      { ...ok, rateLimitDegraded: { api: [1, -1] } },
      { ...ok, rateLimitDegraded: { ['p'.repeat(201)]: [1, 0] } },
      { ...ok, rateLimitDegraded: Object.fromEntries(Array.from({ length: 51 }, (_, i) => [`p${i}`, [1, 0]])) },
    ];
    expect(bad.map((f) => readDashboardFrame(f))).toEqual(bad.map(() => undefined));
    const sum = sumFrames([ok, frameOf('old#0000b2', at), frameOf('b#0000b3', at, { api: [1, 0], x: [0, 1] })], at, 1);
    expect([sum.rateLimit, sum.rateLimitDegraded]).toEqual([{ api: [12, 3] }, { api: [2, 2], x: [0, 1] }]);
  });
});

describe('frames left out of the sums are logged', () => {
  async function publisher(app: Awaited<ReturnType<typeof dashboardApp>>['app']) {
    const channel = `${(app.get(PubSubService) as unknown as { channelPrefix: string }).channelPrefix}${DASHBOARD_CHANNEL}`;
    const redis = trackForCleanup(new Redis({ port: server.port, lazyConnect: true }));
    return (message: unknown) => redis.publish(channel, JSON.stringify(message));
  }
  const frameAt = (instance: string, at: number) =>
    quietFrame(instance, at, { cache: { ...quietFrame('', 0).cache, hits: 1 } });

  it(`past ${MAX_INSTANCES} instances, a flood of one instance, a clock an hour ahead: one line each, the rest summed`, async () => {
    const { app, dashboard, warnings } = await dashboardApp();
    const send = await publisher(app);
    await dashboard.tick();
    const at = Date.now() - 40_000;
    // 64 instances followed (this one and 63 others), then 6 more
    for (let i = 0; i < MAX_INSTANCES + 5; i++) await send(frameAt(`many-${i}#00c${String(i).padStart(3, '0')}`, at));
    expect(await waitFor(() => warnings.some((w) => w.includes(`${MAX_INSTANCES} instances`)), 10_000)).toBe(true);
    await sleep(500); // every one of them handled
    expect(dashboard.snapshot().instances).not.toHaveProperty('many-63#00c063');
    // one instance's 30 frames within an interval, and another's clock an hour ahead
    await dashboard.tick();
    await sleep(200);
    for (let i = 0; i < 30; i++) await send(frameAt('many-0#00c000', Date.now() - 30_000 + i));
    await send(frameAt('many-1#00c001', Date.now() + 3_600_000));
    expect(await waitFor(() => warnings.some((w) => /clock/.test(w)), 10_000)).toBe(true);
    await sleep(500);
    const lines = {
      instances: warnings.filter((w) => w.includes(`${MAX_INSTANCES} instances`)).length,
      flood: warnings.filter((w) => w.includes('"many-0#00c000"') && w.includes('left out of the sums')).length,
      clock: warnings.filter((w) => w.includes('"many-1#00c001"') && /clock.*ahead.*NTP/.test(w)).length,
    };
    expect(lines).toEqual({ instances: 1, flood: 1, clock: 1 });
    // the frames kept are summed: 63 other instances once, then 8 of the flood's 30 and the one from the future
    await dashboard.tick();
    await dashboard.tick();
    const hits = dashboard.snapshot().sum.reduce((n, s) => n + s.cache.hits, 0);
    expect(hits).toBe(MAX_INSTANCES - 1 + 8 + 1);
  });
});

describe('the page', () => {
  (hasChromium ? it : it.skip)('shows decisions that failed open, in a chart and in the policies table', async () => {
    await clearOfTheMinuteTick(20_000);
    const { app, dashboard } = await dashboardApp({ http: true });
    const rl = app.get(RateLimitService);
    await dashboard.tick();
    await rl.consumeAll(api('client'));
    server.pause();
    await Promise.all(Array.from({ length: 4 }, (_, i) => rl.consumeAll(api(`client-${i}`))));
    server.resume();
    for (let i = 0; i < 3; i++) await dashboard.tick(); // the frame, then its sum
    const { port } = app.app.getHttpServer().address() as AddressInfo;
    const context = await launchChromium();
    try {
      const tab = await context.newPage();
      await tab.goto(`http://127.0.0.1:${port}/_toolkit`);
      await tab.waitForSelector('#status.live', { timeout: 10_000 });
      await tab.waitForSelector('#policies tbody tr', { timeout: 10_000 });
      const row = await tab.$$eval('#policies tbody tr td', (cells) => cells.map((c) => c.textContent));
      expect(row).toEqual(['api', '5', '0', '4', '0']);
      const last = await tab.getAttribute('#chart-rate-limit-degraded', 'data-last');
      expect(Number(last)).toBeGreaterThan(0);
    } finally {
      await context.close();
    }
  });
});
